//! Channel depth: every error class of every channel against the loopback
//! servers (retries, quarantine, denylists, opt-outs, log entries), one-click
//! unsubscribe, SMS segments, per-account rate and concurrency, and a run
//! with 10% injected transient faults that loses nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::rig::{
    Servers, log_entries, servers, servers_with, setup, start_failing_workflow, start_workflow,
};
use common::{Env, free_port, http, read_recipients, read_subscriptions, root};
use crosscast_test_servers::{
    Faults, PushFault, PushFaults, Reply, SinkOptions, SmsFault, SmsFaults,
};

const T0: &str = "2026-01-05T09:00:00Z";

/// `T0` plus `minutes`, RFC 3339.
fn at(minutes: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339(T0).unwrap() + chrono::Duration::minutes(minutes))
        .to_rfc3339()
}

fn ms(minutes: i64) -> i64 {
    chrono::DateTime::parse_from_rfc3339(T0)
        .unwrap()
        .timestamp_millis()
        + minutes * 60_000
}

/// A sink whose first reply to each of these addresses is scripted.
fn scripted(replies: &[(&str, Reply)]) -> SinkOptions {
    SinkOptions {
        faults: Faults {
            per_address: replies
                .iter()
                .map(|(a, r)| (a.to_string(), vec![r.clone()]))
                .collect(),
            ..Faults::default()
        },
        ..SinkOptions::default()
    }
}

fn write_workflow(env: &Env, name: &str, text: &str) -> std::path::PathBuf {
    let p = env.data().join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `plugin install PATH` with `options` (`--account`, `--suppression-list`).
fn install<'a>(path: &'a str, options: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["plugin", "install", path];
    args.extend_from_slice(options);
    args
}

/// A workflow `name`: the recipients matching `filter`, delivered by
/// activity `id` of type `channel` with `config` (inline TOML).
fn one_delivery(
    env: &Env,
    name: &str,
    filter: &str,
    id: &str,
    channel: &str,
    config: &str,
) -> std::path::PathBuf {
    write_workflow(
        env,
        name,
        &format!(
            "name = \"{name}\"\n[activity.q]\ntype = \"query\"\nconfig = {{ dimension = \"recipient\", filter = \"{filter}\" }}\nnext = {{ done = \"{id}\" }}\n\n[activity.{id}]\ntype = \"{channel}\"\nconfig = {config}\n"
        ),
    )
}

/// A workflow texting "Hi" to every recipient with a mobile through
/// `account` (activity `text`).
fn text_every_mobile(env: &Env, account: &str) -> std::path::PathBuf {
    let config = format!(r#"{{ account = "{account}", from = "+15550001111", body = "Hi" }}"#);
    one_delivery(env, "sms", "mobile is not empty", "text", "sms", &config)
}

/// State of each log entry of `activity` by address.
fn by_address(env: &Env, run: u64, activity: &str) -> BTreeMap<String, serde_json::Value> {
    log_entries(env, run, activity)
        .into_iter()
        .map(|e| (e["to"].as_str().unwrap_or("-").to_string(), e))
        .collect()
}

/// (list, address) → kind, from `denylist list --json`.
fn suppressed(env: &Env) -> BTreeMap<(String, String), serde_json::Value> {
    env.ok(&["denylist", "list", "--json"])
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                (
                    v["list"].as_str().unwrap().to_string(),
                    v["address"].as_str().unwrap().to_string(),
                ),
                v,
            )
        })
        .collect()
}

const EMAIL_WF: &str = r#"name = "mail"
[activity.q]
type = "query"
config = { dimension = "recipient", filter = "id in ('R2', 'R5', 'R6', 'R7')" }
next = { done = "mail" }

[activity.mail]
type = "email"
config = { from = "news@acme.example", subject = "Hi {{ first_name }}", text = "Hello {{ first_name }}", html = "<p>Hello {{ first_name }}</p>" }
"#;

/// A relay that closes each connection after one message, as relays
/// limiting messages per connection do: the pool hands out connections the
/// relay has closed meanwhile, and the host resends on another connection
/// at once. Every message is sent on its first attempt, exactly once.
#[test]
fn a_connection_the_relay_closed_is_replaced_without_a_retry() {
    let s = servers_with(SinkOptions {
        faults: Faults {
            messages_per_connection: Some(1),
            ..Faults::default()
        },
        ..SinkOptions::default()
    });
    let env = Env::new();
    setup(&env, &s);
    let want = common::sample_emails();
    let wf = write_workflow(
        &env,
        "news",
        &EMAIL_WF.replace("id in ('R2', 'R5', 'R6', 'R7')", "email is not empty"),
    );
    let run = start_workflow(&env, T0, &wf);
    let log = by_address(&env, run, "mail");
    assert_eq!(log.keys().cloned().collect::<BTreeSet<_>>(), want);
    for (address, e) in &log {
        assert_eq!(e["state"], "sent", "{address}: {e}");
        assert_eq!(e["attempts"], 1, "{address}: {e}");
    }
    let mails = s.rig.smtp.received();
    let got: BTreeSet<String> = mails.iter().map(|m| m.to[0].clone()).collect();
    assert_eq!((mails.len(), got), (want.len(), want));
    // One message per connection, as the relay allows.
    let connections: BTreeSet<&str> = mails
        .iter()
        .map(|m| m.queue_id.split('M').next().unwrap())
        .collect();
    assert_eq!(connections.len(), mails.len());
}

