//! `crosscast-bench targeting`, `crosscast-bench delivery` (`delivery.rs`)
//! and `crosscast-bench validate` (`validate.rs`): the benchmarks of
//! `BENCHMARKS.md`.
//!
//! Targeting:
//!
//! On a generated audience of N recipients (~1.5 app subscriptions each) it
//! measures, each step a separate `crosscast` process where the product does
//! the work: the import (rows/s, peak memory), the reference workflow's query
//! and split through the wasm plugins (time, peak memory, calls across the
//! boundary); then the same filters evaluated natively in this process on the
//! same store, and the same query and split run by SQLite on the same rows.
//! The three must agree on every count, or the benchmark fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use crosscast::store::Store;
use crosscast::store::audience::{Values, Want};
use crosscast_sdk::filter::{Column, Columns, Filter};
use crosscast_test_servers::sample;

/// The reference workflow's targeting: the query and the channel split.
const QUERY: &str =
    "app = 'com.acme.shop' and (recipient.email is not empty or recipient.mobile is not empty)";
const EMAIL: &str = "recipient.email is not empty";
const SMS: &str = "recipient.mobile is not empty";

/// Runs of the targeting on each side; the median counts.
const TRIALS: usize = 3;

/// Ids per batch, as the plugins read them.
const BATCH: usize = crosscast_sdk::BATCH as usize;

#[derive(Parser)]
#[command(about = "Crosscast benchmarks")]
enum Bench {
    /// Import, query and split N recipients: wasm vs native vs SQLite.
    Targeting {
        /// How many recipients (several sizes: one after the other).
        #[arg(long, value_delimiter = ',', default_value = "1000000")]
        recipients: Vec<usize>,
        /// Working directory (its contents are replaced).
        #[arg(long, default_value = "target/bench")]
        dir: PathBuf,
    },
    /// `crosscast validate` on files of N activities, one problem each.
    Validate {
        /// Sizes of the files, in activities (multiples of 4).
        #[arg(long, value_delimiter = ',', default_value = "15000,30000,60000")]
        activities: Vec<usize>,
        /// Working directory (its contents are replaced).
        #[arg(long, default_value = "target/bench-validate")]
        dir: PathBuf,
    },
    /// N messages per channel to the loopback servers vs each server's ceiling.
    Delivery {
        /// Messages per channel.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Working directory (its contents are replaced).
        #[arg(long, default_value = "target/bench-delivery")]
        dir: PathBuf,
        /// Only these channels (comma-separated: email, sms, apns, fcm).
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
        /// Trials per channel (crosscast then the ceiling, back to back);
        /// the result is the median one.
        #[arg(long, default_value_t = 1)]
        trials: usize,
        /// A second crosscast build run in every trial beside the first
        /// (in turns, so both meet the machine in the same state): an A/B.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Runtime worker threads of the loopback servers.
        #[arg(long, default_value_t = 2)]
        server_threads: usize,
        /// Messages in flight at once: every account's concurrency, and the
        /// load generator's connections (HTTP/1.1, SMTP) or streams (HTTP/2).
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
    },
}

mod delivery;
mod validate;

/// Wall time and peak resident memory of a child process.
pub(crate) struct Measured {
    pub secs: f64,
    /// User + system CPU seconds of the process.
    pub cpu_secs: f64,
    pub max_rss_mb: f64,
    pub stdout: String,
}

/// Runs `crosscast` with `args`, measuring it alone (wait4's rusage).
pub(crate) fn crosscast(data: &Path, args: &[&str]) -> anyhow::Result<Measured> {
    crosscast_at(&default_bin(), data, args)
}

/// The build under test: `CROSSCAST_BIN`, or the release build.
pub(crate) fn default_bin() -> PathBuf {
    std::env::var_os("CROSSCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/crosscast"))
}

/// Runs the `crosscast` at `bin` with `args`, measuring it alone.
pub(crate) fn crosscast_at(bin: &Path, data: &Path, args: &[&str]) -> anyhow::Result<Measured> {
    let mut cmd = Command::new(bin);
    cmd.arg("--data").arg(data).args(args);
    measure(&mut cmd).with_context(|| format!("crosscast {args:?}"))
}

/// Runs a command to its end, measuring it alone (CPU from wait4's rusage,
/// peak memory from its VmHWM); fails unless it exits with 0.
pub(crate) fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    measure_expecting(cmd, 0)
}

