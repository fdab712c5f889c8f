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

/// Starts a run that fails (exit 1: an activity failed and nothing handles
/// it); returns its number and status.
pub fn start_failing_workflow(
    env: &Env,
    now: &str,
    wf: &std::path::Path,
) -> (u64, serde_json::Value) {
    let out = env.run(&["--now", now, "run", wf.to_str().unwrap(), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run should fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON status");
    assert_eq!(v["state"], "failed", "{v:#}");
    (v["run"].as_u64().expect("run id"), v)
}

/// How many emails the relay received per address.
pub fn per_address(s: &Servers) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for m in s.rig.smtp.received() {
        *out.entry(m.to[0].clone()).or_default() += 1;
    }
    out
}

/// The delivery log entries of one activity, as JSON.
pub fn log_entries(env: &Env, run: u64, activity: &str) -> Vec<serde_json::Value> {
    env.ok(&["deliveries", &run.to_string(), "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["activity"] == activity)
        .collect()
}

/// Most messages a delivery sends without a recorded outcome
/// (`deliver::WAVE_BATCHES` batches of 128): what a crash may repeat.
pub const WAVE: usize = 512;

/// The loopback servers, their relay answering each message 150 ms after
/// taking it (a kill or a stop always finds messages on the wire), and a
/// data directory set up with a newsletter to every recipient with an
/// email: the sample's and `2 * WAVE` more readers. Returns the servers,
/// the environment, the workflow file and the addresses it must reach.
pub fn slow_newsletter() -> (
    Servers,
    Env,
    std::path::PathBuf,
    std::collections::BTreeSet<String>,
) {
    let s = servers_with(SinkOptions {
        reply_delay: std::time::Duration::from_millis(150),
        ..SinkOptions::default()
    });
    let env = Env::new();
    setup(&env, &s);
    let mut readers = String::from("id,email,first_name\n");
    for n in 0..2 * WAVE {
        readers.push_str(&format!("N{n},reader{n}@example.com,Reader\n"));
    }
    let file = env.data().join("readers.csv");
    std::fs::write(&file, readers).unwrap();
    env.ok(&["import", "recipients", file.to_str().unwrap()]);
    let mut want = super::sample_emails();
    want.extend((0..2 * WAVE).map(|n| format!("reader{n}@example.com")));
    assert!(want.len() > 2 * WAVE, "more than two waves of emails");
    let wf = env.data().join("newsletter.toml");
    std::fs::write(
        &wf,
        r#"name = "newsletter"
[activity.q]
type = "query"
config = { dimension = "recipient", filter = "email is not empty" }
next = { done = "deliver_email" }

[activity.deliver_email]
type = "email"
config = { account = "smtp", from = "news@acme.example", subject = "Hi {{ first_name }}", text = "New arrivals are in." }
"#,
    )
    .unwrap();
    (s, env, wf, want)
}
