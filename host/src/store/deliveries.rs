//! The delivery log: entries per (run, activity, target id), the latest
//! one standing.
//!
//! The intent is written (and flushed) before a message is sent and the
//! outcome after, so after a crash the log tells which messages may have been
//! in flight (intent without outcome): those, and only those, are sent again.
//!
//! Entries are appended in batches, one sled key per batch of up to 256
//! (`run, activity, NUL, sequence`), because a tree insert per entry, twice
//! per message, was the largest cost of a send after the network. Readers
//! fold the batches in order; entries of older versions, one key per target
//! in the `deliveries` tree, are read first and superseded.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, json_decode};

/// Where one message is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// About to be sent (or in flight when the process died).
    Intent,
    /// Accepted by the provider.
    Sent {
        /// The provider's message id, if it gave one.
        provider_id: Option<String>,
    },
    /// Failed; `permanent` for a hard failure.
    Failed {
        /// The provider's reason.
        reason: String,
        /// Hard (true) or transient (false).
        permanent: bool,
        /// Why, by kind (none in entries of earlier versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<Cause>,
    },
    /// Not sent on purpose.
    Excluded {
        /// Why.
        reason: String,
    },
    /// Failed for now; sent again at `next_at` (a persisted timer wakes the
    /// delivery), unless the validity period ends first.
    Retrying {
        /// The provider's reason for the last failure.
        reason: String,
        /// When to try again, on the run's clock (ms).
        next_at: i64,
        /// Why the last attempt failed, by kind (none in entries of earlier
        /// versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<Cause>,
    },
    /// Never sent: the operator cancelled the run first.
    Cancelled,
}

/// Why a message failed, by kind: the host's own refusals and network
/// failures apart from the provider's verdicts, so an operator (and a retry)
/// can tell them apart without reading the text. Stored by position: new
/// kinds go at the end.
#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    Hash,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The host's policy refused it: egress to an internal address, an
    /// account not granted to the plugin.
    Policy,
    /// The operator's account cannot be used as set: an unusable URL, a
    /// missing secret or parameter.
    Account,
    /// The account's credential could not be made or was refused (a token
    /// endpoint's answer, a key that does not sign).
    Credentials,
    /// The provider's TLS certificate is not trusted.
    Certificate,
    /// No connection to the provider.
    Connect,
    /// The provider did not answer in time.
    Timeout,
    /// The exchange broke: the connection closed mid-answer, an answer that
    /// is not the protocol.
    Protocol,
    /// The provider's answer, as the channel read it.
    Provider,
    /// The plugin built a message the host will not send (a recipient that
    /// is not the record's address, a bad header).
    Plugin,
}

impl Cause {
    /// Its name, as filters and JSON write it.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Policy => "policy",
            Cause::Account => "account",
            Cause::Credentials => "credentials",
            Cause::Certificate => "certificate",
            Cause::Connect => "connect",
            Cause::Timeout => "timeout",
            Cause::Protocol => "protocol",
            Cause::Provider => "provider",
            Cause::Plugin => "plugin",
        }
    }

    /// True for what the host decided or met on the way, rather than the
    /// provider's word on the message.
    pub fn host_side(self) -> bool {
        self != Cause::Provider
    }

    /// True when the message never reached the provider: refused by the
    /// host, or no connection. An operator's retry sends these again;
    /// a timeout or a broken exchange may have been delivered, so they
    /// are not.
    pub fn never_reached(self) -> bool {
        matches!(
            self,
            Cause::Policy
                | Cause::Account
                | Cause::Credentials
                | Cause::Certificate
                | Cause::Connect
                | Cause::Plugin
        )
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl DeliveryState {
    /// True once the outcome is known for good (sent, failed, excluded).
    pub fn is_final(&self) -> bool {
        !matches!(self, DeliveryState::Intent | DeliveryState::Retrying { .. })
    }
}

/// Where a message stands, without the details: what a run's status counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// [`DeliveryState::Intent`].
    Intent,
    /// [`DeliveryState::Sent`].
    Sent,
    /// [`DeliveryState::Failed`].
    Failed,
    /// [`DeliveryState::Excluded`].
    Excluded,
    /// [`DeliveryState::Retrying`].
    Retrying,
    /// [`DeliveryState::Cancelled`].
    Cancelled,
}