/// Email: a 5xx quarantines the address, a 4xx is retried; every message is
/// multipart with a Message-ID and RFC 8058 headers; the one-click POST
/// (never a GET) denylists the address; the next run excludes both, with
/// the reason in the log; removing the quarantine sends again.
#[test]
fn email_bounces_quarantine_and_one_click_unsubscribes_denylist() {
    let s = servers_with(scripted(&[
        ("user5@example.com", Reply::new(550, "5.1.1 no such user")),
        ("user6@example.com", Reply::new(451, "4.3.0 try later")),
    ]));
    let env = Env::new();
    setup(&env, &s);
    let listen = format!("127.0.0.1:{}", free_port());
    env.ok(&["unsubscribe", "setup", "--listen", &listen]);
    let wf = write_workflow(&env, "mail", EMAIL_WF);

    let run = start_workflow(&env, T0, &wf);
    let log = by_address(&env, run, "mail");
    assert_eq!(log["user5@example.com"]["state"], "failed");
    let reason = log["user5@example.com"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("550")
            && reason.contains("5.1.1 no such user")
            && reason.contains("quarantined"),
        "{reason}"
    );
    assert_eq!(log["user6@example.com"]["state"], "retrying");
    assert_eq!(log["user6@example.com"]["next_at"], ms(1));
    env.ok(&["--now", &at(1), "worker", "--once"]);
    assert_eq!(
        by_address(&env, run, "mail")["user6@example.com"]["state"],
        "sent"
    );

    let lists = suppressed(&env);
    let q = &lists[&("email".to_string(), "user5@example.com".to_string())];
    assert_eq!(q["kind"], "quarantine");
    assert_eq!(q["source"], format!("run {run} / mail"));
    assert_eq!(lists.len(), 1, "a 4xx quarantines nothing: {lists:?}");

    // What the relay received: multipart text + HTML, a Message-ID each,
    // one-click headers with an opaque per-recipient link.
    let mails = s.rig.smtp.received();
    assert_eq!(mails.len(), 3, "user2, user6 (second attempt), user7");
    let mut links = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for m in &mails {
        let to = m.to[0].clone();
        let ct = m.header("Content-Type").unwrap_or_default();
        assert!(ct.starts_with("multipart/alternative"), "{ct}");
        assert!(m.body().contains("text/plain") && m.body().contains("text/html"));
        ids.insert(m.header("Message-ID").expect("a Message-ID"));
        assert_eq!(
            m.header("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        let link = m.header("List-Unsubscribe").expect("List-Unsubscribe");
        let link = link
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        assert!(
            link.starts_with(&format!("http://{listen}/unsubscribe/")),
            "{link}"
        );
        // Neither the address nor the recipient's id in clear: a signed
        // token (a random one may well hold "R7" somewhere).
        let token = link.rsplit('/').next().unwrap_or_default();
        assert!(
            token.len() >= 32 && !token.contains("user") && !token.contains("example"),
            "opaque: {link}"
        );
        links.insert(to, link);
    }
    assert_eq!(ids.len(), 3, "Message-IDs are unique");
    assert_eq!(
        links.values().collect::<BTreeSet<_>>().len(),
        3,
        "one link per recipient"
    );

    // The worker serves the endpoint. A GET shows a button and changes
    // nothing; a forged token is refused; a POST without the RFC 8058 body
    // is refused; the one-click POST unsubscribes.
    let moved = env.data().join("moved.csv");
    std::fs::write(
        &moved,
        "id,email,mobile,first_name,last_name,locale,timezone,loyalty\n\
         R2,user2.new@example.com,+15550000002,Inès,Schmidt,de-DE,Europe/Berlin,silver\n",
    )
    .unwrap();
    env.ok(&["import", "recipients", moved.to_str().unwrap()]);
    let mut worker = env.spawn(&["--now", &at(2), "worker", "--poll-ms", "200"]);
    let path = |link: &str| {
        link.trim_start_matches(&format!("http://{listen}"))
            .to_string()
    };
    let user7 = path(&links["user7@example.com"]);
    let (code, page) = http(&listen, "GET", &user7, "");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("method=post"), "{page}");
    let forged = format!("{}x", &user7[..user7.len() - 1]);
    assert_eq!(
        http(&listen, "POST", &forged, "List-Unsubscribe=One-Click").0,
        404
    );
    assert_eq!(http(&listen, "POST", &user7, "unsubscribe=yes").0, 400);
    assert_eq!(
        http(&listen, "POST", &user7, "List-Unsubscribe=One-Click").0,
        200
    );
    // A link unsubscribes the address its email went to, even when the
    // recipient's address has changed since (R2's, just before).
    let user2 = path(&links["user2@example.com"]);
    assert_eq!(
        http(&listen, "POST", &user2, "List-Unsubscribe=One-Click").0,
        200
    );
    worker.kill().unwrap();
    worker.wait().unwrap();

    let lists = suppressed(&env);
    assert_eq!(lists.len(), 3, "{lists:?}");
    let d = &lists[&("email".to_string(), "user7@example.com".to_string())];
    assert_eq!(d["kind"], "denylist");
    assert!(d["reason"].as_str().unwrap().contains("RFC 8058"));
    let d = &lists[&("email".to_string(), "user2@example.com".to_string())];
    assert_eq!(d["kind"], "denylist");
    assert!(
        !lists.contains_key(&("email".to_string(), "user2.new@example.com".to_string())),
        "the new address did not ask: {lists:?}"
    );

    // The next run excludes both before sending, and says why.
    let before = s.rig.smtp.attempts().len();
    let run2 = start_workflow(&env, &at(10), &wf);
    let log = by_address(&env, run2, "mail");
    assert_eq!(log["user5@example.com"]["state"], "excluded");
    assert!(
        log["user5@example.com"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("quarantined on email since 2026-01-05T09:00:00Z: 550")
    );
    assert_eq!(log["user7@example.com"]["state"], "excluded");
    assert!(
        log["user7@example.com"]["reason"]
            .as_str()
            .unwrap()
            .contains("on the email denylist")
    );
    let sent: BTreeSet<String> = s.rig.smtp.attempts()[before..]
        .iter()
        .map(|a| a.to[0].clone())
        .collect();
    assert_eq!(
        sent,
        BTreeSet::from(["user2.new@example.com".into(), "user6@example.com".into()])
    );

    // Filters on the log.
    let excluded = env.ok(&[
        "deliveries",
        &run2.to_string(),
        "--state",
        "excluded",
        "--json",
    ]);
    assert_eq!(excluded.lines().count(), 2, "{excluded}");
    let one = env.ok(&["deliveries", &run2.to_string(), "--id", "R7"]);
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(
        one.contains("user7@example.com") && one.contains("excluded"),
        "{one}"
    );
    let none = env.ok(&["deliveries", &run2.to_string(), "--activity", "nope"]);
    assert!(none.is_empty());

    // Lifting the quarantine sends again (the relay's script is over).
    env.ok(&["denylist", "remove", "email", "user5@example.com"]);
    let run3 = start_workflow(&env, &at(20), &wf);
    let log = by_address(&env, run3, "mail");
    assert_eq!(log["user5@example.com"]["state"], "sent");
    assert_eq!(log["user7@example.com"]["state"], "excluded");
}

/// SMS: Twilio's codes as documented — 21211 fails hard (nothing listed),
/// 21610 adds the number to the SMS denylist, 20429/429 and 5xx are retried
/// no sooner than Retry-After; segments are counted and logged.
#[test]
fn sms_errors_follow_twilio_codes_and_segments_are_counted() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    let mobile = |id: &str| recipients[id].mobile.clone().expect("a mobile");
    let (m1, m2, m7, m8) = (mobile("R1"), mobile("R2"), mobile("R7"), mobile("R8"));
    let mut per_number = HashMap::new();
    per_number.insert(
        m1.clone(),
        vec![SmsFault::new(400, 21211, "Invalid 'To' Phone Number")],
    );
    per_number.insert(
        m2.clone(),
        vec![SmsFault::new(
            400,
            21610,
            "Attempt to send to unsubscribed recipient",
        )],
    );
    per_number.insert(
        m7.clone(),
        vec![SmsFault {
            retry_after: Some(300),
            ..SmsFault::new(429, 20429, "Too Many Requests")
        }],
    );
    per_number.insert(
        m8.clone(),
        vec![SmsFault::new(503, 20500, "Internal error")],
    );
    s.rig.sms.inject(SmsFaults {
        per_number,
        every_nth: None,
    });
    let body = format!(
        "Hi {{{{ first_name }}}}, {}",
        "new arrivals are in. ".repeat(8)
    );
    let wf = write_workflow(
        &env,
        "sms",
        &format!(
            r#"name = "sms"
[activity.q]
type = "query"
config = {{ dimension = "recipient", filter = "id in ('R1', 'R2', 'R7', 'R8')" }}
next = {{ done = "text" }}

[activity.text]
type = "sms"
config = {{ account = "twilio", from = "+15550001111", body = "{body}" }}
"#
        ),
    );
    let run = start_workflow(&env, T0, &wf);
    let log = by_address(&env, run, "text");
    assert_eq!(log[&m1]["state"], "failed");
    assert!(log[&m1]["reason"].as_str().unwrap().contains("21211"));
    assert_eq!(log[&m2]["state"], "failed");
    assert!(log[&m2]["reason"].as_str().unwrap().contains("opted out"));
    assert_eq!(log[&m7]["state"], "retrying");
    assert_eq!(
        log[&m7]["next_at"],
        ms(5),
        "Retry-After 300 s beats the 1 min backoff"
    );
    assert_eq!(log[&m8]["state"], "retrying");
    assert_eq!(log[&m8]["next_at"], ms(1));
    for e in log.values() {
        assert_eq!(e["note"], "GSM-7, 2 segments", "{e}");
        assert_eq!(e["parts"], 2);
    }
    let lists = suppressed(&env);
    assert_eq!(lists.len(), 1, "21211 lists nothing: {lists:?}");
    assert_eq!(lists[&("sms".to_string(), m2.clone())]["kind"], "denylist");

    env.ok(&["--now", &at(1), "worker", "--once"]);
    let log = by_address(&env, run, "text");
    assert_eq!(log[&m8]["state"], "sent");
    assert_eq!(log[&m7]["state"], "retrying", "not before its Retry-After");
    env.ok(&["--now", &at(5), "worker", "--once"]);
    assert_eq!(by_address(&env, run, "text")[&m7]["state"], "sent");
    assert_eq!(env.status(run)["activities"]["text"]["state"], "done");
    let got: BTreeSet<String> = s.rig.sms.received().into_iter().map(|m| m.to).collect();
    assert_eq!(got, BTreeSet::from([m7.clone(), m8.clone()]));

    // An operator's stop list: all or nothing, every bad line reported.
    let stop = env.data().join("stop.txt");
    std::fs::write(
        &stop,
        format!("# from the call centre\n{m8}, asked by phone\n12345\n"),
    )
    .unwrap();
    let err = env.fails(&["denylist", "import", "sms", stop.to_str().unwrap()]);
    assert!(
        err.contains("stop.txt:3: ") && err.contains("nothing imported"),
        "{err}"
    );
    assert_eq!(suppressed(&env).len(), 1, "nothing imported");
    std::fs::write(
        &stop,
        format!("# from the call centre\n{m8}, asked by phone\n"),
    )
    .unwrap();
    env.ok(&["denylist", "import", "sms", stop.to_str().unwrap()]);
    let lists = suppressed(&env);
    assert_eq!(
        lists[&("sms".to_string(), m8.clone())]["reason"],
        "asked by phone"
    );

    // The next run leaves the opted-out and stop-listed numbers out, and a
    // dry run says what it would cost: segments per encoding.
    let run2 = start_workflow(&env, &at(10), &wf);
    let log = by_address(&env, run2, "text");
    assert_eq!(log[&m2]["state"], "excluded");
    assert!(
        log[&m2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("on the sms denylist")
    );
    let emoji = write_workflow(
        &env,
        "emoji",
        &std::fs::read_to_string(&wf)
            .unwrap()
            .replace("new arrivals are in. ", "🎉"),
    );
    let out = env.ok(&[
        "--now",
        T0,
        "run",
        emoji.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["activities"]["text"]["previews"][0];
    assert_eq!(p["would_send"], 2, "{p:#}");
    assert_eq!(p["parts"], 2, "{p:#}");
    assert_eq!(p["notes"]["UCS-2, 1 segment"], 2, "{p:#}");
    assert_eq!(p["reasons"]["on the sms denylist"], 2, "{p:#}");
}

/// Push: APNs 410 and 400 BadDeviceToken and FCM UNREGISTERED quarantine
/// the token; APNs 429/5xx and FCM QUOTA_EXCEEDED/UNAVAILABLE are retried no
/// sooner than Retry-After; the next run excludes quarantined tokens.
#[test]
fn push_tokens_are_quarantined_and_throttles_retried() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let subs = read_subscriptions(&root().join("tests/data/subscriptions.csv"));
    let ios: Vec<_> = subs
        .iter()
        .filter(|s| s.platform == "ios")
        .take(4)
        .collect();
    let android: Vec<_> = subs
        .iter()
        .filter(|s| s.platform == "android")
        .take(3)
        .collect();
    let fault = |status: u16, reason: &str, retry_after: Option<u32>| PushFault {
        retry_after,
        ..PushFault::new(status, reason)
    };
    let apns_faults = [
        fault(410, "Unregistered", None),
        fault(400, "BadDeviceToken", None),
        fault(429, "TooManyRequests", Some(300)),
        fault(503, "ServiceUnavailable", None),
    ];
    s.rig.apns.inject(PushFaults {
        per_token: ios
            .iter()
            .zip(&apns_faults)
            .map(|(s, f)| (s.token.clone(), vec![f.clone()]))
            .collect(),
        every_nth: None,
        ..PushFaults::default()
    });
    let fcm_faults = [
        fault(404, "UNREGISTERED", None),
        fault(429, "QUOTA_EXCEEDED", Some(600)),
        fault(503, "UNAVAILABLE", None),
    ];
    s.rig.fcm.inject(PushFaults {
        per_token: android
            .iter()
            .zip(&fcm_faults)
            .map(|(s, f)| (s.token.clone(), vec![f.clone()]))
            .collect(),
        every_nth: None,
        ..PushFaults::default()
    });
    let ids: Vec<String> = ios
        .iter()
        .chain(&android)
        .map(|s| format!("'{}'", s.id))
        .collect();
    let wf = write_workflow(
        &env,
        "push",
        &format!(
            r#"name = "push"
[activity.q]
type = "query"
config = {{ dimension = "subscription", filter = "id in ({})" }}
next = {{ done = "os" }}

[activity.os]
type = "split"
next = {{ ios = "ios", android = "android" }}
config = {{ subsets = [{{ name = "ios", filter = "platform = 'ios'" }}, {{ name = "android", filter = "platform = 'android'" }}] }}

[activity.ios]
type = "apns"
config = {{ account = "apns", topic = "com.acme.shop", title = "Hi", body = "News" }}

[activity.android]
type = "fcm"
config = {{ account = "fcm", title = "Hi", body = "News" }}
"#,
            ids.join(", ")
        ),
    );
    let run = start_workflow(&env, T0, &wf);
    let apns = by_address(&env, run, "ios");
    let fcm = by_address(&env, run, "android");
    let state = |log: &BTreeMap<String, serde_json::Value>, t: &str| log[t]["state"].clone();
    assert_eq!(state(&apns, &ios[0].token), "failed");
    assert!(
        apns[&ios[0].token]["reason"]
            .as_str()
            .unwrap()
            .contains("410 Unregistered")
    );
    assert_eq!(state(&apns, &ios[1].token), "failed");
    assert_eq!(apns[&ios[2].token]["next_at"], ms(5));
    assert_eq!(apns[&ios[3].token]["next_at"], ms(1));
    assert_eq!(state(&fcm, &android[0].token), "failed");
    assert_eq!(fcm[&android[1].token]["next_at"], ms(10));
    assert_eq!(fcm[&android[2].token]["next_at"], ms(1));

    let lists = suppressed(&env);
    let quarantined: BTreeSet<(String, String)> = lists
        .iter()
        .filter(|(_, v)| v["kind"] == "quarantine")
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        quarantined,
        BTreeSet::from([
            ("apns".to_string(), ios[0].token.clone()),
            ("apns".to_string(), ios[1].token.clone()),
            ("fcm".to_string(), android[0].token.clone()),
        ])
    );

    for (minute, expect_sent) in [(1, 2), (5, 3), (10, 4)] {
        env.ok(&["--now", &at(minute), "worker", "--once"]);
        let sent = s.rig.apns.received().len() + s.rig.fcm.received().len();
        assert_eq!(sent, expect_sent, "at +{minute} min");
    }
    let st = env.status(run);
    assert_eq!(st["activities"]["ios"]["state"], "done", "{st:#}");
    assert_eq!(st["activities"]["android"]["state"], "done", "{st:#}");

    let run2 = start_workflow(&env, &at(30), &wf);
    let apns = by_address(&env, run2, "ios");
    assert_eq!(state(&apns, &ios[0].token), "excluded");
    assert!(
        apns[&ios[0].token]["reason"]
            .as_str()
            .unwrap()
            .starts_with("quarantined on apns")
    );
    assert_eq!(state(&apns, &ios[2].token), "sent");
    let fcm = by_address(&env, run2, "android");
    assert_eq!(state(&fcm, &android[0].token), "excluded");
    assert_eq!(state(&fcm, &android[1].token), "sent");
}

/// Sets the rig's Twilio account again with `limits` (`--rate`,
/// `--concurrency`).
fn twilio_with(env: &Env, s: &Servers, limits: &[&str]) {
    let url = s.rig.sms.url();
    let mut args = vec![
        "account",
        "set",
        "twilio",
        "--url",
        &url,
        "--user",
        crosscast_test_servers::rig::ACCOUNT_SID,
        "--secret",
        "twilio-token",
        "--param",
        "allow_private=true",
    ];
    args.extend_from_slice(limits);
    env.ok(&args);
}

/// An account's rate and concurrency bound what reaches the provider.
#[test]
fn account_rate_and_concurrency_are_honoured() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    s.rig.sms.set_delay(std::time::Duration::from_millis(40));
    twilio_with(&env, &s, &["--rate", "25", "--concurrency", "2"]);
    let listed = env.ok(&["account", "list"]);
    let twilio = listed.lines().find(|l| l.starts_with("twilio")).unwrap();
    assert!(
        twilio.contains("rate=25/s concurrency=2"),
        "the limits are listed: {listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("fcm") && l.contains("rate=- concurrency=32")),
        "defaults are listed as such: {listed}"
    );
    let wf = write_workflow(
        &env,
        "sms",
        r#"name = "sms"
[activity.q]
type = "query"
config = { dimension = "recipient", filter = "mobile is not empty" }
next = { done = "text" }

[activity.text]
type = "sms"
config = { account = "twilio", from = "+15550001111", body = "Hi" }
"#,
    );
    let started = std::time::Instant::now();
    let run = start_workflow(&env, T0, &wf);
    let n = s.rig.sms.received().len();
    assert!(n > 30, "{n} messages");
    assert_eq!(
        env.status(run)["activities"]["text"]["deliveries"]["sent"],
        n
    );
    assert!(
        s.rig.sms.max_in_flight() <= 2,
        "{}",
        s.rig.sms.max_in_flight()
    );
    // Evenly spaced at 25/s: the last can leave no sooner than (n-1)/25 s
    // after the first slot, which comes after `started`.
    let last = *s.rig.sms.arrivals().last().unwrap();
    let floor = std::time::Duration::from_millis(40 * (n as u64 - 1));
    assert!(last - started >= floor, "{:?} < {floor:?}", last - started);
}

/// An account may allow more in flight than the default 32 (a provider far
/// away needs it): with slow answers, the server sees that many at once,
/// never more, and every message is sent.
#[test]
fn an_account_may_allow_more_in_flight_than_the_default() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    s.rig.sms.set_delay(std::time::Duration::from_millis(300));
    let err = env.fails(&[
        "account",
        "set",
        "big",
        "--url",
        "https://127.0.0.1:9",
        "--concurrency",
        "5000",
    ]);
    assert!(err.contains("5000"), "{err}");
    twilio_with(&env, &s, &["--concurrency", "48"]);
    let wf = text_every_mobile(&env, "twilio");
    let run = start_workflow(&env, T0, &wf);
    let n = s.rig.sms.received().len();
    assert!(n > 96, "{n} messages: at least two turns of every lane");
    assert_eq!(
        env.status(run)["activities"]["text"]["deliveries"]["sent"],
        n
    );
    let most = s.rig.sms.max_in_flight();
    assert!(most > 32 && most <= 48, "{most} in flight at once");
    let connections = s.rig.sms.connections();
    assert!(connections <= 48, "{connections} connections: one per lane");
}

