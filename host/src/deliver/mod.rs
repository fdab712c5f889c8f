//! Deliveries: the host side of a channel plugin.
//!
//! For each round of target ids the host asks the plugin to build messages,
//! checks each against its target record's stored address (`vet.rs`),
//! excludes suppressed addresses, writes every intent to the delivery log
//! (flushed before any of them leaves), sends over the wire with the
//! operator's account and credentials, asks the plugin to classify the
//! providers' answers as they come, decides itself on failures that are no
//! answer (`failure.rs`: retried if transient, failed if not), and writes
//! the outcomes. At most
//! [`WAVE_BATCHES`] batches of messages (512, or four times the largest
//! account concurrency when that is more) are ever sent without a durable
//! outcome. Ids whose outcome is already logged are skipped, so
//! executing a task again (after a crash) repeats at most those.

mod commit;
pub mod egress;
pub mod failure;
pub mod http;
pub mod inbox;
mod lanes;
mod session;
pub mod smtp;
pub mod throttle;
pub mod trust;
mod vet;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::caps::{Context, crash_reporter};
use crate::runtime::channel::{ChannelPre, wit};
use crate::store::audience::dimension;
use crate::store::deliveries::{Cause, Delivery, DeliveryState, Progress};
use crate::store::runs::{DeliveryCounts, InputRef, OutputRef, Task};
use crate::store::settings::Account;
use crate::store::suppression::{Suppression, SuppressionKind};
use crate::workflow::{Activity, DEFAULT_VALIDITY_MS};
use failure::Failure;
use session::Send;
use vet::{Lists, Stored};

/// Target ids built (one plugin call) and their intents written at once.
/// Small enough that building one (a millisecond or two) does not keep the
/// recording thread from the answers long enough to fill the wave.
const ROUND: usize = 256;
/// The next round is built when fewer messages than this wait for a lane:
/// the lanes never run dry while a turn of the recording thread (gather,
/// classify, build) and the flush after it take their few milliseconds.
const LOW_WATER: usize = 2 * ROUND;
/// Messages in flight at once, unless a granted account allows more.
const CONCURRENCY: usize = 32;
/// Most outcomes recorded at once.
const BATCH: usize = 4 * CONCURRENCY;
/// Longest wait for more answers before recording a batch of outcomes.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);
/// Most messages sent without a durable outcome (the wave, what a crash may
/// repeat), in batches: 512 by default. Room for a batch being flushed, one
/// being recorded, one gathering and the wire: with two batches' worth, 32
/// HTTP/1.1 lanes waited for a place about 6,000 times per 100k messages, a
/// tenth of their time.
const WAVE_BATCHES: usize = 4;

/// What a delivery needs from the executor running it: the store, the wasm
/// runtime and the transports, nothing more.
pub struct Needs<'a> {
    /// The store.
    pub store: &'a crate::store::Store,
    /// The wasm runtime.
    pub runtime: &'a crate::runtime::Runtime,
    /// The network side.
    pub transports: &'a Transports,
}

/// The network side of deliveries: pooled connections, one per account.
pub struct Transports {
    runtime: tokio::runtime::Handle,
    wire: Arc<Wire>,
}

/// What sends: shared with the tasks that carry each message.
struct Wire {
    http: http::HttpTransport,
    smtp: smtp::Relays,
    throttles: throttle::Throttles,
}

impl Transports {
    /// Transports that run their I/O on `runtime`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        store: &crate::store::Store,
    ) -> anyhow::Result<Transports> {
        let trust = trust::Trust::load(store)?;
        Ok(Transports {
            runtime,
            wire: Arc::new(Wire {
                http: http::HttpTransport::new(store, &trust)?,
                smtp: smtp::Relays::new(trust)?,
                throttles: throttle::Throttles::default(),
            }),
        })
    }
}

impl Drop for Transports {
    fn drop(&mut self) {
        // Parked connections deregister from the runtime's reactor.
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
    /// Through the account's SMTP relay.
    Smtp(Arc<smtp::Relay>),
    /// To the account's base URL.
    Http(Box<http::Target>),
}

impl Wire {
    /// A wire for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(store: &crate::store::Store) -> Wire {
        let trust = trust::Trust::new(Vec::new()).expect("the public roots");
        Wire {
            http: http::HttpTransport::new(store, &trust).expect("a transport"),
            smtp: smtp::Relays::new(trust).expect("relays"),
            throttles: throttle::Throttles::default(),
        }
    }

