//! Email: one message per distinct recipient, sent by the host over SMTP.
//!
//! Config: `from`, `subject`, `text`, optional `html` and `reply_to`; the
//! templates see the recipient's attributes (`{{ first_name }}`).

use crosscast_sdk::channel::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The operator's SMTP relay account.
    #[serde(default = "default_account")]
    account: String,
    from: String,
    subject: String,
    text: String,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
}

fn default_account() -> String {
    "smtp".into()
}

fn load(json: &str) -> Result<(Config, Templates), Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    config::account("account", &cfg.account);
    let mut fields = vec![
        ("subject", cfg.subject.as_str()),
        ("text", cfg.text.as_str()),
    ];
    if let Some(html) = &cfg.html {
        fields.push(("html", html));
    }
    if !cfg.from.contains('@') {
        return Err(vec![ConfigError::new(
            "from",
            "expected an address like `Acme <news@acme.example>`",
        )]);
    }
    let templates = Templates::compile(&fields)?;
    Ok((cfg, templates))
}

struct EmailChannel;

impl Channel for EmailChannel {
    fn describe() -> Descriptor {
        // SMTP replies only: no HTTP header to read.
        Descriptor::new(
            "email",
            env!("CARGO_PKG_VERSION"),
            "Email over the operator's SMTP relay, once per recipient",
            Target::Recipient,
        )
        .answer_headers(&[])
    }

    fn configure(config: &str) -> Result<(), Vec<ConfigError>> {
        load(config).map(|_| ())
    }

    fn build(config: &str, dimension: &str, ids: &[u64]) -> Result<Vec<Prepared>, String> {
        let (cfg, templates) = load(config).map_err(|es| es[0].to_string())?;
        let rows = Rows::new(fetch(
            dimension,
            ids,
            &templates.columns_for(dimension, &["email"])?,
        )?);
        let email = rows
            .column("email")
            .ok_or("the recipient dimension has no `email` attribute")?;
        let mut out = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let Some(to) = email.text(i) else {
                out.push(Prepared::Exclude("no email address".into()));
                continue;
            };
            let html = match cfg.html {
                Some(_) => Some(templates.render_row("html", &rows, i)?),
                None => None,
            };
            let subject = templates.render_row("subject", &rows, i)?;
            let text = templates.render_row("text", &rows, i)?;
            let mut email = Email::new(&cfg.account, &cfg.from, &to, &subject, &text);
            if let Some(html) = html {
                email = email.html(html);
            }
            if let Some(r) = &cfg.reply_to {
                email = email.reply_to(r);
            }
            out.push(send(email.into()));
        }
        Ok(out)
    }

    fn classify(_config: &str, answers: Vec<Answer>) -> Vec<Verdict> {
        answers.into_iter().map(classify_one).collect()
    }
}

/// SMTP: 2xx accepted, 4xx transient (RFC 5321 §4.2.1), 5xx permanent: the
/// address is quarantined (a hard bounce).
fn classify_one(answer: Answer) -> Verdict {
    match answer {
        Answer::Smtp(SmtpReply { code, message }) => match code {
            200..=299 => Verdict::Sent(
                message
                    .split("queued as ")
                    .nth(1)
                    .map(|id| id.trim().to_string()),
            ),
            400..=499 => Verdict::Retry((format!("{code} {message}"), None)),
            500..=599 => Verdict::Quarantine(format!("{code} {message}")),
            _ => Verdict::Failed(format!("unexpected SMTP reply {code} {message}")),
        },
        Answer::TransportError(e) => Verdict::Retry((e, None)),
        Answer::Http(r) => {
            Verdict::Failed(format!("unexpected HTTP answer {} to an email", r.status))
        }
    }
}

crosscast_sdk::export_channel!(EmailChannel);