/// SMS reaches a provider over HTTPS (HTTP/1.1 over TLS, trusting the
/// operator's CA), each connection carrying message after message: every
/// text arrives once, on no more connections than the account's
/// concurrency.
#[test]
fn sms_goes_over_https_on_kept_connections() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let api = s.start_sms_tls();
    env.ok(&[
        "account",
        "set",
        "twilio-tls",
        "--url",
        &api.tls_url(),
        "--user",
        crosscast_test_servers::rig::ACCOUNT_SID,
        "--secret",
        "twilio-token",
        "--concurrency",
        "4",
        "--param",
        "allow_private=true",
    ]);
    env.ok(&["plugin", "grant", "sms", "--account", "twilio-tls"]);
    let wf = text_every_mobile(&env, "twilio-tls");
    let run = start_workflow(&env, T0, &wf);
    let got = api.received();
    assert!(
        got.len() > 40,
        "{} messages: many per connection",
        got.len()
    );
    let numbers: BTreeSet<&str> = got.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(numbers.len(), got.len(), "none twice");
    assert_eq!(
        env.status(run)["activities"]["text"]["deliveries"]["sent"],
        got.len()
    );
    assert!(
        s.rig.sms.received().is_empty(),
        "nothing went to the plain-HTTP API"
    );
    let connections = api.connections();
    assert!(
        (1..=4).contains(&connections),
        "{connections} connections for 4 lanes"
    );
}

