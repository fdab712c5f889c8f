//! Scenario tests: bad workflows, bad audience files, misbehaving plugins and
//! a second process on a busy data directory. Each must fail clearly and
//! leave everything else as it was.

mod common;

use common::{Env, count, plugin_dir, root};

/// Every file in `tests/scenarios/invalid` fails validation with exactly the
/// diagnostics in its `.expected` twin (`FILE` stands for the path).
#[test]
fn invalid_workflows_point_at_line_column_and_field() {
    let env = Env::new();
    env.ok(&["init"]);
    let dir = root().join("tests/scenarios/invalid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        seen += 1;
        let out = env.run(&["validate", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{} should be invalid",
            path.display()
        );
        let stderr = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE");
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        assert_eq!(stderr.trim_end(), expected.trim_end(), "{}", path.display());
        // `run` refuses the same file with the same words and starts nothing.
        let out = env.run(&["run", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
    }
    assert!(seen >= 8, "scenario files are missing");
    // The reference workflow's accounts, granted, with their secrets: the
    // names its configs declare are checked, and each delivery builds a
    // message for a sample record, which the host would otherwise refuse.
    let accounts: [&[&str]; 4] = [
        &["smtp", "--url", "smtp://relay.example:587"],
        &["twilio", "--url", "https://api.twilio.com", "--user", "AC1"],
        &[
            "apns",
            "--url",
            "https://api.push.apple.com",
            "--auth",
            "apns",
            "--param",
            "team_id=T",
            "--param",
            "key_id=K",
            "--secret",
            "apns-key",
        ],
        &[
            "fcm",
            "--url",
            "https://fcm.googleapis.com",
            "--auth",
            "google",
            "--param",
            "project_id=p",
            "--secret",
            "fcm-sa",
        ],
    ];
    // Signing schemes need their secret set (validate checks it is there;
    // only a send or `doctor` can tell whether it is right).
    let key = env.data().join("key.txt");
    std::fs::write(&key, "a key").unwrap();
    for secret in ["apns-key", "fcm-sa"] {
        env.ok(&[
            "secret",
            "set",
            secret,
            "--from-file",
            key.to_str().unwrap(),
        ]);
    }
    for (account, plugin) in accounts.iter().zip(["email", "sms", "apns", "fcm"]) {
        env.ok(&[&["account", "set"][..], account].concat());
        env.ok(&["plugin", "grant", plugin, "--account", account[0]]);
    }
    let ok = env.ok(&[
        "validate",
        root().join("examples/cross-channel.toml").to_str().unwrap(),
    ]);
    assert!(ok.contains("ok (8 activities)"), "{ok}");
}

/// A bad row is reported with its line, and nothing from the file is stored.
#[test]
fn imports_are_all_or_nothing() {
    let env = Env::new();
    env.ok(&["init"]);
    let dir = root().join("tests/scenarios/import");
    let bad = env.fails(&[
        "import",
        "recipients",
        dir.join("recipients-bad.csv").to_str().unwrap(),
    ]);
    assert!(
        bad.contains("recipients-bad.csv:3: email `not-an-address` is not an email address"),
        "{bad}"
    );
    assert!(
        bad.contains("recipients-bad.csv:4: mobile `+1555` is not an E.164 number"),
        "{bad}"
    );
    assert!(
        bad.contains("recipients-bad.csv:5: id `B1` appears twice in the file (first on line 2)"),
        "{bad}"
    );
    assert!(
        bad.contains("recipients-bad.csv:7: timezone `Mars/Olympus` is not an IANA time zone"),
        "{bad}"
    );
    assert!(
        bad.contains(
            "recipients-bad.csv:8: timezone `Europe/Pari` is not an IANA time zone; did you mean \
             `Europe/Paris`?"
        ),
        "{bad}"
    );
    assert!(bad.contains("nothing was imported"), "{bad}");
    // B1 and B2 were in the bad file: had anything been stored they would be updates.
    let good = env.ok(&[
        "import",
        "recipients",
        dir.join("recipients-good.csv").to_str().unwrap(),
    ]);
    assert!(good.contains("(2 new, 0 updated)"), "{good}");
    let again = env.ok(&[
        "import",
        "recipients",
        dir.join("recipients-good.csv").to_str().unwrap(),
    ]);
    assert!(
        again.contains("(0 new, 2 updated)"),
        "upsert by id: {again}"
    );

    let bad = env.fails(&[
        "import",
        "subscriptions",
        dir.join("subscriptions-bad.ndjson").to_str().unwrap(),
    ]);
    assert!(
        bad.contains("subscriptions-bad.ndjson:2: recipient_id `NOPE` does not exist"),
        "{bad}"
    );
    assert!(
        bad.contains("subscriptions-bad.ndjson:3: platform `windows` is unknown"),
        "{bad}"
    );
    // Nothing stored: a query over subscriptions finds none.
    let wf = env.data().join("subs.toml");
    std::fs::write(&wf, "name = \"subs\"\n[activity.q]\ntype = \"query\"\nconfig = { dimension = \"subscription\" }\n").unwrap();
    env.ok(&["init"]);
    let run: serde_json::Value =
        serde_json::from_str(&env.ok(&["run", wf.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(count(&run, "q", "done"), 0);
}

/// `--skip-invalid` stores the valid rows (mobiles normalised to E.164) and
/// writes each rejected row with its line and reasons; `export` writes back
/// what was stored.
#[test]
fn skip_invalid_loads_the_rest_and_export_writes_it_back() {
    let env = Env::new();
    env.ok(&["init"]);
    let dir = root().join("tests/scenarios/import");
    let rejects = env.data().join("rejects.ndjson");
    let out = env.ok(&[
        "import",
        "recipients",
        dir.join("recipients-mixed.csv").to_str().unwrap(),
        "--skip-invalid",
        rejects.to_str().unwrap(),
    ]);
    assert!(out.contains("imported 3 recipients"), "{out}");
    assert!(out.contains("(3 new, 0 updated)"), "{out}");
    assert!(out.contains("rejected 3 rows"), "{out}");
    let rejected: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(u64, String)> = rejected
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["reasons"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, "email `broken@` is not an email address".to_string()),
            (
                5,
                "mobile `12345` is not an E.164 number such as +15550001111".to_string()
            ),
            (
                6,
                "id `M1` appears twice in the file (first on line 2)".to_string()
            ),
        ]
    );
    assert_eq!(
        rejected[0]["record"]["id"], "M2",
        "the rejected row is kept whole"
    );

    let export = env.data().join("export.ndjson");
    env.ok(&["export", "recipients", "--output", export.to_str().unwrap()]);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["mobile"].as_str().map(str::to_string),
                r["score"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("M1".into(), Some("+15550001111".into()), Some("10".into())),
            ("M3".into(), Some("+442079460958".into()), Some("30".into())),
            ("M5".into(), Some("+33612345678".into()), None),
        ]
    );
    // The export imports back as an upsert of the same records.
    let again = env.ok(&["import", "recipients", export.to_str().unwrap()]);
    assert!(again.contains("(0 new, 3 updated)"), "{again}");
}

fn misbehave_workflow(env: &Env, mode: &str) -> std::path::PathBuf {
    let path = env.data().join(format!("misbehave-{mode}.toml"));
    let text = format!(
        "name = \"misbehave {mode}\"\n\
         [activity.query]\ntype = \"query\"\nconfig = {{ dimension = \"recipient\" }}\nnext = {{ done = \"bad\" }}\n\
         [activity.bad]\ntype = \"misbehave\"\nconfig = {{ mode = \"{mode}\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A plugin that traps, loops, eats memory or dials out fails its activity
/// with a message; the host, other runs and stored data are untouched.
#[test]
fn a_misbehaving_plugin_fails_only_its_activity() {
    let mut env = Env::new();
    env.env("CROSSCAST_PLUGIN_TIMEOUT_MS", "2000");
    env.env("CROSSCAST_PLUGIN_MEMORY_MB", "32");
    env.ok(&["init"]);
    env.ok(&[
        "import",
        "recipients",
        root().join("tests/data/recipients.csv").to_str().unwrap(),
    ]);
    let fixture = plugin_dir().join("crosscast_fixture_misbehave.wasm");
    env.ok(&["plugin", "install", fixture.to_str().unwrap()]);

    let good = misbehave_workflow(&env, "pass");
    let first: serde_json::Value =
        serde_json::from_str(&env.ok(&["run", good.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(first["state"], "done");
    assert_eq!(count(&first, "bad", "done"), 300);
    let first_run = first["run"].as_u64().unwrap();
    let before = env.status(first_run);

    for (mode, words) in [
        ("trap", "crashed: panicked: misbehave: deliberate trap"),
        ("loop", "ran out of time (limit 2 s: "),
        ("memory", "ran out of memory (limit 32 MiB)"),
        ("network", "network denied"),
    ] {
        let wf = misbehave_workflow(&env, mode);
        let out = env.run(&["run", wf.to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(1), "{mode}: a failed run exits 1");
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(st["state"], "failed", "{mode}: {st:#}");
        let bad = &st["activities"]["bad"];
        assert_eq!(bad["state"], "failed", "{mode}");
        let error = bad["errors"][0].as_str().unwrap();
        assert!(
            error.contains("plugin `misbehave`") || mode == "network",
            "{mode}: {error}"
        );
        assert!(
            error.contains(words),
            "{mode}: `{error}` should say `{words}`"
        );
        // The query before it completed and its data is intact.
        assert_eq!(count(&st, "query", "done"), 300, "{mode}");
    }
    // The earlier run is unchanged, and a new good run still works.
    assert_eq!(env.status(first_run), before);
    let again: serde_json::Value =
        serde_json::from_str(&env.ok(&["run", good.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(again["state"], "done");
    assert_eq!(count(&again, "bad", "done"), 300);
}

/// sled allows one process per data directory: a second one is told who holds it.
#[test]
fn a_second_process_is_told_who_holds_the_data_directory() {
    let env = Env::new();
    env.ok(&["init"]);
    let mut worker = env
        .command(&["worker", "--poll-ms", "50"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = worker.id();
    // The worker writes the pid file once it holds the lock.
    let pid_file = env.data().join("crosscast.pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .contains(&format!("process {pid} "))
    {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker exited early"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never took the data directory"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let message = env.fails(&["plugin", "list"]);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(message.contains("is in use by process"), "{message}");
    assert!(
        message.contains(&format!("process {pid} (")) && message.contains("worker"),
        "{message}"
    );
    // Once it is gone, the directory opens again.
    env.ok(&["plugin", "list"]);
}

/// A closed reader stops `crosscast` quietly, while a closed *socket* never
/// kills it: SIGPIPE stays ignored (a provider hanging up mid-write is an
/// error the host handles, not the end of the process).
#[test]
fn closed_pipes_end_quietly_and_sigpipe_stays_ignored() {
    let env = Env::new();
    env.ok(&["init"]);
    let dir = root().join("tests/scenarios/import");
    env.ok(&[
        "import",
        "recipients",
        dir.join("recipients-good.csv").to_str().unwrap(),
    ]);
    // The reader takes nothing and goes away at once.
    let mut child = env
        .command(&["worker", "--poll-ms", "50"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut ignored = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("SigIgn:"))
        {
            let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
            ignored = Some(mask & (1 << (13 - 1)) != 0);
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ignored, Some(true), "SIGPIPE must stay ignored");

    let mut export = env
        .command(&["export", "recipients"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(export.stdout.take());
    let out = export.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("error") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
