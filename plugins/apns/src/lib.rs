//! APNs: one push per iOS device (subscription) through Apple's provider API
//! (`POST /3/device/<token>` over HTTP/2). The host signs the provider token
//! (ES256) with the operator's .p8 key; this plugin never sees it.
//!
//! Config: `account` (default `apns`), `topic` (the app's bundle id; else the
//! account's `topic` param), `title` and `body` templates (the subscription's
//! attributes and `recipient.*`), optional `push_type` (`alert`), `priority`
//! (10 or 5), `expiration` (`1d`: the push is dropped if undeliverable that
//! long) and `collapse_id`.

use crosscast_sdk::channel::*;
use crosscast_sdk::config;
use serde::{Deserialize, Serialize};

/// Apple's limit for a notification payload.
const MAX_PAYLOAD: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_account")]
    account: String,
    #[serde(default)]
    topic: Option<String>,
    title: String,
    body: String,
    #[serde(default = "default_push_type")]
    push_type: String,
    #[serde(default = "default_priority")]
    priority: u8,
    #[serde(default)]
    expiration: Option<String>,
    #[serde(default)]
    collapse_id: Option<String>,
}

fn default_account() -> String {
    "apns".into()
}

fn default_push_type() -> String {
    "alert".into()
}

fn default_priority() -> u8 {
    10
}

struct Plan {
    cfg: Config,
    templates: Templates,
    expiration_ms: Option<i64>,
}

fn load(json: &str) -> Result<Plan, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    config::account("account", &cfg.account);
    if cfg.topic.is_none() {
        // Without a topic in the config, the account's is used.
        config::account_param("account", &cfg.account, "topic");
    }
    if ![5, 10].contains(&cfg.priority) {
        return Err(vec![ConfigError::new(
            "priority",
            "APNs priority is 10 (immediate) or 5 (power-friendly)",
        )]);
    }
    if let Some(c) = &cfg.collapse_id
        && c.len() > 64
    {
        return Err(vec![ConfigError::new(
            "collapse_id",
            "APNs collapse ids are at most 64 bytes",
        )]);
    }
    let expiration_ms = match &cfg.expiration {
        Some(e) => Some(
            humantime::parse_duration(e)
                .map_err(|err| {
                    vec![ConfigError::new(
                        "expiration",
                        format!("`{e}` is not a duration ({err})"),
                    )]
                })?
                .as_millis() as i64,
        ),
        None => None,
    };
    let templates =
        Templates::compile(&[("title", cfg.title.as_str()), ("body", cfg.body.as_str())])?;
    Ok(Plan {
        cfg,
        templates,
        expiration_ms,
    })
}

struct Apns;

impl Channel for Apns {
    fn describe() -> Descriptor {
        Descriptor::new(
            "apns",
            env!("CARGO_PKG_VERSION"),
            "Push to iOS devices through APNs (HTTP/2), once per device",
            Target::Subscription,
        )
        .answer_headers(&["apns-id", "retry-after"])
    }

    fn account_params() -> Vec<String> {
        vec!["topic".into()]
    }

    fn configure(config: &str) -> Result<(), Vec<ConfigError>> {
        load(config).map(|_| ())
    }

    fn build(config: &str, dimension: &str, ids: &[u64]) -> Result<Vec<Prepared>, String> {
        let plan = load(config).map_err(|es| es[0].to_string())?;
        let acct = account(&plan.cfg.account)?;
        let topic = plan
            .cfg
            .topic
            .clone()
            .or_else(|| param(&acct, "topic"))
            .ok_or(
                "no APNs topic: set `topic` in the config or --param topic=... on the account",
            )?;
        let columns = fetch(
            dimension,
            ids,
            &plan
                .templates
                .columns_for(dimension, &["token", "platform"])?,
        )?;
        let devices = devices(&columns, "ios", "an iOS device", "no device token")?;
        let rows = Rows::new(columns);
        let expiration = plan
            .expiration_ms
            .map(|d| ((now_ms() + d) / 1000).to_string())
            .unwrap_or_else(|| "0".into());
        let mut out = Vec::with_capacity(ids.len());
        for (i, device) in devices.into_iter().enumerate() {
            let device = match device {
                Ok(d) => d,
                Err(reason) => {
                    out.push(Prepared::Exclude(reason));
                    continue;
                }
            };
            let (title, body) = (
                plan.templates.render_row("title", &rows, i)?,
                plan.templates.render_row("body", &rows, i)?,
            );
            let payload = serde_json::to_string(&Payload {
                aps: Aps {
                    alert: Alert {
                        title: &title,
                        body: &body,
                    },
                    sound: "default",
                },
            })
            .map_err(|e| e.to_string())?;
            if payload.len() > MAX_PAYLOAD {
                out.push(Prepared::Exclude(format!(
                    "payload is {} bytes; APNs allows {MAX_PAYLOAD}",
                    payload.len()
                )));
                continue;
            }
            let path = format!("/3/device/{device}");
            let mut request = HttpRequest::new(&plan.cfg.account, "POST", &path, &device)
                .header("apns-topic", &topic)
                .header("apns-push-type", &plan.cfg.push_type)
                .header("apns-priority", &plan.cfg.priority.to_string())
                .header("apns-expiration", &expiration)
                .header("content-type", "application/json")
                .body(payload);
            if let Some(c) = &plan.cfg.collapse_id {
                request = request.header("apns-collapse-id", c);
            }
            out.push(send(request.into()));
        }
        Ok(out)
    }

    fn classify(_config: &str, answers: Vec<Answer>) -> Vec<Verdict> {
        answers.into_iter().map(classify_one).collect()
    }
}

/// The notification payload.
#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
}

#[derive(Serialize)]
struct Aps<'a> {
    alert: Alert<'a>,
    sound: &'a str,
}

#[derive(Serialize)]
struct Alert<'a> {
    title: &'a str,
    body: &'a str,
}

#[derive(Deserialize)]
struct ApnsError {
    reason: String,
}

/// Apple's answers: 200 with `apns-id`; otherwise a JSON `reason`.
fn classify_one(answer: Answer) -> Verdict {
    let r = match answer {
        Answer::Http(r) => r,
        Answer::TransportError(e) => return Verdict::Retry((e, None)),
        Answer::Smtp(s) => return Verdict::Failed(format!("unexpected SMTP answer {}", s.code)),
    };
    if r.status == 200 {
        return Verdict::Sent(header(&r, "apns-id").map(str::to_string));
    }
    let reason = serde_json::from_slice::<ApnsError>(&r.body)
        .map(|e| e.reason)
        .unwrap_or_default();
    let text = format!("{} {reason}", r.status).trim().to_string();
    // The token is gone for good (410, the app was removed) or was never a
    // token of this topic and environment (400 BadDeviceToken): quarantine.
    match (r.status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Verdict::Quarantine(text),
        (429 | 500..=599, _) => Verdict::Retry((text, retry_after(&r))),
        _ => Verdict::Failed(text),
    }
}

crosscast_sdk::export_channel!(Apns);
