//! Deliveries: the host side of a channel plugin.
//!
//! For each round of target ids the host asks the plugin to build messages,
//! excludes suppressed addresses, writes every intent to the delivery log
//! (flushed), sends over the wire with the operator's account and
//! credentials, asks the plugin to classify the answers as they come, and
//! writes the outcomes. At most [`WAVE`] messages are ever sent without a
//! recorded outcome. Ids whose outcome is already logged are skipped, so
//! executing a task again (after a crash) repeats at most those.

pub mod connections;
pub mod egress;
pub mod http;
pub mod inbox;
mod lanes;
pub mod smtp;
pub mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use inbox::Inbox;

use crate::caps::{Context, crash_reporter};
use crate::executor::Executor;
use crate::runtime::channel::{ChannelPre, wit};
use crate::store::audience::dimension;
use crate::store::deliveries::{Delivery, DeliveryState, Progress};
use crate::store::runs::{DeliveryCounts, InputRef, OutputRef, Task};
use crate::store::settings::Account;
use crate::store::suppression::{Suppression, SuppressionKind};
use crate::workflow::{Activity, DEFAULT_VALIDITY_MS};

/// Target ids per build/send/classify round.
const ROUND: usize = 1000;
/// Messages in flight at once.
const CONCURRENCY: usize = 32;
/// Most outcomes recorded (and flushed) at once.
const BATCH: usize = 2 * CONCURRENCY;
/// Longest wait for more answers before recording a batch of outcomes.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);
/// Most messages sent without a recorded outcome: what a crash may repeat.
/// A batch being recorded, the next one gathering and a full wire.
const WAVE: usize = 2 * BATCH;

/// The network side of deliveries: pooled connections, one per account.
pub struct Transports {
    runtime: tokio::runtime::Handle,
    wire: Arc<Wire>,
}

/// What sends: shared with the tasks that carry each message.
struct Wire {
    http: http::HttpTransport,
    smtp: smtp::SmtpTransports,
    throttles: throttle::Throttles,
}

impl Transports {
    /// Transports that run their I/O on `runtime`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        store: &crate::store::Store,
    ) -> anyhow::Result<Transports> {
        Ok(Transports {
            runtime,
            wire: Arc::new(Wire {
                http: http::HttpTransport::new(store)?,
                smtp: smtp::SmtpTransports::new(
                    store.cas()?.into_iter().map(|(_, pem)| pem).collect(),
                ),
                throttles: throttle::Throttles::default(),
            }),
        })
    }
}

impl Drop for Transports {
    fn drop(&mut self) {
        // lettre's pools spawn their shutdown on the runtime when dropped.
        let _guard = self.runtime.enter();
        self.wire.smtp.close();
    }
}

/// An account as one round's messages use it, resolved once: its limits
/// and how to reach it.
struct Route {
    account: Account,
    throttle: Arc<throttle::Throttle>,
    way: Way,
}

/// How a route reaches its provider.
enum Way {
    /// Through the account's SMTP relay pool.
    Smtp(smtp::Relay),
    /// To the account's base URL.
    Http(http::Target),
}

impl Wire {
    /// Resolves an account for email or HTTP messages (call within the
    /// runtime: a new SMTP pool spawns its housekeeping).
    fn route(&self, store: &crate::store::Store, name: &str, email: bool) -> Result<Route, String> {
        let account = store.account(name).map_err(|e| e.to_string())?;
        let way = if email {
            Way::Smtp(self.smtp.relay(store, &account)?)
        } else {
            Way::Http(http::HttpTransport::target(&account)?)
        };
        Ok(Route {
            throttle: self.throttles.of(&account),
            account,
            way,
        })
    }
}

/// First retry delay after a transient failure; it doubles per attempt.
const RETRY_BASE_MS: i64 = 60_000;
/// Longest delay between two attempts.
const RETRY_MAX_MS: i64 = 3_600_000;