/// [`measure`], for a command that must exit with `code`.
pub(crate) fn measure_expecting(cmd: &mut Command, code: i32) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    // Peak memory from the child's own VmHWM, sampled until it exits:
    // wait4's ru_maxrss also counts this process's memory, inherited
    // between fork and exec, which grows as the servers here fill up.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak_kb = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kb) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmHWM:"))?
                            .split_whitespace()
                            .nth(1)?
                            .parse::<u64>()
                            .ok()
                    })
                {
                    peak_kb = peak_kb.max(kb);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak_kb
        })
    };
    let mut stdout = String::new();
    {
        use std::io::Read;
        let mut out = child.stdout.context("stdout")?;
        out.read_to_string(&mut stdout)?;
    }
    let mut status = 0;
    // SAFETY: rusage is plain data filled in by the kernel; pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    ensure!(r == pid, "wait4 failed");
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code,
        "failed:\n{stdout}"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_kb = sampler.join().unwrap_or(0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        secs,
        cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_mb: peak_kb as f64 / 1024.0,
        stdout,
    })
}

/// Counts every step must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    query: u64,
    email: u64,
    sms: u64,
}

fn main() -> anyhow::Result<()> {
    match Bench::parse() {
        Bench::Targeting { recipients, dir } => {
            for n in recipients {
                targeting(n, &dir)?;
            }
            Ok(())
        }
        Bench::Validate { activities, dir } => validate::run(&activities, &dir),
        Bench::Delivery {
            messages,
            dir,
            channels,
            trials,
            compare,
            server_threads,
            in_flight,
        } => delivery::run(
            messages,
            &dir,
            &channels,
            trials,
            compare.as_deref(),
            server_threads,
            in_flight,
        ),
    }
}

