//! Shared helpers: run the `crosscast` binary as separate processes on one
//! data directory, and read the audience files to compute expectations
//! without the host crate.

#![allow(dead_code)]

pub mod rig;
pub mod served;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where cargo builds (CARGO_TARGET_DIR, or the workspace's target/).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The `crosscast` binary (built by `cargo xtask test`).
pub fn bin() -> PathBuf {
    let p = std::env::var_os("CROSSCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/crosscast"));
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        p.display()
    );
    p
}

/// The `crosscast-demo` binary (built by `cargo xtask test`).
pub fn demo_bin() -> PathBuf {
    let p = std::env::var_os("CROSSCAST_DEMO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/crosscast-demo"));
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        p.display()
    );
    p
}

/// The built wasm plugins and fixtures.
pub fn plugin_dir() -> PathBuf {
    let p = std::env::var_os("CROSSCAST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wasm32-wasip2/plugin"));
    assert!(
        p.join("crosscast_plugin_query.wasm").exists(),
        "{} has no plugins: run the tests with `cargo xtask test`, which builds them",
        p.display()
    );
    p
}

/// A data directory and the commands run on it.
pub struct Env {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// Holds the key sealing its secrets, outside the data directory.
    pub keys: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Env {
    /// A fresh data directory (created by the first `init`), its key file
    /// in a directory of its own.
    pub fn new() -> Env {
        let keys = tempfile::tempdir().expect("tempdir");
        let key = keys.path().join("key").display().to_string();
        // Components compiled once for the whole suite (each `init`
        // installs the same built-ins): the compile cache, in target/.
        let compiled = target_dir().join("crosscast-compile-cache");
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            keys,
            envs: vec![
                ("CROSSCAST_KEY_FILE".into(), key),
                (
                    "CROSSCAST_COMPILE_CACHE".into(),
                    compiled.display().to_string(),
                ),
            ],
        }
    }

    /// The key file sealing the data directory's secrets.
    pub fn key_file(&self) -> std::path::PathBuf {
        self.keys.path().join("key")
    }

    /// `crosscast --data DIR ARGS` as a command to start, with this
    /// environment's variables.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--data")
            .arg(self.data())
            .args(args)
            .env("CROSSCAST_PLUGIN_DIR", plugin_dir())
            .env_remove("CROSSCAST_NOW");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Sets an environment variable for every later command.
    pub fn env(&mut self, k: &str, v: &str) {
        self.envs.push((k.into(), v.into()));
    }

    /// The environment variables set for every command.
    pub fn envs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `crosscast --data DIR ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("crosscast runs")
    }

    /// Starts `crosscast --data DIR ARGS` in the background (output discarded).
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let mut c = self.command(args);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Spawned(c.spawn().expect("crosscast starts"))
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "crosscast {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "crosscast {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `status RUN --json`, parsed.
    pub fn status(&self, run: u64) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", &run.to_string(), "--json"]))
            .expect("status is JSON")
    }
}

/// A transition count from a status document.
pub fn count(status: &serde_json::Value, activity: &str, transition: &str) -> u64 {
    status["activities"][activity]["transitions"][transition]
        .as_u64()
        .unwrap_or_else(|| panic!("no count for {activity}.{transition} in {status:#}"))
}

/// A recipient as read from the CSV.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub email: Option<String>,
    pub mobile: Option<String>,
    pub first_name: String,
}

/// A subscription as read from the CSV.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub recipient: String,
    pub app: String,
    pub platform: String,
    pub token: String,
}

fn opt(s: &str) -> Option<String> {
    if s.trim().is_empty() {
        None
    } else {
        Some(s.trim().to_string())
    }
}

/// The email addresses of the sample's recipients (`tests/data`).
pub fn sample_emails() -> std::collections::BTreeSet<String> {
    read_recipients(&root().join("tests/data/recipients.csv"))
        .into_values()
        .filter_map(|r| r.email)
        .collect()
}

/// Reads recipients by id.
pub fn read_recipients(path: &Path) -> BTreeMap<String, Recipient> {
    let mut r = csv::Reader::from_path(path).expect("recipients csv");
    let h = r.headers().expect("header").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect("column");
    let (id, email, mobile, first) = (col("id"), col("email"), col("mobile"), col("first_name"));
    r.records()
        .map(|rec| {
            let rec = rec.expect("row");
            (
                rec[id].to_string(),
                Recipient {
                    email: opt(&rec[email]),
                    mobile: opt(&rec[mobile]),
                    first_name: rec[first].to_string(),
                },
            )
        })
        .collect()
}

/// Reads subscriptions in file order.
pub fn read_subscriptions(path: &Path) -> Vec<Subscription> {
    let mut r = csv::Reader::from_path(path).expect("subscriptions csv");
    r.deserialize::<BTreeMap<String, String>>()
        .map(|rec| {
            let rec = rec.expect("row");
            Subscription {
                id: rec["id"].clone(),
                recipient: rec["recipient_id"].clone(),
                app: rec["app"].clone(),
                platform: rec["platform"].clone(),
                token: rec["token"].clone(),
            }
        })
        .collect()
}

/// One HTTP/1.1 request over a fresh connection: (status, body). Retries the
/// connection for a few seconds while the server starts.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = None;
    for _ in 0..100 {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    let mut stream = stream.unwrap_or_else(|| panic!("nothing listens on {addr}"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request written");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A process started by [`Env::spawn`], killed when dropped: a test that
/// fails midway leaves no worker behind.
pub struct Spawned(pub std::process::Child);

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
