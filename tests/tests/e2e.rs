//! The reference workflow end to end: each step a separate `crosscast`
//! process on one data directory, messages received by loopback SMTP and SMS
//! servers, expectations computed from the input files alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::rig::{
    WAVE, log_entries, servers, servers_with, setup, slow_newsletter, start_failing_workflow,
    start_workflow,
};
use common::{Env, count, read_recipients, read_subscriptions, root};
use crosscast_test_servers::SinkOptions;

const APP: &str = "com.acme.shop";
const T0: &str = "2026-01-05T09:00:00Z";
const T7_MINUS_1S: &str = "2026-01-12T08:59:59Z";
const T7: &str = "2026-01-12T09:00:00Z";

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
    /// Selected subscriptions by platform: device tokens.
    ios: Vec<String>,
    android: Vec<String>,
    /// Recipient first name by device token.
    names: BTreeMap<String, String>,
}

fn expected(last_match_wins: bool) -> Expected {
    expected_from(&root().join("tests/data"), last_match_wins)
}

/// What the audience files in `dir` say the run must do.
fn expected_from(dir: &Path, last_match_wins: bool) -> Expected {
    let recipients = read_recipients(&dir.join("recipients.csv"));
    let subs = read_subscriptions(&dir.join("subscriptions.csv"));
    let mut e = Expected {
        email_subs: 0,
        sms_subs: 0,
        emails: BTreeMap::new(),
        mobiles: BTreeSet::new(),
        ios: Vec::new(),
        android: Vec::new(),
        names: BTreeMap::new(),
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
        e.names.insert(s.token.clone(), r.first_name.clone());
        match s.platform.as_str() {
            "ios" => e.ios.push(s.token.clone()),
            _ => e.android.push(s.token.clone()),
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

/// The README's first command: `crosscast demo` runs the reference workflow
/// on the sample it writes, and its local servers receive what that sample
/// says (one email per recipient, pushes a week later per device).
#[test]
fn the_demo_delivers_what_its_sample_says() {
    let env = Env::new();
    let demo = std::process::Command::new(common::demo_bin())
        .args(["--recipients", "120", "--data"])
        .arg(env.data())
        .args(["--key-file", env.key_file().to_str().unwrap()])
        .env("CROSSCAST_PLUGIN_DIR", common::plugin_dir())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&demo.stdout).into_owned();
    assert!(
        demo.status.success(),
        "{out}
{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let want = expected_from(&env.data().join("sample"), false);
    assert!(want.email_subs > 0 && want.sms_subs > 0, "{out}");
    // "SMTP sink 127.0.0.1:PORT: 42 emails": the count before the last word.
    let received = |server: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("no `{server}` line in:\n{out}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        words[words.len() - 2].parse().expect("a count")
    };
    assert_eq!(received("SMTP sink"), want.emails.len(), "{out}");
    assert_eq!(received("SMS API"), want.mobiles.len(), "{out}");
    assert_eq!(received("APNs"), want.ios.len(), "{out}");
    assert_eq!(received("FCM"), want.android.len(), "{out}");

    // The run it points at is finished, every message sent, none failed.
    let inspect = out
        .lines()
        .find_map(|l| l.strip_prefix("Inspect it yourself: "))
        .expect("the demo names its run");
    let run: u64 = inspect
        .rsplit(' ')
        .next()
        .and_then(|r| r.parse().ok())
        .expect("a run id");
    let st = env.status(run);
    assert_eq!(st["state"], "done", "{st:#}");
    for (activity, sent) in [
        ("deliver_email", want.emails.len()),
        ("deliver_sms", want.mobiles.len()),
        ("push_ios", want.ios.len()),
        ("push_android", want.android.len()),
    ] {
        let d = &st["activities"][activity]["deliveries"];
        assert_eq!(d["sent"].as_u64(), Some(sent as u64), "{activity}: {d}");
        assert_eq!(d["failed"].as_u64(), Some(0), "{activity}: {d}");
    }
}

fn start_run(env: &Env, now: &str) -> u64 {
    start_workflow(env, now, &root().join("examples/cross-channel.toml"))
}

#[test]
fn reference_workflow_end_to_end() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let want = expected(false);
    assert!(
        want.email_subs > 0
            && want.sms_subs > 0
            && !want.ios.is_empty()
            && !want.android.is_empty()
    );

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
    // The run as a graph, its counts what the input files say.
    let graph = env.ok(&["graph", &run.to_string()]);
    let (q, emails, mobiles) = (
        want.email_subs + want.sms_subs,
        want.emails.len(),
        want.mobiles.len(),
    );
    let lines = [
        format!("run {run}: cross-channel, waiting"),
        "query [query] done".to_string(),
        format!("└─ done {q} → split_channel [split] done"),
        format!(
            "   ├─ email {} → deliver_email [email] done (sent {emails})",
            want.email_subs
        ),
        format!(
            "   │  └─ done {} → wait [wait] waiting until {T7}",
            want.email_subs
        ),
        "   │     └─ done → split_os [split] not reached".to_string(),
        "   │        ├─ ios → push_ios [apns] not reached".to_string(),
        "   │        └─ android → push_android [fcm] not reached".to_string(),
        format!(
            "   └─ sms {} → deliver_sms [sms] done (sent {mobiles})",
            want.sms_subs
        ),
        format!("      └─ done {} → wait (see above)", want.sms_subs),
    ];
    assert_eq!(graph, lines.join("\n") + "\n");
    let email_log = &st["activities"]["deliver_email"]["deliveries"];
    assert_eq!(
        email_log["sent"].as_u64(),
        Some(want.emails.len() as u64),
        "{email_log}"
    );
    assert_eq!(
        st["activities"]["deliver_sms"]["deliveries"]["sent"].as_u64(),
        Some(want.mobiles.len() as u64)
    );

    // Exactly one email per distinct recipient, personalised.
    let mails = s.rig.smtp.received();
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
    // Pooled connections carry several messages each: the sink's queue ids
    // name the connection (C<n>M<m>). (lettre returns a connection to its
    // pool asynchronously, so a few more than the 32 in flight get opened.)
    let connections: BTreeSet<&str> = mails
        .iter()
        .filter_map(|m| m.queue_id.split('M').next())
        .collect();
    assert!(
        connections.len() < mails.len(),
        "{} connections for {} emails",
        connections.len(),
        mails.len()
    );
    // The sink offers PIPELINING: every transaction's MAIL, RCPT and DATA
    // came in one write.
    assert!(
        mails.iter().all(|m| m.pipelined),
        "{} of {} emails pipelined",
        mails.iter().filter(|m| m.pipelined).count(),
        mails.len()
    );

    // Exactly one SMS per distinct recipient with a mobile and no email.
    let texts = s.rig.sms.received();
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
    assert_eq!(count(&st, "split_os", "ios") as usize, want.ios.len());
    assert_eq!(
        count(&st, "split_os", "android") as usize,
        want.android.len()
    );

    // Each iOS device got exactly one APNs push and each Android device one
    // FCM push, personalised through the subscription's recipient.
    let mut ios: Vec<String> = s
        .rig
        .apns
        .received()
        .iter()
        .map(|p| p.token.clone())
        .collect();
    ios.sort();
    let mut want_ios = want.ios.clone();
    want_ios.sort();
    assert_eq!(ios, want_ios);
    for p in s.rig.apns.received() {
        let title = p.payload["aps"]["alert"]["title"].as_str().unwrap();
        assert!(title.starts_with(&want.names[&p.token]), "{title}");
        let header = |n: &str| {
            p.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("apns-topic").as_deref(), Some("com.acme.shop"));
        assert_eq!(header("apns-push-type").as_deref(), Some("alert"));
        assert_eq!(header("apns-priority").as_deref(), Some("10"));
        // Expiration: one day after the run's clock at send time (T0 + 7 days).
        assert_eq!(header("apns-expiration").as_deref(), Some("1768294800"));
    }
    let mut android: Vec<String> = s
        .rig
        .fcm
        .received()
        .iter()
        .map(|p| p.token.clone())
        .collect();
    android.sort();
    let mut want_android = want.android.clone();
    want_android.sort();
    assert_eq!(android, want_android);
    for p in s.rig.fcm.received() {
        let title = p.payload["message"]["notification"]["title"]
            .as_str()
            .unwrap();
        assert!(title.starts_with(&want.names[&p.token]), "{title}");
        assert_eq!(p.payload["message"]["android"]["priority"], "high");
    }
    assert_eq!(
        s.rig.fcm.tokens_issued(),
        1,
        "one access token, reused for every push"
    );
    assert_eq!(
        st["activities"]["push_ios"]["deliveries"]["sent"].as_u64(),
        Some(want.ios.len() as u64)
    );
    assert_eq!(
        st["activities"]["push_android"]["deliveries"]["sent"].as_u64(),
        Some(want.android.len() as u64)
    );

    // As a picture: every activity, and the counts the servers saw.
    let svg = env.ok(&["graph", &run.to_string(), "--format", "svg"]);
    assert!(svg.contains("<svg"), "{svg}");
    for text in [
        format!("sent {}", want.ios.len()),
        format!("sent {}", want.android.len()),
        format!("ios {}", want.ios.len()),
        format!("android {}", want.android.len()),
    ] {
        assert!(svg.contains(&text), "{text} in {svg}");
    }
    let dot = env.ok(&["graph", &run.to_string(), "--format", "dot"]);
    assert!(
        dot.contains(&format!(
            "\"split_os\" -> \"push_ios\" [label=\"ios {}\"];",
            want.ios.len()
        )),
        "{dot}"
    );
    // The workflow alone: its shape, no counts.
    let plain = env.ok(&[
        "graph",
        root().join("examples/cross-channel.toml").to_str().unwrap(),
    ]);
    assert!(
        plain.starts_with("cross-channel\nquery [query]\n└─ done → split_channel [split]\n"),
        "{plain}"
    );

    // A repeat does nothing, and nothing was sent twice.
    let out = env.ok(&["--now", T7, "worker", "--once"]);
    assert!(out.contains("0 timer(s) due, 0 task(s) executed"), "{out}");
    assert_eq!(env.status(run), st);
    assert_eq!(s.rig.smtp.received().len(), want.emails.len());
    assert_eq!(s.rig.sms.received().len(), want.mobiles.len());
    assert_eq!(s.rig.apns.received().len(), want.ios.len());
    assert_eq!(s.rig.fcm.received().len(), want.android.len());

    // Another run in another process reuses the cached FCM access token.
    start_workflow(&env, T7, &root().join("tests/scenarios/push-only.toml"));
    assert!(s.rig.fcm.received().len() > want.android.len());
    assert_eq!(
        s.rig.fcm.tokens_issued(),
        1,
        "the token is cached across processes"
    );

    // The delivery log holds one sent entry per message with the provider's id.
    let log = env.ok(&["deliveries", &run.to_string(), "--json"]);
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        want.emails.len() + want.mobiles.len() + want.ios.len() + want.android.len()
    );
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
    assert_eq!(s.rig.sms.received().len(), swapped.mobiles.len());
}

/// Killing the process in the middle of a delivery loses nothing: the worker
/// resumes the task, sends what has no recorded outcome, and repeats at most
/// what was sent without a recorded outcome (the WAVE slots). The relay
/// records each message at its final dot and answers 150 ms later, so the
/// kill always leaves messages it has but the host has no answer for:
/// those are sent again, with the Message-ID they had, so the relay or the
/// mailbox can drop the repeat.
#[test]
fn a_crash_mid_delivery_repeats_at_most_what_was_in_flight() {
    let (s, env, wf, want) = slow_newsletter();
    let mut child = env
        .command(&["--now", T0, "run", wf.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL: no cleanup) once the second wave is on the wire.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.rig.smtp.received().len() < WAVE + 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before_restart = s.rig.smtp.received().len();
    assert!(
        before_restart >= WAVE + 6 && before_restart < want.len(),
        "the delivery was under way when killed ({before_restart} of {})",
        want.len()
    );

    let out = env.ok(&["--now", T0, "worker", "--once"]);
    assert!(out.contains("task(s) executed"), "{out}");
    let mails = s.rig.smtp.received();
    let mut per_address: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &mails {
        let id = m.header("Message-ID").expect("a Message-ID");
        per_address.entry(m.to[0].clone()).or_default().push(id);
    }
    // Nothing lost...
    assert_eq!(per_address.keys().cloned().collect::<BTreeSet<_>>(), want);
    // ...what was repeated fits in one wave...
    let repeats: usize = per_address.values().map(|ids| ids.len() - 1).sum();
    println!("killed after {before_restart} emails; {repeats} repeated after the restart");
    assert!(repeats <= WAVE, "{repeats} repeats");
    assert!(repeats >= 1, "the kill left messages in flight");
    // ...and a repeat is the same message to the relay: same Message-ID.
    for (address, ids) in per_address.iter().filter(|(_, ids)| ids.len() > 1) {
        assert!(ids.iter().all(|id| *id == ids[0]), "{address}: {ids:?}");
    }
    let distinct: BTreeSet<&String> = per_address.values().map(|ids| &ids[0]).collect();
    assert_eq!(distinct.len(), want.len(), "one Message-ID per recipient");
    // The run ends as if nothing happened.
    let st = env.status(1);
    assert_eq!(st["activities"]["deliver_email"]["state"], "done", "{st:#}");
    let log = &st["activities"]["deliver_email"]["deliveries"];
    assert_eq!(log["sent"].as_u64(), Some(want.len() as u64), "{log}");
    assert_eq!(log["in_flight"].as_u64(), Some(0), "{log}");
}

/// A wrong signing key fails the APNs delivery with Apple's reason in the
/// log; an unknown CA fails the FCM delivery with the TLS reason; nothing
/// reaches the servers.
#[test]
fn wrong_credentials_and_unknown_ca_fail_with_the_reason() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    // push-only.toml takes every subscription of the app.
    let subs = read_subscriptions(&root().join("tests/data/subscriptions.csv"));
    let of = |platform: &str| {
        subs.iter()
            .filter(|s| s.app == APP && s.platform == platform)
            .count()
    };
    let (want_ios, want_android) = (of("ios"), of("android"));
    // Replace the APNs key with another one: same team and key id, wrong key.
    let other = crosscast_test_servers::keys::ApnsKey::generate().unwrap();
    let p8 = env.data().join("other.p8");
    std::fs::write(&p8, other.p8).unwrap();
    env.ok(&[
        "secret",
        "set",
        "apns-key",
        "--from-file",
        p8.to_str().unwrap(),
    ]);

    let run = start_workflow(&env, T0, &root().join("tests/scenarios/push-only.toml"));
    assert!(s.rig.apns.received().is_empty());
    let ios = log_entries(&env, run, "push_ios");
    assert_eq!(ios.len(), want_ios);
    let failed: Vec<&serde_json::Value> = ios.iter().filter(|e| e["state"] == "failed").collect();
    assert_eq!(failed.len(), want_ios, "{ios:#?}");
    assert!(
        failed
            .iter()
            .all(|e| e["reason"] == "403 InvalidProviderToken" && e["permanent"] == true),
        "{failed:#?}"
    );
    // FCM still works with the right credentials.
    assert_eq!(s.rig.fcm.received().len(), want_android);

    // Without the test CA, the TLS handshake fails and says why.
    let env2 = Env::new();
    setup(&env2, &s);
    let untrusted = crosscast_test_servers::TestTls::new().unwrap();
    let ca = env2.data().join("other-ca.pem");
    std::fs::write(&ca, &untrusted.ca_pem).unwrap();
    // Same name, other certificate: the server's CA is no longer trusted.
    env2.ok(&["ca", "add", "test-ca", ca.to_str().unwrap()]);
    let before = s.rig.fcm.received().len();
    // Every push refused before it left: both deliveries fail, and the run.
    let (run, st) =
        start_failing_workflow(&env2, T0, &root().join("tests/scenarios/push-only.toml"));
    assert_eq!(st["activities"]["push_ios"]["state"], "failed");
    assert_eq!(st["activities"]["push_android"]["state"], "failed");
    let android = log_entries(&env2, run, "push_android");
    let failed: Vec<&serde_json::Value> =
        android.iter().filter(|e| e["state"] == "failed").collect();
    assert_eq!(failed.len(), want_android, "{android:#?}");
    // At once and for good, naming the host and the fix.
    for e in &failed {
        assert_eq!(
            (&e["cause"], &e["permanent"]),
            (&"certificate".into(), &true.into()),
            "{e}"
        );
        let reason = e["reason"].as_str().unwrap();
        let host = s.rig.fcm.addr.to_string();
        assert!(
            reason.contains("credentials")
                && reason.contains(&format!("certificate of {host} is not trusted"))
                && reason.contains("crosscast ca add"),
            "{reason}"
        );
    }
    assert_eq!(s.rig.fcm.received().len(), before, "nothing reached FCM");
    // APNs' own connection meets the same untrusted certificate.
    let ios = log_entries(&env2, run, "push_ios");
    assert_eq!(ios.len(), want_ios);
    for e in &ios {
        assert_eq!(
            (&e["state"], &e["cause"]),
            (&"failed".into(), &"certificate".into()),
            "{e}"
        );
        let host = s.rig.apns.addr.to_string();
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains(&format!("certificate of {host}")),
            "{e}"
        );
    }
}

/// An account's host name is checked again on the address it resolves to: a
/// name resolving to an internal address is denied unless the operator
/// allowed it on that account.
#[test]
fn egress_is_checked_on_the_resolved_address() {
    use crosscast_test_servers::rig::{KEY_ID, TEAM_ID};
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let by_name = format!("https://localhost:{}", s.rig.apns.addr.port());
    let team = format!("team_id={TEAM_ID}");
    let key = format!("key_id={KEY_ID}");
    let mut account = vec![
        "account", "set", "apns", "--url", &by_name, "--secret", "apns-key", "--auth", "apns",
    ];
    account.extend(["--param", &team, "--param", &key]);
    env.ok(&account);
    let workflow = root().join("tests/scenarios/push-only.toml");
    // Every push refused before it left: the delivery fails, and the run.
    let (run, st) = start_failing_workflow(&env, T0, &workflow);
    assert_eq!(st["activities"]["push_ios"]["state"], "failed");
    assert_eq!(st["activities"]["push_android"]["state"], "done");
    let ios = log_entries(&env, run, "push_ios");
    assert!(!ios.is_empty());
    for e in &ios {
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(
            e["state"] == "failed" && reason.contains("egress denied: localhost resolved to"),
            "{e}"
        );
    }
    assert!(s.rig.apns.received().is_empty(), "nothing left the host");

    account.extend(["--param", "allow_private=true"]);
    env.ok(&account);
    let run = start_workflow(&env, T0, &workflow);
    let ios = log_entries(&env, run, "push_ios");
    assert!(ios.iter().all(|e| e["state"] == "sent"), "{ios:#?}");
    assert_eq!(s.rig.apns.received().len(), ios.len());
}

/// An APNs payload over 4096 bytes never leaves: it is excluded with the size.
#[test]
fn oversized_apns_payloads_are_refused_before_sending() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let text = std::fs::read_to_string(root().join("tests/scenarios/push-only.toml")).unwrap();
    let big = "x".repeat(4200);
    let text = text.replace(
        r#"body = "New arrivals" }"#,
        &format!(r#"body = "{big}" }}"#),
    );
    assert!(text.contains(&big));
    let wf = env.data().join("big.toml");
    std::fs::write(&wf, text).unwrap();
    let run = start_workflow(&env, T0, &wf);
    let ios = log_entries(&env, run, "push_ios");
    assert!(!ios.is_empty());
    for e in &ios {
        assert_eq!(e["state"], "excluded", "{e}");
        assert!(
            e["reason"].as_str().unwrap().contains("APNs allows 4096"),
            "{e}"
        );
    }
    assert!(s.rig.apns.received().is_empty());
}

/// A dry run evaluates the whole graph, crossing the week's wait on the run's
/// clock, and sends nothing: counts on every transition match what the input
/// files say, each delivery previews its messages, and no server hears a word.
#[test]
fn dry_run_counts_every_transition_and_sends_nothing() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let want = expected(false);
    let wf = root().join("examples/cross-channel.toml");
    let out = env.ok(&[
        "--now",
        T0,
        "run",
        wf.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    let st: serde_json::Value = serde_json::from_str(&out).expect("JSON status");
    assert_eq!(st["dry_run"], true);
    assert_eq!(st["state"], "done", "the wait was crossed: {st:#}");
    assert_eq!(
        count(&st, "query", "done") as usize,
        want.email_subs + want.sms_subs
    );
    assert_eq!(
        count(&st, "split_channel", "email") as usize,
        want.email_subs
    );
    assert_eq!(count(&st, "split_channel", "sms") as usize, want.sms_subs);
    assert_eq!(
        count(&st, "wait", "done") as usize,
        want.email_subs + want.sms_subs
    );
    assert_eq!(count(&st, "split_os", "ios") as usize, want.ios.len());
    assert_eq!(
        count(&st, "split_os", "android") as usize,
        want.android.len()
    );

    let preview = |activity: &str| st["activities"][activity]["previews"][0].clone();
    // Each arriving population is previewed on its own (the wait received
    // two, the email and the SMS populations): sum over them.
    let would_send = |activity: &str| -> usize {
        st["activities"][activity]["previews"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["would_send"].as_u64().unwrap() as usize)
            .sum()
    };
    let email = preview("deliver_email");
    assert_eq!(would_send("deliver_email"), want.emails.len());
    let to = email["sample"]["to"].as_str().unwrap();
    let first_name = &want.emails[to];
    assert!(
        email["sample"]["subject"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{first_name}, ")),
        "the sample is rendered for its recipient: {email:#}"
    );
    assert_eq!(would_send("deliver_sms"), want.mobiles.len());
    assert_eq!(would_send("push_ios"), want.ios.len());
    assert_eq!(would_send("push_android"), want.android.len());
    let ios = preview("push_ios");
    assert!(
        want.ios
            .contains(&ios["sample"]["recipient"].as_str().unwrap().to_string())
    );
    // The push expires a day after the dry run's clock crossed the wait.
    let expiration = ios["sample"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "apns-expiration")
        .map(|h| h[1].as_str().unwrap().parse::<i64>().unwrap())
        .unwrap();
    let t7 = chrono::DateTime::parse_from_rfc3339(T7)
        .unwrap()
        .timestamp();
    assert_eq!(expiration, t7 + 86_400);

    // Nothing left the host, not even a token request; no delivery was logged.
    assert!(s.rig.smtp.received().is_empty());
    assert!(s.rig.sms.received().is_empty());
    assert!(s.rig.apns.received().is_empty());
    assert!(s.rig.fcm.received().is_empty());
    assert_eq!(s.rig.fcm.tokens_issued(), 0);
    // Dry runs are numbered apart, and use up no run number.
    assert_eq!((&st["id"], &st["run"]), (&"dry-1".into(), &1.into()));
    assert_eq!(env.ok(&["deliveries", "dry-1", "--json"]).trim(), "");

    // The people's view: the table and a rendered sample.
    let text = env.ok(&["--now", T0, "run", wf.to_str().unwrap(), "--dry-run"]);
    assert!(text.starts_with("run dry-2: "), "{text}");
    assert!(text.contains("sample email to "), "{text}");
    assert!(
        text.contains(&format!("would send {} of", want.emails.len())),
        "{text}"
    );
}

/// Transient SMTP failures (4xx) are retried with backoff on persisted
/// timers — each attempt here is a separate `worker --once` process, so the
/// retries survive restarts — until the validity period ends; a 5xx fails at
/// once. Every attempt and its reply is checked against the sink's record.
#[test]
fn transient_failures_are_retried_durably_until_the_validity_ends() {
    use crosscast_test_servers::{Faults, Reply};
    let soft = Reply::new(451, "4.3.0 try again later");
    let mut per_address = std::collections::HashMap::new();
    per_address.insert("user2@example.com".to_string(), vec![soft.clone(); 2]);
    per_address.insert(
        "user5@example.com".to_string(),
        vec![Reply::new(550, "5.1.1 no such user")],
    );
    per_address.insert("user6@example.com".to_string(), vec![soft.clone(); 100]);
    let s = servers_with(SinkOptions {
        faults: Faults {
            per_address,
            ..Faults::default()
        },
        ..SinkOptions::default()
    });
    let env = Env::new();
    setup(&env, &s);
    let wf = env.data().join("retry.toml");
    std::fs::write(
        &wf,
        r#"name = "retry"
[activity.q]
type = "query"
config = { dimension = "recipient", filter = "id in ('R2', 'R5', 'R6')" }
next = { done = "mail" }

[activity.mail]
type = "email"
validity = "10m"
config = { from = "news@acme.example", subject = "Hi {{ first_name }}", text = "Hello" }
"#,
    )
    .unwrap();
    let t = |m: i64| {
        (chrono::DateTime::parse_from_rfc3339(T0).unwrap() + chrono::Duration::minutes(m))
            .to_rfc3339()
    };
    let run = start_workflow(&env, T0, &wf);
    let states = |env: &Env| -> BTreeMap<String, String> {
        env.ok(&["deliveries", &run.to_string(), "--json"])
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["to"].as_str().unwrap().to_string(),
                    v["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let st = env.status(run);
    assert_eq!(st["activities"]["mail"]["state"], "waiting", "{st:#}");
    assert_eq!(
        st["activities"]["mail"]["waiting_until"],
        t(1).replace("+00:00", "Z")
    );
    let first = states(&env);
    assert_eq!(first["user2@example.com"], "retrying");
    assert_eq!(first["user5@example.com"], "failed");
    assert_eq!(first["user6@example.com"], "retrying");

    // Not yet due: nothing is sent.
    env.ok(&["--now", &t(0), "worker", "--once"]);
    assert_eq!(s.rig.smtp.attempts().len(), 3);
    // +1 min: second attempts (451 again); next in 2 min.
    env.ok(&["--now", &t(1), "worker", "--once"]);
    // +3 min: user2's script is over, it goes through; user6 fails a third time.
    env.ok(&["--now", &t(3), "worker", "--once"]);
    assert_eq!(states(&env)["user2@example.com"], "sent");
    // +7 min: user6's fourth failure; the next attempt (+8 min) would be past
    // the 10 min validity: it fails for good, with the reason.
    env.ok(&["--now", &t(7), "worker", "--once"]);
    let last = states(&env);
    assert_eq!(last["user6@example.com"], "failed");
    let st = env.status(run);
    assert_eq!(st["activities"]["mail"]["state"], "done", "{st:#}");
    let log = &st["activities"]["mail"]["deliveries"];
    assert_eq!(
        (log["sent"].as_u64(), log["failed"].as_u64()),
        (Some(1), Some(2))
    );
    let lines = env.ok(&["deliveries", &run.to_string()]);
    assert!(lines.contains("gave up after 4 attempt(s)"), "{lines}");

    let per: BTreeMap<String, Vec<Option<u16>>> =
        s.rig
            .smtp
            .attempts()
            .into_iter()
            .fold(BTreeMap::new(), |mut m, a| {
                m.entry(a.to[0].clone()).or_default().push(a.code);
                m
            });
    assert_eq!(per["user2@example.com"], [Some(451), Some(451), Some(250)]);
    assert_eq!(per["user5@example.com"], [Some(550)]);
    assert_eq!(per["user6@example.com"], [Some(451); 4]);
    assert_eq!(s.rig.smtp.received().len(), 1);
}

/// The shipped `crosscast` links no test server: the demo is a binary of
/// its own, and `cargo tree` of the host's normal dependencies names none
/// of the test servers' crates.
#[test]
fn the_shipped_binary_links_no_test_server() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "-p",
            "crosscast",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tree.contains("wasmtime"),
        "{tree}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for test_only in ["crosscast-test-servers", "rcgen", "mail-parser"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{test_only} "))),
            "{test_only} is linked into crosscast"
        );
    }
    let help = Env::new().ok(&["--help"]);
    assert!(!help.contains("demo"), "{help}");
}

/// HTTP goes through hyper's client: the host depends on no protocol crate
/// it would have to drive itself (`httparse`, `h2`), and on no fork.
#[test]
fn the_host_speaks_http_through_hyper_only() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "-p",
            "crosscast",
            "-e",
            "normal",
            "--depth",
            "1",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .unwrap();
    let direct = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = direct
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(out.status.success() && names.contains(&"hyper"), "{direct}");
    for private in ["httparse", "h2"] {
        assert!(
            !names.contains(&private),
            "{private} is a direct dependency"
        );
    }
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(!manifest.contains("[patch"), "a patched crate");
    assert!(!root().join("vendor").exists(), "vendored crates");
}
