//! `crosscast-demo`: the reference workflow on a sample audience, end to
//! end, against loopback servers it starts itself (SMTP, SMS API, APNs,
//! FCM), on a virtual clock that crosses the 7-day wait. A binary of its
//! own: the shipped `crosscast` links no test server.
//!
//! It never writes into an existing data directory: by default it makes a
//! fresh one under the system's temporary directory, with a key of its own
//! beside it; `--data DIR` must name an empty or absent directory (it
//! never reads `CROSSCAST_DATA`, the operator's own).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use crosscast::cli::{App, Cli, dispatch, run_status};
use crosscast::clock::{Clock, format_ms};
use crosscast::store::OpenOptions;
use crosscast::store::sealed::KeyFile;
use crosscast_test_servers::{Rig, SinkOptions, sample};

/// The reference workflow on sample data, against local servers.
#[derive(clap::Parser, Debug)]
#[command(name = "crosscast-demo", version, about)]
struct Args {
    /// An empty or absent directory to use as the data directory (default:
    /// a fresh one under the system's temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// With --data, the key file sealing its secrets (default: the one
    /// `crosscast` uses).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// How many sample recipients.
    #[arg(long, default_value_t = 300)]
    recipients: usize,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match run(args.data, args.key_file, args.recipients) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The reference workflow, as shipped in `examples/`.
const WORKFLOW: &str = include_str!("../../examples/cross-channel.toml");
/// The demo's first instant.
const T0: &str = "2026-01-05T09:00:00Z";
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// Runs the demo in `data`, which must be empty or absent (a fresh
/// temporary directory by default, its key beside it; with `data`, the key
/// is `key_file` or the default one).
fn run(
    data: Option<PathBuf>,
    key_file: Option<PathBuf>,
    recipients: usize,
) -> anyhow::Result<ExitCode> {
    let scratch = std::env::temp_dir().join(format!("crosscast-demo-{}", std::process::id()));
    let (dir, key_file) = match data {
        Some(d) => {
            let empty = match std::fs::read_dir(&d) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", d.display())),
            };
            anyhow::ensure!(
                empty,
                "the demo writes only into a new or empty directory, and {} is not empty \
                 (leave out --data for a fresh temporary one)",
                d.display()
            );
            (d, key_file.unwrap_or_else(KeyFile::default_path))
        }
        None => {
            let _ = std::fs::remove_dir_all(&scratch);
            (scratch.join("data"), scratch.join("key"))
        }
    };
    println!(
        "data directory: {} (a new one; the key sealing its secrets: {})",
        dir.display(),
        key_file.display()
    );
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let rig = servers.block_on(Rig::start(SinkOptions::default()))?;
    println!(
        "local servers: SMTP {}, SMS API {}, APNs {} (HTTP/2, TLS), FCM {} (TLS)",
        rig.smtp.addr, rig.sms.addr, rig.apns.addr, rig.fcm.addr
    );

    // Configure the data directory as an operator would, command by command.
    // The servers' credentials are files outside it, gone once stored.
    let credentials = scratch.join("credentials");
    std::fs::create_dir_all(&credentials)?;
    let data = dir.display().to_string();
    let key = key_file.display().to_string();
    let mut commands = vec![vec!["init".to_string()]];
    commands.extend(rig.setup_commands(&credentials)?);
    for args in commands {
        println!("$ crosscast {}", args.join(" "));
        let argv = [
            "crosscast",
            "--data",
            data.as_str(),
            "--key-file",
            key.as_str(),
        ]
        .into_iter()
        .map(String::from)
        .chain(args);
        dispatch(Cli::parse_from_args(argv)?)?;
    }
    std::fs::remove_dir_all(&credentials)?;

    // A virtual clock, moved forward a week below to cross the wait.
    let clock = Clock::moving(T0)?;
    let options = OpenOptions {
        key_file: key_file.clone(),
        holder: "crosscast demo".into(),
        ..OpenOptions::default()
    };
    let app = App::open_with(&dir, clock.clone(), &options)?;
    let (rfile, sfile) = sample::write(&dir.join("sample"), recipients, 7)?;
    let quiet = crosscast::import::Options::default();
    let r = crosscast::import::import_file(&app.store, "recipient", &rfile, &quiet)?;
    let s = crosscast::import::import_file(&app.store, "subscription", &sfile, &quiet)?;
    println!(
        "imported {} recipients and {} app subscriptions (sample in {})",
        r.inserted,
        s.inserted,
        dir.join("sample").display()
    );

    let wf_path = dir.join("cross-channel.toml");
    std::fs::write(&wf_path, WORKFLOW)?;
    let wf = match app.validate(&wf_path)? {
        Ok((wf, _warnings)) => wf,
        Err(lines) => anyhow::bail!(
            "the shipped workflow does not validate:\n{}",
            lines.join("\n")
        ),
    };
    println!("\n== {T0}: run the workflow");
    let run = app
        .executor()?
        .start(
            &wf,
            "examples/cross-channel.toml",
            crosscast::executor::RunKind::Real,
        )
        .context("starting the run")?;
    show(&app, run)?;

    let later = clock.advance(WEEK_MS)?;
    println!(
        "\n== {}: seven days later, the worker fires the wait",
        format_ms(later)
    );
    let tick = app.executor()?.tick()?;
    println!(
        "worker: {} timer(s) due, {} task(s) executed",
        tick.timers, tick.tasks
    );
    show(&app, run)?;

    let mails = rig.smtp.received();
    let texts = rig.sms.received();
    let ios = rig.apns.received();
    let android = rig.fcm.received();
    println!("\n== What the servers received");
    println!("SMTP sink {}: {} emails", rig.smtp.addr, mails.len());
    for m in mails.iter().take(3) {
        println!(
            "  to {:<28} subject: {}",
            m.to.join(","),
            m.subject().unwrap_or_default()
        );
    }
    println!("SMS API {}: {} texts", rig.sms.addr, texts.len());
    for t in texts.iter().take(3) {
        println!("  to {:<16} {} ({})", t.to, t.body, t.sid);
    }
    println!("APNs {}: {} pushes", rig.apns.addr, ios.len());
    for p in ios.iter().take(2) {
        println!(
            "  device {}… {}",
            &p.token[..12],
            p.payload["aps"]["alert"]["title"]
        );
    }
    println!("FCM {}: {} pushes", rig.fcm.addr, android.len());
    for p in android.iter().take(2) {
        println!(
            "  device {}… {}",
            &p.token[..12],
            p.payload["message"]["notification"]["title"]
        );
    }
    println!(
        "\nInspect it yourself: crosscast --data {} --key-file {} status {run}",
        dir.display(),
        key_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn show(app: &App, run: u64) -> anyhow::Result<()> {
    let (state, acts) = run_status(&app.store, run)?;
    println!("run {run}: {state}");
    for (id, s) in acts {
        let t: Vec<String> = s
            .transitions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let d = s
            .deliveries
            .map(|d| {
                format!(
                    "  (sent {}, failed {}, excluded {})",
                    d.sent, d.failed, d.excluded
                )
            })
            .unwrap_or_default();
        println!(
            "  {id:<14} {:<6} {:<12} {}{d}",
            s.kind,
            s.state,
            t.join(" ")
        );
        for e in s.errors {
            println!("    error: {e}");
        }
    }
    Ok(())
}
