//! `crosscast serve` as a process: the CLI beside it (same output, same exit
//! codes), its virtual clock, the HTTP API with a real client and its
//! tokens, runs in parallel, and stops (SIGTERM, kill -9) that lose nothing.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::rig::{WAVE, per_address, servers, setup, slow_newsletter};
use common::served::{Served, wait_for};
use common::{Env, free_port, plugin_dir, root};
use serde_json::Value;

const T0: &str = "2026-01-05T09:00:00Z";

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// While serve holds the data directory, every command is carried out by
/// it with the output and exit code it has without a server (compared
/// command by command once the server stopped); `worker`, `init` and `--now`
/// are refused with their own codes; relative paths and standard input
/// reach the server; and `clock advance` crosses the reference workflow's
/// week-long wait on the server's virtual clock.
#[test]
fn the_cli_works_beside_serve_with_the_same_output_and_exit_codes() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let served = Served::start(&env, &["--now", T0]);
    let wf = root().join("examples/cross-channel.toml");

    // A run, carried out by the server: it sends, then waits a week.
    let out = env.run(&["run", wf.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), Some(0), "{}", text(&out.stderr));
    let st: Value = serde_json::from_slice(&out.stdout).expect("run --json through serve");
    assert_eq!(st["state"], "waiting", "{st:#}");
    let emails = s.rig.smtp.received().len();
    assert!(emails > 0 && !s.rig.sms.received().is_empty());
    assert!(s.rig.apns.received().is_empty() && s.rig.fcm.received().is_empty());

    // Exit codes: refused, usage, failed.
    let worker = env.run(&["worker"]);
    assert_eq!(code(&worker), Some(3));
    assert!(
        text(&worker.stderr).contains(&format!("crosscast serve (process {})", served.pid())),
        "{}",
        text(&worker.stderr)
    );
    assert_eq!(code(&env.run(&["init"])), Some(3));
    let now = env.run(&["--now", T0, "status", "1"]);
    assert_eq!(code(&now), Some(2));
    assert!(
        text(&now.stderr).contains("clock advance"),
        "{}",
        text(&now.stderr)
    );
    let missing = env.run(&["status", "99"]);
    assert_eq!(code(&missing), Some(1));
    assert_eq!(text(&missing.stderr).trim(), "error: run 99 does not exist");
    let bad = env.data().join("bad.toml");
    std::fs::write(&bad, "name = \"bad\"\n[activity.q]\ntype = \"qeury\"\n").unwrap();
    let invalid = env.run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code(&invalid), Some(2));
    assert!(
        text(&invalid.stderr).contains("bad.toml:3"),
        "a diagnostic with its line: {}",
        text(&invalid.stderr)
    );

    // Standard input and relative paths reach the server.
    let mut secret = env
        .command(&["secret", "set", "piped", "--from-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(secret.stdin.as_mut().unwrap(), b"s3cret").unwrap();
    let secret = secret.wait_with_output().unwrap();
    assert_eq!(
        text(&secret.stdout).trim(),
        "secret piped saved (6 bytes, sealed)"
    );
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("extra.csv"),
        "id,email\nX1,x1@example.com\n",
    )
    .unwrap();
    let imported = env
        .command(&["import", "recipients", "extra.csv"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert_eq!(code(&imported), Some(0), "{}", text(&imported.stderr));
    assert!(text(&imported.stdout).contains("imported 1 recipients from"));
    let exported = env
        .command(&["export", "recipients", "-o", "out.ndjson"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert_eq!(code(&exported), Some(0), "{}", text(&exported.stderr));
    let streamed = env.ok(&["export", "recipients"]);
    assert_eq!(
        std::fs::read_to_string(cwd.path().join("out.ndjson")).unwrap(),
        streamed,
        "export -o (written by the server) and export to stdout (streamed) agree"
    );
    assert_eq!(streamed.lines().count(), 301);

    // The virtual clock crosses the wait: both waits fire, pushes go out.
    let moved = env.ok(&["clock", "advance", "7d"]);
    assert!(
        moved.starts_with("clock: 2026-01-12T09:00:00Z") && moved.contains("2 timer(s) fired"),
        "{moved}"
    );
    wait_for("the run to end", Duration::from_secs(60), || {
        env.status(1)["state"] == "done"
    });
    let st = env.status(1);
    let sent = |a: &str| st["activities"][a]["deliveries"]["sent"].as_u64().unwrap() as usize;
    assert_eq!(sent("push_ios"), s.rig.apns.received().len());
    assert_eq!(sent("push_android"), s.rig.fcm.received().len());
    assert!(sent("push_ios") > 0 && sent("push_android") > 0);
    assert_eq!(sent("deliver_email"), emails);

    // The other command groups, carried out by the server.
    let said = env.ok(&[
        "account",
        "set",
        "relay2",
        "--url",
        "smtp://127.0.0.1:2525",
        "--rate",
        "5",
    ]);
    assert_eq!(said.trim(), "account relay2 saved");
    assert_eq!(
        env.ok(&["plugin", "grant", "email", "--account", "relay2"])
            .trim(),
        "email may use: smtp, relay2"
    );
    let ca = env.data().join("test-ca.pem");
    assert_eq!(
        env.ok(&["ca", "add", "again", ca.to_str().unwrap()]).trim(),
        "trusting CA again for outbound TLS"
    );
    env.ok(&["denylist", "add", "email", "stop@example.com"]);
    assert_eq!(
        env.ok(&["denylist", "remove", "email", "stop@example.com"])
            .trim(),
        "stop@example.com removed from the email list"
    );
    let doctor = env.run(&["doctor", "--json"]);
    let checks: Value = serde_json::from_slice(&doctor.stdout).expect("doctor --json, served");
    assert!(checks["checks"].as_array().unwrap().len() > 4, "{checks}");
    // relay2 is refused (an internal address without allow_private): 1.
    assert_eq!(code(&doctor), Some(1), "{checks:#}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.data().join("serve.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token's file is its owner's alone");

    // The same commands, served and then carried out directly.
    let commands: &[&[&str]] = &[
        &["ca", "list"],
        &["token", "list"],
        &["status", "1"],
        &["status", "1", "--json"],
        &["deliveries", "1", "--json"],
        &["deliveries", "1", "--activity", "deliver_sms"],
        &["members", "1", "split_channel", "email"],
        &["plugin", "list"],
        &["account", "list"],
        &["denylist", "list"],
        &["secret", "list"],
        &["unsubscribe", "show"],
        &["status", "99"],
        &["members", "1", "split_channel", "nowhere"],
    ];
    let before: Vec<_> = commands.iter().map(|c| env.run(c)).collect();
    let (stopped, log) = served.terminate();
    assert_eq!(stopped, Some(0), "{log}");
    assert!(log.contains("stopped: every outcome is stored"), "{log}");
    assert!(!env.data().join("serve.json").exists());
    for (c, served) in commands.iter().zip(before) {
        let direct = env.run(c);
        assert_eq!(code(&served), code(&direct), "exit code of {c:?}");
        assert_eq!(
            text(&served.stdout),
            text(&direct.stdout),
            "output of {c:?}"
        );
        assert_eq!(
            text(&served.stderr),
            text(&direct.stderr),
            "errors of {c:?}"
        );
    }
}

/// Ctrl-C of a client whose import the server carries out stops the
/// import: nothing of it is stored, and the client says so with exit 130.
#[test]
fn ctrl_c_of_a_client_stops_the_import_the_server_carries_out() {
    let env = Env::new();
    env.ok(&["init"]);
    let served = Served::start(&env, &[]);
    let big = env.data().with_extension("big.csv");
    let mut rows = String::from("id,email\n");
    for n in 0..1_000_000 {
        rows.push_str(&format!("B{n},b{n}@example.com\n"));
    }
    std::fs::write(&big, rows).unwrap();
    let client = env
        .command(&["import", "recipients", big.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the import to start", Duration::from_secs(30), || {
        served.log().contains("command=\"import\"")
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(client.id() as libc::pid_t, libc::SIGINT) };
    let out = client.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(130), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("an import stops, having stored nothing"));
    // Once the import stopped another may start (one at a time): the
    // audience then holds its row and nothing of the stopped one.
    let small = env.data().with_extension("small.csv");
    std::fs::write(&small, "id,email\nS1,s1@example.com\n").unwrap();
    wait_for("the import to stop", Duration::from_secs(60), || {
        env.run(&["import", "recipients", small.to_str().unwrap()])
            .status
            .success()
    });
    let export = env.ok(&["export", "recipients"]);
    assert_eq!(export.trim(), r#"{"email":"s1@example.com","id":"S1"}"#);
    assert!(served.log().contains("import"));
    std::fs::remove_file(&big).unwrap();
}

/// A blocking client with a bearer token.
fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
}

/// A client of the API that checks every answer against the OpenAPI
/// document the server serves, and remembers which routes it called.
struct Checked {
    http: reqwest::blocking::Client,
    api: String,
    doc: Value,
    called: std::cell::RefCell<BTreeSet<(String, String)>>,
}

impl Checked {
    /// Fetches the document with `token`.
    fn new(api: &str, token: &str) -> Checked {
        let http = client();
        let doc: Value = http
            .get(format!("{api}/api/v1/openapi.json"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3."),
            "{doc:#}"
        );
        Checked {
            http,
            api: api.to_string(),
            doc,
            called: Default::default(),
        }
    }

    /// Sends `request` (to the route `template`), checks the answer's body
    /// against the document's schema for its status, and returns both.
    fn send(
        &self,
        template: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let request = request.build().unwrap();
        let method = request.method().as_str().to_lowercase();
        let response = self.http.execute(request).unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body: Value = response.json().expect("a JSON answer");
        if let Err(e) = self.validates(&method, template, status, &body) {
            panic!("{method} {template} {status}: {e}\nbody: {body:#}");
        }
        self.called
            .borrow_mut()
            .insert((method, template.to_string()));
        (status, body, headers)
    }

    /// Checks `body` against the document's schema for the answer.
    fn validates(
        &self,
        method: &str,
        template: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        let operation = &self.doc["paths"][template][method];
        if !operation.is_object() {
            return Err("not in the document".into());
        }
        let schema =
            &operation["responses"][status.to_string()]["content"]["application/json"]["schema"];
        if !schema.is_object() {
            return Err("an answer the document does not describe".into());
        }
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root).map_err(|e| e.to_string())?;
        validator
            .validate(body)
            .map_err(|e| format!("{e} (schema {schema})"))
    }

    fn get(&self, template: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.api));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let (status, body, _) = self.send(template, r);
        (status, body)
    }

    fn post(&self, path: &str, token: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.api))
            .bearer_auth(token)
    }

    /// Every route of the document was called, and nothing else.
    fn covered(&self) {
        let documented: BTreeSet<(String, String)> = self.doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        assert_eq!(*self.called.borrow(), documented);
    }
}

/// The API: 401 without a token, with an unknown one and with a revoked
/// one; imports streamed in; a run started from a workflow's text, its
/// status, members and log; the virtual clock moved through it; accounts
/// and plugins without a secret; commands only for the CLI's own token.
/// Every answer is checked against the OpenAPI document the server serves,
/// and every route in it is called.
#[test]
fn the_api_answers_token_holders_only_and_runs_workflows() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let served = Served::start(&env, &["--now", T0]);
    let token = env.ok(&["token", "create", "ci"]).trim().to_string();
    assert!(token.starts_with("cct_"), "{token}");
    let api = Checked::new(&served.api, &token);
    let tok = Some(token.as_str());
    // The check can fail: answers of another shape do not validate.
    let run = "/api/v1/runs/{run}";
    assert!(
        api.validates("get", run, 200, &serde_json::json!({ "run": "one" }))
            .is_err()
    );
    let wrong = serde_json::json!([{ "activity": "a", "target": 1, "state": "lost" }]);
    assert!(
        api.validates("get", "/api/v1/runs/{run}/deliveries", 200, &wrong)
            .is_err()
    );
    assert!(
        api.validates("get", run, 418, &serde_json::json!({}))
            .is_err()
    );

    let (_, _, headers) = api.send(
        "/api/v1/runs",
        api.http.get(format!("{}/api/v1/runs", served.api)),
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(api.get("/api/v1/runs", "/api/v1/runs", None).0, 401);
    assert_eq!(
        api.get("/api/v1/runs", "/api/v1/runs", Some("cct_0123")).0,
        401
    );
    assert_eq!(
        api.get("/api/v1/runs", "/api/v1/runs", tok),
        (200, serde_json::json!([]))
    );

    // An import, streamed: all or nothing.
    let imports = "/api/v1/imports/{dimension}";
    let csv = std::fs::read(root().join("tests/data/recipients.csv")).unwrap();
    let (status, v, _) = api.send(
        imports,
        api.post("/api/v1/imports/recipients", &token).body(csv),
    );
    assert_eq!((status, &v["updated"]), (200, &Value::from(300)), "{v}");
    let refused = api
        .post("/api/v1/imports/recipients", &token)
        .body("id,email\nZ1,z1@example.com\nZ2,not-an-email\n");
    let (status, v, _) = api.send(imports, refused);
    assert_eq!(status, 422);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("upload:3: email `not-an-email`"),
        "{v}"
    );
    let export = env.ok(&["export", "recipients"]);
    assert!(
        !export.contains("Z1"),
        "nothing of a refused upload is stored"
    );
    // With skip_invalid: the valid records, and the refused ones listed.
    let skipping = api
        .post("/api/v1/imports/recipients?skip_invalid=true", &token)
        .body("id,email\nZ1,z1@example.com\nZ2,not-an-email\n");
    let (status, v, _) = api.send(imports, skipping);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["inserted"], &v["rejected"]),
        (&Value::from(1), &Value::from(1)),
        "{v}"
    );
    assert_eq!(v["rejects"][0]["line"], 3, "{v}");
    assert_eq!(v["rejects"][0]["record"]["id"], "Z2", "{v}");
    assert!(
        v["rejects"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("not-an-email"),
        "{v}"
    );
    let export = env.ok(&["export", "recipients"]);
    assert!(export.contains("Z1") && !export.contains("Z2"), "{export}");
    let uploads = std::fs::read_dir(env.data().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "neither the upload nor its rejects are kept");
    let (status, _, _) = api.send(
        imports,
        api.post("/api/v1/imports/visitors", &token).body("id\n"),
    );
    assert_eq!(status, 404);

    // A run from the workflow's text: the worker drives it.
    let wf = std::fs::read_to_string(root().join("examples/cross-channel.toml")).unwrap();
    let start = api
        .post("/api/v1/runs?name=cross-channel.toml", &token)
        .body(wf.clone());
    let (status, v, headers) = api.send("/api/v1/runs", start);
    assert_eq!((status, &v["run"]), (201, &Value::from(1)));
    assert_eq!(headers["location"], "/api/v1/runs/1");
    let state = || api.get(run, "/api/v1/runs/1", tok).1["state"].clone();
    wait_for("the run to wait", Duration::from_secs(60), || {
        state() == "waiting"
    });

    // A signal: kept for the run though nothing waits for it; ids of no
    // record and a name no activity could wait for are refused.
    let signal = "/api/v1/runs/{run}/signals/{name}";
    let (status, sent, _) = api.send(signal, api.post("/api/v1/runs/1/signals/late", &token));
    assert_eq!(status, 200, "{sent}");
    assert_eq!(
        (&sent["seq"], &sent["woken"]),
        (&Value::from(1), &Value::from(0))
    );
    let named = api
        .post("/api/v1/runs/1/signals/late", &token)
        .json(&serde_json::json!({ "ids": ["R1", "NOPE"] }));
    let (status, v, _) = api.send(signal, named);
    assert_eq!(status, 422);
    assert!(v["error"].as_str().unwrap().contains("`NOPE`"), "{v}");
    let (status, _, _) = api.send(signal, api.post("/api/v1/runs/1/signals/a%20b", &token));
    assert_eq!(status, 400);
    let (status, _, _) = api.send(signal, api.post("/api/v1/runs/7/signals/late", &token));
    assert_eq!(status, 404);
    let bad = api
        .post("/api/v1/runs", &token)
        .body("name = \"x\"\n[activity.q]\ntype = \"query\"\nnext = { done = \"nowhere\" }\n");
    let (status, bad, _) = api.send("/api/v1/runs", bad);
    assert_eq!(status, 422);
    let diagnostics = bad["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics.iter().any(|d| d
            .as_str()
            .unwrap()
            .starts_with("api:4:17: activity.q.next.done")),
        "{bad}"
    );

    let (_, clock) = api.get("/api/v1/clock", "/api/v1/clock", tok);
    assert_eq!(clock, serde_json::json!({ "now": T0, "virtual": true }));
    let advance = "/api/v1/clock/advance";
    let (status, moved, _) = api.send(
        advance,
        api.post(advance, &token)
            .json(&serde_json::json!({ "by": "7d" })),
    );
    assert_eq!(status, 200);
    assert_eq!(
        moved,
        serde_json::json!({ "now": "2026-01-12T09:00:00Z", "fired": 2, "started": 0 })
    );
    let (status, _, _) = api.send(
        advance,
        api.post(advance, &token)
            .json(&serde_json::json!({ "by": "soon" })),
    );
    assert_eq!(status, 400);
    wait_for("the run to end", Duration::from_secs(60), || {
        state() == "done"
    });
    let (_, status) = api.get(run, "/api/v1/runs/1", tok);
    assert_eq!(
        status,
        env.status(1),
        "the API's status is the CLI's --json"
    );
    assert_eq!(api.get(run, "/api/v1/runs/7", tok).0, 404);

    // A finished run takes no signal.
    let (status, _, _) = api.send(signal, api.post("/api/v1/runs/1/signals/late", &token));
    assert_eq!(status, 409);
    let (_, runs) = api.get("/api/v1/runs", "/api/v1/runs", tok);
    assert_eq!(runs[0]["state"], "done");

    let log = "/api/v1/runs/{run}/deliveries";
    let (_, entries) = api.get(log, "/api/v1/runs/1/deliveries?activity=push_ios", tok);
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), s.rig.apns.received().len());
    assert!(
        entries
            .iter()
            .all(|e| e["state"] == "sent" && e["activity"] == "push_ios")
    );
    let cli_log: Vec<Value> = env
        .ok(&["deliveries", "1", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (_, all) = api.get(log, "/api/v1/runs/1/deliveries", tok);
    assert_eq!(
        all,
        Value::from(cli_log),
        "the API's log is the CLI's --json"
    );
    // The log filtered by state and cause, as the CLI names them.
    let (_, sent) = api.get(log, "/api/v1/runs/1/deliveries?state=sent,in_flight", tok);
    let sent_cli = env.ok(&[
        "deliveries",
        "1",
        "--json",
        "--state",
        "sent",
        "--state",
        "in-flight",
    ]);
    assert_eq!(sent.as_array().unwrap().len(), sent_cli.lines().count());
    let (status, refused) = api.get(log, "/api/v1/runs/1/deliveries?state=lost", tok);
    assert_eq!(status, 400);
    assert!(
        refused["error"].as_str().unwrap().contains("in_flight"),
        "{refused}"
    );
    let (_, none) = api.get(log, "/api/v1/runs/1/deliveries?cause=certificate", tok);
    assert_eq!(none, serde_json::json!([]), "nothing failed");

    // The run's graph and an activity's detail: the servers' counts.
    let (_, graph) = api.get("/api/v1/runs/{run}/graph", "/api/v1/runs/1/graph", tok);
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 8, "{graph}");
    let ios_edge = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == "split_os" && e["transition"] == "ios")
        .unwrap();
    assert_eq!(ios_edge["count"], s.rig.apns.received().len());
    let activity = "/api/v1/runs/{run}/activities/{activity}";
    let (_, email) = api.get(activity, "/api/v1/runs/1/activities/deliver_email", tok);
    assert_eq!(
        email["status"]["deliveries"]["sent"],
        s.rig.smtp.received().len()
    );
    assert!(
        email["sample"]["subject"]
            .as_str()
            .unwrap()
            .ends_with(", new arrivals are in"),
        "{email}"
    );
    let (_, quiet) = api.get(
        activity,
        "/api/v1/runs/1/activities/deliver_email?sample=false",
        tok,
    );
    assert_eq!(quiet["sample"], Value::Null);
    assert_eq!(
        api.get(activity, "/api/v1/runs/1/activities/nowhere", tok)
            .0,
        404
    );

    let members = "/api/v1/runs/{run}/members/{activity}/{transition}";
    let (_, ids) = api.get(members, "/api/v1/runs/1/members/split_channel/sms", tok);
    let cli_members: Vec<String> = env
        .ok(&["members", "1", "split_channel", "sms"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids["ids"], serde_json::json!(cli_members));
    assert_eq!(
        api.get(members, "/api/v1/runs/1/members/split_channel/none", tok)
            .0,
        404
    );

    // Accounts and plugins, never a secret's value.
    let (_, accounts) = api.get("/api/v1/accounts", "/api/v1/accounts", tok);
    assert!(
        accounts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "smtp")
    );
    let secret_files = [
        "apns-key.p8",
        "fcm-service-account.json",
        "twilio-token.txt",
    ];
    for name in secret_files {
        let value = std::fs::read_to_string(env.data().join(name)).unwrap();
        let shown = accounts.to_string();
        for line in value.lines().filter(|l| l.len() > 16) {
            assert!(!shown.contains(line.trim()), "{name} leaked");
        }
    }
    let (_, plugins) = api.get("/api/v1/plugins", "/api/v1/plugins", tok);
    assert!(
        plugins
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "email")
    );
    env.ok(&["denylist", "add", "email", "gone@example.com"]);
    let (_, listed) = api.get("/api/v1/suppression", "/api/v1/suppression?list=email", tok);
    assert_eq!(listed[0]["address"], "gone@example.com", "{listed}");

    // A second run, steered: paused, resumed, nothing to retry, cancelled.
    let (status, v, _) = api.send(
        "/api/v1/runs",
        api.post("/api/v1/runs", &token).body(wf.clone()),
    );
    assert_eq!((status, &v["id"]), (201, &Value::from("2")));
    wait_for("run 2 to wait", Duration::from_secs(60), || {
        api.get(run, "/api/v1/runs/2", tok).1["state"] == "waiting"
    });
    let steer = |action: &str| {
        let template = format!("/api/v1/runs/{{run}}/{action}");
        let (status, body, _) = api.send(
            &template,
            api.post(&format!("/api/v1/runs/2/{action}"), &token),
        );
        (status, body)
    };
    let (status, paused) = steer("pause");
    assert_eq!((status, &paused["state"]), (200, &Value::from("paused")));
    assert_eq!(steer("pause").0, 409, "paused already");
    let (status, resumed) = steer("resume");
    assert_eq!((status, &resumed["state"]), (200, &Value::from("waiting")));
    assert_eq!(steer("resume").0, 409, "not paused");
    assert_eq!(steer("retry").0, 409, "nothing failed");
    let (status, cancelled) = steer("cancel");
    assert_eq!(
        (status, &cancelled["state"]),
        (200, &Value::from("cancelled"))
    );
    assert_eq!(steer("cancel").0, 409, "cancelled already");
    // Its wait's timer went with it.
    let (_, moved, _) = api.send(
        advance,
        api.post(advance, &token)
            .json(&serde_json::json!({ "by": "8d" })),
    );
    assert_eq!(moved["fired"], 0, "{moved}");
    let (_, listed) = api.get("/api/v1/runs", "/api/v1/runs?state=cancelled", tok);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], "2");

    // Schedules: added from a workflow's text, listed, removed.
    let schedules = "/api/v1/schedules";
    let weekly = format!(
        "{wf}
[schedule]
cron = \"0 9 * * MON\"\ntimezone = \"Europe/Paris\"\n"
    );
    let (status, added, headers) = api.send(
        schedules,
        api.post("/api/v1/schedules?name=weekly.toml", &token)
            .body(weekly),
    );
    assert_eq!(status, 201, "{added}");
    assert_eq!(headers["location"], "/api/v1/schedules/1");
    // The clock is at 2026-01-20T09:00Z, a Tuesday: next Monday 09:00 CET.
    assert_eq!(added["next"], "2026-01-26T08:00:00Z", "{added}");
    let (status, refused, _) = api.send(
        schedules,
        api.post("/api/v1/schedules", &token).body(wf.clone()),
    );
    assert_eq!(status, 422);
    assert!(
        refused["error"].as_str().unwrap().contains("no [schedule]"),
        "{refused}"
    );
    let (_, listed) = api.get(schedules, schedules, tok);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["file"], "weekly.toml");
    let one = "/api/v1/schedules/{id}";
    let remove = |id: u64| {
        let (status, body, _) = api.send(
            one,
            api.http
                .delete(format!("{}/api/v1/schedules/{id}", served.api))
                .bearer_auth(&token),
        );
        (status, body)
    };
    let (status, removed) = remove(1);
    assert_eq!(
        (status, &removed["workflow"]),
        (200, &Value::from("cross-channel"))
    );
    assert_eq!(remove(1).0, 404);
    api.covered();

    // Commands are the CLI's: an API token may not have one carried out.
    let server: Value =
        serde_json::from_slice(&std::fs::read(env.data().join("serve.json")).unwrap()).unwrap();
    let commands = server["commands"].as_str().unwrap();
    let http = client();
    let r = http
        .post(format!("{commands}/api/v1/cli"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "command": { "Status": { "run": 1, "json": true } } }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        http.post(format!("{}/api/v1/cli", served.api))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status(),
        404,
        "no commands on the API's listener"
    );

    // Revoked: 401 from then on.
    env.ok(&["token", "revoke", "ci"]);
    assert_eq!(api.get("/api/v1/runs", "/api/v1/runs", tok).0, 401);
    let list = env.ok(&["token", "list"]);
    assert!(!list.contains("ci "), "{list}");
}

