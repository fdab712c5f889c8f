//! Project automation (`cargo xtask ...`):
//!
//! - `plugins`: build every wasm plugin and test fixture for wasm32-wasip2
//!   (installing the target if missing), in one cargo invocation: the SDK
//!   serves both worlds without features.
//! - `demo`: build everything and run `crosscast-demo` (the demo's own
//!   binary: the shipped `crosscast` links no test server).
//! - `test`: build everything and run the whole test suite (installing
//!   Debian's chromium and chromium-driver for the web UI's tests if missing).
//! - `browser`: only that install (CI runs it as a step of its own).
//! - `bench-delivery [N]`: N messages per channel (default 100,000) to the
//!   loopback servers vs each server's ceiling (needs `smtp-source` and
//!   `h2load`: `apt-get install postfix nghttp2-client`),
//! - `bench [N[,N...]]`: the targeting benchmark (import and targeting
//!   beside SQLite) on N recipients (default 1,000,000; `1000000,10000000`
//!   for both sizes the import is measured at), release builds; see
//!   `BENCHMARKS.md`.
//! - `ci`: format and lint checks, then `test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Wasm crates: plugins, test fixtures and the scaffold's examples.
const WASM_CRATES: &[&str] = &[
    "crosscast-plugin-query",
    "crosscast-plugin-split",
    "crosscast-plugin-wait",
    "crosscast-plugin-signal",
    "crosscast-plugin-email",
    "crosscast-plugin-sms",
    "crosscast-plugin-apns",
    "crosscast-plugin-fcm",
    "crosscast-plugin-union",
    "crosscast-plugin-intersection",
    "crosscast-plugin-exclusion",
    "crosscast-plugin-dedup",
    "crosscast-plugin-change-dimension",
    "crosscast-fixture-split-last-match",
    "crosscast-fixture-misbehave",
    "crosscast-fixture-email-v1",
    "crosscast-fixture-keep-v1",
    "crosscast-fixture-textline",
    "crosscast-fixture-sms-v2",
    "crosscast-fixture-bad-list",
    "crosscast-fixture-hostile",
    "crosscast-fixture-sleepy",
    "crosscast-fixture-future",
    "webhook",
    "sample",
];

