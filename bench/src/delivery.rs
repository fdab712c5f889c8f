//! `crosscast-bench delivery`: N messages per channel to the loopback
//! servers, next to what each server absorbs from a plain load generator
//! (the ceiling): Postfix's `smtp-source` for SMTP, nghttp2's `h2load` for
//! the SMS API (HTTP/1.1) and for APNs and FCM (HTTP/2 over TLS), with the
//! same number of messages in flight as crosscast keeps (32).
//!
//! Crosscast's figure is the delivery activity's own time (`elapsed_ms` in
//! `status --json`): build, intent written and flushed, send, classify,
//! outcome written and flushed — everything a durable delivery does. Every
//! message must have reached its server, or the benchmark fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};
use base64::Engine;
use crosscast_test_servers::pace::PaceReport;
use crosscast_test_servers::rig::{ACCOUNT_SID, AUTH_TOKEN, KEY_ID, TEAM_ID};
use crosscast_test_servers::{Rig, SinkOptions};

use crate::{Measured, crosscast, crosscast_at, measure};

/// One channel's result.
struct Row {
    channel: &'static str,
    crosscast_per_s: f64,
    ceiling_per_s: f64,
    ceiling_tool: String,
    /// CPU µs per message: crosscast's process, the load generator, and the
    /// server under each (this process, while it ran).
    crosscast_cpu_us: f64,
    server_cpu_us: f64,
    tool_cpu_us: f64,
    tool_server_cpu_us: f64,
}

impl Row {
    /// Crosscast's throughput as a share of the ceiling's.
    fn ratio(&self) -> f64 {
        self.crosscast_per_s / self.ceiling_per_s
    }
}