impl DeliveryState {
    /// The state without its details.
    pub fn kind(&self) -> StateKind {
        match self {
            DeliveryState::Intent => StateKind::Intent,
            DeliveryState::Sent { .. } => StateKind::Sent,
            DeliveryState::Failed { .. } => StateKind::Failed,
            DeliveryState::Excluded { .. } => StateKind::Excluded,
            DeliveryState::Retrying { .. } => StateKind::Retrying,
            DeliveryState::Cancelled => StateKind::Cancelled,
        }
    }
}

/// One entry of the delivery log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Delivery {
    /// The channel plugin.
    pub channel: String,
    /// Dimension of the target id.
    pub dimension: String,
    /// Where it is.
    #[serde(flatten)]
    pub state: DeliveryState,
    /// Address the message went to (email, number, device token...).
    pub to: Option<String>,
    /// Last change, on the run's clock (ms).
    pub at: i64,
    /// Send attempts so far.
    pub attempts: u32,
    /// Billable parts of the message (SMS segments), 0 when not built.
    #[serde(default)]
    pub parts: u32,
    /// The channel's note on the message (`GSM-7, 2 segments`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// First byte of a per-target entry in the binary form (written briefly
/// before the log went per batch); entries written as JSON by earlier
/// versions start with `{`. Both are still read.
const BINARY: u8 = 1;

/// First byte of a batch of entries in the log.
const BATCH: u8 = 2;

/// Most entries under one log key: values stay small for sled.
const ENTRIES_PER_KEY: usize = 256;

/// The tree of per-target entries (older versions): read, never written.
pub(super) const PER_TARGET: &str = "deliveries";

/// The log: batches of entries in the order they were recorded.
pub(super) const LOG: &str = "delivery_log";

/// An entry as stored (postcard): a third of the JSON's bytes, and no text
/// encoding on the hot path of every send; read back without copying.
#[derive(Serialize, Deserialize)]
pub(super) struct Stored<'a> {
    channel: &'a str,
    dimension: &'a str,
    #[serde(borrow)]
    state: StoredState<'a>,
    #[serde(borrow)]
    to: Option<&'a str>,
    at: i64,
    attempts: u32,
    parts: u32,
    #[serde(borrow)]
    note: Option<&'a str>,
}