    /// Resolves an account for email or HTTP messages.
    fn route(
        &self,
        store: &crate::store::Store,
        name: &str,
        email: bool,
    ) -> Result<Route, Failure> {
        let account = store
            .account(name)
            .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))?;
        let way = if email {
            Way::Smtp(self.smtp.relay(store, &account)?)
        } else {
            Way::Http(Box::new(http::HttpTransport::target(&account)?))
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
///
/// Rounds of [`ROUND`] targets are built and their intents written while
/// the previous round is still on the wire (the next round is prepared as
/// soon as fewer than a round's worth of messages wait for a lane), and
/// answers are classified and recorded as they come. Flushes happen on a
/// thread of their own (`commit.rs`): messages leave, and places in the
/// wave come back, once what they depend on is durable.
pub(crate) fn deliver(
    needs: &Needs<'_>,
    run: u64,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
) -> Result<Delivered, String> {
    let limits = needs.runtime.limits();
    let plugin = ctx.plugin.clone();
    let accounts = ctx.accounts.clone();
    let now = ctx.now_ms;
    let mut st = needs.runtime.new_store(ctx);
    let crash = crash_reporter(plugin.clone(), limits);
    let channel = pre.instantiate(&mut st).map_err(|e| crash(e, st.data()))?;
    let descriptor = channel.describe(&mut st).map_err(|e| crash(e, st.data()))?;
    let (input, target_dim, targets) = task_targets(needs, task, descriptor.target)?;
    let deadline = task
        .started_at
        .unwrap_or(now)
        .saturating_add(activity.validity_ms.unwrap_or(DEFAULT_VALIDITY_MS));
    let unsubscribe = needs
        .store
        .unsubscribe_settings()
        .map_err(|e| e.to_string())?;
    // Where every target stands, read once: what is final is skipped, what
    // retries later waits, the rest (never tried, or in flight when the
    // process died) is sent.
    let progress = needs
        .store
        .delivery_progress(run, &activity.id)
        .map_err(|e| e.to_string())?;
    let lists = lists(needs, &plugin, &descriptor, &target_dim)?;
    let key = needs.store.instance_key().map_err(|e| e.to_string())?;
    let mut pass = Pass {
        needs,
        run,
        activity: &activity.id,
        config: activity.config.to_string(),
        plugin,
        accounts,
        lists,
        key,
        target_dim,
        now,
        deadline,
        unsubscribe,
        source: format!("run {run} / {}", activity.id),
        progress,
        st,
        channel,
        crash: Box::new(crash),
        counts: DeliveryCounts::default(),
        wake_at: None,
    };
    // An account allowing more in flight than the default (a push provider
    // far away) widens the wave with it: batches as large as its
    // concurrency, so a crash may repeat up to four times that.
    let in_flight = in_flight(needs, &pass.accounts);
    let batch_size = BATCH.max(in_flight);
    let low_water = LOW_WATER.max(2 * in_flight);
    let session = Arc::new(session::Session::new(
        needs.transports.runtime.clone(),
        needs.transports.wire.clone(),
        needs.store.clone(),
        in_flight,
        WAVE_BATCHES * batch_size,
        http::AnswerHeaders::new(descriptor.answer_headers.as_deref()),
    ));
    let commit = commit::Committer::start(needs.store.clone(), session.clone());
    let mut rounds = targets.chunks(ROUND);
    let mut prepared_all = false;
    let (mut expected, mut recorded) = (0usize, 0usize);
    let sent = (|| {
        loop {
            // Keep the lanes fed: the next round is built while the wire
            // carries the last ones. Its intents are written now; its
            // messages leave once the flush that follows made them durable.
            let mut prepared = false;
            if !prepared_all && session.backlog() < low_water {
                match rounds.next() {
                    Some(targets) => {
                        let sends = pass.prepare(targets)?;
                        if !sends.is_empty() {
                            expected += sends.len();
                            commit.then(commit::Then::Submit(sends))?;
                        }
                        prepared = true;
                    }
                    None => prepared_all = true,
                }
            }
            // Up to a batch of answers: gathered for up to GATHER when there
            // is nothing else to do, what is there when a round was built.
            let batch = if prepared {
                session.try_take(batch_size)
            } else {
                match session.take(batch_size, GATHER) {
                    Some(batch) => batch,
                    None if prepared_all => break,
                    None => continue,
                }
            };
            commit.check()?;
            if batch.is_empty() {
                continue;
            }
            let (answers, slots): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|(sends, i, a, slot)| ((sends, i, a), slot))
                .unzip();
            recorded += answers.len();
            pass.record(answers)?;
            // Their places in the wave are free once their outcomes are
            // durable (group commit: one flush for what is written by then).
            commit.then(commit::Then::Release(slots))?;
        }
        if recorded < expected {
            return Err("the delivery's sending tasks stopped".to_string());
        }
        Ok(())
    })();
    match sent {
        // Every outcome durable before the task says it is done.
        Ok(()) => commit.finish()?,
        Err(e) => {
            commit.abort();
            session.stop();
            return Err(e);
        }
    }
    Ok(Delivered {
        counts: pass.counts,
        outputs: passes_on(input),
        wake_at: pass.wake_at,
    })
}