/// User + system CPU seconds of this process (the servers) so far.
fn own_cpu() -> f64 {
    // SAFETY: rusage is plain data filled in by the kernel.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Runs the benchmark with `n` messages per channel in `dir`, for the
/// channels named in `only` (all when empty), `trials` times each; the
/// result is the median trial (by share of the ceiling).
pub fn run(
    n: usize,
    dir: &Path,
    only: &[String],
    trials: usize,
    compare: Option<&Path>,
    server_threads: usize,
    in_flight: usize,
) -> anyhow::Result<()> {
    let main_bin = crate::default_bin();
    // (channel, main build's rate, compared build's rate) per trial.
    let mut compared: Vec<(&str, f64, f64)> = Vec::new();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for tool in ["smtp-source", "h2load"] {
        ensure!(
            which(tool).is_some(),
            "`{tool}` is needed for the ceilings (apt-get install postfix nghttp2-client)"
        );
    }
    ensure!(trials > 0, "at least one trial");
    println!("# delivery benchmark: {n} messages per channel, {trials} trial(s) each");
    println!("machine: {}", crate::machine());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .enable_all()
        .build()?;
    let rig = rt.block_on(Rig::start(SinkOptions::default()))?;
    let data = dir.join("data");
    crosscast(&data, &["init"])?;
    let in_flight_arg = in_flight.to_string();
    for args in rig.setup_commands(dir)? {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Every account carries as many messages at once as the load
        // generator keeps in flight against its server.
        if args.starts_with(&["account", "set"]) {
            args.extend(["--concurrency", &in_flight_arg]);
        }
        crosscast(&data, &args)?;
    }
    let (rfile, sfile) = audience(dir, n)?;
    crosscast(&data, &["import", "recipients", rfile.to_str().unwrap()])?;
    crosscast(&data, &["import", "subscriptions", sfile.to_str().unwrap()])?;

    let mut rows = Vec::new();
    let channels: [(&'static str, &str, &str); 4] = [
        (
            "email",
            "recipient",
            "type = \"email\"\nconfig = { account = \"smtp\", from = \"news@acme.example\", subject = \"Hi {{ first_name }}\", text = \"Hello {{ first_name }}, new arrivals are in.\", html = \"<p>Hello {{ first_name }}, new arrivals are in.</p>\" }",
        ),
        (
            "sms",
            "recipient",
            "type = \"sms\"\nconfig = { account = \"twilio\", from = \"+15550001111\", body = \"Hi {{ first_name }}, new arrivals are in.\" }",
        ),
        (
            "apns",
            "subscription",
            "type = \"apns\"\nconfig = { account = \"apns\", topic = \"com.acme.shop\", title = \"Hi {{ recipient.first_name }}\", body = \"New arrivals are in.\" }",
        ),
        (
            "fcm",
            "subscription",
            "type = \"fcm\"\nconfig = { account = \"fcm\", title = \"Hi {{ recipient.first_name }}\", body = \"New arrivals are in.\" }",
        ),
    ];
    for (channel, dimension, delivery) in channels {
        if !only.is_empty() && !only.iter().any(|c| c == channel) {
            continue;
        }
        let filter = match channel {
            "apns" => "platform = 'ios'",
            "fcm" => "platform = 'android'",
            _ => "id is not empty",
        };
        let wf = dir.join(format!("{channel}.toml"));
        std::fs::write(
            &wf,
            format!(
                "name = \"bench-{channel}\"\n[activity.q]\ntype = \"query\"\nconfig = {{ dimension = \"{dimension}\", filter = \"{filter}\" }}\nnext = {{ done = \"send\" }}\n\n[activity.send]\n{delivery}\n"
            ),
        )?;
        // Counted, not copied: a copy of every message accepted so far
        // (up to a million, hundreds of MB) between the runs kept a core
        // busy for seconds and left the allocator's cleanup to overlap the
        // next measurement.
        let received = |rig: &Rig| match channel {
            "email" => rig.smtp.received_count(),
            "sms" => rig.sms.received_count(),
            "apns" => rig.apns.received_count(),
            _ => rig.fcm.received_count(),
        };
        // One run of a build: its rate, its process and the servers' CPU.
        // The HTTP/2 servers' bursts: where the handler is quick (FCM),
        // the pauses between them are the client's turnaround.
        let pace = |rig: &Rig| match channel {
            "apns" => Some(rig.apns.take_pace()),
            "fcm" => Some(rig.fcm.take_pace()),
            _ => None,
        };
        let once = |bin: &Path,
                    label: &str,
                    trial: usize|
         -> anyhow::Result<(f64, Measured, f64)> {
            let before = received(&rig);
            pace(&rig);
            let server_before = own_cpu();
            let m = crosscast_at(bin, &data, &["run", wf.to_str().unwrap(), "--json"])?;
            let server_cpu = own_cpu() - server_before;
            let status: serde_json::Value = serde_json::from_str(&m.stdout)?;
            let send = &status["activities"]["send"];
            let sent = send["deliveries"]["sent"].as_u64().unwrap_or(0);
            ensure!(sent == n as u64, "{channel}: {sent} of {n} sent: {send:#}");
            let ms = send["elapsed_ms"].as_u64().unwrap_or(0).max(1);
            let got = received(&rig) - before;
            ensure!(got >= n, "{channel}: the server received {got} of {n}");
            let per_s = n as f64 * 1000.0 / ms as f64;
            println!(
                "{label} {channel} (trial {trial}): {n} messages in {:.2} s = {per_s:.0}/s (process {:.2} s, CPU {:.2} s, peak RSS {:.0} MB)",
                ms as f64 / 1000.0,
                m.secs,
                m.cpu_secs,
                m.max_rss_mb
            );
            if let Some(p) = pace(&rig) {
                println!("  {}", pace_line(channel, label, p));
            }
            Ok((per_s, m, server_cpu))
        };
        // Trials back to back, crosscast then the load generator, so that
        // both meet the machine in the same state.
        for trial in 1..=trials {
            // With a build to compare, the two take turns going first.
            let (per_s, m, server_cpu) = if let Some(b) = compare {
                let first_b = trial % 2 == 0;
                let early = if first_b {
                    Some(once(b, "compared", trial)?)
                } else {
                    None
                };
                let a = once(&main_bin, "crosscast", trial)?;
                let b_run = match early {
                    Some(r) => r,
                    None => once(b, "compared", trial)?,
                };
                compared.push((channel, a.0, b_run.0));
                a
            } else {
                once(&main_bin, "crosscast", trial)?
            };
            pace(&rig);
            let tool_server_before = own_cpu();
            let (load, tool) = match channel {
                "email" => smtp_ceiling(&rig, n, in_flight)?,
                "sms" => sms_ceiling(&rig, n, dir, in_flight)?,
                "apns" => apns_ceiling(&rig, n, dir, in_flight)?,
                _ => rt.block_on(fcm_ceiling(&rig, n, dir, in_flight))?,
            };
            let tool_server_cpu = own_cpu() - tool_server_before;
            let ceiling_per_s = n as f64 / load.secs;
            println!(
                "ceiling {channel} (trial {trial}, {tool}): {n} in {:.2} s = {ceiling_per_s:.0}/s",
                load.secs
            );
            if let Some(p) = pace(&rig) {
                println!("  {}", pace_line(channel, "the load generator", p));
            }
            let us = |secs: f64| secs * 1e6 / n as f64;
            rows.push(Row {
                channel,
                crosscast_per_s: per_s,
                ceiling_per_s,
                ceiling_tool: tool,
                crosscast_cpu_us: us(m.cpu_secs),
                server_cpu_us: us(server_cpu),
                tool_cpu_us: us(load.cpu_secs),
                tool_server_cpu_us: us(tool_server_cpu),
            });
        }
    }
    for channel in ["email", "sms", "apns", "fcm"] {
        let mut trials: Vec<&Row> = rows.iter().filter(|r| r.channel == channel).collect();
        if trials.is_empty() {
            continue;
        }
        trials.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        let ratios: Vec<String> = trials
            .iter()
            .map(|r| format!("{:.0}%", 100.0 * r.ratio()))
            .collect();
        // The median trial (the lower middle one of an even number).
        let r = trials[(trials.len() - 1) / 2];
        println!(
            "RESULT {}: crosscast {:.0}/s, ceiling {:.0}/s ({}), {:.0}% of the ceiling{}; \
             CPU per message: crosscast {:.0} µs + server {:.0} µs, load generator {:.0} µs + server {:.0} µs",
            r.channel,
            r.crosscast_per_s,
            r.ceiling_per_s,
            r.ceiling_tool,
            100.0 * r.ratio(),
            if trials.len() > 1 {
                format!(
                    " (median of {} trials: {})",
                    trials.len(),
                    ratios.join(", ")
                )
            } else {
                String::new()
            },
            r.crosscast_cpu_us,
            r.server_cpu_us,
            r.tool_cpu_us,
            r.tool_server_cpu_us,
        );
    }
    if let Some(b) = compare {
        for channel in ["email", "sms", "apns", "fcm"] {
            let mut ratios: Vec<f64> = compared
                .iter()
                .filter(|c| c.0 == channel)
                .map(|c| c.2 / c.1)
                .collect();
            if ratios.is_empty() {
                continue;
            }
            ratios.sort_by(f64::total_cmp);
            let shown: Vec<String> = ratios
                .iter()
                .map(|r| format!("{:.0}%", 100.0 * r))
                .collect();
            println!(
                "COMPARE {channel}: {} against {}: {:.0}% of its rate, median of {} trials ({})",
                b.display(),
                main_bin.display(),
                100.0 * ratios[(ratios.len() - 1) / 2],
                ratios.len(),
                shown.join(", ")
            );
        }
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|p| p.join(tool))
            .find(|p| p.exists())
    })
}

