//! The reference workflow end to end: each step a separate `crosscast`
//! process on one data directory, messages received by loopback SMTP and SMS
//! servers, expectations computed from the input files alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Env, count, read_recipients, read_subscriptions, root};
use crosscast_test_servers::{SmsApi, SmtpSink};

const APP: &str = "com.acme.shop";
const T0: &str = "2026-01-05T09:00:00Z";
const T7_MINUS_1S: &str = "2026-01-12T08:59:59Z";
const T7: &str = "2026-01-12T09:00:00Z";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "e2e-auth-token";

/// What the input files say the run must do.
struct Expected {
    /// Selected subscriptions whose recipient has an email.
    email_subs: usize,
    /// Selected subscriptions whose recipient has a mobile and no email.
    sms_subs: usize,
    /// Addresses that get exactly one email.
    emails: BTreeMap<String, String>,
    /// Numbers that get exactly one SMS.
    mobiles: BTreeSet<String>,
    /// Selected subscriptions by platform.
    ios: usize,
    android: usize,
}

fn expected(last_match_wins: bool) -> Expected {
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    let subs = read_subscriptions(&root().join("tests/data/subscriptions.csv"));
    let mut e = Expected {
        email_subs: 0,
        sms_subs: 0,
        emails: BTreeMap::new(),
        mobiles: BTreeSet::new(),
        ios: 0,
        android: 0,
    };
    for s in &subs {
        let r = &recipients[&s.recipient];
        if s.app != APP || (r.email.is_none() && r.mobile.is_none()) {
            continue;
        }
        let to_email = if last_match_wins {
            r.mobile.is_none()
        } else {
            r.email.is_some()
        };
        if to_email {
            e.email_subs += 1;
            e.emails
                .insert(r.email.clone().expect("has email"), r.first_name.clone());
        } else {
            e.sms_subs += 1;
            e.mobiles.insert(r.mobile.clone().expect("has mobile"));
        }
        match s.platform.as_str() {
            "ios" => e.ios += 1,
            _ => e.android += 1,
        }
    }
    e
}

/// The data set exercises every case the workflow distinguishes.
#[test]
fn the_sample_covers_every_case() {
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    let subs = read_subscriptions(&root().join("tests/data/subscriptions.csv"));
    let kinds: BTreeSet<(bool, bool)> = recipients
        .values()
        .map(|r| (r.email.is_some(), r.mobile.is_some()))
        .collect();
    assert_eq!(kinds.len(), 4, "email only, mobile only, both, neither");
    let mut devices: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &subs {
        *devices.entry(s.recipient.as_str()).or_default() += 1;
    }
    assert!(
        recipients.keys().any(|r| !devices.contains_key(r.as_str())),
        "someone without a subscription"
    );
    assert!(
        devices.values().any(|n| *n >= 2),
        "someone with two devices"
    );
    assert!(subs.iter().any(|s| s.app != APP), "another app");
    assert!(
        subs.iter().any(|s| s.platform == "ios") && subs.iter().any(|s| s.platform == "android")
    );
    assert!(recipients.len() >= 200, "a few hundred recipients");
}

struct Servers {
    _rt: tokio::runtime::Runtime,
    smtp: SmtpSink,
    sms: SmsApi,
}

fn servers() -> Servers {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (smtp, sms) = rt.block_on(async {
        (
            SmtpSink::start().await.expect("smtp"),
            SmsApi::start(SID, TOKEN).await.expect("sms"),
        )
    });
    Servers { _rt: rt, smtp, sms }
}

/// Installs plugins, accounts and the audience, each step its own process.
fn setup(env: &Env, s: &Servers) {
    env.ok(&["init"]);
    env.ok(&["account", "set", "smtp", "--url", &s.smtp.url()]);
    env.ok(&["secret", "set", "twilio-token", "--value", TOKEN]);
    env.ok(&[
        "account",
        "set",
        "twilio",
        "--url",
        &s.sms.url(),
        "--user",
        SID,
        "--secret",
        "twilio-token",
    ]);
    env.ok(&["plugin", "grant", "email", "--account", "smtp"]);
    env.ok(&["plugin", "grant", "sms", "--account", "twilio"]);
    let r = env.ok(&[
        "import",
        "recipients",
        root().join("tests/data/recipients.csv").to_str().unwrap(),
    ]);
    assert!(r.contains("imported 300 recipients"), "{r}");
    let s = env.ok(&[
        "import",
        "subscriptions",
        root()
            .join("tests/data/subscriptions.csv")
            .to_str()
            .unwrap(),
    ]);
    assert!(s.contains("imported 305 subscriptions"), "{s}");
}

