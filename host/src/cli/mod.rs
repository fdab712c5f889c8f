//! The `crosscast` command line.

mod lists;
mod log;
pub mod scaffold;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::clock::{Clock, format_ms};
use crate::deliver::Transports;
use crate::executor::Executor;
use crate::runtime::{Limits, Runtime};
use crate::store::deliveries::StateKind;
use crate::store::runs::TaskState;
use crate::store::settings::{Account, AuthScheme};
use crate::store::{OpenOptions, Store, StoreError};
use crate::workflow::{self, Workflow};

/// Crosscast: durable cross-channel marketing workflows on WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(
    name = "crosscast",
    version,
    about,
    after_help = "Exit codes: 0 done or waiting; 1 failed (a run, dry or real, that failed, \
                  `worker --once` having executed a task that failed, or any other error); 2 \
                  usage error or invalid workflow; 3 the data directory is in use by another \
                  process; 130 interrupted (Ctrl-C), with what it left said on stderr."
)]
pub struct Cli {
    /// Data directory holding all state (`crosscast init` creates one).
    #[arg(long, global = true, env = "CROSSCAST_DATA")]
    pub data: Option<PathBuf>,
    /// The key sealing secrets, kept outside the data directory (default
    /// `$XDG_CONFIG_HOME/crosscast/key`, made on first use).
    #[arg(long, global = true, env = "CROSSCAST_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Run on a virtual clock fixed at this RFC 3339 instant (never sleeps).
    #[arg(long, global = true, env = "CROSSCAST_NOW")]
    pub now: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses arguments (`crosscast` first).
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args)
    }
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Install the built-in plugins (query, split, wait, email, sms, apns, fcm).
    Init {
        /// Directory holding the built-in plugin components.
        #[arg(long, env = "CROSSCAST_PLUGIN_DIR")]
        plugins: Option<PathBuf>,
    },
    /// Install, list and grant plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage external accounts (SMTP relay, SMS API).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage secrets (stored in the data directory, never shown to plugins).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Trust private or test certificate authorities for outbound TLS.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Import an audience file (CSV with a header, or NDJSON), upserting by id;
    /// all or nothing unless --skip-invalid.
    Import {
        /// What the file holds.
        what: ImportKind,
        /// The file (`.ndjson`/`.jsonl`/`.json` for NDJSON, anything else CSV).
        file: PathBuf,
        /// Load the valid rows and write the rejected ones, with their line
        /// and reasons, to this file (NDJSON).
        #[arg(long, value_name = "REJECTS")]
        skip_invalid: Option<PathBuf>,
    },
    /// Write an audience dimension as NDJSON (to stdout, or a file).
    Export {
        /// What to export.
        what: ImportKind,
        /// The file to write; stdout when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Check a workflow file against the installed plugins.
    Validate {
        /// The workflow file (TOML).
        file: PathBuf,
    },
    /// Start a run of a workflow; it runs until it ends or waits.
    Run {
        /// The workflow file (TOML).
        file: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Evaluate the whole graph, crossing waits on the run's clock,
        /// without sending: counts on every transition and one rendered
        /// message per delivery.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: list the first N targets of each delivery, each
        /// with its message, or why it would be excluded or refused.
        #[arg(long, value_name = "N", requires = "dry_run", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        messages: Option<u32>,
    },
    /// Show a run: each activity, its state, counts and component.
    Status {
        /// The run number.
        run: u64,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the records that left an activity on a transition (external ids).
    Members {
        /// The run number.
        run: u64,
        /// The activity id.
        activity: String,
        /// The transition.
        transition: String,
    },
    /// List a run's delivery log (filters combine).
    Deliveries {
        /// The run number.
        run: u64,
        /// As JSON (one object per line).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: log::Filter,
    },
    /// Suppression lists: denylisted and quarantined addresses per channel.
    #[command(subcommand)]
    Denylist(lists::DenylistCommand),
    /// One-click unsubscribe links (RFC 8058) and their endpoint.
    #[command(subcommand)]
    Unsubscribe(lists::UnsubscribeCommand),
    /// Fire due timers and execute pending work, continuously or once.
    Worker {
        /// Run what is due now, then exit.
        #[arg(long)]
        once: bool,
        /// Pause between passes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
    },
    /// Check the installation without sending a message: the data
    /// directory and key file, trusted CAs, each plugin's stored component,
    /// and each account step by step (name, egress policy, TCP, TLS, the
    /// protocol's greeting, credentials). Exits 1 if any check fails.
    Doctor {
        /// One JSON object: {"ok": bool, "checks": [...]}.
        #[arg(long)]
        json: bool,
    },
}

/// Audience files.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportKind {
    /// Recipients: id,email,mobile,first_name,last_name,locale,timezone.
    Recipients,
    /// App subscriptions: id,recipient_id,app,platform,token.
    Subscriptions,
}

