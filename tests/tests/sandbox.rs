//! Sandbox bounds: every cost a plugin can impose on the host is bounded.
//! Sleeping is instant on the run's clock and never holds the host; emits
//! are folded as they arrive; what a plugin says is capped, never fatal;
//! waits in the past or out of reach end; a guest's exit code and the limit
//! it hit are kept. Each misbehaving run shares a worker with a normal one,
//! which completes.

mod common;

use std::time::{Duration, Instant};

use common::{Env, count, plugin_dir, root};

const T0: &str = "2026-01-05T09:00:00Z";
const T2: &str = "2026-01-05T09:02:00Z";

/// What a `crosscast` process did: its output and its peak memory.
struct Ran {
    /// Its exit code.
    code: i32,
    stdout: String,
    stderr: String,
    /// Peak resident set size, in bytes (`ru_maxrss` of the child).
    max_rss: u64,
}

/// Runs `crosscast ARGS` on `env`, killing it (and failing) if it runs
/// longer than `limit`: many times what the command needs, so only a hang
/// trips it.
fn run_within(env: &Env, args: &[&str], limit: Duration) -> Ran {
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let mut cmd = env.command(args);
    cmd.env_remove("CROSSCAST_LOG")
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap());
    // Reaped below by `wait4`, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let pid = cmd.spawn().unwrap().id() as libc::pid_t;
    let start = Instant::now();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: plain out-parameters, and `pid` is our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break (status, usage);
        }
        if start.elapsed() > limit {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("crosscast {args:?} still ran after {limit:?}: something held it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(libc::WIFEXITED(status), "crosscast {args:?} was killed");
    Ran {
        code: libc::WEXITSTATUS(status),
        stdout: std::fs::read_to_string(&o).unwrap(),
        stderr: std::fs::read_to_string(&e).unwrap(),
        max_rss: usage.ru_maxrss as u64 * 1024,
    }
}

/// A workflow: every recipient, a one-minute wait, then `misbehave` in
/// `mode`.
fn after_a_wait(env: &Env, mode: &str) -> std::path::PathBuf {
    let path = env.data().join(format!("{mode}.toml"));
    let text = format!(
        "name = \"{mode}\"\n\
         [activity.query]\ntype = \"query\"\nconfig = {{ dimension = \"recipient\" }}\nnext = {{ done = \"wait\" }}\n\
         [activity.wait]\ntype = \"wait\"\nconfig = {{ duration = \"1min\" }}\nnext = {{ done = \"bad\" }}\n\
         [activity.bad]\ntype = \"misbehave\"\nconfig = {{ mode = \"{mode}\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A data directory with the sample audience and the fixtures.
fn env_with(recipients: &std::path::Path) -> Env {
    let mut env = Env::new();
    env.env("CROSSCAST_PLUGIN_TIMEOUT_MS", "20000");
    env.ok(&["init"]);
    env.ok(&["import", "recipients", recipients.to_str().unwrap()]);
    let misbehave = plugin_dir().join("crosscast_fixture_misbehave.wasm");
    env.ok(&["plugin", "install", misbehave.to_str().unwrap()]);
    env
}

/// Starts a run of `mode` and a normal one, both waiting a minute, then
/// lets one worker pass handle both after the wait: the normal one must
/// complete, whatever the other did. Returns the worker's process and the
/// misbehaving run's status.
fn beside_a_normal_run(env: &Env, mode: &str, recipients: u64) -> (Ran, serde_json::Value) {
    let bad = after_a_wait(env, mode);
    let good = after_a_wait(env, "pass");
    let start = |wf: &std::path::Path| -> u64 {
        let out = env.ok(&["--now", T0, "run", wf.to_str().unwrap(), "--json"]);
        let st: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(st["state"], "waiting", "{st:#}");
        st["run"].as_u64().unwrap()
    };
    let (bad_run, good_run) = (start(&bad), start(&good));
    let worker = run_within(
        env,
        &["--now", T2, "worker", "--once"],
        Duration::from_secs(120),
    );
    let bad = env.status(bad_run);
    // The worker says whether a task it executed failed.
    let failed = bad["state"] == "failed";
    assert_eq!(worker.code, i32::from(failed), "{mode}: {}", worker.stderr);
    let normal = env.status(good_run);
    assert_eq!(normal["state"], "done", "{mode}: {normal:#}");
    assert_eq!(count(&normal, "bad", "done"), recipients, "{mode}");
    (worker, bad)
}

fn sample() -> std::path::PathBuf {
    root().join("tests/data/recipients.csv")
}

/// A plugin that sleeps an hour in `execute`, `configure`, `describe` and
/// a channel's `build` holds nothing: the sleep is instant on the run's
/// clock, which moves by the hour it asked for.
#[test]
fn sleeping_is_instant_on_the_run_s_clock() {
    let env = env_with(&sample());
    let limit = Duration::from_secs(60);
    // `describe` sleeps at install.
    let sleepy = plugin_dir().join("crosscast_fixture_sleepy.wasm");
    let installed = run_within(
        &env,
        &["plugin", "install", sleepy.to_str().unwrap()],
        limit,
    );
    assert_eq!(installed.code, 0, "{}", installed.stderr);
    // `configure` sleeps when the workflow is validated.
    let wf = after_a_wait(&env, "sleep-configure");
    let ok = run_within(&env, &["validate", wf.to_str().unwrap()], limit);
    assert!(ok.code == 0 && ok.stdout.contains("ok"), "{}", ok.stdout);
    let (_, st) = beside_a_normal_run(&env, "sleep", 300);
    assert_eq!(st["state"], "done", "{st:#}");
    assert_eq!(count(&st, "bad", "done"), 300);
    // A channel's `build`.
    let texts = env.data().join("sleepy.toml");
    std::fs::write(
        &texts,
        "name = \"sleepy\"\n[activity.q]\ntype = \"query\"\nconfig = { dimension = \"recipient\" }\n\
         next = { done = \"send\" }\n[activity.send]\ntype = \"sleepy\"\nconfig = {}\n",
    )
    .unwrap();
    let ran = run_within(
        &env,
        &["--now", T0, "run", texts.to_str().unwrap(), "--json"],
        limit,
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let run = serde_json::from_str::<serde_json::Value>(&ran.stdout).unwrap()["run"]
        .as_u64()
        .unwrap();
    let log = env.ok(&["deliveries", &run.to_string(), "--json"]);
    assert_eq!(log.lines().count(), 300);
    assert!(
        log.lines().all(|l| l.contains("slept 60 min")),
        "the run's clock moved by the hour: {}",
        log.lines().next().unwrap()
    );
}

/// 300 million emits of valid ids on a million-record dimension leave the
/// worker's peak memory under 300 MB: emits are folded as they arrive.
#[test]
fn an_emit_flood_costs_no_more_memory_than_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("million.csv");
    let mut csv = String::from("id\n");
    for n in 0..1_000_000 {
        csv.push_str(&format!("M{n}\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let env = env_with(&file);
    let (worker, st) = beside_a_normal_run(&env, "emit-flood", 1_000_000);
    assert_eq!(st["state"], "done", "{st:#}");
    assert_eq!(count(&st, "bad", "done"), 1_000_000);
    println!("peak RSS {} MB", worker.max_rss >> 20);
    assert!(
        worker.max_rss < 300 << 20,
        "peak RSS {} MB",
        worker.max_rss >> 20
    );
}

/// A plugin logging 1 GiB puts at most its cap on the host's stderr and
/// says once how much was dropped; one printing 20 KB of progress lines to
/// stderr completes, as printing is never a failure.
#[test]
fn what_a_plugin_says_is_capped_and_never_fatal() {
    let env = env_with(&sample());
    let (worker, st) = beside_a_normal_run(&env, "log-flood", 300);
    assert_eq!(st["state"], "done", "{st:#}");
    assert!(
        worker.stderr.len() < 2 << 20,
        "{} bytes on the host's stderr",
        worker.stderr.len()
    );
    assert!(
        worker.stderr.contains("1.1 GB of log dropped"),
        "{}",
        &worker.stderr[worker.stderr.len().saturating_sub(600)..]
    );
    assert_eq!(worker.stderr.matches("of log dropped").count(), 1);
    let (_, st) = beside_a_normal_run(&env, "chatter", 300);
    assert_eq!(st["state"], "done", "{st:#}");
}

/// A wait at or before the task's clock ends at once (asked twice in a
/// row, the task fails instead of coming back on every worker pass); one
/// more than ten years ahead is refused with a date, not a number.
#[test]
fn waits_in_the_past_or_out_of_reach_end() {
    let env = env_with(&sample());
    let (_, st) = beside_a_normal_run(&env, "wait-past", 300);
    let bad = &st["activities"]["bad"];
    assert_eq!(bad["state"], "failed", "{st:#}");
    let error = bad["errors"][0].as_str().unwrap();
    assert!(
        error.contains("asked again to wait until 2026-01-05T09:01:00Z")
            && error.contains("not after its clock"),
        "{error}"
    );
    // Nothing comes back on the next pass.
    let again = env.ok(&["--now", T2, "worker", "--once"]);
    assert!(again.contains("0 task(s) executed"), "{again}");
    let (_, st) = beside_a_normal_run(&env, "wait-far", 300);
    let error = st["activities"]["bad"]["errors"][0].as_str().unwrap();
    assert!(
        error.contains("more than 10 years after its clock") && !error.contains("waiting until"),
        "{error}"
    );
}

/// A guest's `exit(3)` says it exited, with the status WASI 0.2 carries
/// (1: its `exit` takes only success or failure), not a wasm backtrace;
/// running out of memory is recognised by the limiter's record.
#[test]
fn a_guest_s_exit_code_and_limits_are_kept() {
    let mut env = env_with(&sample());
    env.env("CROSSCAST_PLUGIN_MEMORY_MB", "32");
    let (_, st) = beside_a_normal_run(&env, "exit", 300);
    let error = st["activities"]["bad"]["errors"][0].as_str().unwrap();
    assert!(
        error.contains("exited with a failure status") && !error.contains("backtrace"),
        "{error}"
    );
    let (_, st) = beside_a_normal_run(&env, "memory", 300);
    let error = st["activities"]["bad"]["errors"][0].as_str().unwrap();
    assert!(
        error.contains("ran out of memory (limit 32 MiB)"),
        "{error}"
    );
}