/// How long to wait before attempt `attempts + 1`: exponential backoff from
/// [`RETRY_BASE_MS`], capped at [`RETRY_MAX_MS`], and never sooner than the
/// provider's `Retry-After`.
pub fn backoff_ms(attempts: u32, retry_after_s: Option<u32>) -> i64 {
    let exp = RETRY_BASE_MS.saturating_mul(1i64 << attempts.saturating_sub(1).min(20));
    exp.min(RETRY_MAX_MS)
        .max(retry_after_s.map_or(0, |s| s as i64 * 1000))
}

/// What a delivery execution achieved.
pub(crate) struct Delivered {
    /// Counts of this execution.
    pub counts: DeliveryCounts,
    /// The outputs (the population received, on `done`).
    pub outputs: BTreeMap<String, OutputRef>,
    /// When the earliest retry is due, if any message is still retrying:
    /// the task waits on a persisted timer until then.
    pub wake_at: Option<i64>,
}

/// Delivers one task's population: sends what has no final outcome yet,
/// schedules transient failures for a retry within the validity period.
pub(crate) fn deliver(
    exec: &Executor,
    run: u64,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
) -> Result<Delivered, String> {
    let limits = exec.runtime.limits();
    let plugin = ctx.plugin.clone();
    let accounts = ctx.accounts.clone();
    let now = ctx.now_ms;
    let mut st = exec.runtime.new_store(ctx);
    let stderr = st.data().stderr.clone();
    let crash = crash_reporter(plugin.clone(), limits, stderr);
    let channel = pre.instantiate(&mut st).map_err(&crash)?;
    let descriptor = channel.describe(&mut st).map_err(&crash)?;
    let config = activity.config.to_string();
    let store = &exec.store;
    let mut counts = DeliveryCounts::default();

    let (input, target_dim, targets) = task_targets(exec, task, descriptor.target)?;
    let deadline = task
        .started_at
        .unwrap_or(now)
        .saturating_add(activity.validity_ms.unwrap_or(DEFAULT_VALIDITY_MS));
    let mut wake_at: Option<i64> = None;
    let unsubscribe = exec
        .store
        .unsubscribe_settings()
        .map_err(|e| e.to_string())?;
    let source = format!("run {run} / {}", activity.id);

    // Where every target stands, read once: what is final is skipped, what
    // retries later waits, the rest (never tried, or in flight when the
    // process died) is sent.
    let progress = store
        .delivery_progress(run, &activity.id)
        .map_err(|e| e.to_string())?;
    for round in targets.chunks(ROUND) {
        let mut todo: Vec<u64> = Vec::new();
        for id in round {
            match progress.get(id) {
                Some(p) if p.done => counts.skipped += 1,
                Some(Progress {
                    next_at: Some(next_at),
                    ..
                }) if *next_at > now => {
                    counts.retrying += 1;
                    wake_at = Some(wake_at.map_or(*next_at, |w| w.min(*next_at)));
                }
                _ => todo.push(*id),
            }
        }
        if todo.is_empty() {
            continue;
        }
        exec.runtime.arm(&mut st);
        let prepared = channel
            .build(&mut st, &config, &target_dim, &todo)
            .map_err(&crash)?;
        let prepared =
            prepared.map_err(|m| format!("plugin `{plugin}` could not build messages: {m}"))?;
        if prepared.len() != todo.len() {
            return Err(format!(
                "plugin `{plugin}` built {} messages for {} recipients",
                prepared.len(),
                todo.len()
            ));
        }
        let attempt = |id: &u64| progress.get(id).map_or(0, |p| p.attempts) + 1;
        let entry = |state: DeliveryState, out: Option<&wit::Outgoing>| Delivery {
            channel: plugin.clone(),
            dimension: target_dim.clone(),
            state,
            to: out.map(|o| address(&o.message)),
            at: now,
            attempts: 0,
            parts: out.map_or(0, |o| o.parts),
            note: out.and_then(|o| o.note.clone()),
        };
        let suppressed = suppressions(store, &descriptor.name, &prepared)?;
        let mut log = Vec::new();
        let mut sends = Vec::new();
        for ((id, p), suppressed) in todo.iter().zip(prepared).zip(suppressed) {
            let mut out = match p {
                wit::Prepared::Exclude(reason) => {
                    counts.excluded += 1;
                    log.push((*id, entry(DeliveryState::Excluded { reason }, None)));
                    continue;
                }
                wit::Prepared::Send(out) => out,
            };
            let account = account_of(&out.message);
            if !accounts.iter().any(|a| a == account) {
                counts.failed += 1;
                let reason = format!("account `{account}` is not granted to plugin `{plugin}`");
                let state = DeliveryState::Failed {
                    reason,
                    permanent: true,
                };
                log.push((*id, entry(state, Some(&out))));
                continue;
            }
            // Quarantine and denylists apply before anything is sent.
            if let Some((list, s)) = suppressed {
                counts.excluded += 1;
                let reason = s.exclusion(list);
                log.push((*id, entry(DeliveryState::Excluded { reason }, Some(&out))));
                continue;
            }
            // Links name a recipient: only a per-recipient email gets one.
            if let (wit::Message::Email(email), Some(u), "recipient") =
                (&mut out.message, &unsubscribe, target_dim.as_str())
            {
                add_list_unsubscribe(email, &u.link(run, *id));
            }
            let mut e = entry(DeliveryState::Intent, Some(&out));
            e.attempts = attempt(id);
            log.push((*id, e));
            sends.push((*id, out));
        }
        // The intent is durable before anything leaves.
        store
            .record_deliveries(run, &activity.id, &log)
            .map_err(|e| e.to_string())?;
        // Send CONCURRENCY at a time and record outcomes as answers come in,
        // never more than WAVE messages sent without a recorded outcome: a
        // crash repeats at most those.
        let sends = Arc::new(sends);
        send_round(exec, sends.clone(), |answered| {
            let batch: Vec<&(u64, wit::Outgoing)> =
                answered.iter().map(|(i, _)| &sends[*i]).collect();
            let answers: Vec<wit::Answer> = answered.into_iter().map(|(_, a)| a).collect();
            exec.runtime.arm(&mut st);
            let verdicts = channel
                .classify(&mut st, &config, &answers)
                .map_err(&crash)?;
            if verdicts.len() != batch.len() {
                return Err(format!(
                    "plugin `{plugin}` classified {} answers out of {}",
                    verdicts.len(),
                    batch.len()
                ));
            }
            let mut outcomes = Vec::new();
            let mut listed: Vec<(String, String, Suppression)> = Vec::new();
            for (((id, out), verdict), answer) in batch
                .iter()
                .map(|w| (&w.0, &w.1))
                .zip(verdicts)
                .zip(&answers)
            {
                // A refusal by the host (policy, credentials, trust) stays a
                // failure whatever the plugin reads into it.
                let verdict = match (verdict, answer) {
                    (wit::Verdict::Retry((reason, _)), wit::Answer::TransportError(e))
                        if e.starts_with(http::REFUSED) =>
                    {
                        wit::Verdict::Failed(reason)
                    }
                    (v, _) => v,
                };
                let list = suppression_list(&descriptor.name, &out.message);
                let mut suppress = |kind, reason: &str| {
                    listed.push((
                        list.to_string(),
                        address(&out.message),
                        Suppression {
                            kind,
                            reason: reason.to_string(),
                            source: source.clone(),
                            at: now,
                        },
                    ))
                };
                let state = match verdict {
                    wit::Verdict::Sent(provider_id) => {
                        counts.sent += 1;
                        DeliveryState::Sent { provider_id }
                    }
                    wit::Verdict::Failed(reason) => {
                        counts.failed += 1;
                        DeliveryState::Failed {
                            reason,
                            permanent: true,
                        }
                    }
                    wit::Verdict::Quarantine(reason) => {
                        counts.failed += 1;
                        suppress(SuppressionKind::Quarantine, &reason);
                        DeliveryState::Failed {
                            reason: format!("{reason} (address quarantined on {list})"),
                            permanent: true,
                        }
                    }
                    wit::Verdict::OptedOut(reason) => {
                        counts.failed += 1;
                        suppress(SuppressionKind::Denylist, &reason);
                        DeliveryState::Failed {
                            reason: format!("{reason} (opted out: added to the {list} denylist)"),
                            permanent: true,
                        }
                    }
                    // A transient failure is retried later, through a
                    // persisted timer, until the validity period ends.
                    wit::Verdict::Retry((reason, after)) => {
                        let attempts = attempt(id);
                        let next_at = now.saturating_add(backoff_ms(attempts, after));
                        if next_at > deadline {
                            counts.failed += 1;
                            DeliveryState::Failed {
                                reason: format!(
                                    "{reason} (gave up after {attempts} attempt(s): the validity \
                                     period ends {})",
                                    crate::clock::format_ms(deadline)
                                ),
                                permanent: false,
                            }
                        } else {
                            counts.retrying += 1;
                            wake_at = Some(wake_at.map_or(next_at, |w| w.min(next_at)));
                            DeliveryState::Retrying { reason, next_at }
                        }
                    }
                };
                let mut e = entry(state, Some(out));
                e.attempts = attempt(id);
                outcomes.push((*id, e));
            }
            // Suppressions first: if the process dies before the outcomes
            // are written, the repeat excludes the address instead of
            // sending to it again.
            for (list, address, s) in listed {
                store
                    .suppress(&list, &[(address, s)])
                    .map_err(|e| e.to_string())?;
            }
            store
                .record_deliveries(run, &activity.id, &outcomes)
                .map_err(|e| e.to_string())?;
            Ok(())
        })?;
    }
    let outputs = passes_on(input);
    Ok(Delivered {
        counts,
        outputs,
        wake_at,
    })
}