/// Wasm crates whose unit tests also run natively with the test suite: the
/// examples `crosscast plugin new` copies, whose tests the scaffold keeps.
const NATIVE_TESTED: &[&str] = &["webhook", "sample"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    match args.first().map(String::as_str) {
        Some("plugins") => plugins(&root),
        Some("browser") => browser(),
        Some("demo") => {
            plugins(&root)?;
            cargo(
                &root,
                &[
                    "build",
                    "--release",
                    "-p",
                    "crosscast",
                    "-p",
                    "crosscast-demo",
                ],
            )?;
            let bin = target_dir(&root).join("release/crosscast-demo");
            let mut cmd = Command::new(&bin);
            cmd.args(&args[1..]);
            cmd.env("CROSSCAST_PLUGIN_DIR", plugin_dir(&root));
            run(cmd)
        }
        Some("test") => {
            plugins(&root)?;
            browser()?;
            // The end-to-end tests run the `crosscast` binary. Built with the
            // tests in one selection, it shares their dependency features,
            // so no dependency is compiled twice (`-p crosscast` alone
            // resolves other tokio, hyper and wasmtime features).
            cargo(
                &root,
                &[&["build", "--bins", "--tests"], &native_selection()[..]].concat(),
            )?;
            let mut cmd = Command::new(env_cargo());
            cmd.current_dir(&root).arg("test").args(native_selection());
            cmd.args(&args[1..]);
            cmd.env("CROSSCAST_PLUGIN_DIR", plugin_dir(&root));
            cmd.env("CROSSCAST_BIN", target_dir(&root).join("debug/crosscast"));
            cmd.env(
                "CROSSCAST_DEMO_BIN",
                target_dir(&root).join("debug/crosscast-demo"),
            );
            run(cmd)
        }
        Some(which @ ("bench" | "bench-delivery" | "bench-validate")) => {
            plugins(&root)?;
            cargo(
                &root,
                &[
                    "build",
                    "--release",
                    "-p",
                    "crosscast",
                    "-p",
                    "crosscast-bench",
                ],
            )?;
            let (sub, flag, default, dir) = match which {
                "bench" => ("targeting", "--recipients", "1000000", "bench"),
                "bench-validate" => ("validate", "--activities", "15000,30000,60000", which),
                _ => ("delivery", "--messages", "100000", "bench-delivery"),
            };
            let n = args.get(1).map(String::as_str).unwrap_or(default);
            let mut cmd = Command::new(target_dir(&root).join("release/crosscast-bench"));
            cmd.current_dir(&root).args([
                sub,
                flag,
                n,
                "--dir",
                target_dir(&root).join(dir).to_str().context("utf-8 path")?,
            ]);
            // Anything after N goes to the benchmark (`--channels sms,fcm`).
            cmd.args(args.iter().skip(2));
            cmd.env("CROSSCAST_PLUGIN_DIR", plugin_dir(&root));
            cmd.env("CROSSCAST_BIN", target_dir(&root).join("release/crosscast"));
            run(cmd)
        }
        Some("ci") => {
            cargo(&root, &["fmt", "--all", "--", "--check"])?;
            plugins(&root)?;
            cargo(&root, &["clippy", "--all-targets", "--", "-D", "warnings"])?;
            // One call lints every wasm crate: the SDK has no world features.
            let mut args = vec!["clippy", "--target", "wasm32-wasip2"];
            for c in WASM_CRATES {
                args.extend(["-p", c]);
            }
            args.extend(["--", "-D", "warnings"]);
            cargo(&root, &args)?;
            let mut cmd = Command::new(env_cargo());
            cmd.current_dir(&root).args(["xtask", "test"]);
            run(cmd)
        }
        _ => bail!(
            "usage: cargo xtask plugins | browser | demo [ARGS] | test [ARGS] | bench [RECIPIENTS[,RECIPIENTS...]] | bench-delivery [MESSAGES [--channels LIST] [--trials N]] | bench-validate [N,N,...] | ci"
        ),
    }
}

/// The workspace without the wasm crates and the benchmarks (separate
/// commands: `cargo xtask bench`).
fn native_selection() -> Vec<&'static str> {
    let mut args = vec!["--workspace"];
    let excluded = WASM_CRATES.iter().filter(|c| !NATIVE_TESTED.contains(c));
    for c in excluded.copied().chain(["crosscast-bench"]) {
        args.extend(["--exclude", c]);
    }
    args
}

fn env_cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d,
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// Where the built plugins land.
fn plugin_dir(root: &Path) -> PathBuf {
    target_dir(root).join("wasm32-wasip2/plugin")
}

fn plugins(root: &Path) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let has = installed
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
        .unwrap_or(false);
    if !has {
        run({
            let mut c = Command::new("rustup");
            c.args(["target", "add", "wasm32-wasip2"]);
            c
        })?;
    }
    let mut args = vec!["build", "--target", "wasm32-wasip2", "--profile", "plugin"];
    for c in WASM_CRATES {
        args.extend(["-p", c]);
    }
    cargo(root, &args)
}

/// Chromium and chromedriver for the web UI's tests: Debian's packages,
/// installed with apt-get when missing (as root, or through sudo).
fn browser() -> anyhow::Result<()> {
    const NEEDED: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromedriver"];
    if NEEDED.iter().all(|p| Path::new(p).exists()) {
        return Ok(());
    }
    eprintln!("xtask: the web UI's tests need Chromium: apt-get install chromium chromium-driver");
    // SAFETY: getuid has no preconditions and cannot fail.
    let root_user = unsafe { libc::getuid() } == 0;
    let apt = |args: &[&str]| {
        let mut c = if root_user {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(c)
    };
    apt(&["update", "-qq"])
        .and_then(|()| {
            apt(&[
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium",
                "chromium-driver",
            ])
        })
        .context("cannot install chromium and chromium-driver (Debian's packages)")
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(env_cargo());
    cmd.current_dir(root).args(args);
    run(cmd)
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
