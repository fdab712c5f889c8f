//! The SDK as a third party meets it: the WIT it binds ships inside it, a
//! component says what it was built against, and install is honest about
//! versions (issue 29).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Env, plugin_dir, root};

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn the_sdk_ships_the_wit_it_binds_identical_to_the_repository_s() {
    let shipped = files(&root().join("sdk/wit"));
    let mut contract = files(&root().join("wit"));
    // The contract's README explains the folders; the SDK's docs do that.
    contract.remove("README.md");
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        contract.keys().collect::<Vec<_>>(),
        "sdk/wit and wit/ hold different files: copy wit/ into sdk/wit"
    );
    for (path, bytes) in &contract {
        assert!(
            shipped[path] == *bytes,
            "sdk/wit/{path} differs from wit/{path}: copy wit/ into sdk/wit"
        );
    }
    // And the SDK binds nothing outside its own package.
    let lib = std::fs::read_to_string(root().join("sdk/src/lib.rs")).unwrap();
    assert!(
        !lib.contains("\"../"),
        "sdk/src/lib.rs reaches outside sdk/"
    );
}

/// A component with one more custom section at the end: the same plugin,
/// name and version, with other bytes.
fn rebuilt(bytes: &[u8]) -> Vec<u8> {
    let name = b"rebuilt";
    let data = b"a later build of the same version";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(data);
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(section.len() as u8); // LEB128 of a length under 128
    out.extend_from_slice(&section);
    out
}

fn sha256_of(env: &Env, name: &str) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {list}"))["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn install_refuses_the_same_version_with_other_bytes_unless_forced() {
    let env = Env::new();
    env.ok(&["init"]);
    let original = plugin_dir().join("crosscast_plugin_wait.wasm");
    let installed = sha256_of(&env, "wait");

    // The same bytes again: nothing to decide.
    let again = env.ok(&["plugin", "install", original.to_str().unwrap()]);
    assert!(!again.contains("replaced"), "{again}");
    assert_eq!(sha256_of(&env, "wait"), installed);

    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("wait.wasm");
    std::fs::write(&other, rebuilt(&std::fs::read(&original).unwrap())).unwrap();
    let err = env.fails(&["plugin", "install", other.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "plugin `wait` {} is installed with other bytes",
            env!("CARGO_PKG_VERSION")
        )),
        "{err}"
    );
    assert!(
        err.contains(&installed),
        "the installed sha256 is named: {err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(sha256_of(&env, "wait"), installed, "nothing was replaced");

    let forced = env.ok(&["plugin", "install", other.to_str().unwrap(), "--force"]);
    let new = sha256_of(&env, "wait");
    assert_ne!(new, installed);
    assert!(
        forced.contains(&format!(
            "replaced wait {}: old sha256 {installed}, new sha256 {new}",
            env!("CARGO_PKG_VERSION")
        )),
        "{forced}"
    );
}

