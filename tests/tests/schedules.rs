//! Schedules on `crosscast serve`'s virtual clock: runs start at the local
//! times a cron expression gives in an IANA time zone, across daylight
//! saving in both directions; missed occurrences start one run; a run is
//! not started while the previous one goes on unless the schedule says so.

mod common;

use std::time::Duration;

use common::Env;
use common::rig::{servers, setup};
use common::served::{Served, wait_for};
use serde_json::Value;

/// A workflow emailing every recipient with an email, on `schedule`.
fn scheduled(env: &Env, name: &str, schedule: &str, wait: Option<&str>) -> String {
    let (next, waiting) = match wait {
        Some(d) => (
            "pause",
            format!(
                "[activity.pause]\ntype = \"wait\"\nnext = {{ done = \"mail\" }}\nconfig = {{ duration = \"{d}\" }}\n"
            ),
        ),
        None => ("mail", String::new()),
    };
    let text = format!(
        "name = \"{name}\"\n\n[schedule]\n{schedule}\n\n[activity.query]\ntype = \"query\"\n\
         next = {{ done = \"{next}\" }}\nconfig = {{ dimension = \"recipient\", filter = \"email is not empty\" }}\n\n\
         {waiting}\n[activity.mail]\ntype = \"email\"\n\
         config = {{ account = \"smtp\", from = \"news@acme.example\", subject = \"{name}\", text = \"Hello\" }}\n"
    );
    let file = env.data().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_string()
}