/// The reference workflow with 10% transient faults on every channel (and a
/// dropped SMTP connection now and then) ends with every message delivered:
/// none lost, none duplicated beyond retries of failed attempts.
#[test]
fn ten_percent_transient_faults_lose_nothing() {
    let s: Servers = servers_with(SinkOptions {
        faults: Faults {
            every_nth: Some((10, Reply::new(451, "4.7.1 slow down"))),
            drop_every_nth: Some(23),
            ..Faults::default()
        },
        ..SinkOptions::default()
    });
    s.rig.sms.inject(SmsFaults {
        per_number: HashMap::new(),
        every_nth: Some((10, SmsFault::new(503, 20500, "Internal error"))),
    });
    s.rig.apns.inject(PushFaults {
        per_token: HashMap::new(),
        every_nth: Some((10, PushFault::new(503, "ServiceUnavailable"))),
        ..PushFaults::default()
    });
    s.rig.fcm.inject(PushFaults {
        per_token: HashMap::new(),
        every_nth: Some((10, PushFault::new(503, "UNAVAILABLE"))),
        ..PushFaults::default()
    });
    let env = Env::new();
    setup(&env, &s);
    let run = start_workflow(&env, T0, &root().join("examples/cross-channel.toml"));
    // Move the clock a minute at a time, then across the week, until done.
    let mut minute = 0;
    for _ in 0..40 {
        let st = env.status(run);
        if st["state"] == "done" {
            break;
        }
        let week = 7 * 24 * 60;
        minute = if minute < week
            && st["activities"]["deliver_email"]["state"] == "done"
            && st["activities"]["deliver_sms"]["state"] == "done"
        {
            week
        } else {
            minute + 60
        };
        env.ok(&["--now", &at(minute), "worker", "--once"]);
    }
    let st = env.status(run);
    assert_eq!(st["state"], "done", "{st:#}");
    for activity in ["deliver_email", "deliver_sms", "push_ios", "push_android"] {
        let log = log_entries(&env, run, activity);
        assert!(!log.is_empty());
        for e in &log {
            assert_eq!(e["state"], "sent", "{activity}: {e}");
        }
        let retried = log
            .iter()
            .filter(|e| e["attempts"].as_u64() > Some(1))
            .count();
        assert!(retried > 0, "{activity}: the faults were hit");
    }
    // Every address accepted exactly once: a dropped connection is no
    // acceptance, and an accepted message is never sent again.
    let emails: BTreeSet<String> = log_entries(&env, run, "deliver_email")
        .iter()
        .map(|e| e["to"].as_str().unwrap().to_string())
        .collect();
    let got: BTreeSet<String> = s
        .rig
        .smtp
        .received()
        .iter()
        .map(|m| m.to[0].clone())
        .collect();
    assert_eq!(got, emails);
    assert_eq!(s.rig.smtp.received().len(), emails.len());
    let dropped = s
        .rig
        .smtp
        .attempts()
        .iter()
        .filter(|a| a.code.is_none())
        .count();
    assert!(dropped > 0, "connections were dropped");
    let sms: BTreeSet<String> = s.rig.sms.received().into_iter().map(|m| m.to).collect();
    assert_eq!(sms.len(), log_entries(&env, run, "deliver_sms").len());
    let pushes = s.rig.apns.received().len() + s.rig.fcm.received().len();
    assert_eq!(
        pushes,
        log_entries(&env, run, "push_ios").len() + log_entries(&env, run, "push_android").len()
    );
}