/// One execution of a delivery task: what its rounds and answers share.
struct Pass<'a> {
    needs: &'a Needs<'a>,
    run: u64,
    activity: &'a str,
    config: String,
    plugin: String,
    accounts: Vec<String>,
    /// The suppression lists its messages are checked against.
    lists: Lists,
    /// The data directory's key, for Message-IDs.
    key: [u8; 16],
    target_dim: String,
    now: i64,
    /// When the validity period ends: no retry is scheduled past it.
    deadline: i64,
    unsubscribe: Option<crate::unsubscribe::Signer>,
    /// Where suppressions this pass adds say they come from.
    source: String,
    progress: std::collections::HashMap<u64, Progress>,
    st: wasmtime::Store<crate::runtime::HostState>,
    channel: crate::runtime::channel::Channel,
    crash: crate::caps::CrashReporter,
    counts: DeliveryCounts,
    /// When the earliest retry is due.
    wake_at: Option<i64>,
}

impl Pass<'_> {
    /// Attempt number of the next try at `id`.
    fn attempt(&self, id: u64) -> u32 {
        self.progress.get(&id).map_or(0, |p| p.attempts) + 1
    }

    fn retry_at(&mut self, at: i64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// A log entry of this pass for a message going to `to` (or none,
    /// when excluded before one was built).
    fn entry(
        &self,
        state: DeliveryState,
        out: Option<&wit::Outgoing>,
        to: Option<String>,
    ) -> Delivery {
        Delivery {
            channel: self.plugin.clone(),
            dimension: self.target_dim.clone(),
            state,
            to,
            at: self.now,
            attempts: 0,
            parts: out.map_or(0, |o| o.parts),
            note: out.and_then(|o| o.note.clone()),
        }
    }

    /// A message the host refuses before it leaves, as its log entry.
    fn refused(&mut self, id: u64, out: &wit::Outgoing, failure: Failure) -> (u64, Delivery) {
        self.counts.failed += 1;
        let state = DeliveryState::Failed {
            reason: failure.message,
            permanent: true,
            cause: Some(failure.cause),
        };
        let mut e = self.entry(state, Some(out), None);
        e.attempts = self.attempt(id);
        (id, e)
    }

    /// Builds a round's messages, excludes what may not be sent, and writes
    /// every intent (durable at the caller's next flush, which comes before
    /// anything leaves): the messages to send.
    fn prepare(&mut self, round: &[u64]) -> Result<session::Sends, String> {
        let mut todo: Vec<u64> = Vec::new();
        for id in round {
            match self.progress.get(id) {
                Some(p) if p.done => self.counts.skipped += 1,
                Some(Progress {
                    next_at: Some(next_at),
                    ..
                }) if *next_at > self.now => {
                    let at = *next_at;
                    self.counts.retrying += 1;
                    self.retry_at(at);
                }
                _ => todo.push(*id),
            }
        }
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        self.needs.runtime.arm(&mut self.st);
        let prepared = self
            .channel
            .build(&mut self.st, &self.config, &self.target_dim, &todo)
            .map_err(|e| (self.crash)(e, self.st.data()))?
            .map_err(|m| format!("plugin `{}` could not build messages: {m}", self.plugin))?;
        if prepared.len() != todo.len() {
            return Err(format!(
                "plugin `{}` built {} messages for {} recipients",
                self.plugin,
                prepared.len(),
                todo.len()
            ));
        }
        let store = &self.needs.store;
        let stored = Stored::fetch(store, &self.lists, &todo, &prepared)?;
        let vetted: Vec<Vetted> = prepared
            .into_iter()
            .enumerate()
            .map(|(i, p)| vet(&self.lists, &stored, &self.accounts, &self.plugin, i, p))
            .collect();
        let suppressed = suppressions(store, &self.lists, &vetted)?;
        let mut log = Vec::new();
        let mut sends = Vec::new();
        for ((id, v), suppressed) in todo.iter().zip(vetted).zip(suppressed) {
            let (mut out, to) = match v {
                Vetted::Excluded(reason) => {
                    self.counts.excluded += 1;
                    let state = DeliveryState::Excluded { reason };
                    log.push((*id, self.entry(state, None, None)));
                    continue;
                }
                Vetted::Refused(out, failure) => {
                    log.push(self.refused(*id, &out, failure));
                    continue;
                }
                Vetted::Send(out, to) => (out, to),
            };
            // Quarantine and denylists apply before anything is sent.
            if let Some((list, s)) = suppressed {
                self.counts.excluded += 1;
                let reason = s.exclusion(&list);
                let state = DeliveryState::Excluded { reason };
                log.push((*id, self.entry(state, Some(&out), Some(to))));
                continue;
            }
            let mut message_id = None;
            if let wit::Message::Email(email) = &mut out.message {
                // Links name a recipient: only a per-recipient email gets one.
                if let (Some(u), "recipient") = (&self.unsubscribe, self.target_dim.as_str()) {
                    let link = u.link(self.run, *id, &to)?;
                    add_list_unsubscribe(email, &link);
                }
                let domain = smtp::message::sender_domain(&email.from);
                message_id = Some(smtp::message::message_id(
                    &self.key,
                    self.run,
                    self.activity,
                    *id,
                    &domain,
                ));
            }
            let mut e = self.entry(DeliveryState::Intent, Some(&out), Some(to.clone()));
            e.attempts = self.attempt(*id);
            log.push((*id, e));
            sends.push(Send {
                id: *id,
                out,
                to,
                message_id,
            });
        }
        store
            .append_deliveries(self.run, self.activity, &log)
            .map_err(|e| e.to_string())?;
        Ok(sends)
    }

    /// Records a batch of outcomes: the providers' answers classified
    /// through the plugin, the failures decided by the host (retried when
    /// transient, failed when not); suppressions first (flushed), then the
    /// log entries (durable at the caller's next flush).
    fn record(
        &mut self,
        answered: Vec<(Arc<session::Sends>, usize, http::Outcome)>,
    ) -> Result<(), String> {
        // Only the providers' answers cross into the plugin, in one call.
        let answers: Vec<wit::Answer> = answered
            .iter()
            .filter_map(|(_, _, outcome)| outcome.as_ref().ok().cloned())
            .collect();
        let mut verdicts = if answers.is_empty() {
            Vec::new()
        } else {
            self.needs.runtime.arm(&mut self.st);
            self.channel
                .classify(&mut self.st, &self.config, &answers)
                .map_err(|e| (self.crash)(e, self.st.data()))?
        };
        if verdicts.len() != answers.len() {
            return Err(format!(
                "plugin `{}` classified {} answers out of {}",
                self.plugin,
                verdicts.len(),
                answers.len()
            ));
        }
        verdicts.reverse();
        let mut outcomes = Vec::new();
        let mut listed: Vec<(String, String, Suppression)> = Vec::new();
        for (sends, i, outcome) in &answered {
            let send = &sends[*i];
            let (id, out) = (&send.id, &send.out);
            let (verdict, cause) = match outcome {
                Ok(_) => (verdicts.pop().expect("one per answer"), Cause::Provider),
                Err(f) if f.permanent => (wit::Verdict::Failed(f.message.clone()), f.cause),
                Err(f) => (wit::Verdict::Retry((f.message.clone(), None)), f.cause),
            };
            let (list, _) = self.lists.of(&out.message);
            let mut suppress = |kind, reason: &str| {
                listed.push((
                    list.to_string(),
                    send.to.clone(),
                    Suppression {
                        kind,
                        reason: reason.to_string(),
                        source: self.source.clone(),
                        at: self.now,
                    },
                ))
            };
            let state = match verdict {
                wit::Verdict::Sent(provider_id) => {
                    self.counts.sent += 1;
                    DeliveryState::Sent { provider_id }
                }
                wit::Verdict::Failed(reason) => {
                    self.counts.failed += 1;
                    DeliveryState::Failed {
                        reason,
                        permanent: true,
                        cause: Some(cause),
                    }
                }
                wit::Verdict::Quarantine(reason) => {
                    self.counts.failed += 1;
                    suppress(SuppressionKind::Quarantine, &reason);
                    DeliveryState::Failed {
                        reason: format!("{reason} (address quarantined on {list})"),
                        permanent: true,
                        cause: Some(cause),
                    }
                }
                wit::Verdict::OptedOut(reason) => {
                    self.counts.failed += 1;
                    suppress(SuppressionKind::Denylist, &reason);
                    DeliveryState::Failed {
                        reason: format!("{reason} (opted out: added to the {list} denylist)"),
                        permanent: true,
                        cause: Some(cause),
                    }
                }
                // A transient failure is retried later, through a
                // persisted timer, until the validity period ends.
                wit::Verdict::Retry((reason, after)) => {
                    let attempts = self.attempt(*id);
                    let next_at = self.now.saturating_add(backoff_ms(attempts, after));
                    if next_at > self.deadline {
                        self.counts.failed += 1;
                        DeliveryState::Failed {
                            reason: format!(
                                "{reason} (gave up after {attempts} attempt(s): the validity \
                                 period ends {})",
                                crate::clock::format_ms(self.deadline)
                            ),
                            permanent: false,
                            cause: Some(cause),
                        }
                    } else {
                        self.counts.retrying += 1;
                        self.retry_at(next_at);
                        DeliveryState::Retrying {
                            reason,
                            next_at,
                            cause: Some(cause),
                        }
                    }
                }
            };
            let mut e = self.entry(state, Some(out), Some(send.to.clone()));
            e.attempts = self.attempt(*id);
            outcomes.push((*id, e));
        }
        let store = &self.needs.store;
        // Suppressions first: if the process dies before the outcomes are
        // written, the repeat excludes the address instead of sending to it
        // again.
        for (list, address, s) in listed {
            store
                .suppress(&list, &[(address, s)])
                .map_err(|e| e.to_string())?;
        }
        store
            .append_deliveries(self.run, self.activity, &outcomes)
            .map_err(|e| e.to_string())
    }
}

