//! Runs an operator steers, each command its own process against the
//! loopback servers: the list of runs (dry runs apart), failures that stop
//! their branch or take their `error` transition, retry once the cause is
//! fixed, pause across a wait's due time and resume, cancel mid-delivery.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::rig::{Servers, WAVE, per_address, servers, setup, slow_newsletter};
use common::served::{Served, wait_for};
use common::{Env, read_recipients, read_subscriptions, root};
use serde_json::Value;

const T0: &str = "2026-01-05T09:00:00Z";

/// The Android devices of the sample's app: what `push_android` must reach.
fn android_tokens() -> BTreeSet<String> {
    read_subscriptions(&root().join("tests/data/subscriptions.csv"))
        .into_iter()
        .filter(|s| s.app == "com.acme.shop" && s.platform == "android")
        .map(|s| s.token)
        .collect()
}

/// How many pushes FCM received per device.
fn per_device(s: &Servers) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in s.rig.fcm.received() {
        *out.entry(p.token).or_default() += 1;
    }
    out
}

/// Replaces the test CA with another one: every TLS provider's certificate
/// is then untrusted (a host-side cause, which the operator fixes).
fn distrust(env: &Env) {
    let other = crosscast_test_servers::TestTls::new().unwrap();
    let ca = env.data().join("other-ca.pem");
    std::fs::write(&ca, &other.ca_pem).unwrap();
    env.ok(&["ca", "add", "test-ca", ca.to_str().unwrap()]);
}

/// Trusts the rig's CA again.
fn trust(env: &Env) {
    env.ok(&[
        "ca",
        "add",
        "test-ca",
        env.data().join("test-ca.pem").to_str().unwrap(),
    ]);
}

/// Android pushes, then a wait; `next` is `push_android`'s, `more` adds
/// activities.
fn android_then_wait(env: &Env, next: &str, more: &str) -> std::path::PathBuf {
    let wf = env.data().join("android.toml");
    std::fs::write(
        &wf,
        format!(
            r#"name = "android"
[activity.q]
type = "query"
config = {{ dimension = "subscription", filter = "app = 'com.acme.shop' and platform = 'android'" }}
next = {{ done = "push_android" }}

[activity.push_android]
type = "fcm"
config = {{ title = "Hi {{{{ recipient.first_name }}}}", body = "New arrivals" }}
{next}

[activity.later]
type = "wait"
config = {{ duration = "1d" }}
{more}
"#
        ),
    )
    .unwrap();
    wf
}

fn status(env: &Env, run: &str) -> Value {
    serde_json::from_str(&env.ok(&["status", run, "--json"])).unwrap()
}

fn activity_state<'a>(st: &'a Value, activity: &str) -> &'a str {
    st["activities"][activity]["state"].as_str().unwrap_or("?")
}