/// A channel built against the 0.1.0 contract (wit-bindgen alone, no SDK)
/// installs and delivers through the host's adapter; its verdicts keep
/// their 0.1.0 meaning (a 5xx is a failure, and it cannot quarantine).
#[test]
fn a_channel_built_against_0_1_0_still_delivers() {
    let s = servers_with(scripted(&[(
        "user5@example.com",
        Reply::new(550, "5.1.1 no such user"),
    )]));
    let env = Env::new();
    setup(&env, &s);
    let fixture = common::plugin_dir().join("crosscast_fixture_email_v1.wasm");
    let out = env.ok(&install(fixture.to_str().unwrap(), &["--account", "smtp"]));
    assert!(out.contains("legacy-mail"), "{out}");
    let wf = one_delivery(
        &env,
        "legacy",
        "id in ('R2', 'R5', 'R7')",
        "mail",
        "legacy-mail",
        "{}",
    );
    let run = start_workflow(&env, T0, &wf);
    let log = by_address(&env, run, "mail");
    assert_eq!(log["user2@example.com"]["state"], "sent");
    assert_eq!(log["user7@example.com"]["state"], "sent");
    assert_eq!(log["user5@example.com"]["state"], "failed");
    assert_eq!(log["user5@example.com"]["parts"], 1, "adapted: one part");
    assert!(
        suppressed(&env).is_empty(),
        "0.1.0 verdicts never quarantine"
    );
    let subjects: BTreeSet<String> = s
        .rig
        .smtp
        .received()
        .iter()
        .filter_map(|m| m.subject())
        .collect();
    assert_eq!(subjects, BTreeSet::from(["legacy".to_string()]));
}

