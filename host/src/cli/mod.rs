//! The `crosscast` command line. A command is carried out by this process,
//! or, while `crosscast serve` holds the data directory, by the server
//! (`remote.rs`): the same function either way (`execute.rs`).

mod app;
mod detail;
mod execute;
mod io;
mod lists;
pub mod log;
mod remote;
pub mod scaffold;
pub mod schedules;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::store::settings::AuthScheme;
use crate::store::{OpenOptions, StoreError};

pub use app::{App, BUILTINS, Validated, builtin_dir};
pub use detail::{ActivityDetail, ReasonCount, activity_detail};
pub use execute::execute;
pub use io::{Cancelled, Io, Place};
pub use status::{
    ActivityStatus, DeliverySummary, RunFilter, RunStatus, RunSummary, list_runs, members,
    run_status, status_json, status_of, waiting_words,
};

/// Crosscast: durable cross-channel marketing workflows on WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(
    name = "crosscast",
    version,
    about,
    after_help = "Exit codes: 0 done or waiting; 1 failed (a run, dry or real, that failed, \
                  `worker --once` having executed a task that failed, or any other error); 2 \
                  usage error or invalid workflow; 3 the data directory is in use by another \
                  process (or, for `worker`, `crosscast serve` runs it); 130 interrupted \
                  (Ctrl-C), with what it left said on stderr. While `crosscast serve` holds \
                  the data directory, commands are carried out by it."
)]
pub struct Cli {
    /// Data directory holding all state (`crosscast init` creates one).
    #[arg(long, global = true, env = "CROSSCAST_DATA")]
    pub data: Option<PathBuf>,
    /// The key sealing secrets, kept outside the data directory (default
    /// `$XDG_CONFIG_HOME/crosscast/key`, made on first use).
    #[arg(long, global = true, env = "CROSSCAST_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Run on a virtual clock fixed at this RFC 3339 instant (never sleeps);
    /// `serve --now` starts a virtual clock there that `clock advance` moves.
    #[arg(long, global = true, env = "CROSSCAST_NOW")]
    pub now: Option<String>,
    /// Log lines on stderr as text or as JSON objects (one per line).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CROSSCAST_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
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
#[derive(Subcommand, Debug, Serialize, Deserialize)]
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
    /// Start a run of a workflow (it runs until it ends or waits), or
    /// steer one: `run cancel|pause|resume|retry RUN`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Run {
        /// What to do with a run already started.
        #[command(subcommand)]
        action: Option<RunAction>,
        /// The workflow file (TOML).
        #[arg(required = true)]
        file: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Evaluate the whole graph, crossing waits on the run's clock,
        /// without sending: counts on every transition and one rendered
        /// message per delivery. Dry runs are numbered apart (`dry-1`).
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: list the first N targets of each delivery, each
        /// with its message, or why it would be excluded or refused.
        #[arg(long, value_name = "N", requires = "dry_run", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        messages: Option<u32>,
    },
    /// List runs: id, workflow, state, when it started, its messages.
    Runs {
        /// Only runs in this state.
        #[arg(long, value_enum)]
        state: Option<RunState>,
        /// Only runs of this workflow (its name).
        #[arg(long)]
        workflow: Option<String>,
        /// Dry runs (numbered apart: dry-1, dry-2...) instead of real runs.
        #[arg(long)]
        dry: bool,
        /// As JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Show a run: each activity, its state, counts and component.
    Status {
        /// The run: its number, or dry-N for a dry run.
        #[arg(value_parser = crate::store::runs::parse_run)]
        run: u64,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw a workflow (FILE) or a run (RUN) as a graph, left to right:
    /// for a run, each transition's count and each activity's state.
    Graph {
        /// A workflow file, or a run (7, dry-3).
        target: PathBuf,
        /// `text` for a terminal (100 columns), `dot` for Graphviz, `svg`
        /// for a picture (laid out by the binary itself).
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
    },
    /// Send a signal to a run: its `signal` activities waiting for NAME go
    /// on (one reached later finds it: a run keeps its signals).
    Signal {
        /// The run: its number, or dry-N for a dry run.
        #[arg(value_parser = crate::store::runs::parse_run)]
        run: u64,
        /// The signal's name (ASCII letters, digits, `-`, `_`, `.`).
        name: String,
        /// Only these records go on: a file of their ids, one per line (a
        /// first line `id`, blank lines and `#` comments are skipped). Every
        /// id must be of a record, or nothing is sent.
        #[arg(long)]
        ids: Option<PathBuf>,
        /// The dimension the ids are of; a population of another dimension
        /// keeps the records linked to them (a recipient's subscriptions).
        #[arg(long, default_value = "recipient")]
        dimension: String,
        /// Print the run's status after as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the records that left an activity on a transition (external ids).
    Members {
        /// The run: its number, or dry-N for a dry run.
        #[arg(value_parser = crate::store::runs::parse_run)]
        run: u64,
        /// The activity id.
        activity: String,
        /// The transition.
        transition: String,
    },
    /// List a run's delivery log (filters combine).
    Deliveries {
        /// The run: its number, or dry-N for a dry run.
        #[arg(value_parser = crate::store::runs::parse_run)]
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
    /// Hold the data directory as a service: the worker (timers, pending
    /// tasks, retries; runs in parallel), the one-click unsubscribe
    /// endpoint and the HTTP API. Other commands are then carried out by
    /// it. SIGTERM or Ctrl-C stops it gracefully.
    Serve(crate::serve::ServeArgs),
    /// The server's virtual clock (`serve --now`).
    #[command(subcommand)]
    Clock(ClockCommand),
    /// API tokens: bearer tokens for the HTTP API of `crosscast serve`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Schedules: workflows whose runs `crosscast serve` starts when due.
    #[command(subcommand)]
    Schedule(schedules::ScheduleCommand),
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
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
            Command::Runs { .. } => "runs",
            Command::Graph { .. } => "graph",
            Command::Status { .. } => "status",
            Command::Members { .. } => "members",
            Command::Signal { .. } => "signal",
            Command::Deliveries { .. } => "deliveries",
            Command::Denylist(_) => "denylist",
            Command::Unsubscribe(_) => "unsubscribe",
            Command::Worker { .. } => "worker",
            Command::Doctor { .. } => "doctor",
            Command::Serve(_) => "serve",
            Command::Clock(_) => "clock",
            Command::Token(_) => "token",
            Command::Schedule(_) => "schedule",
        }
    }
}

/// How log lines are written.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// How `graph` draws.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphFormat {
    /// For a terminal.
    Text,
    /// Graphviz's language.
    Dot,
    /// A picture.
    Svg,
}