impl ImportKind {
    /// The dimension the files hold.
    pub fn dimension(self) -> &'static str {
        match self {
            ImportKind::Recipients => "recipient",
            ImportKind::Subscriptions => "subscription",
        }
    }
}

impl Command {
    /// The command's name, as the pid file shows who holds a directory.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init { .. } => "init",
            Command::Plugin(_) => "plugin",
            Command::Account(_) => "account",
            Command::Secret(_) => "secret",
            Command::Ca(_) => "ca",
            Command::Import { .. } => "import",
            Command::Export { .. } => "export",
            Command::Validate { .. } => "validate",
            Command::Run { .. } => "run",
            Command::Status { .. } => "status",
            Command::Members { .. } => "members",
            Command::Deliveries { .. } => "deliveries",
            Command::Denylist(_) => "denylist",
            Command::Unsubscribe(_) => "unsubscribe",
            Command::Worker { .. } => "worker",
            Command::Doctor { .. } => "doctor",
        }
    }
}

/// Plugin commands.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Write a new plugin crate: a working example, a unit test, a README
    /// with the build and install commands, and an example workflow.
    New {
        /// An activity or a channel.
        #[arg(value_enum)]
        kind: scaffold::Kind,
        /// The plugin's name (and its crate's).
        name: String,
        /// Where to write it (default: ./NAME); must be new or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on this local copy of crosscast-sdk (its folder) instead
        /// of the registry's.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Verify, precompile and install a component.
    Install {
        /// The component (.wasm).
        path: PathBuf,
        /// Grant it an account (repeatable).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// For a channel: the suppression list it shares (`sms` for another
        /// SMS provider's channel) instead of one named after it.
        #[arg(long = "suppression-list", value_name = "LIST")]
        suppression_list: Option<String>,
        /// For a channel: what its suppression list holds, and so which
        /// stored address each message must go to: `email` (a recipient's
        /// email), `phone` (a recipient's mobile) or `token` (a
        /// subscription's token). By default the list's kind if it has one,
        /// else `token` for a channel sending per subscription and `phone`
        /// for one sending per recipient.
        #[arg(long = "list-kind", value_enum, value_name = "KIND")]
        list_kind: Option<crate::store::suppression::AddressKind>,
        /// Replace a plugin installed under the same name and version with
        /// other bytes (refused without it: a version names one build).
        #[arg(long)]
        force: bool,
    },
    /// List installed plugins with their sha256.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Grant a plugin accounts.
    Grant {
        /// The plugin name.
        name: String,
        /// Account to grant (repeatable).
        #[arg(long = "account", required = true)]
        accounts: Vec<String>,
    },
}

/// Account commands.
#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Create or replace an account.
    Set {
        /// Its name.
        name: String,
        /// Base URL: smtp://host:port, smtps://host, https://api.example.
        #[arg(long)]
        url: String,
        /// Public user or account id (SMTP login, Twilio Account SID).
        #[arg(long)]
        user: Option<String>,
        /// Name of the secret holding its password, token or key.
        #[arg(long)]
        secret: Option<String>,
        /// How requests are authenticated.
        #[arg(long, value_enum, default_value = "auto")]
        auth: AuthScheme,
        /// A public parameter, KEY=VALUE (repeatable). Crosscast reads
        /// `allow_private=true|false` (may reach internal addresses such as
        /// 127.0.0.1 or 10.x; default false), `team_id` and `key_id` (needed
        /// by --auth apns) and `project_id` (needed by --auth google); a
        /// plugin may read others (APNs' `topic`). A name one or two letters
        /// from one of crosscast's is refused as a typo.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Most messages per second through this account.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
        /// Most messages in flight at once through this account (default 32,
        /// at most 1024): connections for SMTP and HTTP/1.1, streams for HTTP/2.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::deliver::pipeline::throttle::MAX_CONCURRENCY as i64))]
        concurrency: Option<u32>,
        /// Seconds each network step may take before the message is retried
        /// later (default 30): an HTTP request's answer, an SMTP greeting,
        /// command or message's reply, a token exchange.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
        timeout: Option<u32>,
    },
    /// List accounts.
    List,
}

/// Trusted certificate authorities for outbound TLS.
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Trust a CA certificate (PEM) in addition to the public roots.
    Add {
        /// A name for it.
        name: String,
        /// The PEM file.
        file: PathBuf,
    },
    /// List trusted CAs.
    List,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Secret commands.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a secret, sealed (never on a command line: from a file or stdin).
    Set {
        /// Its name.
        name: String,
        /// Read the value from this file (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
    },
    /// List secret names (never values).
    List,
    /// Remove a secret.
    Remove {
        /// Its name.
        name: String,
    },
}