fn targeting(recipients: usize, dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let data = dir.join("data");
    println!("# targeting benchmark: {recipients} recipients");
    println!("machine: {}", machine());

    let t = Instant::now();
    let (rfile, sfile) = sample::write(&dir.join("sample"), recipients, 7)?;
    let subscriptions = count_lines(&sfile)? - 1;
    println!(
        "generate: {recipients} recipients, {subscriptions} subscriptions ({:.2} per recipient) in {:.2} s",
        subscriptions as f64 / recipients as f64,
        t.elapsed().as_secs_f64()
    );

    crosscast(&data, &["init"])?;
    let r = crosscast(&data, &["import", "recipients", rfile.to_str().unwrap()])?;
    println!(
        "import recipients: {:.2} s, {:.0} rows/s, peak RSS {:.0} MB",
        r.secs,
        recipients as f64 / r.secs,
        r.max_rss_mb
    );
    let s = crosscast(&data, &["import", "subscriptions", sfile.to_str().unwrap()])?;
    println!(
        "import subscriptions: {:.2} s, {:.0} rows/s, peak RSS {:.0} MB",
        s.secs,
        subscriptions as f64 / s.secs,
        s.max_rss_mb
    );

    let wf = dir.join("targeting.toml");
    std::fs::write(&wf, workflow())?;
    // The shared VM's timings vary by ±20% from run to run: the workflow
    // runs TRIALS times (a run each) and the median counts.
    let mut trials = Vec::new();
    for _ in 0..TRIALS {
        let run = crosscast(&data, &["run", wf.to_str().unwrap(), "--json"])?;
        let status: serde_json::Value = serde_json::from_str(&run.stdout)?;
        let act = |a: &str| status["activities"][a].clone();
        let n = |a: &str, t: &str| act(a)["transitions"][t].as_u64().unwrap_or(0);
        let counts = Counts {
            query: n("query", "done"),
            email: n("split", "email"),
            sms: n("split", "sms"),
        };
        let ms = |a: &str, k: &str| act(a)[k].as_u64().unwrap_or(0);
        trials.push((
            (ms("query", "elapsed_ms") + ms("split", "elapsed_ms")) as f64 / 1000.0,
            counts,
            (ms("query", "elapsed_ms"), ms("split", "elapsed_ms")),
            (ms("query", "calls"), ms("split", "calls")),
            run,
        ));
    }
    let all: Vec<String> = trials.iter().map(|t| format!("{:.3}", t.0)).collect();
    let peak_rss = trials.iter().map(|t| t.4.max_rss_mb).fold(0.0, f64::max);
    trials.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (wasm_secs, wasm, (q_ms, s_ms), (q_calls, s_calls), run) = trials.swap_remove(TRIALS / 2);
    println!(
        "wasm query + split: {wasm_secs:.3} s, median of {TRIALS} runs ({} s) (query {q_ms} ms over \
         {subscriptions} subscriptions, split {s_ms} ms over {}); process {:.2} s, peak RSS {:.0} MB",
        all.join(", "),
        wasm.query,
        run.secs,
        peak_rss
    );
    let batches = |n: u64| n.div_ceil(BATCH as u64);
    println!(
        "boundary calls: query {q_calls} (ceil(N/batch) = {}), split {s_calls} (ceil(n/batch) = {})",
        batches(subscriptions),
        batches(wasm.query)
    );

    let store = Store::open(&data)?;
    let t = Instant::now();
    let native = native(&store)?;
    let native_secs = t.elapsed().as_secs_f64();
    drop(store);
    println!("native query + split: {native_secs:.3} s");

    let db = dir.join("bench.sqlite");
    let load = sqlite_load(&db, &rfile, &sfile)?;
    println!(
        "sqlite3 CLI load (.import both files, unique indexes on id, index on recipient_id): \
         {:.2} s, peak RSS {:.0} MB",
        load.secs, load.max_rss_mb
    );
    let conn = rusqlite::Connection::open(&db)?;
    let mut sqlite_trials = Vec::new();
    for _ in 0..TRIALS {
        let t = Instant::now();
        let counts = sqlite_targeting(&conn)?;
        sqlite_trials.push((t.elapsed().as_secs_f64(), counts));
    }
    let all: Vec<String> = sqlite_trials
        .iter()
        .map(|t| format!("{:.3}", t.0))
        .collect();
    sqlite_trials.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (sqlite_secs, sqlite) = sqlite_trials[TRIALS / 2];
    println!(
        "sqlite query + split: {sqlite_secs:.3} s, median of {TRIALS} ({} s)",
        all.join(", ")
    );

    println!("counts: wasm {wasm:?}, native {native:?}, sqlite {sqlite:?}");
    if wasm != native || wasm != sqlite {
        bail!("the three disagree");
    }
    println!(
        "RESULT import {:.2} s vs sqlite3 {:.2} s ({:.2}x); wasm/native = {:.2}x; wasm vs sqlite \
         = {:.2}x ({}); import {:.0} rows/s; peak RSS import {:.0} MB, run {:.0} MB",
        r.secs + s.secs,
        load.secs,
        (r.secs + s.secs) / load.secs,
        wasm_secs / native_secs,
        wasm_secs / sqlite_secs,
        if wasm_secs < sqlite_secs {
            "faster"
        } else {
            "slower"
        },
        recipients as f64 / r.secs,
        r.max_rss_mb.max(s.max_rss_mb),
        peak_rss
    );
    Ok(())
}

fn workflow() -> String {
    format!(
        r#"name = "targeting-bench"
[activity.query]
type = "query"
next = {{ done = "split" }}
config = {{ dimension = "subscription", filter = "{QUERY}" }}

[activity.split]
type = "split"
[activity.split.config]
subsets = [
    {{ name = "email", filter = "{EMAIL}" }},
    {{ name = "sms", filter = "{SMS}" }},
]
"#
    )
}

