//! SMS: one text per distinct recipient through a Twilio-compatible
//! Messages API (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`).
//!
//! Config: `account` (the operator's account: base URL, Account SID, and the
//! auth token the host applies), `from` (E.164 number) and a `body` template.

use crosscast_sdk::channel::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    account: String,
    from: String,
    body: String,
}

fn load(json: &str) -> Result<(Config, Templates), Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    config::account("account", &cfg.account);
    if !cfg.from.starts_with('+') {
        return Err(vec![ConfigError::new(
            "from",
            "expected an E.164 number such as +15550001111",
        )]);
    }
    let templates = Templates::compile(&[("body", cfg.body.as_str())])?;
    Ok((cfg, templates))
}

struct SmsChannel;

impl Channel for SmsChannel {
    fn describe() -> Descriptor {
        Descriptor::new(
            "sms",
            env!("CARGO_PKG_VERSION"),
            "SMS through a Twilio-compatible Messages API, once per recipient",
            Target::Recipient,
        )
        .answer_headers(&["retry-after"])
    }

    fn configure(config: &str) -> Result<(), Vec<ConfigError>> {
        load(config).map(|_| ())
    }

    fn build(config: &str, dimension: &str, ids: &[u64]) -> Result<Vec<Prepared>, String> {
        let (cfg, templates) = load(config).map_err(|es| es[0].to_string())?;
        let acct = account(&cfg.account)?;
        let sid = acct
            .user
            .ok_or_else(|| format!("account `{}` has no user (the Account SID)", cfg.account))?;
        let path = format!("/2010-04-01/Accounts/{sid}/Messages.json");
        let rows = Rows::new(fetch(
            dimension,
            ids,
            &templates.columns_for(dimension, &["mobile"])?,
        )?);
        let mobile = rows
            .column("mobile")
            .ok_or("the recipient dimension has no `mobile` attribute")?;
        let mut out = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let Some(to) = mobile.text(i) else {
                out.push(Prepared::Exclude("no mobile number".into()));
                continue;
            };
            let body = templates.render_row("body", &rows, i)?;
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("To", &to)
                .append_pair("From", &cfg.from)
                .append_pair("Body", &body)
                .finish();
            let segments = Segments::of(&body);
            let request = HttpRequest::new(&cfg.account, "POST", &path, &to)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form);
            let outgoing = Outgoing::new(request.into())
                .parts(segments.count)
                .note(segments.describe());
            out.push(outgoing.send());
        }
        Ok(out)
    }

    fn classify(_config: &str, answers: Vec<Answer>) -> Vec<Verdict> {
        answers.into_iter().map(classify_one).collect()
    }
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

#[derive(Deserialize)]
struct ApiError {
    code: Option<u32>,
    message: Option<String>,
}

/// Twilio answers 201 with the message resource, or a JSON error with a code.
fn classify_one(answer: Answer) -> Verdict {
    let r = match answer {
        Answer::Http(r) => r,
        Answer::TransportError(e) => return Verdict::Retry((e, None)),
        Answer::Smtp(s) => return Verdict::Failed(format!("unexpected SMTP answer {}", s.code)),
    };
    if (200..300).contains(&r.status) {
        return match serde_json::from_slice::<Created>(&r.body) {
            Ok(c) => Verdict::Sent(Some(c.sid)),
            Err(e) => Verdict::Failed(format!(
                "accepted ({}) but the answer has no sid: {e}",
                r.status
            )),
        };
    }
    let error = serde_json::from_slice::<ApiError>(&r.body).ok();
    let code = error.as_ref().and_then(|e| e.code);
    let reason = match error {
        Some(ApiError { code, message }) => format!(
            "HTTP {}{}: {}",
            r.status,
            code.map(|c| format!(" code {c}")).unwrap_or_default(),
            message.unwrap_or_default()
        ),
        None => format!("HTTP {}", r.status),
    };
    // As Twilio documents its error codes: 21610, the recipient replied
    // STOP (only they can undo it); 21211, not a valid number; 20429 and any
    // 429, too many requests; 5xx, the provider's trouble.
    match (r.status, code) {
        (_, Some(21610)) => Verdict::OptedOut(reason),
        (_, Some(20429)) | (429, _) | (500..=599, _) => Verdict::Retry((reason, retry_after(&r))),
        _ => Verdict::Failed(reason),
    }
}

crosscast_sdk::export_channel!(SmsChannel);