/// The runs, as `runs --json` lists them.
fn runs(env: &Env) -> Vec<Value> {
    serde_json::from_str::<Value>(&env.ok(&["runs", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Schedule `id` as `schedule list --json` shows it.
fn schedule(env: &Env, id: u64) -> Value {
    let all: Value = serde_json::from_str(&env.ok(&["schedule", "list", "--json"])).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no schedule {id}: {all}"))
}

/// Moves the clock; the number of scheduled runs it says started.
fn advance(env: &Env, by: &str) -> usize {
    let said = env.ok(&["clock", "advance", by]);
    let started = said
        .split(", ")
        .find_map(|p| p.strip_suffix(" scheduled run(s) started\n"))
        .unwrap_or_else(|| panic!("{said}"));
    started.parse().unwrap()
}

fn wait_done(env: &Env, run: u64) {
    wait_for(&format!("run {run} done"), Duration::from_secs(60), || {
        env.status(run)["state"] == "done"
    });
}

/// Paris at 02:30 every day: on 2026-03-29 there is no 02:30 (02:00 CET
/// becomes 03:00 CEST), so the run starts at 03:00; on 2026-10-25 02:30
/// comes twice (03:00 CEST becomes 02:00 CET), and the run starts once,
/// at the first. Seven months crossed in one move start one run, not 209.
/// Every run sends, so the relay counts them.
#[test]
fn runs_start_at_local_times_across_daylight_saving_both_ways() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let _served = Served::start(&env, &["--now", "2026-03-28T12:00:00Z"]);
    let wf = scheduled(
        &env,
        "daily",
        "cron = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"",
        None,
    );
    let added: Value = serde_json::from_str(&env.ok(&["schedule", "add", &wf, "--json"])).unwrap();
    assert_eq!(added["id"], 1);
    assert_eq!(added["next"], "2026-03-29T01:00:00Z", "03:00 CEST: {added}");

    // Spring forward.
    assert_eq!(advance(&env, "12h 59m"), 0);
    assert!(runs(&env).is_empty());
    assert_eq!(advance(&env, "1m"), 1);
    let listed = runs(&env);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["started_at"], "2026-03-29T01:00:00Z");
    wait_done(&env, 1);
    let per_run = s.rig.smtp.received().len();
    assert!(per_run > 0);
    assert_eq!(
        schedule(&env, 1)["next"],
        "2026-03-30T00:30:00Z",
        "02:30 CEST"
    );

    // Seven months later: the occurrences missed start one run, now.
    assert_eq!(advance(&env, "209d 11h"), 1);
    let listed = runs(&env);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["started_at"], "2026-10-24T12:00:00Z");
    wait_done(&env, 2);
    assert_eq!(
        schedule(&env, 1)["next"],
        "2026-10-25T00:30:00Z",
        "02:30 CEST"
    );

    // Fall back: 02:30 CEST (00:30Z) runs; 02:30 CET (01:30Z) does not.
    assert_eq!(advance(&env, "12h 30m"), 1);
    assert_eq!(runs(&env)[2]["started_at"], "2026-10-25T00:30:00Z");
    wait_done(&env, 3);
    assert_eq!(advance(&env, "1h"), 0, "02:30 again, an hour later");
    let sch = schedule(&env, 1);
    assert_eq!(
        sch["next"], "2026-10-26T01:30:00Z",
        "02:30 CET the next day"
    );
    assert_eq!(advance(&env, "24h"), 1);
    assert_eq!(runs(&env)[3]["started_at"], "2026-10-26T01:30:00Z");
    wait_done(&env, 4);
    assert_eq!(
        schedule(&env, 1)["runs"],
        serde_json::json!(["1", "2", "3", "4"])
    );
    assert_eq!(
        s.rig.smtp.received().len(),
        4 * per_run,
        "each run sent once to everyone"
    );

    // Removed: nothing more starts.
    let removed = env.ok(&["schedule", "remove", "1"]);
    assert!(
        removed.starts_with("schedule 1 removed (daily)"),
        "{removed}"
    );
    assert_eq!(advance(&env, "2d"), 0);
    assert_eq!(runs(&env).len(), 4);
}

/// Hourly, each run waiting 90 minutes: the 11:00 run does not start while
/// the 10:00 one waits (counted as skipped); with `overlap = true` it does.
/// Stopped for three days, the server starts one run when it starts again.
#[test]
fn a_run_is_not_started_while_the_previous_goes_on_unless_it_may_overlap() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let served = Served::start(&env, &["--now", "2026-01-05T09:30:00Z"]);
    let hourly = "cron = \"0 * * * *\"\ntimezone = \"UTC\"";
    let wf = scheduled(&env, "hourly", hourly, Some("90m"));
    env.ok(&["schedule", "add", &wf]);
    assert_eq!(advance(&env, "30m"), 1, "10:00");
    wait_for("run 1 waits", Duration::from_secs(60), || {
        env.status(1)["state"] == "waiting"
    });
    assert_eq!(advance(&env, "1h"), 0, "11:00: run 1 waits until 11:30");
    assert_eq!(schedule(&env, 1)["skipped"], 1);
    advance(&env, "30m");
    wait_done(&env, 1);
    assert_eq!(advance(&env, "30m"), 1, "12:00: run 1 is done");
    env.ok(&["schedule", "remove", "1"]);

    let overlapping = scheduled(
        &env,
        "overlapping",
        &format!("{hourly}\noverlap = true"),
        Some("90m"),
    );
    env.ok(&["schedule", "add", &overlapping]);
    assert_eq!(advance(&env, "1h"), 1, "13:00");
    assert_eq!(advance(&env, "1h"), 1, "14:00, run 3 waiting until 14:30");
    let listed = runs(&env);
    assert_eq!(listed.len(), 4, "{listed:?}");
    wait_for("runs 3 and 4 both waiting", Duration::from_secs(60), || {
        env.status(3)["state"] == "waiting" && env.status(4)["state"] == "waiting"
    });
    assert_eq!(schedule(&env, 2)["skipped"], 0);

    // Down for three days: one run when the server starts again.
    let (code, _) = served.terminate();
    assert_eq!(code, Some(0));
    let served = Served::start(&env, &["--now", "2026-01-08T14:10:00Z"]);
    wait_for("the missed run", Duration::from_secs(30), || {
        runs(&env).len() == 5
    });
    std::thread::sleep(Duration::from_millis(500));
    let listed = runs(&env);
    assert_eq!(listed.len(), 5, "one run for all that was missed");
    assert_eq!(listed[4]["started_at"], "2026-01-08T14:10:00Z");
    assert_eq!(schedule(&env, 2)["next"], "2026-01-08T15:00:00Z");
    assert!(
        served.log().contains("started"),
        "the server says so: {}",
        served.log()
    );
}

/// A schedule is checked where it is written, at its line and column; a
/// workflow without one cannot be scheduled, and a schedule that does not
/// exist cannot be removed.
#[test]
fn a_bad_schedule_is_refused_at_its_line() {
    let env = Env::new();
    env.ok(&["init"]);
    let wf = scheduled(
        &env,
        "bad",
        "cron = \"0 25 * * *\"\ntimezone = \"Europe/Pari\"",
        None,
    );
    let out = env.run(&["schedule", "add", &wf]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:8: schedule.cron: `0 25 * * *` is not a cron expression"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:5:12: schedule.timezone: `Europe/Pari` is not an IANA time zone; did you mean `Europe/Paris`?"),
        "{err}"
    );
    let plain = env.data().join("plain.toml");
    std::fs::write(
        &plain,
        "name = \"plain\"\n[activity.query]\ntype = \"query\"\nconfig = { dimension = \"recipient\" }\n",
    )
    .unwrap();
    let out = env.run(&["schedule", "add", plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no [schedule]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.run(&["schedule", "remove", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: schedule 7 does not exist"
    );
}