/// Logs on stderr: `CROSSCAST_LOG` or `RUST_LOG` (tracing's filter syntax),
/// by default warnings of Crosscast and errors of its dependencies; colour
/// only on a terminal and never with `NO_COLOR`.
fn logging() {
    use std::io::IsTerminal as _;
    let filter = ["CROSSCAST_LOG", "RUST_LOG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .find_map(|d| tracing_subscriber::EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("error,crosscast=warn"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the command line; the exit code says how it went (see `--help`).
pub fn main() -> ExitCode {
    logging();
    // One crypto provider for every TLS connection of the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::parse_from_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = crate::interrupt::install() {
        eprintln!("warning: Ctrl-C is not handled: {e}");
    }
    match dispatch(cli) {
        Ok(code) => code,
        // The reader went away (`crosscast export recipients | head`): stop
        // quietly, like other Unix tools.
        Err(e)
            if e.chain().any(|c| {
                let kind = c
                    .downcast_ref::<std::io::Error>()
                    .map(std::io::Error::kind)
                    .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind());
                kind == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(141)
        }
        Err(e)
            if e.chain().any(|c| {
                matches!(
                    c.downcast_ref(),
                    Some(crate::import::ImportError::Interrupted)
                )
            }) =>
        {
            eprintln!("interrupted: the import stopped before it took effect; nothing was stored");
            ExitCode::from(crate::interrupt::EXIT)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            let busy = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(StoreError::Locked { .. })));
            ExitCode::from(if busy { 3 } else { 1 })
        }
    }
}

/// The default data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("crosscast");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/crosscast");
    }
    PathBuf::from(".crosscast")
}

/// An open data directory with a runtime: what most commands need.
pub struct App {
    /// The store.
    pub store: Store,
    /// The clock.
    pub clock: Clock,
    runtime: Option<Arc<Runtime>>,
    tokio: Option<tokio::runtime::Runtime>,
}

fn limits_from_env() -> Limits {
    let mut l = Limits::default();
    if let Some(ms) = std::env::var("CROSSCAST_PLUGIN_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        l.timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(mb) = std::env::var("CROSSCAST_PLUGIN_MEMORY_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        l.memory_bytes = mb << 20;
    }
    if let Some(bytes) = std::env::var("CROSSCAST_PLUGIN_LOG_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        l.chatter.bytes = bytes;
    }
    if let Some(lines) = std::env::var("CROSSCAST_PLUGIN_LOG_LINES_PER_S")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        l.chatter.lines_per_s = lines;
    }
    l
}

impl App {
    /// Opens a data directory.
    pub fn open(data: &Path, clock: Clock) -> anyhow::Result<App> {
        App::open_with(data, clock, &OpenOptions::default())
    }

    /// Opens (or creates) a data directory.
    pub fn open_with(data: &Path, clock: Clock, options: &OpenOptions) -> anyhow::Result<App> {
        let store = Store::open_with(data, options)?;
        Ok(App {
            store,
            clock,
            runtime: None,
            tokio: None,
        })
    }

    /// The wasm runtime (built on first use).
    pub fn runtime(&mut self) -> anyhow::Result<Arc<Runtime>> {
        if self.runtime.is_none() {
            self.runtime = Some(Runtime::new(limits_from_env())?);
        }
        Ok(self.runtime.clone().expect("set above"))
    }

    /// An executor on this store.
    pub fn executor(&mut self) -> anyhow::Result<Executor> {
        if self.tokio.is_none() {
            self.tokio = Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?,
            );
        }
        let handle = self.tokio.as_ref().expect("set above").handle().clone();
        Ok(Executor::new(
            self.store.clone(),
            self.runtime()?,
            self.clock,
            Transports::new(handle, &self.store)?,
        ))
    }

    /// Installs the built-in plugins from `dir`.
    pub fn init(&mut self, dir: &Path) -> anyhow::Result<Vec<crate::store::plugins::PluginRecord>> {
        let rt = self.runtime()?;
        let mut out = Vec::new();
        for name in BUILTINS {
            let path = dir.join(format!("crosscast_plugin_{name}.wasm"));
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "cannot read {} (build the plugins with `cargo xtask plugins`)",
                    path.display()
                )
            })?;
            out.push(
                // The built-ins come with this binary: a rebuild replaces them.
                rt.install(
                    &self.store,
                    &bytes,
                    &[],
                    &Default::default(),
                    crate::runtime::SameVersion::Replace,
                )
                .with_context(|| path.display().to_string())?
                .record,
            );
        }
        Ok(out)
    }

    /// Parses and validates a workflow file; diagnostics are rendered lines.
    pub fn validate(&mut self, file: &Path) -> anyhow::Result<Result<Workflow, Vec<String>>> {
        let name = file.display().to_string();
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {name}"))?;
        let text = match workflow::decode(bytes) {
            Ok(text) => text,
            Err(d) => return Ok(Err(vec![d.render(&name)])),
        };
        let parsed = match workflow::parse(&text) {
            Ok(p) => p,
            Err(ds) => return Ok(Err(ds.iter().map(|d| d.render(&name)).collect())),
        };
        let rt = self.runtime()?;
        Ok(match workflow::validate(&parsed, &self.store, &rt) {
            Ok((wf, warnings)) => {
                // Worth saying, not a reason to refuse: on stderr.
                for w in warnings {
                    eprintln!("{}", w.render(&name));
                }
                Ok(wf)
            }
            Err(ds) => Err(ds.iter().map(|d| d.render(&name)).collect()),
        })
    }
}

