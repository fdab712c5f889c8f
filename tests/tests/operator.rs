//! Operator safety: secrets sealed under a key kept outside a private data
//! directory, a demo that never touches the operator's data, exit codes
//! that say what happened, Ctrl-C that says what it left, plain logs.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Env, plugin_dir, root};

const T0: &str = "2026-01-05T09:00:00Z";

/// Every file under `dir`, by path: (mode, bytes).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                out.insert(entry.path(), (mode, Vec::new()));
                todo.push(entry.path());
            } else {
                out.insert(entry.path(), (mode, std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Secrets never sit in plain text in the data directory: they are sealed
/// under a key file outside it, the directory is its owner's alone (0700,
/// files 0600), the pid file names the command only, a secret comes from a
/// file or stdin (never the command line), and a copy of the directory
/// without the key opens nothing.
#[test]
fn secrets_are_sealed_under_a_key_outside_a_private_data_directory() {
    let env = Env::new();
    env.ok(&["init"]);
    let outside = tempfile::tempdir().unwrap();
    let token = "tw1l10-auth-token-PLAINTEXT-ab12";
    let file = outside.path().join("token.txt");
    std::fs::write(&file, token).unwrap();
    env.ok(&[
        "secret",
        "set",
        "twilio-token",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    // From standard input.
    let piped = "dkim-key-PLAINTEXT-from-stdin-cd34";
    let mut child = env
        .command(&["secret", "set", "dkim", "--from-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(piped.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    env.ok(&["unsubscribe", "setup", "--listen", "127.0.0.1:8025"]);
    // Never on a command line.
    let usage = env.run(&["secret", "set", "x", "--value", "v"]);
    assert_eq!(usage.status.code(), Some(2));
    let list = env.ok(&["secret", "list"]);
    assert_eq!(list.lines().collect::<Vec<_>>(), ["dkim", "twilio-token"]);

    let files = snapshot(env.data());
    assert!(!files.is_empty());
    let dir_mode = std::fs::metadata(env.data()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    for (path, (mode, bytes)) in &files {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{}: {mode:o}", path.display());
        for secret in [token, piped] {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{} holds a secret in plain text",
                path.display()
            );
        }
    }
    let pid = std::fs::read_to_string(env.data().join("crosscast.pid")).unwrap();
    assert!(pid.ends_with("(crosscast secret)"), "{pid}");
    assert!(!contains(pid.as_bytes(), b"--from-file"), "{pid}");
    let key = std::fs::metadata(env.key_file()).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert!(!env.key_file().starts_with(env.data()));

    // A copy of the directory, without the key: nothing opens.
    let copy = tempfile::tempdir().unwrap();
    for (path, (_, bytes)) in &files {
        let to = copy.path().join(path.strip_prefix(env.data()).unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(&to, bytes).unwrap();
        }
    }
    let thief = |key: &Path| {
        std::process::Command::new(common::bin())
            .arg("--data")
            .arg(copy.path())
            .args(["--key-file", key.to_str().unwrap()])
            .args(["unsubscribe", "setup", "--listen", "127.0.0.1:8026"])
            .output()
            .unwrap()
    };
    let out = thief(&outside.path().join("no-key"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    let other = outside.path().join("other-key");
    std::fs::write(&other, [7u8; 32]).unwrap();
    let out = thief(&other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sealed with another key"),
        "{err}"
    );
    // With the right key, the copy is whole.
    assert!(thief(&env.key_file()).status.success());
}

/// With `CROSSCAST_DATA` naming the operator's data directory, the demo
/// runs in a fresh temporary one and leaves the operator's byte for byte
/// as it was; `--data` given for the demo must be new or empty.
#[test]
fn the_demo_never_writes_into_the_operator_s_data_directory() {
    let env = Env::new();
    env.ok(&["init"]);
    env.ok(&[
        "import",
        "recipients",
        root().join("tests/data/recipients.csv").to_str().unwrap(),
    ]);
    let before = snapshot(env.data());
    let out = std::process::Command::new(common::demo_bin())
        .env("CROSSCAST_DATA", env.data())
        .env("CROSSCAST_KEY_FILE", env.key_file())
        .env("CROSSCAST_PLUGIN_DIR", plugin_dir())
        .args(["--recipients", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().unwrap();
    assert!(
        line.starts_with("data directory: ")
            && !line.contains(env.data().to_str().unwrap())
            && line.contains("crosscast-demo-"),
        "{line}"
    );
    let after = snapshot(env.data());
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p)
        .chain(before.keys().filter(|p| !after.contains_key(*p)))
        .collect();
    assert!(
        changed.is_empty(),
        "the operator's directory changed: {changed:?}"
    );
    let refused = std::process::Command::new(common::demo_bin())
        .arg("--data")
        .arg(env.data())
        .args(["--recipients", "20"])
        .env("CROSSCAST_PLUGIN_DIR", plugin_dir())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// A workflow of every recipient into `misbehave` in `mode`.
fn misbehaving(env: &Env, mode: &str, wait: bool) -> PathBuf {
    let path = env.data().join(format!("{mode}.toml"));
    let (next, wait_activity) = if wait {
        (
            "wait",
            "[activity.wait]\ntype = \"wait\"\nconfig = { duration = \"1min\" }\nnext = { done = \"bad\" }\n",
        )
    } else {
        ("bad", "")
    };
    std::fs::write(
        &path,
        format!(
            "name = \"{mode}\"\n[activity.query]\ntype = \"query\"\nconfig = {{ dimension = \"recipient\" }}\n\
             next = {{ done = \"{next}\" }}\n{wait_activity}[activity.bad]\ntype = \"misbehave\"\n\
             config = {{ mode = \"{mode}\" }}\n"
        ),
    )
    .unwrap();
    path
}

/// Creates the data directory, imports the sample's recipients and installs
/// the `misbehave` fixture.
fn with_sample_and_misbehave(env: &Env) {
    env.ok(&["init"]);
    env.ok(&[
        "import",
        "recipients",
        root().join("tests/data/recipients.csv").to_str().unwrap(),
    ]);
    let fixture = plugin_dir().join("crosscast_fixture_misbehave.wasm");
    env.ok(&["plugin", "install", fixture.to_str().unwrap()]);
}

fn code(env: &Env, args: &[&str]) -> Option<i32> {
    env.run(args).status.code()
}

/// Exit codes: 0 done or waiting, 1 a run (dry or real) that failed or a
/// worker pass that executed a failing task, 2 usage, 3 busy; and `--data`
/// naming something that is not a data directory is refused, not created.
#[test]
fn exit_codes_say_what_happened() {
    let env = Env::new();
    // Only `init` makes a data directory.
    let err = env.fails(&["status", "1"]);
    assert!(err.contains("is not a Crosscast data directory"), "{err}");
    assert!(!env.data().join("db").exists());
    let passwd = std::process::Command::new(common::bin())
        .args(["--data", "/etc/passwd", "status", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&passwd.stderr);
    assert!(err.contains("/etc/passwd is not a directory"), "{err}");
    with_sample_and_misbehave(&env);
    let pass = misbehaving(&env, "pass", false);
    let trap = misbehaving(&env, "trap", false);
    assert_eq!(code(&env, &["run", pass.to_str().unwrap()]), Some(0));
    let waits = misbehaving(&env, "pass", true);
    assert_eq!(
        code(&env, &["--now", T0, "run", waits.to_str().unwrap()]),
        Some(0),
        "waiting"
    );
    assert_eq!(code(&env, &["run", trap.to_str().unwrap()]), Some(1));
    assert_eq!(
        code(&env, &["run", "--dry-run", trap.to_str().unwrap()]),
        Some(1)
    );
    let later = misbehaving(&env, "trap", true);
    assert_eq!(
        code(&env, &["--now", T0, "run", later.to_str().unwrap()]),
        Some(0)
    );
    let worker = env.run(&["--now", "2026-01-05T09:02:00Z", "worker", "--once"]);
    let out = String::from_utf8_lossy(&worker.stdout);
    assert_eq!(worker.status.code(), Some(1), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    assert_eq!(code(&env, &["frobnicate"]), Some(2));
    let invalid = root().join("tests/scenarios/invalid");
    let bad = std::fs::read_dir(invalid)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "toml"))
        .unwrap();
    assert_eq!(code(&env, &["validate", bad.to_str().unwrap()]), Some(2));
    let help = env.ok(&["--help"]);
    assert!(help.contains("Exit codes: 0 done or waiting"), "{help}");

    let _holder = env.spawn(&["worker", "--poll-ms", "50"]);
    let pid_file = env.data().join("crosscast.pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .contains("crosscast worker")
    {
        assert!(
            Instant::now() < deadline,
            "the worker never took the directory"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = env.run(&["status", "1"]);
    assert_eq!(busy.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by process"));
}

/// Sends SIGINT to `child` once `ready` holds, and returns its exit code
/// and stderr.
fn interrupt(child: std::process::Child, ready: impl Fn() -> bool) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "never ready to be interrupted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ctrl-C during a run stops it where it was and says how it resumes; during
/// an import, it stored nothing or everything, and says which.
#[test]
fn ctrl_c_says_what_it_left() {
    let mut env = Env::new();
    env.env("CROSSCAST_PLUGIN_TIMEOUT_MS", "120000");
    with_sample_and_misbehave(&env);
    // A run busy in a plugin that loops.
    let busy = misbehaving(&env, "loop", false);
    let child = env
        .command(&["run", busy.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = env.data().join("crosscast.pid");
    let started = Instant::now();
    let (code, err) = interrupt(child, || {
        std::fs::read_to_string(&pid).is_ok_and(|p| p.contains("crosscast run"))
            && started.elapsed() > Duration::from_secs(1)
    });
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains("interrupted: run 1 stopped where it was")
            && err.contains("`crosscast worker` resumes it"),
        "{err}"
    );
    let st = env.status(1);
    assert_eq!(st["activities"]["query"]["state"], "done", "{st:#}");
    assert_eq!(st["activities"]["bad"]["state"], "pending", "{st:#}");

    // An import: interrupted before it takes effect, nothing is stored; at
    // the very end, everything is.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.csv");
    let mut csv = String::from("id,email\n");
    for n in 0..300_000 {
        csv.push_str(&format!("X{n},x{n}@example.com\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let child = env
        .command(&["import", "recipients", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (code, err) = interrupt(child, || started.elapsed() > Duration::from_millis(300));
    assert_eq!(code, Some(130), "{err}");
    let stored = env
        .ok(&["export", "recipients"])
        .lines()
        .filter(|l| l.contains("\"X"))
        .count();
    if err.contains("nothing was stored") {
        assert_eq!(stored, 0, "{err}");
    } else {
        assert!(err.contains("everything was stored"), "{err}");
        assert_eq!(stored, 300_000, "{err}");
    }
}

/// Logs: no colour codes when stderr is a file; `RUST_LOG` is read as
/// well as `CROSSCAST_LOG`.
#[test]
fn logs_are_plain_text_off_a_terminal_and_rust_log_is_honoured() {
    let mut env = Env::new();
    env.env("RUST_LOG", "info");
    with_sample_and_misbehave(&env);
    let pass = misbehaving(&env, "pass", false);
    let out = env.run(&["run", pass.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("executing"),
        "RUST_LOG=info shows info lines: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no escape codes in a file: {err:?}"
    );
}

/// sled's page cache is the operator's to size (`CROSSCAST_CACHE_MB`); a
/// value that is not a size is refused before the data directory opens.
#[test]
fn the_page_cache_is_sized_by_crosscast_cache_mb() {
    let env = Env::new();
    env.ok(&["init"]);
    let with = |mb: &str| {
        env.command(&["plugin", "list"])
            .env("CROSSCAST_CACHE_MB", mb)
            .output()
            .unwrap()
    };
    for bad in ["lots", "4", "-1"] {
        let out = with(bad);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "CROSSCAST_CACHE_MB is a whole number of MiB, at least 8, not `{bad}`"
            )),
            "{err}"
        );
    }
    let out = with("16");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("query"));
}