/// The SMS server answers `number` with Twilio's 21610 (the recipient
/// replied STOP).
fn opted_out(s: &Servers, number: &str) {
    let mut per_number = HashMap::new();
    per_number.insert(
        number.to_string(),
        vec![SmsFault::new(
            400,
            21610,
            "Attempt to send to unsubscribed recipient",
        )],
    );
    s.rig.sms.inject(SmsFaults {
        per_number,
        every_nth: None,
    });
}

/// A channel's descriptor may name its suppression list (`textline`
/// declares `textline-optouts`): the opt-out its provider reports lands
/// there, and the next delivery excludes the address, by that list.
#[test]
fn a_channel_may_declare_its_suppression_list() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    let m2 = recipients["R2"].mobile.clone().expect("a mobile");
    opted_out(&s, &m2);
    let fixture = common::plugin_dir().join("crosscast_fixture_textline.wasm");
    env.ok(&install(
        fixture.to_str().unwrap(),
        &["--account", "twilio"],
    ));
    let wf = one_delivery(&env, "declared", "id = 'R2'", "text", "textline", "{}");
    let run = start_workflow(&env, T0, &wf);
    assert_eq!(by_address(&env, run, "text")[&m2]["state"], "failed");
    let lists = suppressed(&env);
    assert_eq!(
        lists[&("textline-optouts".to_string(), m2.clone())]["kind"],
        "denylist",
        "{lists:?}"
    );
    assert_eq!(lists.len(), 1, "on no other list: {lists:?}");
    let run = start_workflow(&env, &at(1), &wf);
    let entry = &by_address(&env, run, "text")[&m2];
    assert_eq!(entry["state"], "excluded");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("textline-optouts denylist"), "{reason}");
    assert_eq!(
        s.rig.sms.received().len(),
        0,
        "the provider refused the one send"
    );
}

/// A channel whose descriptor declares a suppression list under a name no
/// list may have (fixture `bad-list` declares `Opt Outs!`) is refused at
/// install with the name and the rule, even when the operator chooses a
/// valid list, and nothing of it is stored.
#[test]
fn a_channel_declaring_an_invalid_suppression_list_is_refused() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let before = env.ok(&["plugin", "list", "--json"]);
    let fixture = common::plugin_dir().join("crosscast_fixture_bad_list.wasm");
    let fixture = fixture.to_str().unwrap();
    for extra in [&[][..], &["--suppression-list", "sms"][..]] {
        let mut args = vec!["--account", "twilio"];
        args.extend_from_slice(extra);
        let err = env.fails(&install(fixture, &args));
        assert!(
            err.contains("channel `bad-list` declares a suppression list")
                && err.contains("`Opt Outs!` is not a list name"),
            "{extra:?}: {err}"
        );
    }
    assert_eq!(
        env.ok(&["plugin", "list", "--json"]),
        before,
        "nothing installed"
    );
    let wf = one_delivery(&env, "bad", "id = 'R2'", "text", "bad-list", "{}");
    let err = env.fails(&["validate", wf.to_str().unwrap()]);
    assert!(err.contains("bad-list"), "{err}");
    assert_eq!(s.rig.sms.received().len(), 0, "nothing sent");
}