/// The suppression list a message's address belongs to: `email` for every
/// email, the channel's name otherwise.
fn suppression_list<'a>(channel: &'a str, message: &wit::Message) -> &'a str {
    match message {
        wit::Message::Email(_) => "email",
        wit::Message::Http(_) => channel,
    }
}

/// For each prepared message, its list's entry if its address is
/// quarantined or denylisted: (list, entry).
fn suppressions<'a>(
    store: &crate::store::Store,
    channel: &'a str,
    prepared: &[wit::Prepared],
) -> Result<Vec<Option<(&'a str, Suppression)>>, String> {
    prepared
        .iter()
        .map(|p| match p {
            wit::Prepared::Exclude(_) => Ok(None),
            wit::Prepared::Send(out) => {
                let list = suppression_list(channel, &out.message);
                let address = address(&out.message);
                let found = store
                    .suppressions(list, &[&address])
                    .map_err(|e| e.to_string())?;
                Ok(found.into_iter().next().flatten().map(|s| (list, s)))
            }
        })
        .collect()
}

/// Adds RFC 8058 one-click unsubscribe headers, unless the plugin set its own.
fn add_list_unsubscribe(email: &mut wit::Email, link: &str) {
    if email
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("list-unsubscribe"))
    {
        return;
    }
    email
        .headers
        .push(("List-Unsubscribe".into(), format!("<{link}>")));
    email.headers.push((
        "List-Unsubscribe-Post".into(),
        "List-Unsubscribe=One-Click".into(),
    ));
}