#[test]
fn install_reports_what_a_plugin_was_built_against_and_refuses_a_newer_contract() {
    let env = Env::new();
    env.ok(&["init"]);
    let sdk = env!("CARGO_PKG_VERSION");
    let install = |file: &str| {
        env.ok(&[
            "plugin",
            "install",
            plugin_dir().join(file).to_str().unwrap(),
            "--force",
        ])
    };
    // Built with the SDK: the stamp names the SDK and the world.
    let out = install("crosscast_plugin_split.wasm");
    assert!(
        out.contains(&format!(
            "built against crosscast:plugin/activity-plugin@0.5.0, crosscast-sdk {sdk}"
        )),
        "{out}"
    );
    let out = install("crosscast_plugin_sms.wasm");
    assert!(
        out.contains(&format!(
            "built against crosscast:plugin/channel-plugin@0.4.0, crosscast-sdk {sdk}"
        )),
        "{out}"
    );
    // Built with wit-bindgen alone: the version comes from the export.
    let out = install("crosscast_fixture_email_v1.wasm");
    assert!(
        out.contains("built against crosscast:plugin/channel-plugin@0.1.0, no SDK stamp"),
        "{out}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    let legacy = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "legacy-mail")
        .unwrap();
    assert_eq!(
        legacy["contract"], "crosscast:plugin/channel-plugin@0.1.0, no SDK stamp",
        "{legacy}"
    );

    // A contract from the future is refused by name, before linking.
    let future = plugin_dir().join("crosscast_fixture_future.wasm");
    let err = env.fails(&["plugin", "install", future.to_str().unwrap()]);
    assert!(
        err.contains("implements crosscast:plugin/channel-plugin@0.9.0, newer than this crosscast"),
        "{err}"
    );
    assert!(err.contains("channel up to 0.4.0"), "{err}");
    assert!(err.contains("upgrade crosscast"), "{err}");
    assert!(
        !err.contains("matching implementation"),
        "no linker error: {err}"
    );
}

/// `cargo package -p crosscast-sdk`, unpacked: the SDK as a registry would
/// hand it to a third party, outside this workspace.
fn packaged_sdk(into: &Path) -> std::path::PathBuf {
    let target = into.join("package-target");
    let out = std::process::Command::new(cargo())
        .current_dir(root())
        .args([
            "package",
            "-p",
            "crosscast-sdk",
            "--no-verify",
            "--allow-dirty",
        ])
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo package -p crosscast-sdk failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    let file = target.join(format!("package/crosscast-sdk-{version}.crate"));
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&file)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar runs");
    assert!(status.success(), "cannot unpack {}", file.display());
    let sdk = into.join(format!("crosscast-sdk-{version}"));
    // Nothing in the package may point back into the checkout.
    let manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("path = \"..") && !manifest.contains("path = \"/"),
        "{manifest}"
    );
    assert!(
        sdk.join("wit/0.3.0/channel.wit").exists(),
        "the WIT ships inside"
    );
    sdk
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The commands of the README's "Writing a plugin" section, comments cut.
fn readme_plugin_path() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("### Writing a plugin")
        .expect("README has a plugin section")..];
    let block = &section[section.find("```sh\n").expect("a shell block") + 6..];
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .map(|l| l.split("   #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs one README line the way a shell would, in `cwd`, with these
/// substitutions only: the SDK is the packaged one, the webhook is the
/// loopback receiver (an internal address, which an account must allow).
struct Shell<'a> {
    env: &'a Env,
    cwd: std::path::PathBuf,
    sdk: std::path::PathBuf,
    hook_url: String,
}

impl Shell<'_> {
    fn run(&mut self, line: &str) -> String {
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let mut cmd = match words[0].as_str() {
            "cd" => {
                self.cwd = self.cwd.join(&words[1]);
                return String::new();
            }
            "crosscast" => {
                let mut args = words[1..].to_vec();
                for (i, w) in words[1..].iter().enumerate() {
                    if w == "--sdk" {
                        args[i + 1] = self.sdk.display().to_string();
                    }
                    if w == "https://hooks.example.com" {
                        args[i] = self.hook_url.clone();
                        args.extend(["--param".into(), "allow_private=true".into()]);
                    }
                }
                let mut c = std::process::Command::new(common::bin());
                c.arg("--data").arg(self.env.data()).args(args);
                c.env("CROSSCAST_PLUGIN_DIR", plugin_dir());
                for (k, v) in self.env.envs() {
                    c.env(k, v);
                }
                c
            }
            "cargo" => {
                let mut c = std::process::Command::new(cargo());
                c.args(&words[1..]);
                // The crate's own target/, as the README says; CI's shared
                // target directory would hold the workspace's lock.
                c.env_remove("CARGO_TARGET_DIR");
                c
            }
            other => {
                panic!("the README's plugin path runs `{other}`, which this test does not know")
            }
        };
        let out = cmd.current_dir(&self.cwd).output().expect("command starts");
        assert!(
            out.status.success(),
            "`{line}` failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn the_readme_plugin_path_scaffolds_builds_installs_and_delivers() {
    let env = Env::new();
    env.ok(&["init"]);
    let recipients = root().join("tests/data/recipients.csv");
    env.ok(&["import", "recipients", recipients.to_str().unwrap()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hook = rt
        .block_on(crosscast_test_servers::Webhook::start())
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let sdk = packaged_sdk(work.path());
    let mut shell = Shell {
        env: &env,
        cwd: work.path().to_path_buf(),
        sdk: sdk.clone(),
        hook_url: format!("{}/hooks", hook.url()),
    };
    let mut outputs = Vec::new();
    for line in readme_plugin_path() {
        if line.starts_with("cargo build") {
            // The workspace's versions, so the test does not depend on
            // what crates.io published since (cargo keeps what it needs).
            std::fs::copy(root().join("Cargo.lock"), shell.cwd.join("Cargo.lock")).unwrap();
        }
        if line.contains("--from-file token.txt") {
            std::fs::write(shell.cwd.join("token.txt"), "hook-secret-token").unwrap();
        }
        if line.ends_with("example.toml") {
            assert!(hook.received().is_empty(), "nothing is sent before the run");
        }
        outputs.push((line.clone(), shell.run(&line)));
    }
    let said = |prefix: &str| {
        outputs
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("the README runs no `{prefix}`"))
            .1
            .clone()
    };
    let version = env!("CARGO_PKG_VERSION");
    let component = work
        .path()
        .join("my-hook/target/wasm32-wasip2/plugin/my_hook.wasm");
    let size = std::fs::metadata(&component).unwrap().len();
    assert!(size < 1_600_000, "the size profile is used: {size} bytes");
    assert!(said("cargo test").contains("test result: ok. 3 passed"));
    assert!(
        said("crosscast plugin install").contains(&format!(
            "built against crosscast:plugin/channel-plugin@0.4.0, crosscast-sdk {version}"
        )),
        "{}",
        said("crosscast plugin install")
    );
    let dry = said("crosscast run example.toml --dry-run");
    assert!(dry.contains("sample request to"), "{dry}");
    assert!(dry.contains("POST /messages"), "{dry}");

    // What the receiver got: one request per recipient with a mobile.
    let expected: std::collections::BTreeMap<String, String> = common::read_recipients(&recipients)
        .into_values()
        .filter_map(|r| {
            let text = format!("Hi {}, new arrivals are in.", r.first_name);
            r.mobile.map(|m| (m, text))
        })
        .collect();
    let received = hook.received();
    let got: std::collections::BTreeMap<String, String> = received
        .iter()
        .map(|h| {
            let json = h.json();
            (
                json["to"].as_str().unwrap().to_string(),
                json["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(received.len(), expected.len(), "once per recipient");
    assert_eq!(got, expected);
    for h in &received {
        assert_eq!(h.path, "/hooks/messages");
        assert_eq!(h.authorization.as_deref(), Some("Bearer hook-secret-token"));
        assert_eq!(h.content_type.as_deref(), Some("application/json"));
    }

    // An activity, scaffolded from the same packaged SDK, runs too.
    let sample = work.path().join("my-sample");
    env.ok(&[
        "plugin",
        "new",
        "activity",
        "my-sample",
        "--sdk",
        sdk.to_str().unwrap(),
        "--dir",
        sample.to_str().unwrap(),
    ]);
    std::fs::copy(root().join("Cargo.lock"), sample.join("Cargo.lock")).unwrap();
    let built = std::process::Command::new(cargo())
        .current_dir(&sample)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        // Shares the channel's compiled dependencies.
        .env("CARGO_TARGET_DIR", work.path().join("my-hook/target"))
        .status()
        .unwrap();
    assert!(built.success());
    let wasm = work
        .path()
        .join("my-hook/target/wasm32-wasip2/plugin/my_sample.wasm");
    env.ok(&["plugin", "install", wasm.to_str().unwrap()]);
    let wf = sample.join("example.toml");
    let run = common::rig::start_workflow(&env, "2026-03-02T09:00:00Z", &wf);
    let status = env.status(run);
    let with_email = common::read_recipients(&recipients)
        .values()
        .filter(|r| r.email.is_some())
        .count() as u64;
    let kept = common::count(&status, "control", "sample");
    let rest = common::count(&status, "control", "rest");
    assert_eq!(kept + rest, with_email, "{status:#}");
    assert!(
        kept > 0 && kept < with_email / 4,
        "about a tenth: {kept} of {with_email}"
    );
}

#[test]
fn the_docs_show_the_webhook_channel_the_suite_builds() {
    let docs = std::fs::read_to_string(root().join("docs/plugins.md")).unwrap();
    let code = std::fs::read_to_string(root().join("examples/plugins/webhook/src/lib.rs")).unwrap();
    assert!(
        docs.contains(&format!("```rust\n{code}```")),
        "docs/plugins.md must show examples/plugins/webhook/src/lib.rs verbatim"
    );
    // Every verdict is shown, and the request rules are written down.
    for needle in [
        "Verdict::Sent",
        "Verdict::Retry",
        "Verdict::Failed",
        "Verdict::Quarantine",
        "Verdict::OptedOut",
    ] {
        assert!(code.contains(needle), "the webhook shows {needle}");
    }
    for rule in [
        "must start with `/`",
        "trailing `/` trimmed",
        "64 KiB",
        "`answer_headers`",
    ] {
        assert!(docs.contains(rule), "docs/plugins.md says {rule}");
    }
}

/// A data directory with the sample audience's recipients and the
/// example webhook channel installed; with the recipients file.
fn with_webhook() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.ok(&["init"]);
    let recipients = root().join("tests/data/recipients.csv");
    env.ok(&["import", "recipients", recipients.to_str().unwrap()]);
    let webhook = plugin_dir().join("webhook.wasm");
    env.ok(&["plugin", "install", webhook.to_str().unwrap()]);
    (env, recipients)
}

/// `dir/wf.toml`: a query (`query`, its config) into the webhook channel
/// through account `hook`; the channel's `type` is on line 7.
fn hook_workflow(dir: &Path, query: &str) -> std::path::PathBuf {
    let wf = dir.join("wf.toml");
    let text = format!(
        r#"name = "hook"
[activity.all]
type = "query"
next = {{ done = "notify" }}
config = {query}
[activity.notify]
type = "webhook"
config = {{ account = "hook", path = "/messages", text = "Hi {{{{ first_name }}}}" }}
"#
    );
    std::fs::write(&wf, text).unwrap();
    wf
}

#[test]
fn validate_builds_a_sample_message_and_a_dry_run_lists_the_first_targets() {
    let (env, recipients) = with_webhook();
    env.ok(&[
        "account",
        "set",
        "hook",
        "--url",
        "https://hooks.example.com",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let wf = hook_workflow(dir.path(), r#"{ dimension = "recipient" }"#);
    let listed = |out: &str| -> Vec<serde_json::Value> {
        let status: serde_json::Value = serde_json::from_str(out).unwrap();
        status["activities"]["notify"]["previews"][0]["messages"]
            .as_array()
            .unwrap()
            .clone()
    };
    let wf = wf.to_str().unwrap();
    // Not granted: validate has the channel build a message for a sample
    // record, and the host would refuse it; the run does not start.
    let refused = "notify.config.account: account `hook` is not granted to plugin `webhook`";
    let err = env.fails(&["validate", wf]);
    assert!(err.contains(refused), "{err}");
    assert!(
        err.contains("wf.toml:8:"),
        "the line of the account the plugin declared: {err}"
    );
    let err = env.fails(&["run", wf, "--dry-run"]);
    assert!(err.contains(refused), "{err}");

    env.ok(&["plugin", "grant", "webhook", "--account", "hook"]);
    env.ok(&["validate", wf]);
    let all = common::read_recipients(&recipients);
    let first_mobile = all["R1"].mobile.clone().unwrap();
    env.ok(&["denylist", "add", "webhook", &first_mobile]);
    let args = ["run", wf, "--dry-run", "--messages", "3", "--json"];
    let listed = listed(&env.ok(&args));
    assert_eq!(listed.len(), 3, "{listed:?}");
    for m in listed {
        let r = &all[m["target"].as_str().unwrap()];
        match &r.mobile {
            Some(mobile) if *mobile == first_mobile => {
                assert_eq!(m["suppressed"], "on the webhook denylist", "{m}")
            }
            Some(mobile) => {
                assert_eq!(m["send"]["recipient"], mobile.as_str(), "{m}");
                assert_eq!(m["send"]["path"], "/messages", "{m}");
            }
            None => assert_eq!(m["excluded"], "no mobile number", "{m}"),
        }
    }
    // For people: the first targets, one line each.
    let text = env.ok(&["run", wf, "--dry-run", "--messages", "3"]);
    assert!(text.contains("first 3 targets:"), "{text}");
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn an_account_url_may_hold_a_secret_that_only_the_wire_sees() {
    let (env, recipients) = with_webhook();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hook = rt
        .block_on(crosscast_test_servers::Webhook::start())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "T0001/B0002/sEcReTpAtH";
    let file = dir.path().join("hook-path");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    env.ok(&[
        "secret",
        "set",
        "hook-path",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    let url = format!("{}/services/{{secret}}", hook.url());
    let set = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = ["account", "set", "hook", "--url", &url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // Refused at once: no secret named, a credential header as well, the
    // placeholder in the host.
    let err = env.fails(&strs(&set(&["--param", "allow_private=true"])));
    assert!(err.contains("needs --secret"), "{err}");
    let err = env.fails(&strs(&set(&["--secret", "hook-path", "--auth", "bearer"])));
    assert!(err.contains("drop --auth"), "{err}");
    let in_host = "https://{secret}.hooks.example/x";
    let err = env.fails(&[
        "account",
        "set",
        "h2",
        "--url",
        in_host,
        "--secret",
        "hook-path",
    ]);
    assert!(err.contains("only in the URL's path"), "{err}");
    let good = set(&["--secret", "hook-path", "--param", "allow_private=true"]);
    env.ok(&strs(&good));
    env.ok(&["plugin", "grant", "webhook", "--account", "hook"]);

    let query = r#"{ dimension = "recipient", filter = "mobile is not empty" }"#;
    let wf = hook_workflow(dir.path(), query);
    let run = common::rig::start_workflow(&env, "2026-03-02T09:00:00Z", &wf);
    let with_mobile = common::read_recipients(&recipients)
        .values()
        .filter(|r| r.mobile.is_some())
        .count();
    let received = hook.received();
    assert_eq!(received.len(), with_mobile);
    for h in &received {
        assert_eq!(h.path, format!("/services/{secret}/messages"));
        assert_eq!(h.authorization, None, "the URL is the credential");
    }
    // Nothing an operator or a plugin reads holds it.
    let listing = [
        env.ok(&["account", "list"]),
        env.ok(&["status", &run.to_string(), "--json"]),
        env.ok(&["deliveries", &run.to_string(), "--json"]),
        env.ok(&[
            "run",
            wf.to_str().unwrap(),
            "--dry-run",
            "--messages",
            "5",
            "--json",
        ]),
    ];
    assert!(listing[0].contains("/services/{secret}"), "{}", listing[0]);
    for out in &listing {
        assert!(!out.contains("sEcReTpAtH"), "{out}");
    }
}
