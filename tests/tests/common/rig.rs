//! The loopback servers and the steps every delivery test starts with.

use crosscast_test_servers::{Rig, SinkOptions};

use super::{Env, read_subscriptions, root};

/// The loopback servers and the runtime they run on.
pub struct Servers {
    _rt: tokio::runtime::Runtime,
    /// The servers.
    pub rig: Rig,
}

impl Servers {
    /// Starts one more SMTP sink on the servers' runtime.
    pub fn start_sink(&self, options: SinkOptions) -> crosscast_test_servers::SmtpSink {
        self._rt
            .block_on(crosscast_test_servers::SmtpSink::start_with(options))
            .expect("sink starts")
    }
}

impl Servers {
    /// Starts one more SMS API, over TLS (HTTP/1.1), on the servers'
    /// runtime, with a certificate from the rig's CA.
    pub fn start_sms_tls(&self) -> crosscast_test_servers::SmsApi {
        use crosscast_test_servers::rig::{ACCOUNT_SID, AUTH_TOKEN};
        self._rt
            .block_on(crosscast_test_servers::SmsApi::start_tls(
                ACCOUNT_SID,
                AUTH_TOKEN,
                &self.rig.tls,
            ))
            .expect("SMS API starts")
    }
}

/// Starts every server, the SMTP sink with these options.
pub fn servers_with(options: SinkOptions) -> Servers {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rig = rt.block_on(Rig::start(options)).expect("servers start");
    Servers { _rt: rt, rig }
}

/// Starts every server with default options.
pub fn servers() -> Servers {
    servers_with(SinkOptions::default())
}

/// Installs plugins, accounts, secrets, grants and the audience, each step
/// its own process.
pub fn setup(env: &Env, s: &Servers) {
    env.ok(&["init"]);
    for args in s.rig.setup_commands(env.data()).expect("credential files") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.ok(&args);
    }
    let r = env.ok(&[
        "import",
        "recipients",
        root().join("tests/data/recipients.csv").to_str().unwrap(),
    ]);
    assert!(r.contains("imported 300 recipients"), "{r}");
    let s = env.ok(&[
        "import",
        "subscriptions",
        root()
            .join("tests/data/subscriptions.csv")
            .to_str()
            .unwrap(),
    ]);
    let n = read_subscriptions(&root().join("tests/data/subscriptions.csv")).len();
    assert!(s.contains(&format!("imported {n} subscriptions")), "{s}");
}

/// Starts a run of a workflow file at `now`; returns its number.
pub fn start_workflow(env: &Env, now: &str, wf: &std::path::Path) -> u64 {
    let out = env.ok(&["--now", now, "run", wf.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("run prints JSON status");
    v["run"].as_u64().expect("run id")
}

/// The delivery log entries of one activity, as JSON.
pub fn log_entries(env: &Env, run: u64, activity: &str) -> Vec<serde_json::Value> {
    env.ok(&["deliveries", &run.to_string(), "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["activity"] == activity)
        .collect()
}