/// [`DeliveryState`] as stored; variants keep their positions for ever.
/// `Failed` and `Retrying` are entries of versions that kept no cause.
#[derive(Serialize, Deserialize)]
enum StoredState<'a> {
    Intent,
    Sent(#[serde(borrow)] Option<&'a str>),
    Failed(&'a str, bool),
    Excluded(&'a str),
    Retrying(&'a str, i64),
    FailedFor(&'a str, bool, Cause),
    RetryingFor(&'a str, i64, Cause),
    Cancelled,
}

impl<'a> Stored<'a> {
    fn of(d: &'a Delivery) -> Stored<'a> {
        let state = match &d.state {
            DeliveryState::Intent => StoredState::Intent,
            DeliveryState::Sent { provider_id } => StoredState::Sent(provider_id.as_deref()),
            DeliveryState::Failed {
                reason,
                permanent,
                cause: None,
            } => StoredState::Failed(reason, *permanent),
            DeliveryState::Failed {
                reason,
                permanent,
                cause: Some(cause),
            } => StoredState::FailedFor(reason, *permanent, *cause),
            DeliveryState::Excluded { reason } => StoredState::Excluded(reason),
            DeliveryState::Retrying {
                reason,
                next_at,
                cause: None,
            } => StoredState::Retrying(reason, *next_at),
            DeliveryState::Retrying {
                reason,
                next_at,
                cause: Some(cause),
            } => StoredState::RetryingFor(reason, *next_at, *cause),
            DeliveryState::Cancelled => StoredState::Cancelled,
        };
        Stored {
            channel: &d.channel,
            dimension: &d.dimension,
            state,
            to: d.to.as_deref(),
            at: d.at,
            attempts: d.attempts,
            parts: d.parts,
            note: d.note.as_deref(),
        }
    }

    pub(super) fn kind(&self) -> StateKind {
        match self.state {
            StoredState::Intent => StateKind::Intent,
            StoredState::Sent(_) => StateKind::Sent,
            StoredState::Failed(..) | StoredState::FailedFor(..) => StateKind::Failed,
            StoredState::Excluded(_) => StateKind::Excluded,
            StoredState::Retrying(..) | StoredState::RetryingFor(..) => StateKind::Retrying,
            StoredState::Cancelled => StateKind::Cancelled,
        }
    }

    fn to_delivery(&self) -> Delivery {
        let state = match self.state {
            StoredState::Intent => DeliveryState::Intent,
            StoredState::Sent(id) => DeliveryState::Sent {
                provider_id: id.map(str::to_string),
            },
            StoredState::Failed(reason, permanent) => DeliveryState::Failed {
                reason: reason.to_string(),
                permanent,
                cause: None,
            },
            StoredState::FailedFor(reason, permanent, cause) => DeliveryState::Failed {
                reason: reason.to_string(),
                permanent,
                cause: Some(cause),
            },
            StoredState::Excluded(reason) => DeliveryState::Excluded {
                reason: reason.to_string(),
            },
            StoredState::Retrying(reason, next_at) => DeliveryState::Retrying {
                reason: reason.to_string(),
                next_at,
                cause: None,
            },
            StoredState::Cancelled => DeliveryState::Cancelled,
            StoredState::RetryingFor(reason, next_at, cause) => DeliveryState::Retrying {
                reason: reason.to_string(),
                next_at,
                cause: Some(cause),
            },
        };
        Delivery {
            channel: self.channel.to_string(),
            dimension: self.dimension.to_string(),
            state,
            to: self.to.map(str::to_string),
            at: self.at,
            attempts: self.attempts,
            parts: self.parts,
            note: self.note.map(str::to_string),
        }
    }

    /// What resuming the delivery needs of it.
    fn progress(&self) -> Progress {
        Progress {
            attempts: self.attempts,
            done: !matches!(
                self.state,
                StoredState::Intent | StoredState::Retrying(..) | StoredState::RetryingFor(..)
            ),
            next_at: match self.state {
                StoredState::Retrying(_, at) | StoredState::RetryingFor(_, at, _) => Some(at),
                _ => None,
            },
        }
    }
}

/// How a delivery activity's messages ended (the latest entry of each).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdicts {
    /// Accepted by the provider.
    pub sent: u64,
    /// Failed without reaching the provider ([`Cause::never_reached`]).
    pub unreached: u64,
    /// Failed otherwise (the provider's verdict, a timeout...).
    pub failed: u64,
    /// The first unreached failure's cause and reason.
    pub first_unreached: Option<(Cause, String)>,
}

/// Where a target stands, as far as sending again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Send attempts so far.
    pub attempts: u32,
    /// The outcome is final (sent, failed, excluded).
    pub done: bool,
    /// When a retrying message is due.
    pub next_at: Option<i64>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: "deliveries",
        message: e.to_string(),
    }
}

/// A batch of entries in its stored form.
fn encode_batch(entries: &[(u64, Delivery)]) -> Vec<u8> {
    let stored: Vec<(u64, Stored<'_>)> = entries.iter().map(|(t, d)| (*t, Stored::of(d))).collect();
    // Our own plain types: serialising cannot fail.
    postcard::to_extend(&stored, vec![BATCH]).expect("encodable entries")
}

/// A batch of entries from its stored form, borrowing from `bytes`.
pub(super) fn decode_batch(bytes: &[u8]) -> Result<Vec<(u64, Stored<'_>)>> {
    match bytes.split_first() {
        Some((&BATCH, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        _ => Err(corrupt("not a batch of delivery entries")),
    }
}

/// A per-target entry (older versions), binary or JSON.
pub(super) fn decode_entry(bytes: &[u8]) -> Result<Delivery> {
    match bytes.split_first() {
        Some((&BINARY, rest)) => Ok(postcard::from_bytes::<Stored<'_>>(rest)
            .map_err(corrupt)?
            .to_delivery()),
        _ => json_decode("deliveries", bytes),
    }
}

/// `run`, then the activity and a NUL: the prefix of one delivery's keys.
pub(super) fn prefix(run: u64, activity: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + activity.len());
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(activity.as_bytes());
    k.push(0);
    k
}

/// A key's activity and trailing number (target id, or batch sequence).
pub(super) fn split_key(k: &[u8]) -> (&[u8], u64) {
    let rest = &k[8.min(k.len())..];
    let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let n = rest
        .get(nul + 1..)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    (&rest[..nul], n)
}

impl Store {
    /// Where each target of one delivery activity stands, by target id:
    /// read once when the delivery executes.
    pub fn delivery_progress(
        &self,
        run: u64,
        activity: &str,
    ) -> Result<std::collections::HashMap<u64, Progress>> {
        let mut out = std::collections::HashMap::new();
        let prefix = prefix(run, activity);
        for kv in self.tree(PER_TARGET)?.scan_prefix(&prefix) {
            let (k, v) = kv?;
            out.insert(split_key(&k).1, Stored::of(&decode_entry(&v)?).progress());
        }
        // Batches in the order recorded: a later entry supersedes.
        for kv in self.tree(LOG)?.scan_prefix(&prefix) {
            let (_, v) = kv?;
            for (target, s) in decode_batch(&v)? {
                out.insert(target, s.progress());
            }
        }
        Ok(out)
    }

    /// Writes log entries and flushes: an intent must be on disk before its
    /// message leaves.
    pub fn record_deliveries(
        &self,
        run: u64,
        activity: &str,
        entries: &[(u64, Delivery)],
    ) -> Result<()> {
        self.append_deliveries(run, activity, entries)?;
        self.flush()
    }

    /// Writes log entries, not flushed: the caller flushes once for several
    /// (group commit) before it relies on them. A few keys hold many
    /// entries: two tree inserts per message cost more than the rest of the
    /// log.
    ///
    /// Plain inserts, not one `apply_batch`: each key's entries stand on
    /// their own (the latest per target wins), so a crash that keeps only
    /// the first keys loses nothing the caller relied on, while a sled batch
    /// writes the log buffer out twice more (its manifest is sealed into a
    /// buffer of its own), a disk write and a wait per call.
    pub fn append_deliveries(
        &self,
        run: u64,
        activity: &str,
        entries: &[(u64, Delivery)],
    ) -> Result<()> {
        let prefix = prefix(run, activity);
        let tree = self.tree(LOG)?;
        for chunk in entries.chunks(ENTRIES_PER_KEY) {
            let mut key = prefix.clone();
            // Monotonic across restarts: batches read back in order.
            key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
            tree.insert(key, encode_batch(chunk))?;
        }
        Ok(())
    }

    /// How a delivery activity's messages ended, as far as telling its
    /// failure apart from its messages' goes.
    pub fn verdicts(&self, run: u64, activity: &str) -> Result<Verdicts> {
        let mut latest: HashMap<u64, Delivery> = HashMap::new();
        self.latest_of(run, activity, &mut latest)?;
        let mut v = Verdicts::default();
        for d in latest.values() {
            match &d.state {
                DeliveryState::Sent { .. } => v.sent += 1,
                DeliveryState::Failed {
                    reason,
                    cause: Some(cause),
                    ..
                } if cause.never_reached() => {
                    v.unreached += 1;
                    v.first_unreached
                        .get_or_insert_with(|| (*cause, reason.clone()));
                }
                DeliveryState::Failed { .. } => v.failed += 1,
                _ => {}
            }
        }
        Ok(v)
    }

    /// The latest entry of each target of a delivery activity.
    fn latest_of(
        &self,
        run: u64,
        activity: &str,
        latest: &mut HashMap<u64, Delivery>,
    ) -> Result<()> {
        let prefix = prefix(run, activity);
        for kv in self.tree(PER_TARGET)?.scan_prefix(&prefix) {
            let (k, v) = kv?;
            latest.insert(split_key(&k).1, decode_entry(&v)?);
        }
        for kv in self.tree(LOG)?.scan_prefix(&prefix) {
            let (_, v) = kv?;
            for (target, s) in decode_batch(&v)? {
                latest.insert(target, s.to_delivery());
            }
        }
        Ok(())
    }

    /// Makes the messages of a delivery activity that failed without
    /// reaching the provider (see [`Cause::never_reached`]) due again at
    /// `now`, for an operator's retry; returns how many.
    pub fn requeue_unreached(&self, run: u64, activity: &str, now: i64) -> Result<usize> {
        let mut latest: HashMap<u64, Delivery> = HashMap::new();
        self.latest_of(run, activity, &mut latest)?;
        let mut again: Vec<(u64, Delivery)> = latest
            .into_iter()
            .filter_map(|(target, mut d)| {
                let DeliveryState::Failed {
                    reason,
                    cause: Some(cause),
                    ..
                } = &d.state
                else {
                    return None;
                };
                if !cause.never_reached() {
                    return None;
                }
                d.state = DeliveryState::Retrying {
                    reason: format!("sent again on the operator's retry (was: {reason})"),
                    next_at: now,
                    cause: Some(*cause),
                };
                d.at = now;
                Some((target, d))
            })
            .collect();
        again.sort_by_key(|(t, _)| *t);
        self.record_deliveries(run, activity, &again)?;
        Ok(again.len())
    }

    /// Where each target of a run stands, by activity: the latest entry's
    /// state, as [`Store::run_deliveries`] gives it, without reading every
    /// entry out in full (a run's status counts them; 100k entries cost a
    /// few hundred milliseconds read out).
    pub fn run_delivery_states(
        &self,
        run: u64,
    ) -> Result<HashMap<String, HashMap<u64, StateKind>>> {
        let mut by_activity: HashMap<Vec<u8>, HashMap<u64, StateKind>> = HashMap::new();
        for kv in self.tree(PER_TARGET)?.scan_prefix(run.to_be_bytes()) {
            let (k, v) = kv?;
            let (activity, target) = split_key(&k);
            by_activity
                .entry(activity.to_vec())
                .or_default()
                .insert(target, decode_entry(&v)?.state.kind());
        }
        for kv in self.tree(LOG)?.scan_prefix(run.to_be_bytes()) {
            let (k, v) = kv?;
            // One key per batch of up to 256 entries: one lookup for all.
            let states = by_activity.entry(split_key(&k).0.to_vec()).or_default();
            for (target, s) in decode_batch(&v)? {
                states.insert(target, s.kind());
            }
        }
        Ok(by_activity
            .into_iter()
            .map(|(a, s)| (String::from_utf8_lossy(&a).into_owned(), s))
            .collect())
    }

    /// Every entry of a run, the latest per target: (activity, target id,
    /// entry), by activity then target.
    pub fn run_deliveries(&self, run: u64) -> Result<Vec<(String, u64, Delivery)>> {
        let mut latest: std::collections::BTreeMap<(Vec<u8>, u64), Delivery> = Default::default();
        for kv in self.tree(PER_TARGET)?.scan_prefix(run.to_be_bytes()) {
            let (k, v) = kv?;
            let (activity, target) = split_key(&k);
            latest.insert((activity.to_vec(), target), decode_entry(&v)?);
        }
        for kv in self.tree(LOG)?.scan_prefix(run.to_be_bytes()) {
            let (k, v) = kv?;
            let (activity, _) = split_key(&k);
            for (target, s) in decode_batch(&v)? {
                latest.insert((activity.to_vec(), target), s.to_delivery());
            }
        }
        Ok(latest
            .into_iter()
            .map(|((a, t), d)| (String::from_utf8_lossy(&a).into_owned(), t, d))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: DeliveryState) -> Delivery {
        Delivery {
            channel: "sms".into(),
            dimension: "recipient".into(),
            state,
            to: Some("+15550001111".into()),
            at: 1_767_603_600_000,
            attempts: 2,
            parts: 3,
            note: Some("GSM-7, 3 segments".into()),
        }
    }

    fn states() -> Vec<DeliveryState> {
        vec![
            DeliveryState::Intent,
            DeliveryState::Sent { provider_id: None },
            DeliveryState::Sent {
                provider_id: Some("SM123".into()),
            },
            DeliveryState::Failed {
                reason: "21211 invalid".into(),
                permanent: true,
                cause: None,
            },
            DeliveryState::Failed {
                reason: "21211 invalid".into(),
                permanent: true,
                cause: Some(Cause::Provider),
            },
            DeliveryState::Excluded {
                reason: "on the sms denylist".into(),
            },
            DeliveryState::Cancelled,
            DeliveryState::Retrying {
                reason: "429".into(),
                next_at: 1_767_603_900_000,
                cause: None,
            },
            DeliveryState::Retrying {
                reason: "no answer".into(),
                next_at: 1_767_603_900_000,
                cause: Some(Cause::Timeout),
            },
        ]
    }

    #[test]
    fn batches_round_trip_and_older_entries_still_read() {
        let mut entries: Vec<(u64, Delivery)> = states()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u64, entry(s)))
            .collect();
        let mut bare = entry(DeliveryState::Intent);
        bare.to = None;
        bare.note = None;
        entries.push((99, bare));
        let bytes = encode_batch(&entries);
        let back: Vec<(u64, Delivery)> = decode_batch(&bytes)
            .unwrap()
            .into_iter()
            .map(|(t, s)| (t, s.to_delivery()))
            .collect();
        assert_eq!(back, entries);
        let json: usize = entries
            .iter()
            .map(|(_, d)| serde_json::to_vec(d).unwrap().len())
            .sum();
        assert!(bytes.len() * 2 < json, "{} vs {json} bytes", bytes.len());
        assert!(decode_batch(&[BATCH, 0xff]).is_err());
        for (_, d) in &entries {
            // Per-target entries of older versions: binary, and JSON.
            let binary = postcard::to_extend(&Stored::of(d), vec![BINARY]).unwrap();
            assert_eq!(&decode_entry(&binary).unwrap(), d);
            assert_eq!(&decode_entry(&serde_json::to_vec(d).unwrap()).unwrap(), d);
        }
    }

    #[test]
    fn the_latest_entry_per_target_wins_across_batches_and_older_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        // An entry from an older version, per target, as JSON.
        let old = entry(DeliveryState::Retrying {
            reason: "451".into(),
            next_at: 5,
            cause: None,
        });
        let mut k = prefix(1, "mail");
        k.extend_from_slice(&7u64.to_be_bytes());
        store
            .tree(PER_TARGET)
            .unwrap()
            .insert(k, serde_json::to_vec(&old).unwrap())
            .unwrap();
        // Intents for 600 targets (three keys), then outcomes for some.
        let intents: Vec<(u64, Delivery)> = (0..600)
            .map(|t| (t, entry(DeliveryState::Intent)))
            .collect();
        store.record_deliveries(1, "mail", &intents).unwrap();
        let sent = |t: u64| {
            let mut d = entry(DeliveryState::Sent {
                provider_id: Some(format!("id{t}")),
            });
            d.attempts = 3;
            (t, d)
        };
        store
            .record_deliveries(1, "mail", &[sent(3), sent(599)])
            .unwrap();
        store.record_deliveries(1, "text", &[sent(3)]).unwrap();
        store.record_deliveries(2, "mail", &[sent(4)]).unwrap();

        let progress = store.delivery_progress(1, "mail").unwrap();
        assert_eq!(progress.len(), 600);
        let p = |t: u64| progress[&t];
        assert_eq!(
            p(3),
            Progress {
                attempts: 3,
                done: true,
                next_at: None
            }
        );
        assert_eq!(
            p(0),
            Progress {
                attempts: 2,
                done: false,
                next_at: None
            }
        );
        // The older entry for target 7 is superseded by the newer intent.
        assert_eq!(p(7).next_at, None);
        assert!(
            !store
                .delivery_progress(1, "other")
                .unwrap()
                .contains_key(&3)
        );

        let all = store.run_deliveries(1).unwrap();
        assert_eq!(all.len(), 601);
        let order: Vec<(&str, u64)> = all.iter().map(|(a, t, _)| (a.as_str(), *t)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "by activity, then target");
        let find = |a: &str, t: u64| &all.iter().find(|e| e.0 == a && e.1 == t).unwrap().2;
        assert_eq!(find("mail", 599), &sent(599).1);
        assert_eq!(find("mail", 1).state, DeliveryState::Intent);
        assert_eq!(find("text", 3), &sent(3).1);
        assert_eq!(store.run_deliveries(2).unwrap().len(), 1);

        // The states alone agree with the full entries, target by target.
        let states = store.run_delivery_states(1).unwrap();
        assert_eq!(states.values().map(HashMap::len).sum::<usize>(), 601);
        for (a, t, d) in &all {
            assert_eq!(states[a][t], d.state.kind(), "{a} {t}");
        }
        assert_eq!(states["mail"][&7], StateKind::Intent, "superseded");
        assert_eq!(states["mail"][&599], StateKind::Sent);
        assert!(store.run_delivery_states(3).unwrap().is_empty());
    }
}