/// N recipients with an email and a mobile each, and N iOS and N Android
/// subscriptions: every channel gets N messages.
fn audience(dir: &Path, n: usize) -> anyhow::Result<(PathBuf, PathBuf)> {
    let rfile = dir.join("recipients.csv");
    let sfile = dir.join("subscriptions.csv");
    let mut r = std::io::BufWriter::new(std::fs::File::create(&rfile)?);
    writeln!(r, "id,email,mobile,first_name")?;
    let mut s = std::io::BufWriter::new(std::fs::File::create(&sfile)?);
    writeln!(s, "id,recipient_id,app,platform,token")?;
    for i in 1..=n {
        writeln!(r, "R{i},user{i}@example.com,+1555{i:07},Ada")?;
        writeln!(
            s,
            "I{i},R{i},com.acme.shop,ios,{:064x}",
            i as u128 * 0x9E37_79B9_7F4A_7C15
        )?;
        writeln!(s, "A{i},R{i},com.acme.shop,android,fcm-token-{i}")?;
    }
    r.flush()?;
    s.flush()?;
    Ok((rfile, sfile))
}

/// How the server's requests came under one driver: in bursts, and the
/// pauses between them.
fn pace_line(channel: &str, driver: &str, p: PaceReport) -> String {
    format!(
        "{channel} server under {driver}: {} requests, {:.1} per burst, {:.0} µs between bursts ({:.2} s in all)",
        p.requests,
        p.per_burst(),
        p.mean_gap().as_secs_f64() * 1e6,
        p.waited.as_secs_f64()
    )
}

