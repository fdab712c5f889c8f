//! `crosscast serve` as a child process of a test.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Env, free_port};

/// A `crosscast serve` process on an environment's data directory, killed
/// when dropped.
pub struct Served {
    child: Option<Child>,
    log: PathBuf,
    /// The API's base URL.
    pub api: String,
}

impl Served {
    /// Starts `crosscast serve ARGS` and waits until it listens.
    pub fn start(env: &Env, args: &[&str]) -> Served {
        let log = env
            .data()
            .with_extension(format!("serve-{}.log", free_port()));
        let listen = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["serve", "--listen", listen.as_str(), "--poll-ms", "50"];
        all.extend_from_slice(args);
        let child = env
            .command(&all)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("serve starts");
        let served = Served {
            child: Some(child),
            log,
            api: format!("http://{listen}"),
        };
        let file = env.data().join("serve.json");
        wait_for("serve.json", Duration::from_secs(30), || {
            std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v["pid"] == served.pid())
        });
        served
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for it to end: (exit code, log).
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = wait_exit(&mut child, Duration::from_secs(60));
        (status, self.log())
    }

    /// Kills it with SIGKILL (no cleanup at all).
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ok` until it holds, failing the test after `within`.
pub fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
