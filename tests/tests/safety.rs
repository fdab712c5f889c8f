//! Delivery safety: what the host does not let through, whatever a channel
//! plugin builds or a provider does. Messages go only to each record's
//! stored address, after its suppression check; headers cannot inject a
//! line; SMTP follows the egress policy and every step of it is bounded in
//! time; an email keeps its Message-ID across retries; token endpoints
//! that are down are retried; every failure carries a typed cause.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::rig::{
    Servers, log_entries, servers, servers_with, setup, start_failing_workflow, start_workflow,
};
use common::{Env, read_recipients, root};
use crosscast_test_servers::{Faults, Reply, SinkOptions, Stall};

const T0: &str = "2026-01-05T09:00:00Z";

/// `T0` plus `minutes`, RFC 3339.
fn at(minutes: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339(T0).unwrap() + chrono::Duration::minutes(minutes))
        .to_rfc3339()
}

/// A workflow: the recipients matching `filter`, delivered by activity
/// `send` of type `channel` with `config` (inline TOML).
fn one_delivery(
    env: &Env,
    name: &str,
    filter: &str,
    channel: &str,
    config: &str,
) -> std::path::PathBuf {
    let p = env.data().join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\n[activity.q]\ntype = \"query\"\nconfig = {{ dimension = \"recipient\", filter = \"{filter}\" }}\nnext = {{ done = \"send\" }}\n\n[activity.send]\ntype = \"{channel}\"\nconfig = {config}\n"
        ),
    )
    .unwrap();
    p
}

/// The sample's recipients with an email, by id: (id, email, mobile).
fn with_email() -> Vec<(String, String, Option<String>)> {
    read_recipients(&root().join("tests/data/recipients.csv"))
        .into_iter()
        .filter_map(|(id, r)| Some((id, r.email?, r.mobile)))
        .collect()
}

fn assert_refused(entries: &[serde_json::Value], cause: &str, says: &str) {
    assert!(!entries.is_empty());
    for e in entries {
        assert_eq!(e["state"], "failed", "{e}");
        assert_eq!(e["cause"], cause, "{e}");
        assert_eq!(e["permanent"], true, "{e}");
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.contains(says), "{reason}");
    }
}