/// A delivery whose every message failed before reaching the provider (an
/// untrusted certificate) fails, the run fails and nothing downstream
/// starts; once the CA is trusted again, `run retry` sends every device
/// its push exactly once and the run carries on. Dry runs use up no run
/// numbers and are listed apart.
#[test]
fn a_failure_stops_its_branch_and_a_retry_sends_each_message_once() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let wf = android_then_wait(&env, "next = { done = \"later\" }", "");
    let want = android_tokens();
    assert!(want.len() > 10, "the sample has Android devices");

    // A dry run first: numbered dry-1, and the real run is still run 1.
    let dry: Value = serde_json::from_str(&env.ok(&[
        "--now",
        T0,
        "run",
        wf.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    assert_eq!((&dry["id"], &dry["run"]), (&"dry-1".into(), &1.into()));

    distrust(&env);
    let ran = env.run(&["--now", T0, "run", wf.to_str().unwrap(), "--json"]);
    assert_eq!(ran.status.code(), Some(1), "a failed run exits 1");
    let st: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!((&st["id"], &st["state"]), (&"1".into(), &"failed".into()));
    assert_eq!(activity_state(&st, "push_android"), "failed");
    let error = st["activities"]["push_android"]["errors"][0]
        .as_str()
        .unwrap();
    assert!(
        error.contains("cause certificate") && error.contains("crosscast run retry 1"),
        "{error}"
    );
    assert_eq!(activity_state(&st, "later"), "not_reached");
    assert_eq!(s.rig.fcm.received().len(), 0, "nothing reached FCM");

    // Listed by state; dry runs only with --dry.
    let failed: Value =
        serde_json::from_str(&env.ok(&["runs", "--state", "failed", "--json"])).unwrap();
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["id"], "1");
    assert_eq!(failed[0]["messages"]["failed"], want.len());
    let all = env.ok(&["runs"]);
    assert!(all.contains("failed") && !all.contains("dry-1"), "{all}");
    let dries = env.ok(&["runs", "--dry"]);
    assert!(dries.contains("dry-1") && dries.contains("done"), "{dries}");
    assert!(
        env.ok(&["runs", "--state", "done"]).lines().count() == 1,
        "only the header: no real run is done"
    );
    // The dry run's status, by its name.
    assert_eq!(status(&env, "dry-1")["dry_run"], true);

    // Not fixed yet: the retry fails the same way, and sends nothing.
    let again = env.run(&["--now", T0, "run", "retry", "1"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(s.rig.fcm.received().len(), 0);

    // Fixed: every device gets its push once, and the run goes on.
    trust(&env);
    let out = env.ok(&["--now", T0, "run", "retry", "1", "--json"]);
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["state"], "waiting", "{st:#}");
    assert_eq!(activity_state(&st, "push_android"), "done");
    assert_eq!(activity_state(&st, "later"), "waiting");
    let got = per_device(&s);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(
        st["activities"]["push_android"]["deliveries"]["sent"],
        want.len()
    );
    assert_eq!(st["activities"]["push_android"]["deliveries"]["failed"], 0);

    // Nothing left to retry: refused, and still nothing sent twice.
    let err = env.fails(&["--now", T0, "run", "retry", "1"]);
    assert!(err.contains("no failed activity"), "{err}");
    assert!(per_device(&s).values().all(|n| *n == 1));
}

/// With an `error` transition, a failed activity passes what it received
/// on: the fallback email goes to the recipients of the devices the push
/// could not reach, and the run is done (the failure was handled).
#[test]
fn a_failure_with_an_error_transition_takes_it_with_its_input() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let wf = android_then_wait(
        &env,
        "next = { done = \"later\", error = \"mail\" }",
        r#"
[activity.mail]
type = "email"
config = { account = "smtp", from = "news@acme.example", subject = "Hi", text = "Open the app" }
"#,
    );
    distrust(&env);
    let st: Value =
        serde_json::from_str(&env.ok(&["--now", T0, "run", wf.to_str().unwrap(), "--json"]))
            .unwrap();
    assert_eq!(st["state"], "done", "{st:#}");
    assert_eq!(activity_state(&st, "push_android"), "failed");
    assert_eq!(activity_state(&st, "mail"), "done");
    assert_eq!(activity_state(&st, "later"), "not_reached");
    // Once per recipient with an email among the devices' owners.
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    let owners: BTreeSet<String> = read_subscriptions(&root().join("tests/data/subscriptions.csv"))
        .into_iter()
        .filter(|s| s.app == "com.acme.shop" && s.platform == "android")
        .filter_map(|s| recipients[&s.recipient].email.clone())
        .collect();
    let got = per_address(&s);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), owners);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    // Handled failures are not retried: what follows them ran.
    let err = env.fails(&["--now", T0, "run", "retry", "1"]);
    assert!(err.contains("no failed activity"), "{err}");

    // A failure's population arrives on its own: never at a join.
    let joined = android_then_wait(
        &env,
        "next = { done = \"later\", error = \"both\" }",
        "next = { done = \"both\" }\n[activity.both]\ntype = \"union\"\n",
    );
    let err = env.fails(&["validate", joined.to_str().unwrap()]);
    assert!(
        err.contains("android.toml:10:")
            && err.contains("activity.push_android.next.error")
            && err.contains("cannot lead to a join"),
        "{err}"
    );
}