/// `h2load` must report every request answered with a 2xx.
fn h2load(args: &[String], n: usize) -> anyhow::Result<Measured> {
    let m = measure(Command::new("h2load").args(args))?;
    let text = m.stdout.clone();
    let ok = text
        .lines()
        .find(|l| l.trim_start().starts_with("status codes:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().split(' ').next())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    ensure!(ok == n, "h2load: {ok} of {n} answered 2xx:\n{text}");
    Ok(m)
}

/// Postfix's SMTP load generator, 32 sessions, connections reused (`-d`),
/// messages as large as crosscast's.
fn smtp_ceiling(rig: &Rig, n: usize, in_flight: usize) -> anyhow::Result<(Measured, String)> {
    let size = rig.smtp.received_at(0).map_or(1000, |m| m.data.len());
    let before = rig.smtp.received_count();
    let m = measure(
        Command::new(which("smtp-source").context("smtp-source")?).args([
            "-d",
            "-s",
            &in_flight.to_string(),
            "-m",
            &n.to_string(),
            "-l",
            &size.to_string(),
            "-f",
            "news@acme.example",
            "-t",
            "user1@example.com",
            &rig.smtp.addr.to_string(),
        ]),
    )?;
    let got = rig.smtp.received_count() - before;
    ensure!(got == n, "smtp-source: the sink accepted {got} of {n}");
    Ok((m, format!("smtp-source -d -s {in_flight} -l {size}")))
}

fn sms_ceiling(
    rig: &Rig,
    n: usize,
    dir: &Path,
    in_flight: usize,
) -> anyhow::Result<(Measured, String)> {
    let body = dir.join("sms-body");
    std::fs::write(
        &body,
        "To=%2B15550000001&From=%2B15550001111&Body=Hi+Ada%2C+new+arrivals+are+in.",
    )?;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    let args = vec![
        "--h1".to_string(),
        "-n".into(),
        n.to_string(),
        "-c".into(),
        in_flight.to_string(),
        "-d".into(),
        body.display().to_string(),
        "-H".into(),
        format!("authorization: Basic {basic}"),
        "-H".into(),
        "content-type: application/x-www-form-urlencoded".into(),
        format!(
            "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
            rig.sms.url()
        ),
    ];
    Ok((h2load(&args, n)?, format!("h2load --h1 -c {in_flight}")))
}

/// `h2load` over one HTTP/2 connection with `in_flight` streams, as crosscast
/// keeps them: `n` POSTs of `body` with `headers` to `url`.
fn h2_args(
    (n, in_flight): (usize, usize),
    body: &Path,
    headers: &[String],
    url: String,
) -> Vec<String> {
    let mut args = vec![
        "-n".to_string(),
        n.to_string(),
        "-c".into(),
        "1".into(),
        "-m".into(),
        in_flight.to_string(),
        "-d".into(),
        body.display().to_string(),
    ];
    for h in headers {
        args.push("-H".into());
        args.push(h.clone());
    }
    args.push(url);
    args
}

fn apns_ceiling(
    rig: &Rig,
    n: usize,
    dir: &Path,
    in_flight: usize,
) -> anyhow::Result<(Measured, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(KEY_ID.into());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({ "iss": TEAM_ID, "iat": now }),
        &jsonwebtoken::EncodingKey::from_ec_pem(rig.apns_key.p8.as_bytes())?,
    )?;
    let body = dir.join("apns-body");
    std::fs::write(
        &body,
        r#"{"aps":{"alert":{"title":"Hi Ada","body":"New arrivals are in."},"sound":"default"}}"#,
    )?;
    let args = h2_args(
        (n, in_flight),
        &body,
        &[
            format!("authorization: bearer {token}"),
            "apns-topic: com.acme.shop".into(),
            "apns-push-type: alert".into(),
        ],
        format!(
            "{}/3/device/{:064x}",
            rig.apns.url(),
            0x9E37_79B9_7F4A_7C15u128
        ),
    );
    Ok((h2load(&args, n)?, format!("h2load -c 1 -m {in_flight}")))
}

async fn fcm_ceiling(
    rig: &Rig,
    n: usize,
    dir: &Path,
    in_flight: usize,
) -> anyhow::Result<(Measured, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let sa = &rig.service_account;
    let assertion = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({
            "iss": sa.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": rig.fcm.token_uri(),
            "iat": now,
            "exp": now + 3600,
        }),
        &jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_pem.as_bytes())?,
    )?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(rig.tls.ca_pem.as_bytes())?)
        .build()?;
    let answer: serde_json::Value = client
        .post(rig.fcm.token_uri())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = answer["access_token"]
        .as_str()
        .with_context(|| format!("no access token: {answer}"))?;
    let body = dir.join("fcm-body");
    std::fs::write(
        &body,
        r#"{"message":{"token":"fcm-token-1","notification":{"title":"Hi Ada","body":"New arrivals are in."}}}"#,
    )?;
    let args = h2_args(
        (n, in_flight),
        &body,
        &[
            format!("authorization: Bearer {token}"),
            "content-type: application/json".into(),
        ],
        format!(
            "{}/v1/projects/{}/messages:send",
            rig.fcm.url(),
            sa.project_id
        ),
    );
    let m = tokio::task::block_in_place(|| h2load(&args, n))?;
    Ok((m, format!("h2load -c 1 -m {in_flight}")))
}
