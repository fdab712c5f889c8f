//! FCM: one push per Android device (subscription) through Firebase Cloud
//! Messaging HTTP v1 (`POST /v1/projects/{project}/messages:send`). The host
//! obtains the OAuth access token from the operator's service account; this
//! plugin never sees the key or the token.
//!
//! Config: `account` (default `fcm`; its `project_id` param names the
//! project), `title` and `body` templates, optional `priority` (`high` or
//! `normal`) and `ttl` (`1d`).

use crosscast_sdk::channel::*;
use crosscast_sdk::config;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_account")]
    account: String,
    title: String,
    body: String,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
}

fn default_account() -> String {
    "fcm".into()
}

fn load(json: &str) -> Result<(Config, Templates, Option<u64>), Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    config::account("account", &cfg.account);
    config::account_param("account", &cfg.account, "project_id");
    if let Some(p) = &cfg.priority
        && p != "high"
        && p != "normal"
    {
        return Err(vec![ConfigError::new(
            "priority",
            "expected `high` or `normal`",
        )]);
    }
    let ttl = match &cfg.ttl {
        Some(t) => Some(
            humantime::parse_duration(t)
                .map_err(|e| {
                    vec![ConfigError::new(
                        "ttl",
                        format!("`{t}` is not a duration ({e})"),
                    )]
                })?
                .as_secs(),
        ),
        None => None,
    };
    let templates =
        Templates::compile(&[("title", cfg.title.as_str()), ("body", cfg.body.as_str())])?;
    Ok((cfg, templates, ttl))
}

struct Fcm;

impl Channel for Fcm {
    fn describe() -> Descriptor {
        Descriptor::new(
            "fcm",
            env!("CARGO_PKG_VERSION"),
            "Push to Android devices through FCM HTTP v1, once per device",
            Target::Subscription,
        )
        .answer_headers(&["retry-after"])
    }

    fn account_params() -> Vec<String> {
        vec!["project_id".into()]
    }

    fn configure(config: &str) -> Result<(), Vec<ConfigError>> {
        load(config).map(|_| ())
    }

    fn build(config: &str, dimension: &str, ids: &[u64]) -> Result<Vec<Prepared>, String> {
        let (cfg, templates, ttl) = load(config).map_err(|es| es[0].to_string())?;
        let acct = account(&cfg.account)?;
        let project = param(&acct, "project_id")
            .ok_or_else(|| format!("account `{}` needs --param project_id=...", cfg.account))?;
        let columns = fetch(
            dimension,
            ids,
            &templates.columns_for(dimension, &["token", "platform"])?,
        )?;
        let devices = devices(
            &columns,
            "android",
            "an Android device",
            "no registration token",
        )?;
        let rows = Rows::new(columns);
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
                templates.render_row("title", &rows, i)?,
                templates.render_row("body", &rows, i)?,
            );
            let request = Request {
                message: FcmMessage {
                    token: &device,
                    notification: Notification {
                        title: &title,
                        body: &body,
                    },
                    android: (cfg.priority.is_some() || ttl.is_some()).then(|| Android {
                        priority: cfg.priority.as_deref(),
                        ttl: ttl.map(|t| format!("{t}s")),
                    }),
                },
            };
            let path = format!("/v1/projects/{project}/messages:send");
            let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
            let request = HttpRequest::new(&cfg.account, "POST", &path, &device)
                .header("content-type", "application/json")
                .body(body);
            out.push(send(request.into()));
        }
        Ok(out)
    }

    fn classify(_config: &str, answers: Vec<Answer>) -> Vec<Verdict> {
        answers.into_iter().map(classify_one).collect()
    }
}

/// The HTTP v1 request body.
#[derive(Serialize)]
struct Request<'a> {
    message: FcmMessage<'a>,
}

#[derive(Serialize)]
struct FcmMessage<'a> {
    token: &'a str,
    notification: Notification<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    android: Option<Android<'a>>,
}

#[derive(Serialize)]
struct Notification<'a> {
    title: &'a str,
    body: &'a str,
}

#[derive(Serialize)]
struct Android<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

/// What FCM answers: the message `name`, or a Google API error.
#[derive(Deserialize, Default)]
struct Reply {
    name: Option<String>,
    #[serde(default)]
    error: ApiError,
}

#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

/// FCM answers 200 with the message `name`, or a Google API error whose
/// details may carry an FCM `errorCode` (UNREGISTERED, QUOTA_EXCEEDED...).
fn classify_one(answer: Answer) -> Verdict {
    let r = match answer {
        Answer::Http(r) => r,
        Answer::TransportError(e) => return Verdict::Retry((e, None)),
        Answer::Smtp(s) => return Verdict::Failed(format!("unexpected SMTP answer {}", s.code)),
    };
    let reply: Reply = serde_json::from_slice(&r.body).unwrap_or_default();
    if r.status == 200 {
        return Verdict::Sent(reply.name);
    }
    let error = &reply.error;
    let code = error
        .details
        .iter()
        .find_map(|d| d.error_code.as_deref())
        .unwrap_or(&error.status);
    let text = format!("{} {code}: {}", r.status, error.message)
        .trim()
        .to_string();
    // UNREGISTERED: the app instance is gone, the token never works again.
    // QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL: back off, at least Retry-After.
    match (r.status, code) {
        (_, "UNREGISTERED") => Verdict::Quarantine(text),
        (429, _) | (500..=599, _) | (_, "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") => {
            Verdict::Retry((text, retry_after(&r)))
        }
        _ => Verdict::Failed(text),
    }
}

crosscast_sdk::export_channel!(Fcm);