/// A channel built against 0.2.0 (wit-bindgen alone, no SDK) still loads
/// and delivers through the host's adapter. Its descriptor names no answer
/// headers, so it gets every header the provider sent.
#[test]
fn a_channel_built_against_0_2_0_still_delivers_and_gets_every_header() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let fixture = common::plugin_dir().join("crosscast_fixture_sms_v2.wasm");
    let out = env.ok(&install(
        fixture.to_str().unwrap(),
        &["--account", "twilio"],
    ));
    assert!(out.contains("sms-v2"), "{out}");
    let wf = one_delivery(&env, "v2", "id in ('R1', 'R7')", "text", "sms-v2", "{}");
    let run = start_workflow(&env, T0, &wf);
    let log = by_address(&env, run, "text");
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    for id in ["R1", "R7"] {
        let mobile = recipients[id].mobile.clone().expect("a mobile");
        let entry = &log[&mobile];
        assert_eq!(entry["state"], "sent", "{entry}");
        let seen = entry["provider_id"].as_str().unwrap();
        for name in ["content-length", "content-type", "date"] {
            assert!(seen.contains(name), "{name} missing from {seen}");
        }
    }
    let got: BTreeSet<String> = s.rig.sms.received().into_iter().map(|m| m.body).collect();
    assert_eq!(got, BTreeSet::from(["v2".to_string()]));
}

/// A third party's SMS channel (`textline`) installed with
/// `--suppression-list sms` shares the SMS denylist both ways: a number the
/// operator denylisted for SMS is excluded from its sends, and the opt-out
/// its provider reports (21610) lands on the list the built-in SMS channel
/// reads. The choice survives a reinstall; bad list names, and the option on
/// an activity, are refused.
#[test]
fn a_third_party_sms_channel_can_share_the_sms_denylist() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    let mobile = |id: &str| recipients[id].mobile.clone().expect("a mobile");
    let (m1, m2, m7) = (mobile("R1"), mobile("R2"), mobile("R7"));
    opted_out(&s, &m2);
    env.ok(&["denylist", "add", "sms", &m1, "--reason", "replied STOP"]);

    let fixture = common::plugin_dir().join("crosscast_fixture_textline.wasm");
    let fixture = fixture.to_str().unwrap();
    let err = env.fails(&install(fixture, &["--suppression-list", "SMS list"]));
    assert!(err.contains("not a list name"), "{err}");
    let query = common::plugin_dir().join("crosscast_plugin_query.wasm");
    let err = env.fails(&install(
        query.to_str().unwrap(),
        &["--suppression-list", "sms"],
    ));
    assert!(err.contains("is for channels"), "{err}");
    // Refused before anything is stored: an activity not installed yet stays out.
    let misbehave = common::plugin_dir().join("crosscast_fixture_misbehave.wasm");
    let err = env.fails(&install(
        misbehave.to_str().unwrap(),
        &["--suppression-list", "sms"],
    ));
    assert!(err.contains("is for channels"), "{err}");
    assert!(!env.ok(&["plugin", "list"]).contains("misbehave"));
    let out = env.ok(&install(
        fixture,
        &["--account", "twilio", "--suppression-list", "sms"],
    ));
    assert!(
        out.contains("textline") && out.contains("suppression list `sms`"),
        "{out}"
    );
    // A new version (here the same bytes) keeps the operator's choice.
    env.ok(&["plugin", "install", fixture]);
    let plugins: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    let textline = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "textline")
        .expect("installed");
    assert_eq!(textline["suppression_list"], "sms");
    assert_eq!(textline["accounts"], serde_json::json!(["twilio"]));

    let wf = one_delivery(
        &env,
        "textline",
        "id in ('R1', 'R2', 'R7')",
        "text",
        "textline",
        "{}",
    );
    let run = start_workflow(&env, T0, &wf);
    let log = by_address(&env, run, "text");
    assert_eq!(log[&m1]["state"], "excluded");
    let reason = log[&m1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("sms denylist") && reason.contains("replied STOP"),
        "{reason}"
    );
    assert_eq!(log[&m2]["state"], "failed");
    assert_eq!(log[&m7]["state"], "sent");
    // It names `Content-Type` in its descriptor: of the provider's headers
    // (date, content-length...), only that one reached it.
    assert_eq!(log[&m7]["provider_id"], "headers: content-type");
    let got: BTreeSet<String> = s.rig.sms.received().into_iter().map(|m| m.to).collect();
    assert_eq!(
        got,
        BTreeSet::from([m7.clone()]),
        "nothing to the denylisted number"
    );
    let lists = suppressed(&env);
    assert_eq!(lists[&("sms".to_string(), m2.clone())]["kind"], "denylist");
    assert!(
        !lists.keys().any(|(list, _)| list == "textline"),
        "no list of its own: {lists:?}"
    );

    // The built-in SMS channel honours the opt-out textline's provider reported.
    let wf = one_delivery(
        &env,
        "sms",
        "id = 'R2'",
        "text",
        "sms",
        r#"{ account = "twilio", from = "+15550001111", body = "Hi" }"#,
    );
    let run = start_workflow(&env, &at(1), &wf);
    let log = by_address(&env, run, "text");
    assert_eq!(log[&m2]["state"], "excluded");
    assert!(
        log[&m2]["reason"]
            .as_str()
            .unwrap()
            .contains("sms denylist")
    );
    assert_eq!(s.rig.sms.received().len(), 1, "still only R7's text");
}

