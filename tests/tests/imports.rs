//! Imports are atomic: killed at any point, the audience is as it was
//! before or as it is after, and the next import says what it found.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Env;

/// Recipients `from..to`, every email at `domain`.
fn recipients(path: &Path, from: u64, to: u64, domain: &str) {
    let mut csv = String::from("id,email,tier\n");
    for n in from..to {
        csv.push_str(&format!("R{n},r{n}@{domain},t{}\n", n % 7));
    }
    std::fs::write(path, csv).unwrap();
}

/// Copies a data directory (of a process that has stopped) and its key.
fn copy_env(from: &Env) -> Env {
    let to = Env::new();
    copy_dir(from.data(), to.data());
    if from.key_file().exists() {
        std::fs::copy(from.key_file(), to.key_file()).unwrap();
    }
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Where an import is killed.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Once it says it staged at least this many rows.
    Staged(u64),
    /// Once it says it published.
    Published,
    /// This long after it starts.
    After(Duration),
}

/// Starts the import of `file` and kills it (SIGKILL) at `at`; returns
/// whether it was still running then.
fn import_killed(env: &Env, file: &Path, at: Kill) -> bool {
    let mut child = env
        .command(&["import", "recipients", file.to_str().unwrap()])
        .env("CROSSCAST_LOG", "crosscast::import=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    match at {
        Kill::After(wait) => {
            let stderr = child.stderr.take().unwrap();
            // Drained so the child never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
            while started.elapsed() < wait {
                if child.try_wait().unwrap().is_some() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Kill::Staged(_) | Kill::Published => {
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let mut hit = false;
            for line in lines {
                let line = line.unwrap();
                let rows = line
                    .split("rows=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok());
                hit = match at {
                    Kill::Staged(n) => line.contains("staged") && rows.is_some_and(|r| r >= n),
                    _ => line.contains("published"),
                };
                if hit {
                    break;
                }
            }
            assert!(hit, "the import never said it reached {at:?}");
        }
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

/// Killed (SIGKILL) at several row counts and times, an import leaves the
/// audience exactly as it was before or as it is after it, never a mix;
/// the next import says what it found and discarded, and completes it.
#[test]
fn an_import_killed_anywhere_leaves_the_audience_before_or_after() {
    let files = tempfile::tempdir().unwrap();
    let base_file = files.path().join("base.csv");
    let next_file = files.path().join("next.csv");
    // 20,000 recipients, then 40,000 of which 10,000 update them: three
    // chunks of 16,384 rows staged before one publication.
    recipients(&base_file, 0, 20_000, "before.test");
    recipients(&next_file, 10_000, 50_000, "after.test");

    let base = Env::new();
    base.ok(&["init"]);
    base.ok(&["import", "recipients", base_file.to_str().unwrap()]);
    let before = base.ok(&["export", "recipients"]);
    let after = {
        let env = copy_env(&base);
        env.ok(&["import", "recipients", next_file.to_str().unwrap()]);
        env.ok(&["export", "recipients"])
    };
    assert_eq!(before.lines().count(), 20_000);
    assert_eq!(after.lines().count(), 50_000);

    let points = [
        Kill::Staged(1),
        Kill::Staged(16_384),
        Kill::Staged(32_768),
        Kill::Staged(40_000),
        Kill::Published,
        Kill::After(Duration::from_millis(100)),
        Kill::After(Duration::from_millis(400)),
        Kill::After(Duration::from_millis(900)),
    ];
    let mut discarded = 0;
    for at in points {
        let env = copy_env(&base);
        let running = import_killed(&env, &next_file, at);
        let export = env.run(&["export", "recipients"]);
        assert!(export.status.success(), "{export:?}");
        let seen = String::from_utf8_lossy(&export.stdout).into_owned();
        // The export notes an import that did not take effect.
        let noted = String::from_utf8_lossy(&export.stderr).contains("did not take effect");
        assert!(
            seen == before || seen == after,
            "killed at {at:?}: the export is neither before ({} lines) nor after ({} lines) \
             but {} lines",
            before.lines().count(),
            after.lines().count(),
            seen.lines().count()
        );
        // The next import says what it found, then completes the file.
        let out = env.run(&["import", "recipients", next_file.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let found = err.contains("was interrupted before it took effect");
        assert_eq!(noted, found, "killed at {at:?}: export and import agree");
        if found {
            assert_eq!(seen, before, "killed at {at:?}: {err}");
            assert!(err.contains("next.csv"), "{err}");
            assert!(
                err.contains("the audience was as it was before it"),
                "{err}"
            );
            discarded += 1;
        } else {
            assert!(!err.contains("interrupted"), "killed at {at:?}: {err}");
        }
        if matches!(at, Kill::Staged(n) if n < 40_000) {
            assert!(running, "killed at {at:?} while staging");
            assert_eq!(seen, before, "killed at {at:?}, before publishing");
        }
        if matches!(at, Kill::Published) {
            assert_eq!(seen, after, "killed after publishing");
        }
        assert_eq!(env.ok(&["export", "recipients"]), after, "killed at {at:?}");
    }
    assert!(
        discarded >= 4,
        "every kill while staging is found by the next import ({discarded})"
    );
}