/// A hostile channel (fixture `hostile`) gets nothing past the host: an
/// address decorated with a display name is still checked against the
/// email denylist and the envelope goes to the stored address; a message
/// to any other address than the record's fails, for email as for SMS;
/// a header name or value carrying CR/LF, or a header the host owns,
/// fails the message and never reaches the wire.
#[test]
fn a_channel_cannot_reach_past_the_stored_address_or_inject_headers() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let fixture = common::plugin_dir().join("crosscast_fixture_hostile.wasm");
    // A list holds one kind of address, declared at install: `sms` holds
    // numbers (the built-in channel's), and a push channel's list tokens.
    let err = env.fails(&[
        "plugin",
        "install",
        fixture.to_str().unwrap(),
        "--list-kind",
        "token",
    ]);
    assert!(
        err.contains("`sms` holds phone numbers; it cannot hold device tokens too"),
        "{err}"
    );
    let fcm = common::plugin_dir().join("crosscast_plugin_fcm.wasm");
    let err = env.fails(&[
        "plugin",
        "install",
        fcm.to_str().unwrap(),
        "--suppression-list",
        "push-numbers",
        "--list-kind",
        "phone",
    ]);
    assert!(err.contains("sends per subscription"), "{err}");
    env.ok(&[
        "plugin",
        "install",
        fixture.to_str().unwrap(),
        "--account",
        "smtp",
        "--account",
        "twilio",
    ]);
    let people = with_email();
    let (denied, others) = people.split_first().unwrap();
    let others: Vec<_> = others.iter().take(3).collect();
    env.ok(&["denylist", "add", "email", &denied.1, "--reason", "asked"]);
    let ids: Vec<String> = std::iter::once(denied)
        .chain(others.iter().copied())
        .map(|p| format!("'{}'", p.0))
        .collect();
    let filter = format!("id in ({})", ids.join(", "));

    // Decorated: `Someone <address>` is the same mailbox.
    let wf = one_delivery(
        &env,
        "decorate",
        &filter,
        "hostile",
        r#"{ mode = "decorate" }"#,
    );
    let run = start_workflow(&env, T0, &wf);
    let log: BTreeMap<String, serde_json::Value> = log_entries(&env, run, "send")
        .into_iter()
        .map(|e| (e["to"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(log.len(), 4, "{log:#?}");
    let excluded = &log[&denied.1];
    assert_eq!(excluded["state"], "excluded", "{excluded}");
    assert!(
        excluded["reason"]
            .as_str()
            .unwrap()
            .contains("on the email denylist"),
        "{excluded}"
    );
    for (_, email, _) in &others {
        assert_eq!(log[email]["state"], "sent", "{}", log[email]);
    }
    let mails = s.rig.smtp.received();
    let got: BTreeSet<&str> = mails.iter().map(|m| m.to[0].as_str()).collect();
    let want: BTreeSet<&str> = others.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(got, want, "the denylisted address received nothing");
    for m in &mails {
        let to = m.header("To").unwrap();
        assert!(
            to.contains("Someone") && to.contains(&m.to[0]),
            "the header shows the name and the envelope's address: {to}"
        );
    }

    // Anything else than the record's address fails, for the plugin.
    let before = mails.len();
    for (mode, extra, says) in [
        (
            "redirect",
            r#", to = "Ann <redirect@evil.example>""#,
            "addressed to `redirect@evil.example`",
        ),
        ("header-name", "", "not an RFC 5322 field name"),
        ("header-value", "", "line break"),
        ("bcc", "", "the host's to write"),
    ] {
        // validate's sample record shows it: the run does not start.
        let config = format!(r#"{{ mode = "{mode}"{extra} }}"#);
        let wf = one_delivery(&env, mode, &filter, "hostile", &config);
        let err = env.fails(&["validate", wf.to_str().unwrap()]);
        assert!(
            err.contains("a message built for a sample record would be refused"),
            "{err}"
        );
        assert!(err.contains(says), "{mode}: {err}");
        // A plugin that behaves for the sample is refused message by message.
        let config = format!(r#"{{ mode = "{mode}"{extra}, spare_samples = true }}"#);
        let wf = one_delivery(&env, mode, &filter, "hostile", &config);
        // Every message refused: the delivery fails, and the run.
        let (run, _) = start_failing_workflow(&env, T0, &wf);
        let entries = log_entries(&env, run, "send");
        // The denylisted address is refused before its suppression check.
        assert_refused(&entries, "plugin", says);
        let by_cause = env.ok(&[
            "deliveries",
            &run.to_string(),
            "--cause",
            "plugin",
            "--json",
        ]);
        assert_eq!(by_cause.lines().count(), entries.len(), "{mode}");
        let by_other = env.ok(&["deliveries", &run.to_string(), "--cause", "provider"]);
        assert_eq!(by_other.lines().count(), 0, "{mode}: {by_other}");
    }
    let mails = s.rig.smtp.received();
    assert_eq!(mails.len(), before, "nothing more reached the relay");
    assert!(
        mails.iter().all(|m| !m.data.contains("evil.example")),
        "no injected line"
    );

    // A text to another number than the record's mobile.
    let texts = one_delivery(
        &env,
        "texts",
        "mobile is not empty",
        "hostile",
        r#"{ mode = "text-redirect", to = "+15550009999", spare_samples = true }"#,
    );
    let (run, _) = start_failing_workflow(&env, T0, &texts);
    assert_refused(
        &log_entries(&env, run, "send"),
        "plugin",
        "addressed to `+15550009999`",
    );
    assert!(s.rig.sms.received().is_empty(), "no text left");
}

/// SMTP goes through the same egress rule as HTTP: a relay named
/// `localhost`, or at a loopback literal, is refused unless the account
/// allows internal addresses; allowed, it is reached.
#[test]
fn smtp_follows_the_egress_policy() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let port = s.rig.smtp.addr.port();
    let wf = one_delivery(
        &env,
        "mail",
        "id in ('R2', 'R5')",
        "email",
        r#"{ account = "relay", from = "news@acme.example", subject = "Hi", text = "Hello" }"#,
    );
    for (url, says) in [
        (
            format!("smtp://localhost:{port}"),
            "egress denied: localhost resolved to",
        ),
        (
            format!("smtp://127.0.0.1:{port}"),
            "egress denied: 127.0.0.1 is an internal address",
        ),
    ] {
        let set = env.run(&["account", "set", "relay", "--url", &url]);
        assert!(set.status.success());
        let note = String::from_utf8_lossy(&set.stderr);
        assert!(note.contains("is an internal address"), "{url}: {note}");
        env.ok(&["plugin", "grant", "email", "--account", "relay"]);
        let (run, _) = start_failing_workflow(&env, T0, &wf);
        assert_refused(&log_entries(&env, run, "send"), "policy", says);
        assert!(s.rig.smtp.received().is_empty(), "{url}: nothing sent");
    }
    let url = format!("smtp://localhost:{port}");
    env.ok(&[
        "account",
        "set",
        "relay",
        "--url",
        &url,
        "--param",
        "allow_private=true",
    ]);
    let run = start_workflow(&env, T0, &wf);
    let entries = log_entries(&env, run, "send");
    assert!(entries.iter().all(|e| e["state"] == "sent"), "{entries:#?}");
    assert_eq!(s.rig.smtp.received().len(), 2);
}

/// Runs `crosscast ARGS` and waits at most `limit` for it: a process still
/// running then is killed and the test fails (a hang, not a slow machine:
/// the limit is many times what the run needs).
fn run_within(env: &Env, args: &[&str], limit: Duration) -> String {
    let mut child = env
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "crosscast {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crosscast {args:?} still ran after {limit:?}: a step is not bounded");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A relay that accepts the connection and never greets, and one that
/// takes a message and never replies to its final dot: each message fails
/// as transient (retried later, cause `timeout`) within the account's
/// timeout, and the delivery ends instead of hanging.
#[test]
fn a_stalled_relay_fails_its_messages_as_transient_in_bounded_time() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    for (name, stall, says) in [
        (
            "mute",
            Stall::Greeting,
            "no answer to the greeting within 1 s",
        ),
        ("sleepy", Stall::Data, "no answer to the message within 1 s"),
    ] {
        let sink = s.start_sink(SinkOptions {
            stall: Some(stall),
            ..SinkOptions::default()
        });
        env.ok(&[
            "account",
            "set",
            name,
            "--url",
            &sink.url(),
            "--param",
            "allow_private=true",
            "--timeout",
            "1",
            "--concurrency",
            "2",
        ]);
        env.ok(&["plugin", "grant", "email", "--account", name]);
        let config = format!(
            r#"{{ account = "{name}", from = "news@acme.example", subject = "Hi", text = "Hello" }}"#
        );
        let wf = one_delivery(
            &env,
            name,
            "id in ('R2', 'R5', 'R6', 'R7')",
            "email",
            &config,
        );
        let out = run_within(
            &env,
            &["--now", T0, "run", wf.to_str().unwrap(), "--json"],
            Duration::from_secs(60),
        );
        let run = serde_json::from_str::<serde_json::Value>(&out).unwrap()["run"]
            .as_u64()
            .unwrap();
        let entries = log_entries(&env, run, "send");
        assert_eq!(entries.len(), 4);
        for e in &entries {
            assert_eq!(e["state"], "retrying", "{e}");
            assert_eq!(e["cause"], "timeout", "{e}");
            assert!(e["reason"].as_str().unwrap().contains(says), "{e}");
        }
        assert!(sink.received().is_empty(), "nothing was accepted");
    }
}

/// Every attempt at a message carries the same Message-ID: a relay that
/// defers the first attempt (451) sees the retry with the id it saw
/// before, and each recipient's id is its own.
#[test]
fn a_retried_email_keeps_its_message_id() {
    let deferred = "user5@example.com";
    let s = servers_with(SinkOptions {
        faults: Faults {
            per_address: [(
                deferred.to_string(),
                vec![Reply::new(451, "4.3.0 try later")],
            )]
            .into_iter()
            .collect(),
            ..Faults::default()
        },
        ..SinkOptions::default()
    });
    let env = Env::new();
    setup(&env, &s);
    let wf = one_delivery(
        &env,
        "mail",
        "id in ('R2', 'R5', 'R6')",
        "email",
        r#"{ account = "smtp", from = "news@acme.example", subject = "Hi", text = "Hello" }"#,
    );
    let run = start_workflow(&env, T0, &wf);
    let first: BTreeMap<String, String> = log_entries(&env, run, "send")
        .into_iter()
        .map(|e| {
            (
                e["to"].as_str().unwrap().into(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(first[deferred], "retrying", "{first:?}");
    assert_eq!(first["user2@example.com"], "sent", "{first:?}");
    env.ok(&["--now", &at(2), "worker", "--once"]);
    let entries = log_entries(&env, run, "send");
    assert!(entries.iter().all(|e| e["state"] == "sent"), "{entries:#?}");
    let attempts: Vec<_> = s
        .rig
        .smtp
        .attempts()
        .into_iter()
        .filter(|a| a.to == [deferred])
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let id = attempts[0].message_id.clone().expect("a Message-ID");
    assert_eq!(
        attempts[1].message_id.as_ref(),
        Some(&id),
        "the same on retry"
    );
    let ids: BTreeSet<String> = s
        .rig
        .smtp
        .received()
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "one per recipient");
    assert!(ids.contains(&id));
    assert!(id.ends_with("@acme.example>"), "{id}");
}

/// FCM's token endpoint that refuses connections fails no one for good:
/// the pushes wait for a retry (cause `connect`); once it is back, the
/// worker sends them all.
#[test]
fn a_token_endpoint_that_is_down_is_retried_until_it_is_up() {
    let s: Servers = servers();
    let env = Env::new();
    setup(&env, &s);
    let closed = common::free_port();
    let down = env.data().join("sa-down.json");
    std::fs::write(
        &down,
        s.rig
            .service_account
            .json(&format!("https://127.0.0.1:{closed}/token")),
    )
    .unwrap();
    env.ok(&[
        "secret",
        "set",
        "fcm-service-account",
        "--from-file",
        down.to_str().unwrap(),
    ]);
    let run = start_workflow(&env, T0, &root().join("tests/scenarios/push-only.toml"));
    let android = log_entries(&env, run, "push_android");
    assert!(!android.is_empty());
    for e in &android {
        assert_eq!(e["state"], "retrying", "{e}");
        assert_eq!(e["cause"], "connect", "{e}");
        assert!(
            e["reason"].as_str().unwrap().contains("token exchange"),
            "{e}"
        );
    }
    assert!(s.rig.fcm.received().is_empty());
    // Back up: the next attempt gets a token and sends.
    let up = env.data().join("sa-up.json");
    std::fs::write(&up, s.rig.service_account_json()).unwrap();
    env.ok(&[
        "secret",
        "set",
        "fcm-service-account",
        "--from-file",
        up.to_str().unwrap(),
    ]);
    env.ok(&["--now", &at(2), "worker", "--once"]);
    let android = log_entries(&env, run, "push_android");
    assert!(android.iter().all(|e| e["state"] == "sent"), "{android:#?}");
    assert_eq!(s.rig.fcm.received().len(), android.len());
}