/// A workflow waiting a day before its email, under `serve` on a virtual
/// clock.
fn wait_then_mail(env: &Env) -> std::path::PathBuf {
    let wf = env.data().join("later.toml");
    std::fs::write(
        &wf,
        r#"name = "later"
[activity.q]
type = "query"
config = { dimension = "recipient", filter = "email is not empty" }
next = { done = "wait" }

[activity.wait]
type = "wait"
config = { duration = "1d" }
next = { done = "mail" }

[activity.mail]
type = "email"
config = { account = "smtp", from = "news@acme.example", subject = "Hi {{ first_name }}", text = "New arrivals are in." }
"#,
    )
    .unwrap();
    wf
}

/// Paused across its wait's due time, a run sends nothing and its timer
/// waits; resumed, the wait fires at once and each email goes once.
#[test]
fn a_paused_run_keeps_its_timer_and_resumes_where_it_was() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let wf = wait_then_mail(&env);
    let served = Served::start(&env, &["--now", T0]);
    let st: Value =
        serde_json::from_str(&env.ok(&["run", wf.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!((&st["id"], &st["state"]), (&"1".into(), &"waiting".into()));

    let st: Value = serde_json::from_str(&env.ok(&["run", "pause", "1", "--json"])).unwrap();
    assert_eq!(st["state"], "paused");
    let again = env.fails(&["run", "pause", "1"]);
    assert!(again.contains("paused"), "{again}");
    // Two days later the wait is due, and nothing moves.
    let moved = env.ok(&["clock", "advance", "2d"]);
    assert!(moved.contains("0 timer"), "{moved}");
    std::thread::sleep(Duration::from_millis(500));
    let st = status(&env, "1");
    assert_eq!(st["state"], "paused");
    assert_eq!(activity_state(&st, "wait"), "waiting");
    assert_eq!(s.rig.smtp.received_count(), 0);
    let listed = env.ok(&["runs", "--state", "paused"]);
    assert!(listed.lines().any(|l| l.starts_with("1 ")), "{listed}");

    let st: Value = serde_json::from_str(&env.ok(&["run", "resume", "1", "--json"])).unwrap();
    assert_eq!(st["state"], "done", "{st:#}");
    let got = per_address(&s);
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        common::sample_emails()
    );
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    let not_paused = env.fails(&["run", "resume", "1"]);
    assert!(not_paused.contains("not paused"), "{not_paused}");
    drop(served);
}

/// Paused mid-delivery, a run's delivery stops at its next round with
/// every answer on the wire recorded, and resumed it carries on from its
/// place. Cancelled mid-delivery, it sends nothing more: the relay's count
/// stops, every message not sent is `cancelled`, its log says so, and the
/// run is listed as cancelled. Nobody gets an email twice.
#[test]
fn a_delivery_paused_or_cancelled_midway_stops_at_its_next_round() {
    let (s, env, wf, mut want) = slow_newsletter();
    // A pause and a cancel each let up to a wave on the wire finish: more
    // readers than two waves and a bit, so the cancel comes before the end.
    let mut more = String::from("id,email,first_name\n");
    for n in 0..3 * WAVE {
        more.push_str(&format!("M{n},more{n}@example.com,More\n"));
        want.insert(format!("more{n}@example.com"));
    }
    let file = env.data().join("more.csv");
    std::fs::write(&file, more).unwrap();
    env.ok(&["import", "recipients", file.to_str().unwrap()]);
    let served = Served::start(&env, &["--now", T0]);
    let running = env.spawn(&["run", wf.to_str().unwrap()]);
    wait_for("the first emails", Duration::from_secs(60), || {
        s.rig.smtp.received_count() >= 20
    });

    let st: Value = serde_json::from_str(&env.ok(&["run", "pause", "1", "--json"])).unwrap();
    assert_eq!(st["state"], "paused", "{st:#}");
    let paused_at = s.rig.smtp.received_count();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        s.rig.smtp.received_count(),
        paused_at,
        "nothing sent paused"
    );
    let d = &st["activities"]["deliver_email"]["deliveries"];
    assert_eq!(d["in_flight"], 0, "every answer on the wire recorded: {d}");
    assert_eq!(d["sent"], paused_at as u64, "{d}");
    assert_eq!(st["activities"]["deliver_email"]["state"], "pending");
    drop(running);

    // Resumed: it carries on (the command drives it, so in the background).
    let resumed = env.spawn(&["run", "resume", "1"]);
    wait_for("more emails", Duration::from_secs(60), || {
        s.rig.smtp.received_count() >= paused_at + 20
    });
    let st: Value = serde_json::from_str(&env.ok(&["run", "cancel", "1", "--json"])).unwrap();
    assert_eq!(st["state"], "cancelled", "{st:#}");
    let sent_then = s.rig.smtp.received_count();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(s.rig.smtp.received_count(), sent_then, "nothing sent after");
    assert!(sent_then < want.len(), "cancelled before the end");

    let d = &st["activities"]["deliver_email"]["deliveries"];
    assert_eq!(st["activities"]["deliver_email"]["state"], "cancelled");
    assert_eq!(d["in_flight"], 0, "every answer on the wire recorded: {d}");
    assert_eq!(d["sent"], sent_then as u64, "{d}");
    let outcomes: u64 = ["sent", "cancelled", "failed", "excluded"]
        .iter()
        .map(|k| d[k].as_u64().unwrap())
        .sum();
    assert_eq!(outcomes, common::count(&st, "q", "done"), "{d}");
    assert!(d["cancelled"].as_u64().unwrap() > 0, "{d}");
    let got = per_address(&s);
    assert!(got.values().all(|n| *n == 1), "nobody twice");
    // The log says so, message by message, with the time of the cancel.
    let cancelled: Vec<Value> = env
        .ok(&["deliveries", "1", "--state", "cancelled", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cancelled.len() as u64, d["cancelled"].as_u64().unwrap());
    // T0 in milliseconds: the virtual clock did not move.
    assert!(
        cancelled.iter().all(|e| e["at"] == 1_767_603_600_000_i64),
        "{:?}",
        cancelled[0]
    );
    let listed = env.ok(&["runs", "--state", "cancelled"]);
    assert!(listed.lines().any(|l| l.starts_with("1 ")), "{listed}");
    let again = env.fails(&["run", "cancel", "1"]);
    assert!(again.contains("cancelled"), "{again}");
    drop(resumed);
    drop(served);
}

/// An import the server carries out while a delivery is under way is for
/// the next run: the delivery reads one version of the audience
/// throughout, so every reader's email still says the name it had when the
/// delivery began; the next run says the new one.
#[test]
fn an_import_during_a_delivery_is_for_the_next_run() {
    let (s, env, wf, want) = slow_newsletter();
    let _served = Served::start(&env, &["--now", T0]);
    let running = env.spawn(&["run", wf.to_str().unwrap()]);
    wait_for("the first emails", Duration::from_secs(60), || {
        s.rig.smtp.received_count() >= 20
    });
    let mut renamed = String::from("id,first_name\n");
    for n in 0..2 * WAVE {
        renamed.push_str(&format!("N{n},Renamed\n"));
    }
    let file = env.data().join("renamed.csv");
    std::fs::write(&file, renamed).unwrap();
    let said = env.ok(&["import", "recipients", file.to_str().unwrap()]);
    assert!(
        said.contains(&format!("(0 new, {} updated)", 2 * WAVE)),
        "{said}"
    );
    let mid = s.rig.smtp.received_count();
    assert!(mid < want.len(), "the import ended before the delivery did");
    wait_for("run 1 done", Duration::from_secs(120), || {
        env.status(1)["state"] == "done"
    });
    drop(running);
    let subjects = |from: usize| -> Vec<String> {
        s.rig.smtp.received()[from..]
            .iter()
            .filter(|m| m.to.iter().any(|t| t.starts_with("reader")))
            .filter_map(|m| {
                m.data
                    .lines()
                    .find(|l| l.starts_with("Subject: "))
                    .map(str::to_string)
            })
            .collect()
    };
    let first = subjects(0);
    assert_eq!(first.len(), 2 * WAVE, "each reader once");
    assert!(
        first.iter().all(|l| l == "Subject: Hi Reader"),
        "{:?}",
        first.iter().find(|l| *l != "Subject: Hi Reader")
    );
    let before = s.rig.smtp.received_count();
    env.ok(&["run", wf.to_str().unwrap()]);
    let second = subjects(before);
    assert_eq!(second.len(), 2 * WAVE);
    assert!(
        second.iter().all(|l| l == "Subject: Hi Renamed"),
        "{second:?}"
    );
}
