//! `crosscast doctor` (issue 30, point 4): the installation checked without
//! sending a message, against the loopback servers: every step of every
//! account OK on a working setup, and a dead port, an unknown CA, a wrong
//! service-account key, a wrong SMTP password, an address the egress
//! policy refuses and a missing secret each a FAIL at their step, with the
//! fix. (A changed plugin component is `doctor`'s unit test.)

mod common;

use common::rig::{servers, setup};
use common::{Env, free_port};
use crosscast_test_servers::SinkOptions;
use crosscast_test_servers::keys::ServiceAccount;
use crosscast_test_servers::rig::LOOPBACK;
use serde_json::Value;

/// `doctor --json`: whether it exited 0, and its checks.
fn doctor(env: &Env) -> (Option<i32>, Vec<Value>) {
    let out = env.run(&["doctor", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(
        v["ok"].as_bool(),
        Some(out.status.success()),
        "`ok` says what the exit code says"
    );
    (out.status.code(), v["checks"].as_array().unwrap().clone())
}

/// The check `check` of `subject`.
fn find<'a>(checks: &'a [Value], subject: &str, check: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["subject"] == subject && c["check"] == check)
        .unwrap_or_else(|| panic!("no `{check}` check of `{subject}` in {checks:#?}"))
}

/// The steps checked for an account, in order.
fn steps(checks: &[Value], account: &str) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c["subject"] == format!("account {account}"))
        .map(|c| c["check"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_working_installation_is_all_ok_and_nothing_is_sent() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let tokens_before = s.rig.fcm.tokens_issued();
    let (code, checks) = doctor(&env);
    let failed: Vec<&Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(code, Some(0));

    let data = env.data().display().to_string();
    let dir = |check| find(&checks, &format!("data directory {data}"), check);
    assert!(dir("mode")["detail"].as_str().unwrap().starts_with("0700"));
    assert_eq!(dir("write")["detail"], "writable");
    let key = format!("key file {}", env.key_file().display());
    assert_eq!(
        find(&checks, &key, "secrets")["detail"],
        "opens all 3 secret(s)"
    );
    assert!(
        find(&checks, "trusted CAs", "parse")["detail"]
            .as_str()
            .unwrap()
            .contains("test-ca")
    );
    for plugin in ["query", "email", "sms", "apns", "fcm"] {
        let line = find(&checks, &format!("plugin {plugin}"), "sha256");
        assert!(
            line["detail"]
                .as_str()
                .unwrap()
                .contains("component matches")
        );
    }

    let http = [
        "url",
        "resolve",
        "egress",
        "tcp",
        "tls",
        "http",
        "credentials",
    ];
    for account in ["apns", "fcm"] {
        assert_eq!(steps(&checks, account), http, "{account}");
    }
    // The SMS API is plain http on loopback: no ALPN to read.
    assert_eq!(
        steps(&checks, "twilio"),
        ["url", "resolve", "egress", "tcp", "tls", "credentials"]
    );
    assert_eq!(
        steps(&checks, "smtp"),
        [
            "url",
            "resolve",
            "egress",
            "tcp",
            "tls",
            "smtp",
            "credentials"
        ]
    );
    let detail = |account: &str, check: &str| {
        find(&checks, &format!("account {account}"), check)["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(detail("apns", "http"), "HTTP/2 (ALPN h2)");
    assert!(detail("apns", "tls").contains("certificate trusted"));
    assert!(detail("apns", "egress").contains("allow_private=true"));
    assert!(
        detail("apns", "credentials").contains("not verifiable without sending"),
        "{}",
        detail("apns", "credentials")
    );
    assert!(detail("twilio", "credentials").contains("not verifiable without sending"));
    assert!(
        detail("fcm", "credentials").contains("gave an access token"),
        "{}",
        detail("fcm", "credentials")
    );
    assert!(
        detail("smtp", "smtp").contains("PIPELINING, 8BITMIME, SMTPUTF8"),
        "{}",
        detail("smtp", "smtp")
    );
    // The token exchange really happened (not from the cache), and no
    // message went anywhere.
    assert_eq!(s.rig.fcm.tokens_issued(), tokens_before + 1);
    assert!(s.rig.smtp.received().is_empty());
    assert!(s.rig.sms.received().is_empty());
    assert!(s.rig.apns.received().is_empty());
    assert!(s.rig.fcm.received().is_empty());

    // The text report: one line per check, OK first.
    let text = env.ok(&["doctor"]);
    assert!(
        text.lines().all(|l| l.starts_with("OK  ")),
        "every line OK:\n{text}"
    );
    assert!(text.contains("account fcm") && text.contains("credentials: the token endpoint"));
}

#[test]
fn each_broken_step_fails_with_its_fix() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    // A relay that asks for AUTH over STARTTLS, given the wrong password.
    let tls = s.rig.tls.server_config(&[]).unwrap();
    let relay = s.start_sink(SinkOptions {
        security: crosscast_test_servers::Security::StartTls(tls),
        auth: Some(("mailer".into(), "s3cret".into())),
        ..SinkOptions::default()
    });
    let wrong = env.keys.path().join("wrong.txt");
    std::fs::write(&wrong, "nope").unwrap();
    env.ok(&[
        "secret",
        "set",
        "wrong",
        "--from-file",
        wrong.to_str().unwrap(),
    ]);
    let relay_url = format!("smtp://127.0.0.1:{}?tls=required", relay.addr.port());
    env.ok(&[
        "account", "set", "relay", "--url", &relay_url, "--user", "mailer", "--secret", "wrong",
        "--param", LOOPBACK,
    ]);
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    env.ok(&[
        "account", "set", "dead", "--url", &dead, "--param", LOOPBACK,
    ]);
    // Loopback without allow_private.
    env.ok(&["account", "set", "inside", "--url", &s.rig.sms.url()]);
    // Another service account's key, at the rig's token endpoint.
    let other = ServiceAccount::generate("acme-test").unwrap();
    let key = env.keys.path().join("other-sa.json");
    std::fs::write(&key, other.json(&s.rig.fcm.token_uri())).unwrap();
    env.ok(&[
        "secret",
        "set",
        "fcm-service-account",
        "--from-file",
        key.to_str().unwrap(),
    ]);
    // A secret the account names but nobody set.
    env.ok(&[
        "account",
        "set",
        "nokey",
        "--url",
        &s.rig.sms.url(),
        "--user",
        "AC1",
        "--secret",
        "missing",
        "--param",
        LOOPBACK,
    ]);

    let (code, checks) = doctor(&env);
    assert_eq!(code, Some(1), "a FAIL exits 1");
    let failed = |account: &str| {
        let subject = format!("account {account}");
        let fails: Vec<&Value> = checks
            .iter()
            .filter(|c| c["subject"] == subject && c["ok"] == false)
            .collect();
        assert_eq!(
            fails.len(),
            1,
            "{account}: one FAIL, the walk stops: {fails:#?}"
        );
        (
            fails[0]["check"].as_str().unwrap().to_string(),
            fails[0]["detail"].as_str().unwrap().to_string(),
            fails[0]["fix"].as_str().unwrap().to_string(),
        )
    };
    let (step, _, fix) = failed("dead");
    assert_eq!(step, "tcp");
    assert!(fix.contains("nothing answers there"), "{fix}");
    let (step, detail, fix) = failed("inside");
    assert_eq!(step, "egress");
    assert!(detail.contains("egress denied"), "{detail}");
    assert!(fix.contains("allow_private=true"), "{fix}");
    let (step, detail, fix) = failed("fcm");
    assert_eq!(step, "credentials");
    assert!(detail.contains("token exchange"), "{detail}");
    assert!(fix.contains("service account key"), "{fix}");
    let (step, _, fix) = failed("relay");
    assert_eq!(step, "credentials");
    assert!(fix.contains("crosscast secret set wrong"), "{fix}");
    let (step, detail, _) = failed("nokey");
    assert_eq!(step, "credentials");
    assert!(detail.contains("missing"), "{detail}");
    // The working accounts are still OK.
    for account in ["smtp", "twilio", "apns"] {
        assert!(
            checks
                .iter()
                .filter(|c| c["subject"] == format!("account {account}"))
                .all(|c| c["ok"] == true),
            "{account}"
        );
    }
    // The text report puts the fix under the FAIL.
    let out = env.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("FAIL") && l.contains("account dead") && l.contains("tcp:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[at + 1]
            .trim_start()
            .starts_with("fix: nothing answers"),
        "{text}"
    );
    assert!(s.rig.fcm.received().is_empty() && s.rig.sms.received().is_empty());
}

#[test]
fn an_unknown_ca_fails_tls_with_its_fix() {
    let s = servers();
    let env = Env::new();
    env.ok(&["init"]);
    // The rig's accounts without its CA: its TLS servers are not trusted.
    for args in s.rig.setup_commands(env.data()).unwrap() {
        if args[0] != "ca" {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.ok(&args);
        }
    }
    let (code, checks) = doctor(&env);
    assert_eq!(code, Some(1));
    for account in ["apns", "fcm"] {
        let tls = find(&checks, &format!("account {account}"), "tls");
        assert_eq!(tls["ok"], false, "{account}");
        assert!(
            tls["detail"].as_str().unwrap().contains("not trusted")
                && tls["fix"].as_str().unwrap().contains("crosscast ca add"),
            "{tls:#?}"
        );
    }
    // The plain-text servers do not care.
    assert!(
        checks
            .iter()
            .filter(|c| c["subject"] == "account twilio" || c["subject"] == "account smtp")
            .all(|c| c["ok"] == true)
    );
}
