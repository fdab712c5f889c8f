//! Preflight (issue 30): names checked where they are typed (account
//! parameters, suppression lists and audience headers, each refused with
//! the name that was meant), and workflow files read robustly (invalid
//! UTF-8, filters nested too deep, thousands of problems in one file).

mod common;

use common::{Env, plugin_dir};
use crosscast_test_servers::workflows;

/// The 1-based line of the first line of `text` that equals `line` after
/// the line `after`.
fn line_of(text: &str, after: &str, line: &str) -> usize {
    let start = text
        .lines()
        .position(|l| l == after)
        .unwrap_or_else(|| panic!("no line `{after}`"));
    start
        + 1
        + text
            .lines()
            .skip(start)
            .position(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no line `{line}` after `{after}`"))
}

#[test]
fn validate_reports_every_problem_of_a_large_file_at_its_place() {
    let env = Env::new();
    env.ok(&["init"]);
    // 60k activities, each with one problem: validate used to take time in
    // the square of the number of problems (60k: 77 s); now each costs the
    // same. BENCHMARKS.md has the times (`cargo xtask bench-validate`).
    let n = 60_000;
    let text = workflows::with_one_problem_per_activity(n);
    let wf = env.data().join("many.toml");
    std::fs::write(&wf, &text).unwrap();
    let out = env.run(&["validate", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = wf.display().to_string();
    // A filter's error shows the filter and a caret on lines of their own.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&f)).collect();
    assert_eq!(lines.len(), n, "one problem per activity");
    // The last group's four problems, each at its line and field.
    let (a, b, c, d) = (n - 4, n - 3, n - 2, n - 1);
    let expect = [
        format!(
            "{f}:{}:8: activity.a{a}.type: unknown plugin `qeury`: did you mean `query`?",
            line_of(&text, &format!("[activity.a{a}]"), "type")
        ),
        format!(
            "{f}:{}:",
            line_of(&text, &format!("[activity.a{b}]"), "config")
        ),
        format!(
            "{f}:{}:",
            line_of(&text, &format!("[activity.a{c}]"), "config")
        ),
        format!(
            "{f}:{}:17: activity.a{d}.next.done: dangling transition: no activity `nowhere{d}`",
            line_of(&text, &format!("[activity.a{d}]"), "next")
        ),
    ];
    for (want, field, says) in [
        (&expect[0], "", ""),
        (
            &expect[1],
            "activity.a{b}.config.duration",
            "is not a duration",
        ),
        (
            &expect[2],
            "activity.a{c}.config.filter",
            "more than 64 deep",
        ),
        (&expect[3], "", ""),
    ] {
        let field = field
            .replace("{b}", &b.to_string())
            .replace("{c}", &c.to_string());
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(want.as_str()) && l.contains(&field) && l.contains(says)),
            "no line starting `{want}` with `{field}` and `{says}` in the last lines:\n{}",
            lines[lines.len() - 8..].join("\n")
        );
    }
}

#[test]
fn invalid_utf8_in_a_workflow_is_reported_at_its_line_and_column() {
    let env = Env::new();
    env.ok(&["init"]);
    let wf = env.data().join("latin1.toml");
    std::fs::write(&wf, b"name = \"x\"\n# caf\xe9 cr\xe8me\n[activity.q]\n").unwrap();
    for cmd in ["validate", "run"] {
        let out = env.run(&[cmd, wf.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim(),
            format!(
                "{}:2:6: (encoding): invalid UTF-8 (byte 0xE9): a workflow file must be UTF-8 text",
                wf.display()
            ),
            "{cmd}"
        );
    }
}

#[test]
fn a_filter_nested_too_deep_is_refused_at_the_filter() {
    let env = Env::new();
    env.ok(&["init"]);
    let deep = format!(
        "{}email is empty{}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let wf = env.data().join("deep.toml");
    std::fs::write(
        &wf,
        format!(
            "name = \"deep\"\n[activity.q]\ntype = \"query\"\n\
             config = {{ dimension = \"recipient\", filter = \"{deep}\" }}\n"
        ),
    )
    .unwrap();
    let err = env.fails(&["validate", wf.to_str().unwrap()]);
    // At the filter's line and column, not the `type` line, and not a trap.
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:4:", wf.display()))
            && first.contains("activity.q.config.filter")
            && err.contains("more than 64 deep")
            && !err.contains("stack"),
        "{err}"
    );
    assert!(
        err.len() < 2_000,
        "the filter is not printed whole: {} bytes",
        err.len()
    );
}

#[test]
fn account_parameters_are_checked_when_they_are_typed() {
    let env = Env::new();
    env.ok(&["init"]);
    let url = "https://api.twilio.com";
    let err = env.fails(&[
        "account",
        "set",
        "t",
        "--url",
        url,
        "--param",
        "alow_private=true",
    ]);
    assert!(err.contains("did you mean `allow_private`?"), "{err}");
    let err = env.fails(&[
        "account",
        "set",
        "t",
        "--url",
        url,
        "--param",
        "allow_private=yes",
    ]);
    assert!(
        err.contains("allow_private is `true` or `false`, not `yes`"),
        "{err}"
    );
    let fcm = "https://fcm.googleapis.com";
    let err = env.fails(&["account", "set", "f", "--url", fcm, "--auth", "google"]);
    assert!(err.contains("project_id"), "{err}");
    env.ok(&[
        "account",
        "set",
        "f",
        "--url",
        fcm,
        "--auth",
        "google",
        "--param",
        "project_id=p",
    ]);
    // A plugin's own parameter far from crosscast's passes.
    env.ok(&[
        "account",
        "set",
        "a",
        "--url",
        url,
        "--param",
        "topic=com.acme",
    ]);
    let listed = env.ok(&["account", "list"]);
    assert!(
        !listed.contains("alow_private") && listed.contains("topic"),
        "{listed}"
    );

    // A secret not set yet is said at once, not found at send time.
    let out = env.run(&[
        "account", "set", "twilio", "--url", url, "--secret", "tw-typo",
    ]);
    assert!(out.status.success());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("no secret `tw-typo` yet"), "{note}");

    let help = env.ok(&["account", "set", "--help"]);
    assert!(help.contains("allow_private=true|false"), "{help}");
}

#[test]
fn suppression_lists_are_checked_where_they_are_named() {
    let env = Env::new();
    env.ok(&["init"]);
    let err = env.fails(&["denylist", "add", "smss", "+15550000001"]);
    assert!(
        err.contains("no suppression list `smss`: did you mean `sms`?"),
        "{err}"
    );
    let err = env.fails(&["denylist", "add", "newsletter", "a@example.com"]);
    assert!(err.contains("the lists are"), "{err}");
    let listed = env.ok(&["denylist", "list", "--json"]);
    assert!(
        !listed.contains("+15550000001"),
        "nothing went on a list: {listed}"
    );
    env.ok(&["denylist", "add", "sms", "+15550000001"]);

    let webhook = plugin_dir().join("webhook.wasm");
    let webhook = webhook.to_str().unwrap();
    let err = env.fails(&["plugin", "install", webhook, "--suppression-list", "smss"]);
    assert!(err.contains("did you mean `sms`?"), "{err}");
    // A list of its own, far from any other, is a choice.
    env.ok(&[
        "plugin",
        "install",
        webhook,
        "--suppression-list",
        "chat-optouts",
    ]);
    env.ok(&["denylist", "add", "chat-optouts", "+15550000002"]);
}

#[test]
fn audience_headers_that_mean_a_documented_column_are_refused() {
    let env = Env::new();
    env.ok(&["init"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.csv");
    std::fs::write(
        &file,
        "id,Email,phone,First Name,loyalty\nR1,a@example.com,+15550000001,Ada,gold\n",
    )
    .unwrap();
    let err = env.fails(&["import", "recipients", file.to_str().unwrap()]);
    for (header, meant) in [
        ("Email", "email"),
        ("phone", "mobile"),
        ("First Name", "first_name"),
    ] {
        assert!(
            err.contains(&format!(
                "header `{header}` is not a recipient column: did you mean `{meant}`?"
            )),
            "{err}"
        );
    }
    assert!(err.contains(":1:"), "the header's line: {err}");
    assert!(
        !err.contains("loyalty"),
        "an extra attribute is allowed: {err}"
    );
    // NDJSON keys alike, at their line.
    let json = dir.path().join("r.ndjson");
    std::fs::write(
        &json,
        "{\"id\":\"R1\",\"email\":\"a@example.com\"}\n{\"id\":\"R2\",\"Mobile\":\"+15550000002\"}\n",
    )
    .unwrap();
    let err = env.fails(&["import", "recipients", json.to_str().unwrap()]);
    assert!(
        err.contains("r.ndjson:2: key `Mobile` is not a recipient column: did you mean `mobile`?"),
        "{err}"
    );
    let out = dir.path().join("out.ndjson");
    env.ok(&["export", "recipients", "-o", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "nothing imported"
    );
}

/// What `validate`, a dry run and a run of `file` all say on stderr, each
/// exiting 2: they refuse the same things the same way.
fn refused_alike(env: &Env, file: &str) -> String {
    let mut said: Vec<String> = Vec::new();
    for args in [
        vec!["validate", file],
        vec!["run", file, "--dry-run"],
        vec!["run", file],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        said.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    assert!(said.iter().all(|s| *s == said[0]), "{said:#?}");
    said.swap_remove(0)
}

/// Imports the sample recipients and subscriptions.
fn import_sample(env: &Env) {
    let data = common::root().join("tests/data");
    for dim in ["recipients", "subscriptions"] {
        let f = data.join(format!("{dim}.csv"));
        env.ok(&["import", dim, f.to_str().unwrap()]);
    }
}

/// A query and a split on subscriptions, the split's filter `filter`.
fn targeting(dir: &std::path::Path, dimension: &str, filter: &str) -> std::path::PathBuf {
    let wf = dir.join("targeting.toml");
    let text = format!(
        r#"name = "targeting"

[activity.query]
type = "query"
next = {{ done = "split" }}
config = {{ dimension = "{dimension}" }}

[activity.split]
type = "split"
config = {{ subsets = [{{ name = "email", filter = "{filter}" }}] }}
"#
    );
    std::fs::write(&wf, text).unwrap();
    wf
}

#[test]
fn attribute_names_are_checked_against_the_schema_with_the_name_meant() {
    let env = Env::new();
    env.ok(&["init"]);
    let wf = targeting(env.data(), "subscription", "recipient.emial is not empty");
    let file = wf.to_str().unwrap();
    // No subscription yet: a warning (an import may still add the column),
    // at the name inside the filter (line 10, column 51), and validate
    // says ok.
    let out = env.run(&["validate", file]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{file}:10:51: activity.split.config.subsets[0].filter: warning: \
             `recipient.emial` is not an attribute of subscription: did you mean \
             `recipient.email`? (no subscription imported yet"
        )),
        "{err}"
    );
    // With the audience imported, the same name is an error, for validate,
    // a dry run and a run alike.
    import_sample(&env);
    let said = format!(
        "{file}:10:51: activity.split.config.subsets[0].filter: `recipient.emial` is not an \
         attribute of subscription: did you mean `recipient.email`?"
    );
    assert_eq!(refused_alike(&env, file), said);
    let runs = env.run(&["status", "1", "--json"]);
    assert!(!runs.status.success(), "no run started");

    // The dimension the split reads comes from the query: on recipients,
    // `email` is right and `recipient.email` is not a path.
    let wf = targeting(env.data(), "recipient", "email is not empty");
    env.ok(&["validate", wf.to_str().unwrap()]);
    // An unknown dimension, with the one meant.
    let wf = targeting(env.data(), "subscriptions", "platform = 'ios'");
    let err = env.fails(&["validate", wf.to_str().unwrap()]);
    assert!(
        err.contains(":6:24: activity.query.config.dimension: unknown dimension `subscriptions`: did you mean `subscription`?"),
        "{err}"
    );
    // A column only an import brings is known once imported.
    let wf = targeting(env.data(), "recipient", "tier = 'gold'");
    let err = env.fails(&["validate", wf.to_str().unwrap()]);
    assert!(
        err.contains("`tier` is not an attribute of recipient"),
        "{err}"
    );
    let extra = env.data().join("tier.csv");
    std::fs::write(&extra, "id,tier\nR1,gold\n").unwrap();
    env.ok(&["import", "recipients", extra.to_str().unwrap()]);
    env.ok(&["validate", wf.to_str().unwrap()]);
}

/// The reference workflow with `from` replaced by `to`, written into the
/// data directory.
fn reference_with(env: &Env, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(common::root().join("examples/cross-channel.toml")).unwrap();
    assert!(text.contains(from), "{from}");
    let wf = env.data().join("reference.toml");
    std::fs::write(&wf, text.replacen(from, to, 1)).unwrap();
    wf
}

#[test]
fn accounts_are_checked_before_a_run_the_same_way_on_every_channel() {
    use common::rig::servers;
    let s = servers();
    let env = Env::new();
    env.ok(&["init"]);
    // Everything but the grants.
    for args in s.rig.setup_commands(env.data()).unwrap() {
        if args[..2] != ["plugin", "grant"] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.ok(&args);
        }
    }
    import_sample(&env);
    let reference = common::root().join("examples/cross-channel.toml");
    let file = reference.to_str().unwrap();
    // A missing grant: every channel alike, before anything starts, at the
    // account's line in the config; validate, a dry run and a run agree.
    let lines = |err: &str| -> Vec<String> { err.lines().map(str::to_string).collect() };
    let expected: Vec<String> = [
        (34, "deliver_email", "smtp", "email"),
        (51, "deliver_sms", "twilio", "sms"),
        (74, "push_ios", "apns", "apns"),
        (84, "push_android", "fcm", "fcm"),
    ]
    .iter()
    .map(|(line, activity, account, plugin)| {
        format!(
            "{file}:{line}:11: activity.{activity}.config.account: account `{account}` is not \
             granted to plugin `{plugin}`: `crosscast plugin grant {plugin} --account {account}`"
        )
    })
    .collect();
    assert_eq!(lines(&refused_alike(&env, file)), expected);
    assert!(s.rig.smtp.received().is_empty() && s.rig.sms.received().is_empty());
    for (plugin, account) in [
        ("email", "smtp"),
        ("sms", "twilio"),
        ("apns", "apns"),
        ("fcm", "fcm"),
    ] {
        env.ok(&["plugin", "grant", plugin, "--account", account]);
    }
    env.ok(&["validate", file]);

    // A misspelt account, with the one meant.
    let wf = reference_with(&env, "account = \"twilio\"", "account = \"twillio\"");
    let err = env.fails(&["validate", wf.to_str().unwrap()]);
    assert!(
        err.contains(":51:11: activity.deliver_sms.config.account: no account `twillio`: did you mean `twilio`?"),
        "{err}"
    );
    // A secret that was never set (the issue's `--secret tw-typo`).
    env.ok(&[
        "account",
        "set",
        "twilio",
        "--url",
        &s.rig.sms.url(),
        "--user",
        "AC1",
        "--secret",
        "tw-typo",
        "--param",
        "allow_private=true",
    ]);
    let err = env.fails(&["validate", file]);
    assert!(
        err.contains("account `twilio` uses secret `tw-typo`, which is not set"),
        "{err}"
    );
    let token = env.data().join("token.txt");
    std::fs::write(&token, crosscast_test_servers::rig::AUTH_TOKEN).unwrap();
    env.ok(&[
        "secret",
        "set",
        "tw-typo",
        "--from-file",
        token.to_str().unwrap(),
    ]);
    env.ok(&["validate", file]);
    // A parameter the plugin reads: APNs' topic, from the account when the
    // config has none. A near miss on the account is refused at grant.
    let wf = reference_with(&env, "topic = \"com.acme.shop\"\n", "");
    let err = env.fails(&["validate", wf.to_str().unwrap()]);
    assert!(
        err.contains("plugin `apns` reads parameter `topic` of account `apns`, which has none"),
        "{err}"
    );
    let apns_url = s.rig.apns.url();
    let mut apns = vec![
        "account",
        "set",
        "apns",
        "--url",
        &apns_url,
        "--secret",
        "apns-key",
        "--auth",
        "apns",
        "--param",
        "team_id=TEAM123456",
        "--param",
        "key_id=KEY1234567",
        "--param",
        "allow_private=true",
    ];
    apns.extend(["--param", "topik=com.acme.shop"]);
    env.ok(&apns);
    let err = env.fails(&["plugin", "grant", "apns", "--account", "apns"]);
    assert!(err.contains("did you mean `topic`?"), "{err}");
    apns.pop();
    apns.push("topic=com.acme.shop");
    env.ok(&apns);
    env.ok(&["plugin", "grant", "apns", "--account", "apns"]);
    env.ok(&["validate", wf.to_str().unwrap()]);
}

#[test]
fn a_third_party_channel_gets_the_same_checks() {
    // The webhook example declares its account and compiles its template
    // with the SDK: the host checks both without knowing its config.
    let env = Env::new();
    env.ok(&["init"]);
    let recipients = common::root().join("tests/data/recipients.csv");
    env.ok(&["import", "recipients", recipients.to_str().unwrap()]);
    let webhook = plugin_dir().join("webhook.wasm");
    env.ok(&["plugin", "install", webhook.to_str().unwrap()]);
    env.ok(&[
        "account",
        "set",
        "hook",
        "--url",
        "https://hooks.example.com",
    ]);
    env.ok(&["plugin", "grant", "webhook", "--account", "hook"]);
    let wf = env.data().join("hook.toml");
    std::fs::write(
        &wf,
        r#"name = "hook"
[activity.all]
type = "query"
next = { done = "notify" }
config = { dimension = "recipient" }
[activity.notify]
type = "webhook"
config = { account = "hoook", path = "/m", text = "Hi {{ frist_name }}" }
"#,
    )
    .unwrap();
    let err = env.fails(&["validate", wf.to_str().unwrap()]);
    let f = wf.display();
    assert!(
        err.contains(&format!(
            "{f}:8:22: activity.notify.config.account: no account `hoook`: did you mean `hook`?"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:8:58: activity.notify.config.text: `frist_name` is not an attribute of \
             recipient: did you mean `first_name`?"
        )),
        "{err}"
    );
}

#[test]
fn an_activity_built_against_0_1_0_still_loads_and_runs() {
    // Plain wit-bindgen on the 0.1.0 world: no preflight export, so no
    // names declared, and the host loads and runs it as before.
    let env = Env::new();
    env.ok(&["init"]);
    import_sample(&env);
    let fixture = plugin_dir().join("crosscast_fixture_keep_v1.wasm");
    let out = env.ok(&["plugin", "install", fixture.to_str().unwrap()]);
    assert!(
        out.contains("built against crosscast:plugin/activity-plugin@0.1.0, no SDK stamp"),
        "{out}"
    );
    let wf = env.data().join("keep.toml");
    std::fs::write(
        &wf,
        r#"name = "keep"
[activity.query]
type = "query"
next = { done = "keep" }
config = { dimension = "recipient", filter = "email is not empty" }
[activity.keep]
type = "keep-v1"
next = { done = "split" }
[activity.split]
type = "split"
config = { subsets = [{ name = "fr", filter = "locale = 'fr'" }] }
"#,
    )
    .unwrap();
    env.ok(&["validate", wf.to_str().unwrap()]);
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["run", wf.to_str().unwrap(), "--json"])).unwrap();
    let n = |a: &str, t: &str| common::count(&status, a, t);
    let with_email = common::read_recipients(&common::root().join("tests/data/recipients.csv"))
        .values()
        .filter(|r| r.email.is_some())
        .count() as u64;
    assert_eq!(n("query", "done"), with_email);
    assert_eq!(n("keep", "done"), with_email, "{status}");
}