/// Most messages a delivery keeps on the wire: the largest concurrency of
/// its granted accounts, at least [`CONCURRENCY`] (each account's own limit
/// still applies to its messages).
fn in_flight(needs: &Needs<'_>, accounts: &[String]) -> usize {
    accounts
        .iter()
        .filter_map(|a| needs.store.account(a).ok())
        .map(|a| a.concurrency.unwrap_or(throttle::DEFAULT_CONCURRENCY) as usize)
        .fold(CONCURRENCY, usize::max)
}

/// The suppression lists of a channel's messages (`target`: the dimension
/// of its ids). Its HTTP messages' list is the one the operator installed
/// it with, else the one it declares, else its own name; that list's kind
/// must be of the records the channel sends to.
fn lists(
    needs: &Needs<'_>,
    plugin: &str,
    descriptor: &wit::Descriptor,
    target: &str,
) -> Result<Lists, String> {
    let record = needs.store.plugin(plugin).map_err(|e| e.to_string())?;
    let list = match (record.suppression_list, &descriptor.suppression_list) {
        (Some(list), _) => list,
        (None, Some(list)) => {
            crate::store::suppression::check_list_name(list)
                .map_err(|e| format!("plugin `{plugin}` declares a suppression list: {e}"))?;
            list.clone()
        }
        (None, None) => descriptor.name.clone(),
    };
    let kind = needs.store.list_kind(&list).map_err(|e| e.to_string())?;
    Ok(Lists {
        http: (list, kind),
        target: target.to_string(),
    })
}