fn start_run(env: &Env, now: &str) -> u64 {
    let wf = root().join("examples/cross-channel.toml");
    let out = env.ok(&["--now", now, "run", wf.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("run prints JSON status");
    v["run"].as_u64().expect("run id")
}

#[test]
fn reference_workflow_end_to_end() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let want = expected(false);
    assert!(want.email_subs > 0 && want.sms_subs > 0 && want.ios > 0 && want.android > 0);

    let run = start_run(&env, T0);
    let st = env.status(run);
    assert_eq!(st["state"], "waiting", "{st:#}");
    assert_eq!(
        count(&st, "query", "done") as usize,
        want.email_subs + want.sms_subs
    );
    assert_eq!(
        count(&st, "split_channel", "email") as usize,
        want.email_subs
    );
    assert_eq!(count(&st, "split_channel", "sms") as usize, want.sms_subs);
    // A delivery's outgoing transition carries the population it received.
    assert_eq!(
        count(&st, "deliver_email", "done") as usize,
        want.email_subs
    );
    assert_eq!(count(&st, "deliver_sms", "done") as usize, want.sms_subs);
    assert_eq!(st["activities"]["wait"]["state"], "waiting");
    assert_eq!(st["activities"]["split_os"]["state"], "not_reached");

    // Exactly one email per distinct recipient, personalised.
    let mails = s.smtp.received();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mails {
        assert_eq!(m.to.len(), 1);
        *got.entry(m.to[0].clone()).or_default() += 1;
        let first = &want.emails[&m.to[0]];
        let subject = m.subject().expect("subject");
        assert!(
            subject.starts_with(first.as_str()),
            "subject `{subject}` for {first}"
        );
        assert!(
            m.header("Message-ID").is_some() && m.header("Date").is_some(),
            "{}",
            m.data
        );
        assert_eq!(m.from, "news@acme.example");
    }
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        want.emails.keys().cloned().collect::<BTreeSet<_>>()
    );
    assert!(
        got.values().all(|n| *n == 1),
        "two devices never mean two emails: {got:?}"
    );
    assert!(
        want.emails.len() < want.email_subs,
        "the data has recipients with two devices"
    );

    // Exactly one SMS per distinct recipient with a mobile and no email.
    let texts = s.sms.received();
    let numbers: Vec<String> = texts.iter().map(|t| t.to.clone()).collect();
    assert_eq!(
        numbers.iter().cloned().collect::<BTreeSet<_>>(),
        want.mobiles
    );
    assert_eq!(numbers.len(), want.mobiles.len(), "one SMS per recipient");
    assert!(
        texts
            .iter()
            .all(|t| t.from == "+15550001111" && t.body.starts_with("Hi "))
    );

    // The sha256 of each component that ran is the installed one.
    let plugins: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    for p in plugins.as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        for (id, a) in st["activities"].as_object().unwrap() {
            if a["type"] == name && a["state"] == "done" {
                assert_eq!(a["component_sha256"], p["sha256"], "{id}");
            }
        }
    }

    // One second before the wait ends, nothing moves.
    let out = env.ok(&["--now", T7_MINUS_1S, "worker", "--once"]);
    assert!(out.contains("0 timer(s) due, 0 task(s) executed"), "{out}");
    assert_eq!(
        env.status(run)["activities"]["split_os"]["state"],
        "not_reached"
    );

    // At T0 + 7 days the run reaches the OS split.
    let out = env.ok(&["--now", T7, "worker", "--once"]);
    assert!(
        out.contains("2 timer(s) due"),
        "one timer per arriving population: {out}"
    );
    let st = env.status(run);
    assert_eq!(st["state"], "done", "{st:#}");
    assert_eq!(
        count(&st, "wait", "done") as usize,
        want.email_subs + want.sms_subs
    );
    assert_eq!(count(&st, "split_os", "ios") as usize, want.ios);
    assert_eq!(count(&st, "split_os", "android") as usize, want.android);

    // A repeat does nothing, and nothing was sent twice.
    let out = env.ok(&["--now", T7, "worker", "--once"]);
    assert!(out.contains("0 timer(s) due, 0 task(s) executed"), "{out}");
    assert_eq!(env.status(run), st);
    assert_eq!(s.smtp.received().len(), want.emails.len());
    assert_eq!(s.sms.received().len(), want.mobiles.len());

    // The delivery log holds one sent entry per message with the provider's id.
    let log = env.ok(&["deliveries", &run.to_string(), "--json"]);
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), want.emails.len() + want.mobiles.len());
    assert!(
        entries
            .iter()
            .all(|e| e["state"] == "sent" && e["provider_id"].is_string()),
        "{log}"
    );
}

