//! Tests that run a plugin's real code: the component built from the crate
//! under test, executed by `crosscast` itself (its wasmtime sandbox, its
//! store, its checks) on records and accounts the test gives, in a data
//! directory of its own that is removed afterwards.
//!
//! ```ignore
//! use crosscast_sdk::testing::{Built, Plugin, Record};
//!
//! #[test]
//! fn one_request_per_recipient_with_a_mobile() {
//!     let plugin = Plugin::build(env!("CARGO_MANIFEST_DIR")).unwrap();
//!     let world = plugin.world().unwrap();
//!     world.recipients(&[
//!         Record::new("R1").with("mobile", "+15550000001").with("first_name", "Ada"),
//!         Record::new("R2").with("first_name", "Bob"),
//!     ]).unwrap();
//!     world.account("hook", "https://hooks.example.com").unwrap();
//!     let built = world.build("recipient", r#"{ account = "hook", path = "/m", text = "Hi" }"#).unwrap();
//!     assert!(matches!(&built[1], Built::Excluded { target, .. } if target == "R2"));
//! }
//! ```
//!
//! `build` and `execute` call the host (attributes, accounts, populations),
//! so they run here; `configure` and `classify` are plain functions of their
//! arguments, so a test calls them directly. Nothing is sent: a channel's
//! messages come from a dry run, each with what the host would do with it.
//!
//! Needs the `crosscast` binary (`$CROSSCAST_BIN`, else on `PATH`) with its
//! built-in plugins, and the `wasm32-wasip2` target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::channel::{Email, HttpRequest, Message};

/// Why a plugin test could not run, or what `crosscast` said.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TestError(String);

type Result<T> = std::result::Result<T, TestError>;

/// The crate under test, built as a component.
pub struct Plugin {
    wasm: PathBuf,
    crosscast: PathBuf,
}

impl Plugin {
    /// Builds the crate at `manifest_dir` (pass `env!("CARGO_MANIFEST_DIR")`)
    /// for `wasm32-wasip2` with its `plugin` profile, as `cargo build
    /// --target wasm32-wasip2 --profile plugin` would, into the same target
    /// directory.
    pub fn build(manifest_dir: &str) -> Result<Plugin> {
        let dir = Path::new(manifest_dir);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(dir)
            .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
            .args(["--message-format", "json-render-diagnostics", "--quiet"])
            .output()
            .map_err(|e| TestError(format!("cannot run cargo: {e}")))?;
        if !out.status.success() {
            return Err(TestError(format!(
                "cargo build --target wasm32-wasip2 --profile plugin failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let manifest = dir.join("Cargo.toml");
        let wasm = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .filter(|m| m["manifest_path"].as_str().map(Path::new) == Some(&manifest))
            .flat_map(|m| {
                let files = m["filenames"].as_array().cloned().unwrap_or_default();
                files
                    .into_iter()
                    .filter_map(|f| f.as_str().map(PathBuf::from))
            })
            .find(|f| f.extension().is_some_and(|e| e == "wasm"))
            .ok_or_else(|| {
                TestError(format!(
                    "cargo built no .wasm for {} (is it a cdylib?)",
                    manifest.display()
                ))
            })?;
        let crosscast = std::env::var_os("CROSSCAST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("crosscast"));
        Ok(Plugin { wasm, crosscast })
    }

    /// The built component.
    pub fn wasm(&self) -> &Path {
        &self.wasm
    }

    /// A fresh data directory with the built-in plugins and this one.
    pub fn world(&self) -> Result<World> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "crosscast-plugin-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| TestError(format!("{}: {e}", dir.display())))?;
        let mut world = World {
            crosscast: self.crosscast.clone(),
            data: dir.join("data"),
            dir,
            plugin: String::new(),
        };
        world.run(&["init"])?;
        let wasm = self.wasm.display().to_string();
        let said = world.run(&["plugin", "install", &wasm, "--force"])?;
        // `installed NAME VERSION (...)`
        world.plugin = said
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| TestError(format!("unexpected install output: {said}")))?
            .to_string();
        Ok(world)
    }
}

/// A record to import: its external id and attributes.
#[derive(Debug, Clone)]
pub struct Record {
    columns: Vec<(String, String)>,
}

impl Record {
    /// A record with external id `id`.
    pub fn new(id: &str) -> Record {
        Record {
            columns: vec![("id".into(), id.into())],
        }
    }

    /// One more attribute (`mobile`, `first_name`, `recipient_id`...).
    pub fn with(mut self, name: &str, value: &str) -> Record {
        self.columns.push((name.into(), value.into()));
        self
    }
}

/// What the host would do with one target of a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Built {
    /// It would send this message (an HTTP body read as UTF-8).
    Send {
        /// The target's external id.
        target: String,
        /// The message as the plugin built it.
        message: Message,
        /// Billable parts.
        parts: u32,
        /// The plugin's note.
        note: Option<String>,
    },
    /// The plugin excluded it.
    Excluded {
        /// The target's external id.
        target: String,
        /// The plugin's reason.
        reason: String,
    },
    /// The host would refuse the plugin's message (an account not granted,
    /// a recipient that is not the stored address, a bad path or header).
    Refused {
        /// The target's external id.
        target: String,
        /// The host's reason.
        reason: String,
    },
    /// The address is quarantined or denylisted.
    Suppressed {
        /// The target's external id.
        target: String,
        /// Which list.
        reason: String,
    },
}

/// What an activity's execution emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The activity's state: `done`, `waiting` or `failed`.
    pub state: String,
    /// Transition → external ids that left on it, sorted.
    pub transitions: BTreeMap<String, Vec<String>>,
    /// Why it failed, when it did.
    pub errors: Vec<String>,
}

/// A data directory with this plugin installed; removed when dropped.
pub struct World {
    crosscast: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    plugin: String,
}

impl World {
    /// Imports recipients.
    pub fn recipients(&self, records: &[Record]) -> Result<()> {
        self.import("recipients", records)
    }