/// A built message after the host's checks.
enum Vetted {
    /// The plugin excluded the target.
    Excluded(String),
    /// The host refuses to send it.
    Refused(wit::Outgoing, Failure),
    /// It may go, to this stored address (suppression lists permitting).
    Send(wit::Outgoing, String),
}

/// Checks what the plugin built for the `i`-th target: an account granted
/// to the plugin, headers that add no line, a recipient that is the
/// record's stored address.
fn vet(
    lists: &Lists,
    stored: &Stored,
    accounts: &[String],
    plugin: &str,
    i: usize,
    prepared: wit::Prepared,
) -> Vetted {
    let out = match prepared {
        wit::Prepared::Exclude(reason) => return Vetted::Excluded(reason),
        wit::Prepared::Send(out) => out,
    };
    let account = account_of(&out.message);
    if !accounts.iter().any(|a| a == account) {
        let reason = format!("account `{account}` is not granted to plugin `{plugin}`");
        return Vetted::Refused(out, Failure::permanent(Cause::Policy, reason));
    }
    let checked = vet::headers(&out.message)
        .and_then(|()| stored.recipient(lists, i, &out.message))
        .map_err(|reason| {
            Failure::permanent(Cause::Plugin, format!("plugin `{plugin}`: {reason}"))
        });
    match checked {
        Ok(to) => Vetted::Send(out, to),
        Err(failure) => Vetted::Refused(out, failure),
    }
}

