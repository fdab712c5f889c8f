//! A JSON webhook channel: one `POST` per recipient with a mobile number,
//! `{"to": "+15550001111", "text": "Hi Ada"}`, to the account's URL followed
//! by `path`. The host adds the account's credentials, sends, retries and
//! keeps the delivery log; this plugin builds requests and reads answers.
//!
//! Config, in the workflow (`[activity.notify.config]`):
//!
//! ```toml
//! account = "hook"               # an account granted to this plugin
//! path = "/messages"             # appended to the account URL's path; starts with `/`
//! text = "Hi {{ first_name }}"   # a template over the recipient's attributes
//! ```

use crosscast_sdk::channel::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    account: String,
    path: String,
    text: String,
}

/// Parses and checks a config; the host reports errors at `validate` time
/// with the field's line in the workflow file.
fn load(json: &str) -> Result<(Config, Templates), Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    // Declared, so `crosscast validate` checks the account before a run.
    config::account("account", &cfg.account);
    if !cfg.path.starts_with('/') {
        return Err(vec![ConfigError::new(
            "path",
            "must start with `/` (it is appended to the account's URL)",
        )]);
    }
    let templates = Templates::compile(&[("text", cfg.text.as_str())])?;
    Ok((cfg, templates))
}

struct Webhook;

impl Channel for Webhook {
    fn describe() -> Descriptor {
        Descriptor::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "A JSON webhook, once per recipient with a mobile number",
            Target::Recipient,
        )
        // The only response header `classify` reads: no other crosses.
        .answer_headers(&["retry-after"])
    }

    fn configure(config: &str) -> Result<(), Vec<ConfigError>> {
        load(config).map(|_| ())
    }

    fn build(config: &str, dimension: &str, ids: &[u64]) -> Result<Vec<Prepared>, String> {
        let (cfg, templates) = load(config).map_err(|es| es[0].to_string())?;
        // One call fetches the columns the template reads, plus `mobile`.
        let columns = templates.columns_for(dimension, &["mobile"])?;
        let rows = Rows::new(fetch(dimension, ids, &columns)?);
        let mobile = rows
            .column("mobile")
            .ok_or("the recipient dimension has no `mobile` attribute")?;
        let mut out = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let Some(to) = mobile.text(i) else {
                out.push(Prepared::Exclude("no mobile number".into()));
                continue;
            };
            let text = templates.render_row("text", &rows, i)?;
            out.push(send(request(&cfg, &to, &text)?.into()));
        }
        Ok(out)
    }

    fn classify(_config: &str, answers: Vec<Answer>) -> Vec<Verdict> {
        answers.into_iter().map(verdict).collect()
    }
}

/// The request for one recipient. Its `recipient` must be the stored mobile
/// number: the host sends only to the address on the record, and checks it
/// against the channel's suppression list first.
fn request(cfg: &Config, to: &str, text: &str) -> Result<HttpRequest, String> {
    let body = serde_json::json!({ "to": to, "text": text });
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    Ok(HttpRequest::new(&cfg.account, "POST", &cfg.path, to)
        .header("content-type", "application/json")
        .body(body))
}

#[derive(Deserialize)]
struct Accepted {
    id: String,
}

/// How the receiver's answers read. The host decides by itself when no
/// answer came (refused, timed out, untrusted certificate).
fn verdict(answer: Answer) -> Verdict {
    let Answer::Http(r) = answer else {
        return Verdict::Failed("not an HTTP answer".into());
    };
    let reason = format!("HTTP {}", r.status);
    match r.status {
        // Accepted: the id it gave goes to the delivery log.
        200..=299 => Verdict::Sent(
            serde_json::from_slice::<Accepted>(&r.body)
                .ok()
                .map(|a| a.id),
        ),
        // The address is gone for good: the host quarantines it.
        404 | 410 => Verdict::Quarantine(reason),
        // The recipient asked not to be contacted: the host denylists it.
        451 => Verdict::OptedOut(reason),
        // Busy or broken for now: the host retries, after Retry-After.
        429 | 500..=599 => Verdict::Retry((reason, retry_after(&r))),
        // Anything else is this message's fault: failed, not retried.
        _ => Verdict::Failed(reason),
    }
}

crosscast_sdk::export_channel!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer::Http(HttpResponse::new(status, body).header("retry-after", "30"))
    }

    #[test]
    fn every_answer_reads_as_documented() {
        let verdicts = Webhook::classify(
            "{}",
            vec![
                answer(200, r#"{"id":"hook-1"}"#),
                answer(410, ""),
                answer(451, ""),
                answer(503, ""),
                answer(400, ""),
            ],
        );
        assert_eq!(
            verdicts,
            vec![
                Verdict::Sent(Some("hook-1".into())),
                Verdict::Quarantine("HTTP 410".into()),
                Verdict::OptedOut("HTTP 451".into()),
                Verdict::Retry(("HTTP 503".into(), Some(30))),
                Verdict::Failed("HTTP 400".into()),
            ]
        );
    }

    /// `build` runs in crosscast's sandbox on these records: the real code,
    /// the host's checks (it needs `crosscast` on PATH or in CROSSCAST_BIN).
    #[test]
    fn the_host_builds_one_request_per_recipient_with_a_mobile() {
        use crosscast_sdk::testing::{Built, Plugin, Record};
        let plugin = Plugin::build(env!("CARGO_MANIFEST_DIR")).unwrap();
        let world = plugin.world().unwrap();
        world
            .recipients(&[
                Record::new("R1")
                    .with("mobile", "+15550000001")
                    .with("first_name", "Ada"),
                Record::new("R2").with("first_name", "Bob"),
            ])
            .unwrap();
        world.account("hook", "https://hooks.example.com").unwrap();
        let config = r#"{ account = "hook", path = "/messages", text = "Hi {{ first_name }}" }"#;
        let built = world.build("recipient", config).unwrap();
        let expected = HttpRequest::new("hook", "POST", "/messages", "+15550000001")
            .header("content-type", "application/json")
            .body(r#"{"text":"Hi Ada","to":"+15550000001"}"#);
        assert_eq!(
            built,
            vec![
                Built::Send {
                    target: "R1".into(),
                    message: expected.into(),
                    parts: 1,
                    note: None
                },
                Built::Excluded {
                    target: "R2".into(),
                    reason: "no mobile number".into()
                },
            ]
        );
    }

    #[test]
    fn a_config_is_checked_before_any_message() {
        let bad = r#"{"account": "hook", "path": "messages", "text": "Hi"}"#;
        let errors = Webhook::configure(bad).unwrap_err();
        assert_eq!(errors[0].field, "path");
        let good = r#"{"account": "hook", "path": "/messages", "text": "Hi {{ first_name }}"}"#;
        assert!(Webhook::configure(good).is_ok());
        let (cfg, _) = load(good).unwrap();
        let request = request(&cfg, "+15550001111", "Hi Ada").unwrap();
        assert_eq!(request.path, "/messages");
        assert_eq!(request.body, br#"{"text":"Hi Ada","to":"+15550001111"}"#);
    }
}
