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

mod credentials;
pub mod email;
pub mod failure;
pub mod net;
mod pass;
pub mod pipeline;
mod preview;
pub mod reach;
mod request;
mod routes;
pub mod sample;
mod targets;
mod vet;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::caps::Context;
use crate::runtime::channel::{ChannelPre, wit};
use crate::store::runs::{DeliveryCounts, OutputRef, Task};
use crate::workflow::Activity;
use pass::Pass;
use pipeline::commit::{Committer, Then};
use pipeline::session::Session;
pub(crate) use preview::{preview, sample};
pub use routes::Transports;

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
    /// True once the delivery must build no more messages: the process
    /// stops, or the operator paused or cancelled the run.
    pub stop: &'a (dyn Fn() -> bool + Sync),
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
    /// Stopped before every target had its outcome (the process is
    /// stopping): what was sent is recorded, the rest is for the next one.
    pub stopped: bool,
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
    let (mut pass, opened) = Pass::open(needs, run, activity, task, pre, ctx)?;
    // An account allowing more in flight than the default (a push provider
    // far away) widens the wave with it: batches as large as its
    // concurrency, so a crash may repeat up to four times that.
    let in_flight = in_flight(needs, pass.accounts());
    let sizes = Sizes {
        batch: BATCH.max(in_flight),
        low_water: LOW_WATER.max(2 * in_flight),
    };
    let session = Arc::new(Session::new(
        needs.transports.runtime.clone(),
        needs.transports.wire.clone(),
        needs.store.clone(),
        in_flight,
        WAVE_BATCHES * sizes.batch,
        opened.answer_headers,
    ));
    let commit = Committer::start(needs.store.clone(), session.clone());
    let stopped = match drive(
        &mut pass,
        &session,
        &commit,
        &opened.targets,
        sizes,
        needs.stop,
    ) {
        // Every outcome durable before the task says it is done.
        Ok(stopped) => {
            commit.finish()?;
            stopped
        }
        Err(e) => {
            commit.abort();
            session.stop();
            return Err(e);
        }
    };
    let (counts, wake_at) = pass.finish();
    Ok(Delivered {
        counts,
        outputs: targets::passes_on(opened.input),
        wake_at,
        stopped,
    })
}

/// Marks `cancelled` every target of a delivery task that has no final
/// outcome (never sent, or retrying): the run was cancelled. Returns how
/// many. Messages in flight when a process died keep their intent: whether
/// they left is not known.
pub(crate) fn cancel(
    needs: &Needs<'_>,
    run: u64,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
    at: i64,
) -> Result<usize, String> {
    let (pass, opened) = Pass::open(needs, run, activity, task, pre, ctx)?;
    pass.cancel(&opened.targets, at)
}

/// How a delivery paces its rounds and records.
#[derive(Clone, Copy)]
struct Sizes {
    /// Most outcomes recorded at once.
    batch: usize,
    /// The next round is built when fewer messages than this wait.
    low_water: usize,
}

/// Feeds the session round after round and records the answers as they
/// come, until every target has its outcome, or until `stop` is set: then
/// no round is built any more, the answers to what was submitted are
/// recorded, and the result is `true` (stopped early).
fn drive(
    pass: &mut Pass<'_>,
    session: &Session,
    commit: &Committer,
    targets: &[u64],
    sizes: Sizes,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<bool, String> {
    let mut rounds = targets.chunks(ROUND);
    let mut prepared_all = false;
    let mut stopped = false;
    let (mut expected, mut recorded) = (0usize, 0usize);
    loop {
        if !prepared_all && stop() {
            tracing::info!("stopping: no more messages are built; recording the answers due");
            // Stopped early only if targets were left unbuilt.
            (prepared_all, stopped) = (true, rounds.len() > 0);
        }
        // Keep the lanes fed: the next round is built while the wire
        // carries the last ones. Its intents are written now; its messages
        // leave once the flush that follows made them durable.
        let mut prepared = false;
        if !prepared_all && session.backlog() < sizes.low_water {
            match rounds.next() {
                Some(targets) => {
                    let sends = pass.prepare(targets)?;
                    if !sends.is_empty() {
                        expected += sends.len();
                        commit.then(Then::Submit(sends))?;
                    }
                    prepared = true;
                }
                None => prepared_all = true,
            }
        }
        // Up to a batch of answers: gathered for up to GATHER when there is
        // nothing else to do, what is there when a round was built.
        let batch = if prepared {
            session.try_take(sizes.batch)
        } else {
            match session.take(sizes.batch, GATHER) {
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
        // Their places in the wave are free once their outcomes are durable
        // (group commit: one flush for what is written by then).
        commit.then(Then::Release(slots))?;
    }
    if recorded < expected {
        return Err("the delivery's sending tasks stopped".to_string());
    }
    Ok(stopped)
}

/// Most messages a delivery keeps on the wire: the largest concurrency of
/// its granted accounts, at least [`CONCURRENCY`] (each account's own limit
/// still applies to its messages).
fn in_flight(needs: &Needs<'_>, accounts: &[String]) -> usize {
    accounts
        .iter()
        .filter_map(|a| needs.store.account(a).ok())
        .map(|a| {
            a.concurrency
                .unwrap_or(pipeline::throttle::DEFAULT_CONCURRENCY) as usize
        })
        .fold(CONCURRENCY, usize::max)
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
