//! What each command does: one function for every command, whether this
//! process carries it out or `crosscast serve` does for a client (the
//! [`Io`] says which, and where the output goes).

use std::io::Write as _;

use anyhow::{Context as _, bail};

use super::app::{App, builtin_dir};
use super::io::{Io, Place, note, out};
use super::status::{members, print_status};
use super::{
    AccountCommand, CaCommand, ClockCommand, Command, PluginCommand, SecretCommand, TokenCommand,
};
use crate::clock::{Clock, format_ms};
use crate::store::settings::Account;

/// Carries out a command on an open data directory; returns the exit code
/// (errors are the caller's to say: see [`super::exit_code`]).
pub fn execute(app: &App, command: Command, io: &mut Io) -> anyhow::Result<u8> {
    match command {
        Command::Init { plugins } => {
            let dir = builtin_dir(plugins)?;
            for p in app.init(&dir)? {
                out!(
                    io,
                    "installed {} {} ({:?}) sha256 {}",
                    p.name,
                    p.version,
                    p.kind,
                    p.sha256
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
            out!(
                io,
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
            out!(io, "  built against {}", installed.contract);
            if let Some(old) = &installed.replaced {
                out!(
                    io,
                    "  replaced {} {}: old sha256 {old}, new sha256 {}",
                    p.name,
                    p.version,
                    p.sha256
                );
            }
        }
        Command::Plugin(PluginCommand::New { .. }) => {
            unreachable!("`plugin new` returns before the data directory opens")
        }
        Command::Plugin(PluginCommand::List { json }) => {
            let plugins = app.store.plugins()?;
            if json {
                out!(io, "{}", serde_json::to_string_pretty(&plugins)?);
            } else {
                out!(
                    io,
                    "{:<12} {:<8} {:<9} {:<64} ACCOUNTS",
                    "NAME",
                    "VERSION",
                    "KIND",
                    "SHA256"
                );
                for p in plugins {
                    out!(
                        io,
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
                            "account `{a}` has parameter `{have}`, and `{}` reads `{meant}`: did you mean `{meant}`? (`crosscast account set {a} ... --param {meant}=VALUE`)",
                            p.name
                        );
                    }
                }
                if !p.accounts.contains(&a) {
                    p.accounts.push(a);
                }
            }
            app.store.update_plugin(&p)?;
            out!(io, "{} may use: {}", p.name, p.accounts.join(", "));
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
            out!(io, "account {name} saved");
            if let Some(secret) = &account.secret
                && !app.store.secret_names()?.contains(secret)
            {
                note!(
                    io,
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
                note!(
                    io,
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
            out!(io, "trusting CA {name} for outbound TLS");
        }
        Command::Ca(CaCommand::List) => {
            for (name, _) in app.store.cas()? {
                out!(io, "{name}");
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
                out!(
                    io,
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
                std::io::Read::read_to_end(&mut io.stdin, &mut b)
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
            out!(io, "secret {name} saved ({} bytes, sealed)", bytes.len());
        }
        Command::Secret(SecretCommand::Remove { name }) => {
            if !app.store.remove_secret(&name)? {
                bail!("no secret `{name}` (see `crosscast secret list`)");
            }
            out!(io, "secret {name} removed");
        }
        Command::Secret(SecretCommand::List) => {
            for n in app.store.secret_names()? {
                out!(io, "{n}");
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
                progress: io.local(),
                cancelled: Some(io.cancelled.clone()),
            };
            let r = crate::import::import_file(&app.store, dim, &file, &options)?;
            if let Some(earlier) = &r.interrupted {
                note!(io, "note: {earlier}");
            }
            let secs = started.elapsed().as_secs_f64();
            let stored = r.inserted + r.updated;
            out!(
                io,
                "imported {stored} {dim}s from {} ({} new, {} updated) in {secs:.2} s ({:.0} rows/s)",
                file.display(),
                r.inserted,
                r.updated,
                (stored + r.rejected) as f64 / secs.max(1e-9),
            );
            if let Some(rejects) = &skip_invalid {
                out!(
                    io,
                    "rejected {} rows, written to {}",
                    r.rejected,
                    rejects.display()
                );
            }
            if crate::interrupt::requested() {
                note!(
                    io,
                    "interrupted: the import had taken effect already; everything was stored"
                );
                return Ok(crate::interrupt::EXIT);
            }
        }
        Command::Export { what, output } => {
            let dim = what.dimension();
            if let Some(staging) = app.store.audience().interrupted_import(dim)? {
                note!(
                    io,
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
                    &mut std::io::BufWriter::new(&mut io.out),
                )?,
            };
            if let Some(path) = &output {
                out!(io, "exported {n} {dim}s to {}", path.display());
            }
        }
        Command::Validate { file } => {
            let Some(wf) = validated(io, app.validate(&file)?)? else {
                return Ok(2);
            };
            out!(
                io,
                "{}: ok ({} activities)",
                file.display(),
                wf.activities.len()
            );
        }
        Command::Run {
            action: Some(action),
            ..
        } => return steer(app, io, action),
        Command::Run {
            action: None,
            file,
            json,
            dry_run,
            messages,
        } => {
            let file = file.context("a workflow file to run")?;
            let Some(wf) = validated(io, app.validate(&file)?)? else {
                return Ok(2);
            };
            let exec = app.executor()?;
            io.doing(crate::interrupt::Doing::Run(None));
            let kind = match dry_run {
                true => crate::executor::RunKind::Dry {
                    messages: messages.unwrap_or(1),
                },
                false => crate::executor::RunKind::Real,
            };
            let run = exec.create(&wf, &file.display().to_string(), kind)?;
            io.doing(crate::interrupt::Doing::Run(Some(run)));
            exec.drive(run)?;
            io.doing(crate::interrupt::Doing::Other);
            return finish_run(io, app, run, json);
        }
        Command::Runs {
            state,
            workflow,
            dry,
            json,
        } => {
            let filter = super::RunFilter {
                state: state.map(|s| s.name().to_string()),
                workflow,
                dry,
            };
            let runs = super::list_runs(&app.store, &filter)?;
            if json {
                out!(io, "{}", serde_json::to_string_pretty(&runs)?);
            } else {
                super::status::print_runs(io, &runs)?;
            }
        }
        Command::Graph { target, format } => {
            let name = target.to_string_lossy();
            let graph = match crate::store::runs::parse_run(&name) {
                // A run, unless a file of that name is meant.
                Ok(run) if !target.exists() => crate::graph::Graph::of_stored_run(&app.store, run)?,
                _ => {
                    let Some(wf) = validated(io, app.validate(&target)?)? else {
                        return Ok(2);
                    };
                    crate::graph::Graph::of_workflow(&wf)
                }
            };
            match format {
                super::GraphFormat::Text => write!(io.out, "{}", graph.text(100))?,
                super::GraphFormat::Dot => write!(io.out, "{}", graph.dot())?,
                super::GraphFormat::Svg => writeln!(io.out, "{}", graph.svg()?)?,
            }
        }
        Command::Status { run, json } => {
            print_status(io, &app.store, run, json)?;
        }
        Command::Members {
            run,
            activity,
            transition,
        } => {
            for key in members(&app.store, run, &activity, &transition)? {
                out!(io, "{key}");
            }
        }
        Command::Deliveries { run, json, filter } => {
            super::log::print(io, &app.store, run, &filter, json)?
        }
        Command::Schedule(cmd) => return super::schedules::execute(app, io, cmd),
        Command::Denylist(cmd) => super::lists::denylist(io, &app.store, app.clock.now_ms(), cmd)?,
        Command::Unsubscribe(cmd) => super::lists::unsubscribe(io, &app.store, cmd)?,
        Command::Doctor { json } => {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let checks = crate::doctor::run(&app.store, &tokio);
            let ok = checks.iter().all(|c| c.ok);
            if json {
                out!(io, "{}", serde_json::json!({ "ok": ok, "checks": checks }));
            } else {
                write!(io.out, "{}", crate::doctor::render(&checks))?;
            }
            if !ok {
                return Ok(1);
            }
        }
        Command::Serve(_) => bail!("a server is running on this data directory already"),
        Command::Signal {
            run,
            name,
            ids,
            dimension,
            json,
        } => {
            let keys = match &ids {
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    Some(crate::signals::read_ids(&text))
                }
                None => None,
            };
            let exec = app.executor()?;
            let sent =
                crate::signals::send(&exec, &app.store, run, &name, &dimension, keys.as_deref())?;
            let named = match sent.ids {
                Some(n) => format!(", naming {n} {dimension}(s)"),
                None => String::new(),
            };
            let woken = match sent.woken {
                0 => "no activity waits for it yet: it is kept for the run".to_string(),
                n => format!("{n} waiting execution(s) go on"),
            };
            note!(
                io,
                "signal {name} (#{}) sent to run {}{named}; {woken}",
                sent.seq,
                sent.run
            );
            io.doing(crate::interrupt::Doing::Run(Some(run)));
            exec.drive(run)?;
            io.doing(crate::interrupt::Doing::Other);
            return finish_run(io, app, run, json);
        }
        Command::Clock(ClockCommand::Show) => {
            let kind = match &app.clock {
                Clock::System => "the system clock",
                Clock::Fixed(_) => "a fixed virtual clock (--now)",
                Clock::Virtual(_) => "the server's virtual clock",
            };
            out!(io, "{} ({kind})", format_ms(app.clock.now_ms()));
        }
        Command::Clock(ClockCommand::Advance { by }) => {
            let step = humantime::parse_duration(&by)
                .with_context(|| format!("`{by}` is not a duration (e.g. 7d, 36h, 1h 30m)"))?;
            let ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
            let due = crate::schedules::due();
            let now = app.clock.advance(ms).map_err(|e| match io.place {
                Place::Local => anyhow::anyhow!("no server holds this data directory: {e}"),
                Place::Served => anyhow::Error::new(e),
            })?;
            let fired = app.executor()?.fire_due()?;
            let started = crate::schedules::start_due(app, &due)?;
            drop(due);
            out!(
                io,
                "clock: {} (moved {}); {fired} timer(s) fired, {} scheduled run(s) started",
                format_ms(now),
                humantime::format_duration(step),
                started.len()
            );
        }
        Command::Token(TokenCommand::Create { name }) => {
            // Made in real time, whatever clock the runs are on.
            let token = app.store.create_token(&name, Clock::System.now_ms())?;
            out!(io, "{token}");
            note!(
                io,
                "token `{name}` made: it is shown this once (only its hash is kept); send it as \
                 `Authorization: Bearer TOKEN`"
            );
        }
        Command::Token(TokenCommand::List { json }) => {
            for t in app.store.tokens()? {
                if json {
                    let v = serde_json::json!({
                        "name": t.name,
                        "created_at": format_ms(t.created_at),
                    });
                    out!(io, "{v}");
                } else {
                    out!(io, "{:<24} made {}", t.name, format_ms(t.created_at));
                }
            }
        }
        Command::Token(TokenCommand::Revoke { name }) => {
            if !app.store.revoke_token(&name)? {
                bail!("no token `{name}` (see `crosscast token list`)");
            }
            out!(io, "token `{name}` revoked");
        }
        Command::Worker { .. } if !io.local() => {
            note!(
                io,
                "crosscast serve holds this data directory and does the worker's job (timers, \
                 retries, unsubscribes): no worker is needed"
            );
            return Ok(3);
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
                out!(
                    io,
                    "worker: one-click unsubscribe endpoint on http://{listen}"
                );
            }
            let exec = app.executor()?;
            io.doing(crate::interrupt::Doing::Worker);
            loop {
                let tick = exec.tick()?;
                if tick.timers + tick.tasks > 0 || once {
                    let failed = match tick.failed {
                        0 => String::new(),
                        n => format!(", {n} failed"),
                    };
                    out!(
                        io,
                        "worker: {} timer(s) due, {} task(s) executed{failed}",
                        tick.timers,
                        tick.tasks
                    );
                }
                if once {
                    if tick.failed > 0 {
                        return Ok(1);
                    }
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(poll_ms));
            }
        }
    }
    Ok(0)
}

/// Writes a validation's warnings, or its diagnostics; the workflow if it
/// is valid.
pub(super) fn validated(
    io: &mut Io,
    v: super::app::Validated,
) -> anyhow::Result<Option<crate::workflow::Workflow>> {
    match v {
        Ok((wf, warnings)) => {
            for w in warnings {
                note!(io, "{w}");
            }
            Ok(Some(wf))
        }
        Err(lines) => {
            for l in lines {
                note!(io, "{l}");
            }
            Ok(None)
        }
    }
}

/// Steers a run already started: cancel, pause, resume, retry.
fn steer(app: &App, io: &mut Io, action: super::RunAction) -> anyhow::Result<u8> {
    use super::RunAction;
    use crate::store::runs::run_label;
    let exec = app.executor()?;
    match action {
        RunAction::Cancel { run, json } => {
            let cancelled = exec.cancel(run)?;
            note!(
                io,
                "run {} cancelled: {cancelled} message(s) not sent are marked cancelled",
                run_label(run)
            );
            print_status(io, &app.store, run, json)?;
            Ok(0)
        }
        RunAction::Pause { run, json } => {
            exec.pause(run)?;
            note!(
                io,
                "run {} paused: its deliveries keep their place and its waits their timers; \
                 `crosscast run resume {}` carries it on",
                run_label(run),
                run_label(run)
            );
            print_status(io, &app.store, run, json)?;
            Ok(0)
        }
        RunAction::Resume { run, json } => {
            let fired = exec.resume(run)?;
            note!(
                io,
                "run {} resumed ({fired} wait(s) came due meanwhile)",
                run_label(run)
            );
            io.doing(crate::interrupt::Doing::Run(Some(run)));
            exec.drive(run)?;
            io.doing(crate::interrupt::Doing::Other);
            finish_run(io, app, run, json)
        }
        RunAction::Retry {
            run,
            activity,
            json,
        } => {
            let retried = exec.retry(run, activity.as_deref())?;
            note!(
                io,
                "run {}: retrying {}",
                run_label(run),
                retried.join(", ")
            );
            io.doing(crate::interrupt::Doing::Run(Some(run)));
            exec.drive(run)?;
            io.doing(crate::interrupt::Doing::Other);
            finish_run(io, app, run, json)
        }
    }
}

/// After driving a run: its status, exit 1 if it failed.
fn finish_run(io: &mut Io, app: &App, run: u64, json: bool) -> anyhow::Result<u8> {
    if app.executor()?.stopping() {
        note!(
            io,
            "the server is stopping: run {} stopped where it was, and resumes when it \
             starts again",
            crate::store::runs::run_label(run)
        );
    }
    Ok(match print_status(io, &app.store, run, json)?.as_str() {
        "failed" => 1,
        _ => 0,
    })
}
