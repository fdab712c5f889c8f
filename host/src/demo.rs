//! `crosscast demo`: the reference workflow on a sample audience, end to end,
//! against loopback servers it starts itself (SMTP, SMS API, APNs, FCM), on a
//! virtual clock that crosses the 7-day wait.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use crosscast_test_servers::{Rig, SinkOptions, sample};

use crate::cli::{App, Cli, dispatch, run_status};
use crate::clock::{Clock, format_ms};

/// The reference workflow, as shipped in `examples/`.
const WORKFLOW: &str = include_str!("../../examples/cross-channel.toml");
/// The demo's first instant.
const T0: &str = "2026-01-05T09:00:00Z";
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// Runs the demo in `data` (a fresh temporary directory by default).
pub fn run(data: Option<PathBuf>, recipients: usize) -> anyhow::Result<ExitCode> {
    let dir = match data {
        Some(d) => d,
        None => {
            let d = std::env::temp_dir().join(format!("crosscast-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            d
        }
    };
    println!("data directory: {}", dir.display());
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
    let credentials = dir.join("credentials");
    std::fs::create_dir_all(&credentials)?;
    let data = dir.display().to_string();
    let mut commands = vec![vec!["init".to_string()]];
    commands.extend(rig.setup_commands(&credentials)?);
    for args in commands {
        println!("$ crosscast {}", args.join(" "));
        let argv = ["crosscast", "--data", data.as_str()]
            .into_iter()
            .map(String::from)
            .chain(args);
        dispatch(Cli::try_parse_from(argv)?)?;
    }

    let t0 = Clock::fixed(T0)?;
    let mut app = App::open(&dir, t0)?;
    let (rfile, sfile) = sample::write(&dir.join("sample"), recipients, 7)?;
    let quiet = crate::import::Options::default();
    let r = crate::import::import_file(&app.store, "recipient", &rfile, &quiet)?;
    let s = crate::import::import_file(&app.store, "subscription", &sfile, &quiet)?;
    println!(
        "imported {} recipients and {} app subscriptions (sample in {})",
        r.inserted,
        s.inserted,
        dir.join("sample").display()
    );

    let wf_path = dir.join("cross-channel.toml");
    std::fs::write(&wf_path, WORKFLOW)?;
    let wf = match app.validate(&wf_path)? {
        Ok(wf) => wf,
        Err(lines) => anyhow::bail!(
            "the shipped workflow does not validate:\n{}",
            lines.join("\n")
        ),
    };
    println!("\n== {T0}: run the workflow");
    let run = app
        .executor()?
        .start(&wf, "examples/cross-channel.toml", false)
        .context("starting the run")?;
    show(&app, run)?;

    let later = t0.now_ms() + WEEK_MS;
    println!(
        "\n== {}: seven days later, the worker fires the wait",
        format_ms(later)
    );
    app.clock = Clock::Fixed(later);
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
        "\nInspect it yourself: crosscast --data {} status {run}",
        dir.display()
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
