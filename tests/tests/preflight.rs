//! Names checked where they are typed (issue 30, point 3): account
//! parameters, suppression lists and audience headers, each refused with
//! the name that was meant.

mod common;

use common::{Env, plugin_dir};

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
    let out = dir.path().join("out.ndjson");
    env.ok(&["export", "recipients", "-o", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "nothing imported"
    );
}