    /// Imports subscriptions (each with its `recipient_id`).
    pub fn subscriptions(&self, records: &[Record]) -> Result<()> {
        self.import("subscriptions", records)
    }

    /// Creates an account (no secret: nothing is sent) and grants it to
    /// the plugin.
    pub fn account(&self, name: &str, url: &str) -> Result<()> {
        self.run(&["account", "set", name, "--url", url])?;
        self.run(&["plugin", "grant", &self.plugin, "--account", name])?;
        Ok(())
    }

    /// A channel's messages for every record of `dimension`, in id order,
    /// with what the host would do with each; `config` is the activity's
    /// config as a TOML inline table.
    pub fn build(&self, dimension: &str, config: &str) -> Result<Vec<Built>> {
        let status = self.run_workflow(dimension, config, true)?;
        let previews = status["activities"]["subject"]["previews"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        for p in previews {
            for m in p["messages"].as_array().cloned().unwrap_or_default() {
                out.push(built(&m)?);
            }
        }
        Ok(out)
    }

    /// Executes an activity on every record of `dimension` (on a fixed
    /// clock); `config` is its config as a TOML inline table.
    pub fn execute(&self, dimension: &str, config: &str) -> Result<Executed> {
        let status = self.run_workflow(dimension, config, false)?;
        let run = status["run"].as_u64().unwrap_or(0).to_string();
        let activity = &status["activities"]["subject"];
        let mut transitions = BTreeMap::new();
        let names = activity["transitions"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for name in names.keys() {
            let listed = self.run(&["members", &run, "subject", name])?;
            let mut ids: Vec<String> = listed.lines().map(str::to_string).collect();
            ids.sort();
            transitions.insert(name.clone(), ids);
        }
        let strings = |v: &serde_json::Value| -> Vec<String> {
            let items = v.as_array().cloned().unwrap_or_default();
            items
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        Ok(Executed {
            state: activity["state"].as_str().unwrap_or("").to_string(),
            transitions,
            errors: strings(&activity["errors"]),
        })
    }

    fn run_workflow(&self, dimension: &str, config: &str, dry: bool) -> Result<serde_json::Value> {
        let file = self.dir.join("workflow.toml");
        let workflow = format!(
            "name = \"plugin-test\"\n\n\
             [activity.all]\ntype = \"query\"\nnext = {{ done = \"subject\" }}\n\
             config = {{ dimension = {dimension:?} }}\n\n\
             [activity.subject]\ntype = {:?}\nconfig = {config}\n",
            self.plugin
        );
        std::fs::write(&file, workflow).map_err(|e| TestError(e.to_string()))?;
        let file = file.display().to_string();
        let mut args = vec!["--now", "2026-01-05T09:00:00Z", "run", &file, "--json"];
        if dry {
            args.extend(["--dry-run", "--messages", "10000"]);
        }
        let out = self.output(&args)?;
        serde_json::from_slice(&out.stdout).map_err(|_| {
            TestError(format!(
                "the run did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })
    }

    fn import(&self, dimension: &str, records: &[Record]) -> Result<()> {
        let mut header: Vec<&str> = Vec::new();
        for r in records {
            for (k, _) in &r.columns {
                if !header.contains(&k.as_str()) {
                    header.push(k);
                }
            }
        }
        let mut csv = header.join(",") + "\n";
        for r in records {
            let cells: Vec<String> = header
                .iter()
                .map(|h| {
                    let v = r
                        .columns
                        .iter()
                        .find(|(k, _)| k == h)
                        .map(|(_, v)| v.as_str());
                    format!("\"{}\"", v.unwrap_or("").replace('"', "\"\""))
                })
                .collect();
            csv += &(cells.join(",") + "\n");
        }
        let file = self.dir.join(format!("{dimension}.csv"));
        std::fs::write(&file, csv).map_err(|e| TestError(e.to_string()))?;
        self.run(&["import", dimension, &file.display().to_string()])?;
        Ok(())
    }

    fn output(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.crosscast)
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .env("CROSSCAST_KEY_FILE", self.dir.join("key"))
            .env_remove("CROSSCAST_NOW")
            .output()
            .map_err(|e| {
                TestError(format!(
                    "cannot run {} (set CROSSCAST_BIN or put crosscast on PATH): {e}",
                    self.crosscast.display()
                ))
            })
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            return Err(TestError(format!(
                "crosscast {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One entry of a dry run's `messages`.
fn built(m: &serde_json::Value) -> Result<Built> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let target = text(&m["target"]);
    let reason = |key: &str| m[key].as_str().map(str::to_string);
    if let Some(reason) = reason("excluded") {
        return Ok(Built::Excluded { target, reason });
    }
    if let Some(reason) = reason("refused") {
        return Ok(Built::Refused { target, reason });
    }
    if let Some(reason) = reason("suppressed") {
        return Ok(Built::Suppressed { target, reason });
    }
    let s = &m["send"];
    let headers: Vec<(String, String)> = s["headers"]
        .as_array()
        .map(|hs| hs.iter().map(|h| (text(&h[0]), text(&h[1]))).collect())
        .unwrap_or_default();
    let optional = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let message = if s["subject"].is_string() {
        let mut email = Email::new(
            &text(&s["account"]),
            &text(&s["from"]),
            &text(&s["to"]),
            &text(&s["subject"]),
            &text(&s["text"]),
        );
        email.html = optional(&s["html"]);
        email.reply_to = optional(&s["reply_to"]);
        email.headers = headers;
        Message::Email(email)
    } else if s["method"].is_string() {
        let mut request = HttpRequest::new(
            &text(&s["account"]),
            &text(&s["method"]),
            &text(&s["path"]),
            &text(&s["recipient"]),
        )
        .body(text(&s["body"]));
        request.headers = headers;
        Message::Http(request)
    } else {
        return Err(TestError(format!("unexpected preview entry: {m}")));
    };
    Ok(Built::Send {
        target,
        message,
        parts: s["parts"].as_u64().unwrap_or(1) as u32,
        note: optional(&s["note"]),
    })
}