/// For each vetted message that may go, its list's entry if its stored
/// address is quarantined or denylisted: (list, entry). One lookup per
/// list and batch.
fn suppressions(
    store: &crate::store::Store,
    lists: &Lists,
    vetted: &[Vetted],
) -> Result<Vec<Option<(String, Suppression)>>, String> {
    let mut found: Vec<Option<(String, Suppression)>> = vec![None; vetted.len()];
    let mut by_list: BTreeMap<&str, (Vec<usize>, Vec<&str>)> = BTreeMap::new();
    for (i, v) in vetted.iter().enumerate() {
        if let Vetted::Send(out, to) = v {
            let (at, addresses) = by_list.entry(lists.of(&out.message).0).or_default();
            at.push(i);
            addresses.push(to);
        }
    }
    for (list, (at, addresses)) in by_list {
        let entries = store
            .suppressions(list, &addresses)
            .map_err(|e| e.to_string())?;
        for (i, entry) in at.into_iter().zip(entries) {
            found[i] = entry.map(|s| (list.to_string(), s));
        }
    }
    Ok(found)
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
    needs: &Needs<'_>,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
) -> Result<(serde_json::Value, BTreeMap<String, OutputRef>), String> {
    let limits = needs.runtime.limits();
    let plugin = ctx.plugin.clone();
    let accounts = ctx.accounts.clone();
    let mut st = needs.runtime.new_store(ctx);
    let crash = crash_reporter(plugin.clone(), limits);
    let channel = pre.instantiate(&mut st).map_err(|e| crash(e, st.data()))?;
    let descriptor = channel.describe(&mut st).map_err(|e| crash(e, st.data()))?;
    let config = activity.config.to_string();
    let (input, target_dim, targets) = task_targets(needs, task, descriptor.target)?;
    let lists = lists(needs, &plugin, &descriptor, &target_dim)?;
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
        needs.runtime.arm(&mut st);
        let prepared = channel
            .build(&mut st, &config, &target_dim, round)
            .map_err(|e| crash(e, st.data()))?
            .map_err(|m| format!("plugin `{plugin}` could not build messages: {m}"))?;
        let stored = Stored::fetch(needs.store, &lists, round, &prepared)?;
        let vetted: Vec<Vetted> = prepared
            .into_iter()
            .enumerate()
            .map(|(i, p)| vet(&lists, &stored, &accounts, &plugin, i, p))
            .collect();
        let suppressed = suppressions(needs.store, &lists, &vetted)?;
        for (v, suppressed) in vetted.into_iter().zip(suppressed) {
            let reason = match (v, suppressed) {
                (Vetted::Excluded(reason), _) => reason,
                (Vetted::Refused(_, failure), _) => failure.message,
                (Vetted::Send(out, _), suppressed) => {
                    if let Some((list, s)) = suppressed {
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
    needs: &Needs<'_>,
    task: &'t Task,
    target: wit::Target,
) -> Result<(&'t InputRef, String, Vec<u64>), String> {
    let input = task
        .inputs
        .first()
        .ok_or("a delivery needs an incoming population")?;
    let meta = needs
        .store
        .population_meta(input.population)
        .map_err(|e| e.to_string())?;
    let (dimension, ids) = targets(needs, &meta.dimension, input.population, target)?;
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
    needs: &Needs<'_>,
    dim: &str,
    population: u64,
    target: wit::Target,
) -> Result<(String, Vec<u64>), String> {
    let want = match target {
        wit::Target::Recipient => "recipient",
        wit::Target::Subscription => "subscription",
    };
    let ids = needs
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
        let linked = needs
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