/// Most distinct exclusion reasons a preview lists.
const PREVIEW_REASONS: usize = 10;

/// A dry run's delivery: builds every message without sending or logging
/// anything; returns what would be sent and excluded, with the first message
/// as it would leave, and the outputs (the population received, on `done`).
pub(crate) fn preview(
    exec: &Executor,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
) -> Result<(serde_json::Value, BTreeMap<String, OutputRef>), String> {
    let limits = exec.runtime.limits();
    let plugin = ctx.plugin.clone();
    let accounts = ctx.accounts.clone();
    let mut st = exec.runtime.new_store(ctx);
    let stderr = st.data().stderr.clone();
    let crash = crash_reporter(plugin.clone(), limits, stderr);
    let channel = pre.instantiate(&mut st).map_err(&crash)?;
    let descriptor = channel.describe(&mut st).map_err(&crash)?;
    let config = activity.config.to_string();
    let (input, target_dim, targets) = task_targets(exec, task, descriptor.target)?;
    let mut would_send = 0u64;
    let mut excluded = 0u64;
    let mut parts = 0u64;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut notes: BTreeMap<String, u64> = BTreeMap::new();
    let mut sample = None;
    let tally = |map: &mut BTreeMap<String, u64>, key: String| {
        if map.len() < PREVIEW_REASONS || map.contains_key(&key) {
            *map.entry(key).or_default() += 1;
        } else {
            *map.entry("(others)".into()).or_default() += 1;
        }
    };
    for round in targets.chunks(ROUND) {
        exec.runtime.arm(&mut st);
        let prepared = channel
            .build(&mut st, &config, &target_dim, round)
            .map_err(&crash)?
            .map_err(|m| format!("plugin `{plugin}` could not build messages: {m}"))?;
        let suppressed = suppressions(&exec.store, &descriptor.name, &prepared)?;
        for (p, suppressed) in prepared.into_iter().zip(suppressed) {
            let reason = match (p, suppressed) {
                (wit::Prepared::Exclude(reason), _) => reason,
                (wit::Prepared::Send(out), suppressed) => {
                    let account = account_of(&out.message);
                    if !accounts.iter().any(|a| a == account) {
                        format!("account `{account}` is not granted to plugin `{plugin}`")
                    } else if let Some((list, s)) = suppressed {
                        // One line per list and kind, not per address.
                        match s.kind {
                            SuppressionKind::Quarantine => format!("quarantined on {list}"),
                            SuppressionKind::Denylist => format!("on the {list} denylist"),
                        }
                    } else {
                        would_send += 1;
                        parts += u64::from(out.parts);
                        if let Some(note) = &out.note {
                            tally(&mut notes, note.clone());
                        }
                        sample.get_or_insert_with(|| message_json(&out));
                        continue;
                    }
                }
            };
            excluded += 1;
            tally(&mut reasons, reason);
        }
    }
    let preview = serde_json::json!({
        "channel": plugin,
        "target": target_dim,
        "targets": targets.len(),
        "would_send": would_send,
        "parts": parts,
        "notes": notes,
        "excluded": excluded,
        "reasons": reasons,
        "sample": sample,
    });
    let outputs = passes_on(input);
    Ok((preview, outputs))
}