/// The built-in plugins `init` installs, by file stem.
pub const BUILTINS: &[&str] = &[
    "query",
    "split",
    "wait",
    "email",
    "sms",
    "apns",
    "fcm",
    "union",
    "intersection",
    "exclusion",
    "dedup",
    "change_dimension",
];

pub fn builtin_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    let exe = std::env::current_exe()?;
    let base = exe.parent().context("executable has no directory")?;
    for candidate in [
        base.join("../wasm32-wasip2/plugin"),
        base.join("plugins"),
        base.join("../share/crosscast/plugins"),
    ] {
        if candidate.join("crosscast_plugin_query.wasm").exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the built-in plugins: build them with `cargo xtask plugins` or pass --plugins DIR"
    )
}

/// Runs one parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Writing a crate needs no data directory.
    if let Command::Plugin(PluginCommand::New {
        kind,
        name,
        dir,
        sdk,
    }) = &cli.command
    {
        let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
        scaffold::write(*kind, name, &dir, sdk.as_deref())?;
        println!(
            "wrote {} ({kind:?} `{name}`): see {}",
            dir.display(),
            dir.join("README.md").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let clock = match &cli.now {
        Some(t) => Clock::fixed(t)?,
        None => Clock::System,
    };
    let data = cli.data.clone().unwrap_or_else(default_data_dir);
    let options = OpenOptions {
        create: matches!(cli.command, Command::Init { .. }),
        key_file: cli
            .key_file
            .clone()
            .unwrap_or_else(crate::store::sealed::KeyFile::default_path),
        holder: format!("crosscast {}", cli.command.name()),
        cache_mb: crate::store::cache_mb_from_env().map_err(anyhow::Error::msg)?,
    };
    let mut app = App::open_with(&data, clock, &options)?;
    let store = app.store.clone();
    let _flushing = crate::interrupt::before_exit(move || {
        let _ = store.flush();
    });
    match cli.command {
        Command::Init { plugins } => {
            let dir = builtin_dir(plugins)?;
            for p in app.init(&dir)? {
                println!(
                    "installed {} {} ({:?}) sha256 {}",
                    p.name, p.version, p.kind, p.sha256
                );
            }
        }
        Command::Plugin(PluginCommand::Install {
            path,
            accounts,
            suppression_list,
            list_kind,
            force,
        }) => {
            if let Some(list) = &suppression_list {
                crate::store::suppression::check_list_name(list).map_err(anyhow::Error::msg)?;
                // A new list is allowed (two channels of one provider may
                // share it); a near miss of an existing one is a typo.
                let known = app.store.known_lists()?;
                let names: Vec<&str> = known.iter().map(String::as_str).collect();
                if !known.contains(list)
                    && let Some(meant) = crate::spelling::near(list, &names)
                {
                    bail!("no suppression list `{list}`: did you mean `{meant}`?");
                }
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let rt = app.runtime()?;
            let choice = crate::runtime::ListChoice {
                list: suppression_list,
                kind: list_kind,
            };
            let same = if force {
                crate::runtime::SameVersion::Replace
            } else {
                crate::runtime::SameVersion::Refuse
            };
            let installed = rt
                .install(&app.store, &bytes, &accounts, &choice, same)
                .with_context(|| path.display().to_string())?;
            let p = &installed.record;
            println!(
                "installed {} {} ({:?}) sha256 {}{}",
                p.name,
                p.version,
                p.kind,
                p.sha256,
                p.suppression_list
                    .as_deref()
                    .map(|l| format!(", suppression list `{l}`"))
                    .unwrap_or_default()
            );
            println!("  built against {}", installed.contract);
            if let Some(old) = &installed.replaced {
                println!(
                    "  replaced {} {}: old sha256 {old}, new sha256 {}",
                    p.name, p.version, p.sha256
                );
            }
        }
        Command::Plugin(PluginCommand::New { .. }) => {
            unreachable!("`plugin new` returns before the data directory opens")
        }
        Command::Plugin(PluginCommand::List { json }) => {
            let plugins = app.store.plugins()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plugins)?);
            } else {
                println!(
                    "{:<12} {:<8} {:<9} {:<64} ACCOUNTS",
                    "NAME", "VERSION", "KIND", "SHA256"
                );
                for p in plugins {
                    println!(
                        "{:<12} {:<8} {:<9} {:<64} {}",
                        p.name,
                        p.version,
                        format!("{:?}", p.kind).to_lowercase(),
                        p.sha256,
                        p.accounts.join(",")
                    );
                }
            }
        }
        Command::Plugin(PluginCommand::Grant { name, accounts }) => {
            let mut p = app.store.plugin(&name)?;
            // The parameters the plugin reads: an account's name one or two
            // letters from one of them is a typo, refused here.
            let reads = app.runtime()?.account_params(&app.store, &p)?;
            let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
            for a in accounts {
                let account = app.store.account(&a)?;
                for have in account.params.keys() {
                    if let Some(meant) = crate::spelling::near(have, &reads)
                        && !account.params.contains_key(meant)
                    {
                        bail!(
                            "account `{a}` has parameter `{have}`, and `{}` reads `{meant}`:                              did you mean `{meant}`? (`crosscast account set {a} ... --param {meant}=VALUE`)",
                            p.name
                        );
                    }
                }
                if !p.accounts.contains(&a) {
                    p.accounts.push(a);
                }
            }
            app.store.update_plugin(&p)?;
            println!("{} may use: {}", p.name, p.accounts.join(", "));
        }
        Command::Account(AccountCommand::Set {
            name,
            url,
            user,
            secret,
            auth,
            params,
            rate,
            concurrency,
            timeout,
        }) => {
            let account = Account {
                name: name.clone(),
                url,
                user,
                secret,
                auth,
                params: params.into_iter().collect(),
                rate,
                concurrency,
                timeout,
            };
            account.check().map_err(anyhow::Error::msg)?;
            app.store.put_account(&account)?;
            println!("account {name} saved");
            if let Some(secret) = &account.secret
                && !app.store.secret_names()?.contains(secret)
            {
                eprintln!(
                    "note: there is no secret `{secret}` yet: messages through account {name} \
                     fail until `crosscast secret set {secret} --from-file FILE`"
                );
            }
            // Said now rather than found in the delivery log later.
            let host = url::Url::parse(&account.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            if let Some(host) = host
                && !account.allows_internal()
                && (crate::deliver::net::egress::check_literal(&host, false).is_err()
                    || host.eq_ignore_ascii_case("localhost"))
            {
                eprintln!(
                    "note: {host} is an internal address: messages through account {name} are \
                     refused unless it has --param allow_private=true"
                );
            }
        }
        Command::Ca(CaCommand::Add { name, file }) => {
            let pem =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", file.display()))?;
            app.store.put_ca(&name, &pem)?;
            println!("trusting CA {name} for outbound TLS");
        }
        Command::Ca(CaCommand::List) => {
            for (name, _) in app.store.cas()? {
                println!("{name}");
            }
        }
        Command::Account(AccountCommand::List) => {
            for a in app.store.accounts()? {
                let params: Vec<String> =
                    a.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                // The limits show what the sends will honour, defaults included.
                let rate = a.rate.map_or("-".to_string(), |r| format!("{r}/s"));
                let concurrency = a
                    .concurrency
                    .unwrap_or(crate::deliver::pipeline::throttle::DEFAULT_CONCURRENCY);
                let timeout = a.step_timeout().as_secs();
                println!(
                    "{:<12} {:<40} auth={:?} user={} secret={} rate={rate} concurrency={concurrency} timeout={timeout}s {}",
                    a.name,
                    a.url,
                    a.auth,
                    a.user.as_deref().unwrap_or("-"),
                    a.secret.as_deref().unwrap_or("-"),
                    params.join(" ")
                );
            }
        }
        Command::Secret(SecretCommand::Set { name, from_file }) => {
            let bytes = if from_file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)
                    .context("cannot read the secret from standard input")?;
                b
            } else {
                std::fs::read(&from_file)
                    .with_context(|| format!("cannot read {}", from_file.display()))?
            };
            if bytes.is_empty() {
                bail!("the secret is empty: nothing stored");
            }
            app.store.put_secret(&name, &bytes)?;
            println!("secret {name} saved ({} bytes, sealed)", bytes.len());
        }
        Command::Secret(SecretCommand::Remove { name }) => {
            if !app.store.remove_secret(&name)? {
                bail!("no secret `{name}` (see `crosscast secret list`)");
            }
            println!("secret {name} removed");
        }
        Command::Secret(SecretCommand::List) => {
            for n in app.store.secret_names()? {
                println!("{n}");
            }
        }
        Command::Import {
            what,
            file,
            skip_invalid,
        } => {
            let dim = what.dimension();
            let started = std::time::Instant::now();
            let options = crate::import::Options {
                rejects: skip_invalid.clone(),
                progress: true,
            };
            let r = crate::import::import_file(&app.store, dim, &file, &options)?;
            if let Some(earlier) = &r.interrupted {
                eprintln!("note: {earlier}");
            }
            let secs = started.elapsed().as_secs_f64();
            let stored = r.inserted + r.updated;
            println!(
                "imported {stored} {dim}s from {} ({} new, {} updated) in {secs:.2} s ({:.0} rows/s)",
                file.display(),
                r.inserted,
                r.updated,
                (stored + r.rejected) as f64 / secs.max(1e-9),
            );
            if let Some(rejects) = &skip_invalid {
                println!(
                    "rejected {} rows, written to {}",
                    r.rejected,
                    rejects.display()
                );
            }
            if crate::interrupt::requested() {
                eprintln!(
                    "interrupted: the import had taken effect already; everything was stored"
                );
                return Ok(ExitCode::from(crate::interrupt::EXIT));
            }
        }
        Command::Export { what, output } => {
            let dim = what.dimension();
            if let Some(staging) = app.store.audience().interrupted_import(dim)? {
                eprintln!(
                    "note: the import of {} did not take effect (it was interrupted, or is still \
                     running): this is the audience as it was before it",
                    staging.file
                );
            }
            let n = match &output {
                Some(path) => {
                    let f = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    crate::import::export(&app.store, dim, &mut std::io::BufWriter::new(f))?
                }
                None => crate::import::export(
                    &app.store,
                    dim,
                    &mut std::io::BufWriter::new(std::io::stdout().lock()),
                )?,
            };
            if let Some(path) = &output {
                println!("exported {n} {dim}s to {}", path.display());
            }
        }
        Command::Validate { file } => match app.validate(&file)? {
            Ok(wf) => println!(
                "{}: ok ({} activities)",
                file.display(),
                wf.activities.len()
            ),
            Err(lines) => {
                for l in lines {
                    eprintln!("{l}");
                }
                return Ok(ExitCode::from(2));
            }
        },
        Command::Run {
            file,
            json,
            dry_run,
            messages,
        } => {
            let wf = match app.validate(&file)? {
                Ok(wf) => wf,
                Err(lines) => {
                    for l in lines {
                        eprintln!("{l}");
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let exec = app.executor()?;
            crate::interrupt::doing(crate::interrupt::Doing::Run(None));
            let kind = match dry_run {
                true => crate::executor::RunKind::Dry {
                    messages: messages.unwrap_or(1),
                },
                false => crate::executor::RunKind::Real,
            };
            let run = exec.create(&wf, &file.display().to_string(), kind)?;
            crate::interrupt::doing(crate::interrupt::Doing::Run(Some(run)));
            exec.drive(run)?;
            crate::interrupt::doing(crate::interrupt::Doing::Other);
            if print_status(&app.store, run, json)? == "failed" {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Status { run, json } => {
            print_status(&app.store, run, json)?;
        }
        Command::Members {
            run,
            activity,
            transition,
        } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for key in members(&app.store, run, &activity, &transition)? {
                use std::io::Write as _;
                writeln!(out, "{key}")?;
            }
        }
        Command::Deliveries { run, json, filter } => log::print(&app.store, run, &filter, json)?,
        Command::Denylist(cmd) => lists::denylist(&app.store, app.clock.now_ms(), cmd)?,
        Command::Unsubscribe(cmd) => lists::unsubscribe(&app.store, cmd)?,
        Command::Doctor { json } => {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let checks = crate::doctor::run(&app.store, &tokio);
            let ok = checks.iter().all(|c| c.ok);
            if json {
                println!("{}", serde_json::json!({ "ok": ok, "checks": checks }));
            } else {
                print!("{}", crate::doctor::render(&checks));
            }
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Worker { once, poll_ms } => {
            if !once && let Some(endpoint) = app.store.unsubscribe_endpoint()? {
                let store = app.store.clone();
                let listen = endpoint.listen;
                std::thread::Builder::new()
                    .name("unsubscribe".into())
                    .spawn(move || {
                        if let Err(e) = crate::unsubscribe::serve(store, endpoint) {
                            eprintln!("error: the unsubscribe endpoint stopped: {e:#}");
                            std::process::exit(1);
                        }
                    })?;
                println!("worker: one-click unsubscribe endpoint on http://{listen}");
            }
            let exec = app.executor()?;
            crate::interrupt::doing(crate::interrupt::Doing::Worker);
            loop {
                let tick = exec.tick()?;
                if tick.timers + tick.tasks > 0 || once {
                    let failed = match tick.failed {
                        0 => String::new(),
                        n => format!(", {n} failed"),
                    };
                    println!(
                        "worker: {} timer(s) due, {} task(s) executed{failed}",
                        tick.timers, tick.tasks
                    );
                }
                if once {
                    if tick.failed > 0 {
                        return Ok(ExitCode::FAILURE);
                    }
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(poll_ms));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The external ids of the records that left `activity` on `transition`, in
/// id order (over every execution of the activity).
pub fn members(
    store: &Store,
    run: u64,
    activity: &str,
    transition: &str,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut found = false;
    for t in store.tasks(run)? {
        if t.activity != activity {
            continue;
        }
        let TaskState::Done { outputs } = &t.state else {
            continue;
        };
        let Some(out) = outputs.get(transition) else {
            continue;
        };
        found = true;
        let meta = store.population_meta(out.population)?;
        for b in 0..meta.blocks {
            let ids = store.population_block(out.population, b)?;
            let cols = store
                .audience()
                .fetch(&meta.dimension, &ids, &["id".to_string()])?;
            keys.extend(
                cols.into_iter()
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .flatten(),
            );
        }
    }
    if !found {
        bail!("run {run} has no population on {activity}.{transition} (not reached, or skipped)");
    }
    Ok(keys)
}

/// The status of one activity of a run, summed over its tasks.
#[derive(Debug, serde::Serialize)]
pub struct ActivityStatus {
    /// Plugin name.
    #[serde(rename = "type")]
    pub kind: String,
    /// not_reached, pending, waiting, done or failed.
    pub state: String,
    /// sha256 of the component that executed it.
    pub component_sha256: Option<String>,
    /// Transition → ids that left on it.
    pub transitions: std::collections::BTreeMap<String, u64>,
    /// What the delivery log says (deliveries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<DeliverySummary>,
    /// When a waiting activity resumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_until: Option<String>,
    /// Calls across the wasm boundary (activities; summed over executions).
    pub calls: u64,
    /// Wall time of its executions, summed, in milliseconds.
    pub elapsed_ms: u64,
    /// Dry runs: what each delivery would send, with a sample message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub previews: Vec<serde_json::Value>,
    /// Transitions not taken (a split's skip-empty subsets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Failure messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A delivery activity's log, counted by state.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliverySummary {
    /// Accepted by the provider.
    pub sent: u64,
    /// Failed, hard or soft.
    pub failed: u64,
    /// Not sent on purpose.
    pub excluded: u64,
    /// Intent recorded, outcome not yet (in flight, or interrupted).
    pub in_flight: u64,
    /// Failed for now, to be sent again.
    pub retrying: u64,
}

/// A run's status, activity by activity, in workflow order.
pub fn run_status(
    store: &Store,
    run: u64,
) -> anyhow::Result<(String, Vec<(String, ActivityStatus)>)> {
    let r = store.run(run)?;
    let wf: Workflow = serde_json::from_value(r.workflow)?;
    let tasks = store.tasks(run)?;
    // Delivery counts come from the log itself, the one record of what was
    // sent, whatever number of executions it took.
    let mut summaries: std::collections::HashMap<String, DeliverySummary> = Default::default();
    for (activity, states) in store.run_delivery_states(run)? {
        let s = summaries.entry(activity).or_default();
        for state in states.values() {
            match state {
                StateKind::Sent => s.sent += 1,
                StateKind::Failed => s.failed += 1,
                StateKind::Excluded => s.excluded += 1,
                StateKind::Intent => s.in_flight += 1,
                StateKind::Retrying => s.retrying += 1,
            }
        }
    }
    let mut out = Vec::new();
    let mut run_state = "done";
    for a in &wf.activities {
        let mine: Vec<_> = tasks.iter().filter(|t| t.activity == a.id).collect();
        let mut st = ActivityStatus {
            kind: a.kind.clone(),
            state: "not_reached".into(),
            component_sha256: None,
            transitions: a.outputs.iter().map(|o| (o.clone(), 0)).collect(),
            deliveries: if a.delivery {
                Some(summaries.remove(&a.id).unwrap_or_default())
            } else {
                None
            },
            waiting_until: None,
            calls: 0,
            elapsed_ms: 0,
            previews: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
        };
        let mut taken = std::collections::BTreeSet::new();
        let (mut pending, mut waiting, mut failed, mut done) = (0, 0, 0, 0);
        for t in &mine {
            if t.component.is_some() {
                st.component_sha256 = t.component.clone();
            }
            st.calls += t.calls;
            st.elapsed_ms += t.elapsed_ms;
            st.previews.extend(t.preview.clone());
            match &t.state {
                TaskState::Pending => pending += 1,
                TaskState::Waiting { until } => {
                    waiting += 1;
                    st.waiting_until = Some(format_ms(*until));
                }
                TaskState::Failed { error } => {
                    failed += 1;
                    st.errors.push(error.clone());
                }
                TaskState::Done { outputs } => {
                    done += 1;
                    for (k, o) in outputs {
                        *st.transitions.entry(k.clone()).or_default() += o.count;
                        taken.insert(k.clone());
                    }
                }
            }
        }
        if done > 0 {
            st.skipped = a
                .outputs
                .iter()
                .filter(|o| !taken.contains(*o))
                .cloned()
                .collect();
        }
        st.state = if failed > 0 {
            run_state = "failed";
            "failed"
        } else if pending > 0 {
            if run_state == "done" || run_state == "waiting" {
                run_state = "running";
            }
            "pending"
        } else if waiting > 0 {
            if run_state == "done" {
                run_state = "waiting";
            }
            "waiting"
        } else if done > 0 {
            "done"
        } else {
            "not_reached"
        }
        .into();
        out.push((a.id.clone(), st));
    }
    Ok((run_state.to_string(), out))
}

/// Prints a run's status; returns its state (`done`, `waiting`, `failed`).
fn print_status(store: &Store, run: u64, json: bool) -> anyhow::Result<String> {
    let r = store.run(run)?;
    let (state, activities) = run_status(store, run)?;
    let run_state = state.clone();
    if json {
        let acts: serde_json::Map<String, serde_json::Value> = activities
            .iter()
            .map(|(id, s)| (id.clone(), serde_json::to_value(s).unwrap_or_default()))
            .collect();
        let v = serde_json::json!({
            "run": run,
            "dry_run": r.dry_run,
            "workflow": r.workflow_name,
            "file": r.workflow_file,
            "started_at": format_ms(r.created_at),
            "state": state,
            "activities": acts,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(state);
    }
    println!(
        "{} {run}: {} ({}), started {}, {state}",
        if r.dry_run { "dry run" } else { "run" },
        r.workflow_name,
        r.workflow_file,
        format_ms(r.created_at)
    );
    println!(
        "{:<16} {:<8} {:<12} {:<36} COMPONENT",
        "ACTIVITY", "TYPE", "STATE", "TRANSITIONS"
    );
    for (id, s) in activities {
        let mut transitions: Vec<String> = s
            .transitions
            .iter()
            .map(|(k, v)| {
                if s.skipped.contains(k) {
                    format!("{k}=skipped")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        if let Some(d) = s.deliveries.as_ref().filter(|_| !r.dry_run) {
            transitions.push(format!(
                "(sent {} failed {} excluded {})",
                d.sent, d.failed, d.excluded
            ));
        }
        let state = match &s.waiting_until {
            Some(t) if s.state == "waiting" => format!("waiting until {t}"),
            _ => s.state.clone(),
        };
        println!(
            "{:<16} {:<8} {:<12} {:<36} {}",
            id,
            s.kind,
            state,
            transitions.join(" "),
            s.component_sha256
                .as_deref()
                .map(|h| &h[..12])
                .unwrap_or("-")
        );
        for e in &s.errors {
            println!("  error: {e}");
        }
        for p in &s.previews {
            print_preview(p);
        }
    }
    Ok(run_state)
}

/// A dry run's delivery preview, for people.
fn print_preview(p: &serde_json::Value) {
    println!(
        "  would send {} of {} {}(s), exclude {}",
        p["would_send"],
        p["targets"],
        p["target"].as_str().unwrap_or("record"),
        p["excluded"]
    );
    if let Some(reasons) = p["reasons"].as_object() {
        for (reason, n) in reasons {
            println!("    excluded {n}: {reason}");
        }
    }
    let m = &p["sample"];
    if !m.is_null() {
        print_sample(m);
    }
    // `--messages N`: what becomes of each of the first targets.
    let listed = p["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if listed.len() > 1 {
        println!("  first {} targets:", listed.len());
        for l in listed {
            let target = l["target"].as_str().unwrap_or("?");
            let m = &l["send"];
            if m.is_null() {
                for verdict in ["excluded", "refused", "suppressed"] {
                    if let Some(reason) = l[verdict].as_str() {
                        println!("    {target}: {verdict}: {reason}");
                    }
                }
            } else if let Some(subject) = m["subject"].as_str() {
                println!(
                    "    {target}: email to {}: {subject}",
                    m["to"].as_str().unwrap_or("?")
                );
            } else {
                println!(
                    "    {target}: {} {} for {}: {}",
                    m["method"].as_str().unwrap_or(""),
                    m["path"].as_str().unwrap_or(""),
                    m["recipient"].as_str().unwrap_or("?"),
                    m["body"].as_str().unwrap_or("")
                );
            }
        }
    }
}

/// The first message a dry run's delivery would send, for people.
fn print_sample(m: &serde_json::Value) {
    if let Some(subject) = m["subject"].as_str() {
        println!("  sample email to {}", m["to"].as_str().unwrap_or("?"));
        println!("    From: {}", m["from"].as_str().unwrap_or(""));
        println!("    Subject: {subject}");
        for line in m["text"].as_str().unwrap_or("").lines() {
            println!("    | {line}");
        }
    } else {
        println!(
            "  sample request to {}: {} {}",
            m["recipient"].as_str().unwrap_or("?"),
            m["method"].as_str().unwrap_or(""),
            m["path"].as_str().unwrap_or("")
        );
        if let Some(headers) = m["headers"].as_array() {
            for h in headers {
                println!(
                    "    {}: {}",
                    h[0].as_str().unwrap_or(""),
                    h[1].as_str().unwrap_or("")
                );
            }
        }
        println!("    | {}", m["body"].as_str().unwrap_or(""));
    }
}