/// Email reaches relays over STARTTLS (required) and implicit TLS, trusting
/// the operator's CA, authenticates, and is DKIM-signed when the account
/// names a key: the signature verifies with the public key. A relay that
/// refuses the credentials fails the message without quarantining anyone.
#[test]
fn email_goes_over_tls_with_auth_and_dkim() {
    use crosscast_test_servers::Security;
    use crosscast_test_servers::dkim::{DkimKey, verify};
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let tls = s.rig.tls.server_config(&[]).unwrap();
    let auth = Some(("mailer".to_string(), "s3cret".to_string()));
    let starttls = s.start_sink(SinkOptions {
        security: Security::StartTls(tls.clone()),
        auth: auth.clone(),
        ..SinkOptions::default()
    });
    let implicit = s.start_sink(SinkOptions {
        security: Security::Implicit(tls),
        ..SinkOptions::default()
    });
    let key = DkimKey::generate().unwrap();
    let key_file = env.data().join("dkim.pem");
    std::fs::write(&key_file, &key.private_pem).unwrap();
    env.ok(&[
        "secret",
        "set",
        "dkim-key",
        "--from-file",
        key_file.to_str().unwrap(),
    ]);
    let pass = env.keys.path().join("relay-pass.txt");
    std::fs::write(&pass, "s3cret").unwrap();
    env.ok(&[
        "secret",
        "set",
        "relay-pass",
        "--from-file",
        pass.to_str().unwrap(),
    ]);
    let wrong = env.keys.path().join("wrong-pass.txt");
    std::fs::write(&wrong, "nope").unwrap();
    env.ok(&[
        "secret",
        "set",
        "wrong-pass",
        "--from-file",
        wrong.to_str().unwrap(),
    ]);
    let port = |sink: &crosscast_test_servers::SmtpSink| sink.addr.port().to_string();
    let starttls_url = format!("smtp://127.0.0.1:{}?tls=required", port(&starttls));
    let implicit_url = format!("smtps://127.0.0.1:{}", port(&implicit));
    // No TLS asked for: the relay refuses MAIL (530) in the pipelined
    // group, and nothing reaches it.
    let plain_url = format!("smtp://127.0.0.1:{}", port(&starttls));
    let accounts: [(&str, &str, &[&str]); 4] = [
        (
            "secure",
            &starttls_url,
            &[
                "--user",
                "mailer",
                "--secret",
                "relay-pass",
                "--param",
                "dkim_domain=acme.example",
                "--param",
                "dkim_selector=s2026",
                "--param",
                "dkim_key=dkim-key",
            ],
        ),
        ("wrapped", &implicit_url, &[]),
        (
            "badauth",
            &starttls_url,
            &["--user", "mailer", "--secret", "wrong-pass"],
        ),
        ("plaintext", &plain_url, &[]),
    ];
    for (name, url, extra) in accounts {
        let mut args = vec!["account", "set", name, "--url", url];
        args.extend_from_slice(&["--param", "allow_private=true"]);
        args.extend_from_slice(extra);
        env.ok(&args);
        env.ok(&["plugin", "grant", "email", "--account", name]);
    }
    let mut workflow = String::from("name = \"relays\"\n");
    for account in ["secure", "wrapped", "badauth", "plaintext"] {
        workflow.push_str(&format!(
            r#"
[activity.q_{account}]
type = "query"
config = {{ dimension = "recipient", filter = "id in ('R2', 'R5')" }}
next = {{ done = "mail_{account}" }}

[activity.mail_{account}]
type = "email"
config = {{ account = "{account}", from = "news@acme.example", subject = "Hi {{{{ first_name }}}}", text = "Hello  {{{{ first_name }}}}  \n\n", html = "<p>Hello</p>" }}
"#
        ));
    }
    let wf = write_workflow(&env, "relays", &workflow);
    // A relay refusing every message before it is sent (credentials, no
    // TLS) fails its activity, and so the run; the others are done.
    let (run, st) = start_failing_workflow(&env, T0, &wf);
    let states: BTreeMap<&str, &str> = st["activities"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(a, _)| a.starts_with("mail_"))
        .map(|(a, v)| (a.as_str(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("mail_badauth", "failed"),
            ("mail_plaintext", "failed"),
            ("mail_secure", "done"),
            ("mail_wrapped", "done"),
        ])
    );

    let got = starttls.received();
    assert_eq!(got.len(), 2, "both over STARTTLS, none in plain text");
    for m in &got {
        assert!(m.tls, "upgraded before MAIL");
        assert_eq!(m.user.as_deref(), Some("mailer"));
        let tags = verify(&m.data, &key.public).unwrap_or_else(|e| panic!("{e}\n{}", m.data));
        assert_eq!(tags["d"], "acme.example");
        assert_eq!(tags["s"], "s2026");
        // The verifier is not a rubber stamp: a changed subject or body fails.
        assert!(
            verify(
                &m.data.replacen("Subject: Hi", "Subject: Ho", 1),
                &key.public
            )
            .is_err()
        );
        assert!(
            verify(
                &m.data.replacen("<p>Hello</p>", "<p>Hallo</p>", 1),
                &key.public
            )
            .is_err()
        );
    }
    let wrapped = implicit.received();
    assert_eq!(wrapped.len(), 2);
    assert!(
        wrapped
            .iter()
            .all(|m| m.tls && m.header("DKIM-Signature").is_none())
    );

    let bad = log_entries(&env, run, "mail_badauth");
    assert_eq!(bad.len(), 2);
    for e in &bad {
        assert_eq!(e["state"], "failed", "{e}");
        assert!(e["reason"].as_str().unwrap().contains("535"), "{e}");
    }
    let plain = log_entries(&env, run, "mail_plaintext");
    assert_eq!(plain.len(), 2);
    for e in &plain {
        assert_eq!(e["state"], "failed", "{e}");
        assert!(e["reason"].as_str().unwrap().contains("530"), "{e}");
    }
    assert!(
        suppressed(&env).is_empty(),
        "a relay's refusal quarantines no one"
    );
    for a in ["mail_secure", "mail_wrapped"] {
        assert!(
            log_entries(&env, run, a)
                .iter()
                .all(|e| e["state"] == "sent")
        );
    }
}