/// The same filters on the same store, in this process: what the wasm
/// plugins and the executor do (outputs stored as populations) minus the
/// boundary and the sandbox.
fn native(store: &Store) -> anyhow::Result<Counts> {
    let query = Filter::parse(QUERY)?;
    let email = Filter::parse(EMAIL)?;
    let sms = Filter::parse(SMS)?;
    let audience = store.audience();
    let total = audience.count("subscription")?;
    // The same forms the host serves the plugins: presence for `is empty`,
    // dictionaries for repeated values.
    let columns = |ids: &[u64], f: &Filter| -> anyhow::Result<Columns> {
        let wants: Vec<(String, Want)> = f
            .fields()
            .iter()
            .map(|x| {
                let want = if x.presence_only {
                    Want::Presence
                } else {
                    Want::Auto
                };
                (x.path.clone(), want)
            })
            .collect();
        let cols = audience.fetch_as("subscription", ids, &wants)?;
        Ok(wants
            .into_iter()
            .map(|(p, _)| p)
            .zip(cols.into_iter().map(|v| match v {
                Values::Text(t) => Column::Text(t),
                Values::Dictionary { values, rows } => Column::Dictionary { values, rows },
                Values::Presence(p) => Column::Presence(p),
            }))
            .collect())
    };
    let mut selected = Vec::new();
    let mut start = 0;
    while start < total {
        let ids: Vec<u64> = (start..(start + BATCH as u64).min(total)).collect();
        let keep = query.evaluate(&columns(&ids, &query)?, ids.len(), 0)?;
        selected.extend(ids.iter().zip(keep).filter(|(_, k)| *k).map(|(id, _)| *id));
        start += BATCH as u64;
    }
    // Persist and read back as the engine does between two activities, so
    // the comparison isolates the wasm boundary and sandbox. (The flush that
    // follows a task is not in the wasm timing either: it is left out here.)
    let query_out = store.write_population("subscription", &selected)?;
    let selected = store.population_ids(query_out)?;
    let mut counts = Counts {
        query: selected.len() as u64,
        email: 0,
        sms: 0,
    };
    let (mut to_email, mut to_sms) = (Vec::new(), Vec::new());
    for ids in selected.chunks(BATCH) {
        let mut cols: Columns = HashMap::new();
        cols.extend(columns(ids, &email)?);
        cols.extend(columns(ids, &sms)?);
        let e = email.evaluate(&cols, ids.len(), 0)?;
        let m = sms.evaluate(&cols, ids.len(), 0)?;
        for ((e, m), id) in e.into_iter().zip(m).zip(ids) {
            if e {
                counts.email += 1;
                to_email.push(*id);
            } else if m {
                counts.sms += 1;
                to_sms.push(*id);
            }
        }
    }
    store.write_population("subscription", &to_email)?;
    store.write_population("subscription", &to_sms)?;
    Ok(counts)
}

/// Loads both files with the sqlite3 command-line shell, as an operator
/// would (`.import`, then the indexes an upsert by id and the join need),
/// measured as one process.
fn sqlite_load(db: &Path, rfile: &Path, sfile: &Path) -> anyhow::Result<Measured> {
    let script = format!(
        ".mode csv\n.import '{}' recipient\n.import '{}' subscription\n\
         CREATE UNIQUE INDEX recipient_by_id ON recipient(id);\n\
         CREATE UNIQUE INDEX subscription_by_id ON subscription(id);\n\
         CREATE INDEX subscription_by_recipient ON subscription(recipient_id);\n\
         ANALYZE;\n",
        rfile.display(),
        sfile.display()
    );
    let script_file = db.with_extension("sql");
    std::fs::write(&script_file, script)?;
    let mut cmd = Command::new("sqlite3");
    cmd.arg(db)
        .arg(format!(".read '{}'", script_file.display()));
    measure(&mut cmd).context("sqlite3 (apt install sqlite3)")
}

/// The query and the split as SQL: one join, first match wins by CASE.
fn sqlite_targeting(conn: &rusqlite::Connection) -> anyhow::Result<Counts> {
    let mut stmt = conn.prepare(
        "SELECT count(*),
                sum(CASE WHEN coalesce(r.email, '') <> '' THEN 1 ELSE 0 END),
                sum(CASE WHEN coalesce(r.email, '') = '' AND coalesce(r.mobile, '') <> '' THEN 1 ELSE 0 END)
         FROM subscription s JOIN recipient r ON r.id = s.recipient_id
         WHERE s.app = 'com.acme.shop'
           AND (coalesce(r.email, '') <> '' OR coalesce(r.mobile, '') <> '')",
    )?;
    let (query, email, sms) = stmt.query_row([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, Option<i64>>(1)?,
            row.get::<_, Option<i64>>(2)?,
        ))
    })?;
    Ok(Counts {
        query: query as u64,
        email: email.unwrap_or(0) as u64,
        sms: sms.unwrap_or(0) as u64,
    })
}

fn count_lines(path: &Path) -> anyhow::Result<u64> {
    use std::io::BufRead;
    Ok(std::io::BufReader::new(std::fs::File::open(path)?)
        .lines()
        .count() as u64)
}

/// CPU model, cores and memory, for the record.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1048576.0));
    format!("{cpu}, {cores} cores, {mem} RAM, {}", std::env::consts::OS)
}