#[test]
fn swapping_the_split_plugin_changes_the_counts() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let fixture = common::plugin_dir().join("crosscast_fixture_split_last_match.wasm");
    let out = env.ok(&["plugin", "install", fixture.to_str().unwrap()]);
    assert!(out.contains("installed split 0.1.0-last-match"), "{out}");
    let run = start_run(&env, T0);
    let st = env.status(run);
    let builtin = expected(false);
    let swapped = expected(true);
    assert_ne!(
        builtin.email_subs, swapped.email_subs,
        "the data must tell the rules apart"
    );
    assert_eq!(
        count(&st, "split_channel", "email") as usize,
        swapped.email_subs
    );
    assert_eq!(
        count(&st, "split_channel", "sms") as usize,
        swapped.sms_subs
    );
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    let sha = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "split")
        .unwrap()["sha256"]
        .clone();
    assert_eq!(st["activities"]["split_channel"]["component_sha256"], sha);
    assert_eq!(s.sms.received().len(), swapped.mobiles.len());
}

/// Killing the process in the middle of a delivery loses nothing: the worker
/// resumes the task, sends what has no recorded outcome, and repeats at most
/// the wave that was in flight (64 messages).
#[test]
fn a_crash_mid_delivery_repeats_at_most_what_was_in_flight() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = crosscast_test_servers::SinkOptions {
        reply_delay: std::time::Duration::from_millis(150),
    };
    let (smtp, sms) = rt.block_on(async {
        (
            SmtpSink::start_with(options).await.unwrap(),
            SmsApi::start(SID, TOKEN).await.unwrap(),
        )
    });
    let s = Servers { _rt: rt, smtp, sms };
    let env = Env::new();
    setup(&env, &s);
    let want = expected(false);
    assert!(want.emails.len() > 64, "more than one wave of emails");

    let wf = root().join("examples/cross-channel.toml");
    let mut child = std::process::Command::new(common::bin())
        .arg("--data")
        .arg(env.data())
        .args(["--now", T0, "run", wf.to_str().unwrap()])
        .env("CROSSCAST_PLUGIN_DIR", common::plugin_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL: no cleanup) once the second wave is on the wire.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.smtp.received().len() < 70 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before_restart = s.smtp.received().len();
    assert!(
        before_restart >= 70,
        "the delivery was under way when killed"
    );

    let out = env.ok(&["--now", T0, "worker", "--once"]);
    assert!(out.contains("task(s) executed"), "{out}");
    let mails = s.smtp.received();
    let mut per_address: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mails {
        *per_address.entry(m.to[0].clone()).or_default() += 1;
    }
    // Nothing lost...
    assert_eq!(
        per_address.keys().cloned().collect::<BTreeSet<_>>(),
        want.emails.keys().cloned().collect()
    );
    // ...and what was repeated fits in one wave.
    let repeats: usize = per_address.values().map(|n| n - 1).sum();
    println!("killed after {before_restart} emails; {repeats} repeated after the restart");
    assert!(repeats <= 64, "{repeats} repeats");
    // The run goes on as if nothing happened.
    let st = env.status(1);
    assert_eq!(st["activities"]["deliver_email"]["state"], "done", "{st:#}");
    assert_eq!(st["activities"]["wait"]["state"], "waiting");
    assert_eq!(s.sms.received().len(), want.mobiles.len());
}