/// A non-loopback address without TLS is refused (usage error).
#[test]
fn serve_refuses_to_listen_beyond_loopback_in_the_clear() {
    let env = Env::new();
    env.ok(&["init"]);
    let out = env.run(&["serve", "--listen", &format!("0.0.0.0:{}", free_port())]);
    assert_eq!(code(&out), Some(2));
    assert!(
        text(&out.stderr).contains("--tls-cert and --tls-key"),
        "{}",
        text(&out.stderr)
    );
}

/// With a certificate and key, the API speaks TLS only (HTTP/2 or
/// HTTP/1.1), verified by a client trusting the certificate's CA; the CLI
/// still reaches the server on its loopback listener. The server also
/// serves the one-click unsubscribe endpoint (public), logs JSON lines when
/// asked, and refuses to move the system clock.
#[test]
fn with_a_certificate_the_api_speaks_tls() {
    let env = Env::new();
    env.ok(&["init"]);
    let unsubscribe = format!("127.0.0.1:{}", free_port());
    env.ok(&["unsubscribe", "setup", "--listen", &unsubscribe]);
    let tls = crosscast_test_servers::TestTls::new().unwrap();
    let (cert, key) = (env.data().join("api.pem"), env.data().join("api-key.pem"));
    std::fs::write(&cert, &tls.server_pem).unwrap();
    std::fs::write(&key, &tls.key_pem).unwrap();
    let served = Served::start(
        &env,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    let token = env.ok(&["token", "create", "tls"]).trim().to_string();
    let https = served.api.replace("http://", "https://");
    let trusting = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = trusting
        .get(format!("{https}/api/v1/plugins"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("\"email\""));
    assert_eq!(
        trusting
            .get(format!("{https}/api/v1/plugins"))
            .send()
            .unwrap()
            .status(),
        401
    );
    // In the clear, or without trusting the CA: no answer.
    assert!(
        client()
            .get(format!("{}/api/v1/plugins", served.api))
            .bearer_auth(&token)
            .send()
            .is_err()
    );
    assert!(
        client()
            .get(format!("{https}/api/v1/plugins"))
            .send()
            .is_err()
    );
    let server: Value =
        serde_json::from_slice(&std::fs::read(env.data().join("serve.json")).unwrap()).unwrap();
    assert_eq!(server["api"], https);

    let (status, body) = common::http(&unsubscribe, "GET", "/unsubscribe/bogus", "");
    assert_eq!((status, body.trim()), (404, "unknown unsubscribe link"));
    let moved = env.run(&["clock", "advance", "1d"]);
    assert_eq!(code(&moved), Some(1));
    assert!(
        text(&moved.stderr).contains("the server runs on the system clock"),
        "{}",
        text(&moved.stderr)
    );
    let log = served.log();
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

/// A run stuck in a plugin that loops until its time limit does not hold
/// up another run: the second completes while the first is still stuck;
/// the first then fails with the limit's message.
#[test]
fn a_run_stuck_in_a_plugin_does_not_delay_another() {
    let s = servers();
    let mut env = Env::new();
    setup(&env, &s);
    let misbehave = plugin_dir().join("crosscast_fixture_misbehave.wasm");
    env.ok(&["plugin", "install", misbehave.to_str().unwrap()]);
    let stuck = env.data().join("stuck.toml");
    std::fs::write(
        &stuck,
        "name = \"stuck\"\n[activity.q]\ntype = \"query\"\nconfig = { dimension = \"recipient\" }\n\
         next = { done = \"bad\" }\n[activity.bad]\ntype = \"misbehave\"\nconfig = { mode = \"loop\" }\n",
    )
    .unwrap();
    env.env("CROSSCAST_PLUGIN_TIMEOUT_MS", "20000");
    let served = Served::start(&env, &["--now", T0]);
    let token = env.ok(&["token", "create", "t"]).trim().to_string();
    let http = client();
    let start = |body: String| -> u64 {
        let r = http
            .post(format!("{}/api/v1/runs", served.api))
            .bearer_auth(&token)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().unwrap()["run"].as_u64().unwrap()
    };
    let stuck_run = start(std::fs::read_to_string(&stuck).unwrap());
    wait_for("the plugin to loop", Duration::from_secs(30), || {
        env.status(stuck_run)["activities"]["bad"]["state"] == "pending"
    });
    let started = Instant::now();
    let normal =
        start(std::fs::read_to_string(root().join("examples/cross-channel.toml")).unwrap());
    wait_for("the normal run", Duration::from_secs(60), || {
        env.status(normal)["state"] == "waiting"
    });
    let took = started.elapsed();
    let st = env.status(stuck_run);
    assert_eq!(
        st["state"], "running",
        "the stuck run is still stuck when the other run is through ({took:?}): {st:#}"
    );
    assert!(!s.rig.smtp.received().is_empty());
    wait_for("the stuck run to fail", Duration::from_secs(60), || {
        env.status(stuck_run)["state"] == "failed"
    });
    let st = env.status(stuck_run);
    let error = st["activities"]["bad"]["errors"][0].as_str().unwrap();
    assert!(error.contains("time"), "{error}");
    drop(served);
}

/// SIGTERM during a delivery: the server builds no more messages, records
/// the answers to those on the wire, and exits 0 saying so; nothing is in
/// flight in the log; the next start sends the rest, each email exactly
/// once.
#[test]
fn sigterm_mid_delivery_records_what_was_sent_and_the_next_start_sends_the_rest() {
    let (s, env, wf, want) = slow_newsletter();
    let served = Served::start(&env, &[]);
    let run = env.spawn(&["run", wf.to_str().unwrap()]);
    wait_for("a wave on the wire", Duration::from_secs(60), || {
        s.rig.smtp.received().len() > WAVE / 2
    });
    let (stopped, log) = served.terminate();
    drop(run);
    assert_eq!(stopped, Some(0), "{log}");
    assert!(log.contains("stopping: no task starts"), "{log}");
    assert!(log.contains("1 run(s) with work left"), "{log}");
    let received = s.rig.smtp.received().len();
    assert!(received < want.len(), "stopped mid-delivery ({received})");
    let st = env.status(1);
    let d = &st["activities"]["deliver_email"];
    assert_eq!(d["state"], "pending", "{st:#}");
    assert_eq!(
        d["deliveries"]["in_flight"], 0,
        "every answer recorded: {d:#}"
    );
    assert_eq!(d["deliveries"]["sent"], received as u64, "{d:#}");

    let served = Served::start(&env, &[]);
    wait_for("the rest", Duration::from_secs(120), || {
        env.status(1)["state"] == "done"
    });
    let got = per_address(&s);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(got.values().all(|n| *n == 1), "each email exactly once");
    drop(served);
}

/// kill -9 of serve mid-delivery, then a restart: nothing is lost, and
/// what is repeated fits in one wave.
#[test]
fn kill_9_of_serve_mid_delivery_loses_nothing_after_a_restart() {
    let (s, env, wf, want) = slow_newsletter();
    let served = Served::start(&env, &[]);
    let token = env.ok(&["token", "create", "t"]).trim().to_string();
    let r = client()
        .post(format!("{}/api/v1/runs", served.api))
        .bearer_auth(&token)
        .body(std::fs::read_to_string(&wf).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    wait_for(
        "the second wave on the wire",
        Duration::from_secs(60),
        || s.rig.smtp.received().len() > WAVE + 6,
    );
    served.kill();
    let killed_at = s.rig.smtp.received().len();
    assert!(killed_at < want.len(), "killed mid-delivery ({killed_at})");

    let served = Served::start(&env, &[]);
    wait_for("the rest", Duration::from_secs(120), || {
        env.status(1)["state"] == "done"
    });
    let got = per_address(&s);
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "nothing lost"
    );
    let repeats: usize = got.values().map(|n| n - 1).sum();
    assert!(repeats <= WAVE, "{repeats} repeats");
    let st = env.status(1);
    assert_eq!(
        st["activities"]["deliver_email"]["deliveries"]["sent"],
        want.len() as u64
    );
    drop(served);
}
