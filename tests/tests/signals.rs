//! The `signal` activity: a population held until a signal is sent to the
//! run (`crosscast signal`, or the API), restricted to the records it
//! names; a signal sent before the activity is reached is kept for it; a
//! `timeout` transition when none comes in time. Checked at the loopback
//! servers: who got a message, and when.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::rig::{servers, setup, start_workflow};
use common::served::{Served, wait_for};
use common::{Env, read_recipients, read_subscriptions, root};
use serde_json::Value;

const T0: &str = "2026-04-01T09:00:00Z";

/// Recipients with an email: approval, then the mail; the late mail when
/// no approval came within two days.
const APPROVAL: &str = r#"
name = "approval"

[activity.query]
type = "query"
next = { done = "approval" }
config = { dimension = "recipient", filter = "email is not empty" }

[activity.approval]
type = "signal"
next = { done = "mail", timeout = "late" }
config = { name = "approved", timeout = "2d" }

[activity.mail]
type = "email"
config = { account = "smtp", from = "news@acme.example", subject = "Approved", text = "Hello" }

[activity.late]
type = "email"
config = { account = "smtp", from = "news@acme.example", subject = "Late", text = "Hello" }
"#;

fn write(env: &Env, name: &str, text: &str) -> std::path::PathBuf {
    let file = env.data().join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// Addresses the relay received a message with `subject` for.
fn received(s: &common::rig::Servers, subject: &str) -> BTreeSet<String> {
    s.rig
        .smtp
        .received()
        .iter()
        .filter(|m| m.data.contains(&format!("Subject: {subject}")))
        .map(|m| m.to[0].clone())
        .collect()
}

#[test]
fn a_signal_lets_the_records_it_names_through_and_a_timeout_the_rest() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let wf = write(&env, "approval.toml", APPROVAL);
    let run = start_workflow(&env, T0, &wf);
    let st = env.status(run);
    assert_eq!(st["state"], "waiting", "{st:#}");
    let approval = &st["activities"]["approval"];
    assert_eq!(approval["waiting_for"], "approved", "{st:#}");
    assert_eq!(approval["waiting_until"], "2026-04-03T09:00:00Z");
    let said = env.ok(&["status", &run.to_string()]);
    assert!(
        said.contains("waiting for signal approved until 2026-04-03T09:00:00Z"),
        "{said}"
    );
    assert!(s.rig.smtp.received().is_empty());

    // Three recipients named by their ids; one id of no record refuses
    // the whole signal, with its line.
    let people = read_recipients(&root().join("tests/data/recipients.csv"));
    let with_email: Vec<(&String, &String)> = people
        .iter()
        .filter_map(|(id, r)| r.email.as_ref().map(|e| (id, e)))
        .collect();
    let named: Vec<&(&String, &String)> = with_email.iter().take(3).collect();
    let mut ids = String::from("id\n");
    for (id, _) in &named {
        ids.push_str(&format!("{id}\n"));
    }
    let bad = write(&env, "bad-ids.txt", &format!("{ids}\n# typo\nR99999\n"));
    let err = env.fails(&[
        "--now",
        "2026-04-01T10:00:00Z",
        "signal",
        &run.to_string(),
        "approved",
        "--ids",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("1 id(s) are of no recipient"), "{err}");
    assert!(err.contains("line 7: `R99999`"), "{err}");
    assert_eq!(
        env.status(run)["activities"]["approval"]["state"],
        "waiting"
    );

    let good = write(&env, "ids.txt", &ids);
    let out = env.run(&[
        "--now",
        "2026-04-01T10:00:00Z",
        "signal",
        &run.to_string(),
        "approved",
        "--ids",
        good.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("signal approved (#1) sent to run 1, naming 3 recipient(s); 1 waiting"),
        "the refused one was not kept: {note}"
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["state"], "done", "{st:#}");
    assert_eq!(st["activities"]["approval"]["transitions"]["done"], 3);
    let want: BTreeSet<String> = named.iter().map(|(_, e)| (*e).clone()).collect();
    assert_eq!(received(&s, "Approved"), want);
    assert!(received(&s, "Late").is_empty(), "no timeout");
    assert_eq!(
        st["signals"],
        serde_json::json!([{ "seq": 1, "name": "approved", "at": "2026-04-01T10:00:00Z",
            "ids": 3, "dimension": "recipient" }])
    );
    let said = env.ok(&["status", &run.to_string()]);
    assert!(
        said.contains("signal approved (#1) at 2026-04-01T10:00:00Z, naming 3 recipient(s)"),
        "{said}"
    );
    // A finished run takes no more.
    let err = env.fails(&["signal", &run.to_string(), "approved"]);
    assert!(err.contains("run 1 has finished"), "{err}");

    // A second run, no signal: two days later the population takes
    // `timeout`, every recipient with an email.
    let run2 = start_workflow(&env, T0, &wf);
    env.ok(&["--now", "2026-04-03T08:59:59Z", "worker", "--once"]);
    assert!(received(&s, "Late").is_empty(), "not before the deadline");
    env.ok(&["--now", "2026-04-03T09:00:00Z", "worker", "--once"]);
    let st = env.status(run2);
    assert_eq!(st["state"], "done", "{st:#}");
    let all: BTreeSet<String> = with_email.iter().map(|(_, e)| (*e).clone()).collect();
    let late = received(&s, "Late");
    let queried = st["activities"]["query"]["transitions"]["done"]
        .as_u64()
        .unwrap();
    assert_eq!(
        st["activities"]["approval"]["transitions"]["timeout"],
        queried
    );
    assert_eq!(queried, all.len() as u64);
    assert_eq!(late, all);
    assert_eq!(
        st["activities"]["approval"]["skipped"],
        serde_json::json!(["done"]),
        "{st:#}"
    );
    assert_eq!(received(&s, "Approved"), want, "run 1's only");

    // The signal came before its deadline but is only seen after it (the
    // worker was down): it still counts. Run 3 gets its signal at once.
    let run3 = start_workflow(&env, T0, &wf);
    env.ok(&[
        "--now",
        "2026-04-02T09:00:00Z",
        "signal",
        &run3.to_string(),
        "approved",
    ]);
    let st = env.status(run3);
    assert_eq!(st["state"], "done", "{st:#}");
    assert_eq!(st["activities"]["approval"]["transitions"]["done"], queried);
}

/// App subscriptions: a signal naming recipients lets their devices
/// through. Sent through the API while the run still waits before the
/// signal activity: kept (across a restart of the server), and found when
/// the activity is reached.
#[test]
fn a_signal_sent_before_the_activity_is_reached_is_kept() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let served = Served::start(&env, &["--now", T0]);
    let token = env.ok(&["token", "create", "t"]).trim().to_string();
    let wf = write(
        &env,
        "gate.toml",
        r#"
name = "gate"

[activity.query]
type = "query"
next = { done = "pause" }
config = { dimension = "subscription", filter = "platform = 'android'" }

[activity.pause]
type = "wait"
next = { done = "gate" }
config = { duration = "1d" }

[activity.gate]
type = "signal"
next = { done = "push" }
config = { name = "go" }

[activity.push]
type = "fcm"
config = { account = "fcm", title = "Hi", body = "Hello" }
"#,
    );
    env.ok(&["run", wf.to_str().unwrap()]);
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let api = served.api.clone();
    let signal = |name: &str, body: Value| {
        let r = http
            .post(format!("{api}/api/v1/runs/1/signals/{name}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };

    // Two recipients with Android devices (and one of them with several).
    let subs = read_subscriptions(&root().join("tests/data/subscriptions.csv"));
    let android: Vec<_> = subs.iter().filter(|s| s.platform == "android").collect();
    let mut owners: Vec<&str> = android.iter().map(|s| s.recipient.as_str()).collect();
    owners.sort_by_key(|o| std::cmp::Reverse(android.iter().filter(|s| s.recipient == *o).count()));
    owners.dedup();
    let chosen = [owners[0], owners[1]];
    let devices: BTreeSet<String> = android
        .iter()
        .filter(|s| chosen.contains(&s.recipient.as_str()))
        .map(|s| s.token.clone())
        .collect();
    assert!(devices.len() > 2, "one of them has two devices");

    let (status, sent) = signal("go", serde_json::json!({ "ids": chosen }));
    assert_eq!(status, 200, "{sent}");
    assert_eq!(
        (&sent["woken"], &sent["ids"], &sent["seq"]),
        (&Value::from(0), &Value::from(2), &Value::from(1)),
        "{sent}"
    );
    let (status, refused) = signal("go", serde_json::json!({ "ids": ["NOPE"] }));
    assert_eq!(status, 422, "{refused}");
    let (status, _) = signal("two words", Value::Null);
    assert_eq!(status, 400);

    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.rig.fcm.received_count(), 0, "the wait holds them");
    // The server stops and starts again: the signal is kept in the store.
    let (code, _) = served.terminate();
    assert_eq!(code, Some(0));
    let _served = Served::start(&env, &["--now", T0]);
    env.ok(&["clock", "advance", "1d"]);
    wait_for("the run to end", Duration::from_secs(60), || {
        env.status(1)["state"] == "done"
    });
    let pushed: BTreeSet<String> = s.rig.fcm.received().into_iter().map(|p| p.token).collect();
    assert_eq!(pushed, devices, "each device of the two recipients, once");
    assert_eq!(s.rig.fcm.received_count(), devices.len());
}