/// A message as a dry run shows it.
fn message_json(out: &wit::Outgoing) -> serde_json::Value {
    let mut json = match &out.message {
        wit::Message::Email(e) => serde_json::json!({
            "account": e.account,
            "from": e.from,
            "to": e.to,
            "reply_to": e.reply_to,
            "subject": e.subject,
            "text": e.text,
            "html": e.html,
            "headers": e.headers,
        }),
        wit::Message::Http(h) => serde_json::json!({
            "account": h.account,
            "method": h.method,
            "path": h.path,
            "recipient": h.recipient,
            "headers": h.headers,
            "body": String::from_utf8_lossy(&h.body),
        }),
    };
    json["parts"] = out.parts.into();
    json["note"] = out.note.clone().into();
    json
}

/// A delivery's input population and the ids to send to in it.
fn task_targets<'t>(
    exec: &Executor,
    task: &'t Task,
    target: wit::Target,
) -> Result<(&'t InputRef, String, Vec<u64>), String> {
    let input = task
        .inputs
        .first()
        .ok_or("a delivery needs an incoming population")?;
    let meta = exec
        .store
        .population_meta(input.population)
        .map_err(|e| e.to_string())?;
    let (dimension, ids) = targets(exec, &meta.dimension, input.population, target)?;
    Ok((input, dimension, ids))
}

/// A delivery's outputs: the population it received, on `done`.
fn passes_on(input: &InputRef) -> BTreeMap<String, OutputRef> {
    BTreeMap::from([(
        "done".to_string(),
        OutputRef {
            population: input.population,
            count: input.count,
        },
    )])
}