/// A run's state, as `runs --state` names it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    /// Has work to do now.
    Running,
    /// Waits for a timer.
    Waiting,
    /// Paused by the operator.
    Paused,
    /// Finished.
    Done,
    /// An activity failed and nothing handles it.
    Failed,
    /// Cancelled by the operator.
    Cancelled,
}

impl RunState {
    /// Its name, as statuses give it.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Waiting => "waiting",
            RunState::Paused => "paused",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// What to do with a run already started.
#[derive(Subcommand, Debug, Serialize, Deserialize)]
pub enum RunAction {
    /// Nothing more is sent or started: what is on the wire is recorded,
    /// messages not sent are marked cancelled, timers are removed.
    Cancel {
        /// The run.
        #[arg(value_parser = crate::store::runs::parse_run)]
        run: u64,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deliveries stop at their next round and keep their place; waits keep
    /// their timers.
    Pause {
        /// The run.
        #[arg(value_parser = crate::store::runs::parse_run)]
        run: u64,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Carry a paused run on; waits that came due meanwhile fire now.
    Resume {
        /// The run.
        #[arg(value_parser = crate::store::runs::parse_run)]
        run: u64,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Execute failed activities again from their stored inputs, once
    /// their cause is fixed: messages that never reached the provider are
    /// sent again, nothing sent is.
    Retry {
        /// The run.
        #[arg(value_parser = crate::store::runs::parse_run)]
        run: u64,
        /// Only this activity.
        #[arg(long)]
        activity: Option<String>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Clock commands.
#[derive(Subcommand, Debug, Serialize, Deserialize)]
pub enum ClockCommand {
    /// Move the server's virtual clock forward (`7d`, `36h`, `90min`);
    /// due timers fire at once.
    Advance {
        /// How far (humantime: `7d`, `1h 30m`).
        by: String,
    },
    /// Show the clock the server runs on.
    Show,
}

/// API token commands.
#[derive(Subcommand, Debug, Serialize, Deserialize)]
pub enum TokenCommand {
    /// Make a token: printed once, only its hash is kept.
    Create {
        /// A name saying who uses it.
        name: String,
    },
    /// List tokens: names and when they were made and last used.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: requests with it get 401 from now on.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// Plugin commands.
#[derive(Subcommand, Debug, Serialize, Deserialize)]
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
#[derive(Subcommand, Debug, Serialize, Deserialize)]
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
#[derive(Subcommand, Debug, Serialize, Deserialize)]
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
#[derive(Subcommand, Debug, Serialize, Deserialize)]
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
/// by default warnings of Crosscast and errors of its dependencies (the
/// server also says what it does: info); colour only on a terminal and never
/// with `NO_COLOR`; text, or JSON lines.
fn logging(format: LogFormat, default: &str) {
    use std::io::IsTerminal as _;
    let filter = ["CROSSCAST_LOG", "RUST_LOG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .find_map(|d| tracing_subscriber::EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(colour).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

/// Runs the command line; the exit code says how it went (see `--help`).
pub fn main() -> ExitCode {
    let cli = match Cli::parse_from_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let serving = matches!(cli.command, Command::Serve(_));
    logging(
        cli.log_format,
        if serving {
            "error,crosscast=info"
        } else {
            "error,crosscast=warn"
        },
    );
    // One crypto provider for every TLS connection of the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = crate::interrupt::install() {
        eprintln!("warning: Ctrl-C is not handled: {e}");
    }
    let mut io = Io::process();
    let code = match run(cli, &mut io) {
        Ok(code) => code,
        Err(e) => exit_code(&e, &mut io),
    };
    let _ = std::io::Write::flush(&mut io.out);
    ExitCode::from(code)
}

/// Says what an error means for the person who typed the command, and
/// returns the exit code it ends with.
pub fn exit_code(e: &anyhow::Error, io: &mut Io) -> u8 {
    // The reader went away (`crosscast export recipients | head`): stop
    // quietly, like other Unix tools.
    let broken_pipe = e.chain().any(|c| {
        let kind = c
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return 141;
    }
    let interrupted = e.chain().any(|c| {
        matches!(
            c.downcast_ref(),
            Some(crate::import::ImportError::Interrupted)
        )
    });
    if interrupted {
        let _ = writeln!(
            io.err,
            "interrupted: the import stopped before it took effect; nothing was stored"
        );
        return crate::interrupt::EXIT;
    }
    let _ = writeln!(io.err, "error: {e:#}");
    let busy = e
        .chain()
        .any(|c| matches!(c.downcast_ref(), Some(StoreError::Locked { .. })));
    if busy { 3 } else { 1 }
}

use std::io::Write as _;

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

/// The options this process opens the data directory with.
fn open_options(cli: &Cli) -> anyhow::Result<OpenOptions> {
    Ok(OpenOptions {
        create: matches!(cli.command, Command::Init { .. }),
        key_file: cli
            .key_file
            .clone()
            .unwrap_or_else(crate::store::sealed::KeyFile::default_path),
        holder: format!("crosscast {}", cli.command.name()),
        cache_mb: crate::store::cache_mb_from_env().map_err(anyhow::Error::msg)?,
    })
}

/// Runs one command line: here, or by the server holding the data
/// directory.
fn run(cli: Cli, io: &mut Io) -> anyhow::Result<u8> {
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
        writeln!(
            io.out,
            "wrote {} ({kind:?} `{name}`): see {}",
            dir.display(),
            dir.join("README.md").display()
        )?;
        return Ok(0);
    }
    let data = cli.data.clone().unwrap_or_else(default_data_dir);
    let options = open_options(&cli)?;
    if let Command::Serve(args) = cli.command {
        return crate::serve::main(&data, &options, cli.now.as_deref(), args);
    }
    let clock = match &cli.now {
        Some(t) => Clock::fixed(t)?,
        None => Clock::System,
    };
    let app = match App::open_with(&data, clock, &options) {
        Ok(app) => app,
        Err(e) => {
            // Held by a server: it carries the command out.
            if let Some(StoreError::Locked { .. }) = e.downcast_ref()
                && let Some(server) = crate::serve::discovery::find(&data)
            {
                return remote::forward(&server, cli, io);
            }
            return Err(e);
        }
    };
    let store = app.store.clone();
    let _flushing = crate::interrupt::before_exit(move || {
        let _ = store.flush();
    });
    execute(&app, cli.command, io)
}

/// Runs one parsed command line in this process, its output on this
/// process's streams (the demo configures its data directory this way).
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = open_options(&cli)?;
    let data = cli.data.clone().unwrap_or_else(default_data_dir);
    let clock = match &cli.now {
        Some(t) => Clock::fixed(t)?,
        None => Clock::System,
    };
    let app = App::open_with(&data, clock, &options)?;
    let mut io = Io::process();
    Ok(ExitCode::from(execute(&app, cli.command, &mut io)?))
}

impl Command {
    /// The paths a command names, to be made absolute before a server,
    /// whose working directory is not the client's, carries it out.
    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut paths: Vec<&mut PathBuf> = Vec::new();
        match self {
            Command::Init { plugins } => paths.extend(plugins),
            Command::Plugin(PluginCommand::New { dir, sdk, .. }) => {
                paths.extend(dir);
                paths.extend(sdk);
            }
            Command::Plugin(PluginCommand::Install { path, .. }) => paths.push(path),
            // `-` is standard input, sent along with the command.
            Command::Secret(SecretCommand::Set { from_file, .. })
                if from_file.as_os_str() != "-" =>
            {
                paths.push(from_file)
            }
            Command::Ca(CaCommand::Add { file, .. }) => paths.push(file),
            Command::Import {
                file, skip_invalid, ..
            } => {
                paths.push(file);
                paths.extend(skip_invalid);
            }
            Command::Export { output, .. } => paths.extend(output),
            Command::Signal { ids, .. } => paths.extend(ids),
            Command::Validate { file }
            | Command::Run {
                file: Some(file), ..
            } => paths.push(file),
            // A file, not a run's name.
            Command::Graph { target, .. } if target.exists() => paths.push(target),
            Command::Denylist(lists::DenylistCommand::Import { file, .. })
            | Command::Schedule(schedules::ScheduleCommand::Add { file, .. }) => paths.push(file),
            _ => {}
        }
        paths
    }

    /// True if the command reads standard input.
    pub fn reads_stdin(&self) -> bool {
        matches!(self, Command::Secret(SecretCommand::Set { from_file, .. }) if from_file.as_os_str() == "-")
    }
}

/// Makes a command's relative paths absolute, from `cwd`.
pub fn absolutize(command: &mut Command, cwd: &Path) {
    for p in command.paths_mut() {
        if p.is_relative() {
            *p = cwd.join(&*p);
        }
    }
}