/// The ids to send to: the population itself, or its distinct linked
/// recipients when the channel sends once per recipient.
fn targets(
    exec: &Executor,
    dim: &str,
    population: u64,
    target: wit::Target,
) -> Result<(String, Vec<u64>), String> {
    let want = match target {
        wit::Target::Recipient => "recipient",
        wit::Target::Subscription => "subscription",
    };
    let ids = exec
        .store
        .population_ids(population)
        .map_err(|e| e.to_string())?;
    if ids.is_empty() || dim == want {
        return Ok((want.to_string(), ids));
    }
    let d = dimension(dim).map_err(|e| e.to_string())?;
    let link = d.links.iter().find(|l| l.target == want).ok_or_else(|| {
        format!("this channel sends per {want}, and a {dim} population has no link to {want}s")
    })?;
    let mut out: Vec<u64> = Vec::new();
    for chunk in ids.chunks(10_000) {
        let linked = exec
            .store
            .audience()
            .read_links(d, link.name, chunk)
            .map_err(|e| e.to_string())?;
        out.extend(linked.into_iter().flatten());
    }
    out.sort_unstable();
    out.dedup();
    Ok((want.to_string(), out))
}

/// The account a message goes out through.
fn account_of(message: &wit::Message) -> &str {
    match message {
        wit::Message::Email(e) => &e.account,
        wit::Message::Http(h) => &h.account,
    }
}

fn address(message: &wit::Message) -> String {
    match message {
        wit::Message::Email(e) => e.to.clone(),
        wit::Message::Http(h) => h.recipient.clone(),
    }
}

/// Sends a round's messages, [`CONCURRENCY`] on the wire at a time, on
/// lanes (`lanes.rs`); `record` gets answers as they come, (index in
/// `sends`, answer), in batches. A message's slot in [`WAVE`] is freed only
/// once its batch is recorded, so at most WAVE messages are ever sent
/// without a recorded outcome. An error from `record` stops sending.
fn send_round(
    exec: &Executor,
    sends: Arc<Vec<(u64, wit::Outgoing)>>,
    mut record: impl FnMut(Vec<(usize, wit::Answer)>) -> Result<(), String>,
) -> Result<(), String> {
    if sends.is_empty() {
        return Ok(());
    }
    let store = &exec.store;
    let wire = exec.transports.wire.clone();
    // Accounts are resolved once per round, not per message; each gets its
    // queue of messages.
    let mut queues: Vec<(Result<Arc<Route>, String>, Vec<usize>)> = Vec::new();
    let mut by_route: std::collections::HashMap<(&str, bool), usize> = Default::default();
    {
        let _runtime = exec.transports.runtime.enter();
        for (i, (_, out)) in sends.iter().enumerate() {
            let email = matches!(out.message, wit::Message::Email(_));
            let name = account_of(&out.message);
            let q = *by_route.entry((name, email)).or_insert_with(|| {
                queues.push((wire.route(store, name, email).map(Arc::new), Vec::new()));
                queues.len() - 1
            });
            queues[q].1.push(i);
        }
    }
    let round = Arc::new(lanes::Round {
        inbox: Arc::new(Inbox::new(sends.len())),
        sends: sends.clone(),
        unrecorded: Arc::new(Semaphore::new(WAVE)),
        on_wire: Arc::new(Semaphore::new(CONCURRENCY)),
        stop: std::sync::atomic::AtomicBool::new(false),
        wire,
        store: store.clone(),
    });
    for (route, jobs) in queues {
        let queue = Arc::new(lanes::Queue::new(route, jobs));
        exec.transports
            .runtime
            .spawn(lanes::carry(round.clone(), queue));
    }
    let mut answered = 0;
    // Gather up to BATCH answers (or what comes within GATHER): one write
    // and flush for many, while the other WAVE slots keep the wire busy.
    while let Some(batch) = round.inbox.take(BATCH, GATHER) {
        answered += batch.len();
        let (answers, slots): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|(i, a, slot)| ((i, a), slot)).unzip();
        if let Err(e) = record(answers) {
            round.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
        drop(slots);
    }
    if answered < sends.len() {
        return Err("the delivery's sending tasks stopped".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let mins: Vec<i64> = (1..=8).map(|a| backoff_ms(a, None) / 60_000).collect();
        assert_eq!(mins, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff_ms(1, Some(300)), 300_000, "Retry-After is a floor");
        assert_eq!(backoff_ms(7, Some(10)), 3_600_000);
        assert_eq!(backoff_ms(u32::MAX, None), 3_600_000);
    }
}
