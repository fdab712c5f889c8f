//! The delivery log: one entry per (run, activity, target id).
//!
//! The intent is written (and flushed) before a message is sent and the
//! outcome after, so after a crash the log tells which messages may have been
//! in flight (intent without outcome): those, and only those, are sent again.

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, json_decode};

/// Where one message is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
    },
}

impl DeliveryState {
    /// True once the outcome is known for good (sent, failed, excluded).
    pub fn is_final(&self) -> bool {
        !matches!(self, DeliveryState::Intent | DeliveryState::Retrying { .. })
    }
}

/// One entry of the delivery log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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

/// First byte of an entry in the binary form; entries written as JSON by
/// earlier versions start with `{` and are still read.
const BINARY: u8 = 1;

/// An entry as stored (postcard after [`BINARY`]): a third of the JSON's
/// bytes, and no text encoding on the hot path of every send.
#[derive(Serialize)]
struct Stored<'a> {
    channel: &'a str,
    dimension: &'a str,
    state: StoredState<'a>,
    to: Option<&'a str>,
    at: i64,
    attempts: u32,
    parts: u32,
    note: Option<&'a str>,
}

/// [`DeliveryState`] as stored; variants keep their positions for ever.
#[derive(Serialize)]
enum StoredState<'a> {
    Intent,
    Sent(Option<&'a str>),
    Failed(&'a str, bool),
    Excluded(&'a str),
    Retrying(&'a str, i64),
}

/// [`Stored`], read back.
#[derive(Deserialize)]
struct Loaded {
    channel: String,
    dimension: String,
    state: LoadedState,
    to: Option<String>,
    at: i64,
    attempts: u32,
    parts: u32,
    note: Option<String>,
}

/// [`StoredState`], read back.
#[derive(Deserialize)]
enum LoadedState {
    Intent,
    Sent(Option<String>),
    Failed(String, bool),
    Excluded(String),
    Retrying(String, i64),
}

/// An entry in its stored form.
fn encode_entry(d: &Delivery) -> Vec<u8> {
    let state = match &d.state {
        DeliveryState::Intent => StoredState::Intent,
        DeliveryState::Sent { provider_id } => StoredState::Sent(provider_id.as_deref()),
        DeliveryState::Failed { reason, permanent } => StoredState::Failed(reason, *permanent),
        DeliveryState::Excluded { reason } => StoredState::Excluded(reason),
        DeliveryState::Retrying { reason, next_at } => StoredState::Retrying(reason, *next_at),
    };
    let stored = Stored {
        channel: &d.channel,
        dimension: &d.dimension,
        state,
        to: d.to.as_deref(),
        at: d.at,
        attempts: d.attempts,
        parts: d.parts,
        note: d.note.as_deref(),
    };
    // Our own plain types: serialising cannot fail.
    postcard::to_extend(&stored, vec![BINARY]).expect("encodable entry")
}

/// An entry from its stored form, binary or (older) JSON.
fn decode_entry(bytes: &[u8]) -> Result<Delivery> {
    let Some((&BINARY, rest)) = bytes.split_first() else {
        return json_decode("deliveries", bytes);
    };
    let l: Loaded = postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
        tree: "deliveries",
        message: e.to_string(),
    })?;
    let state = match l.state {
        LoadedState::Intent => DeliveryState::Intent,
        LoadedState::Sent(provider_id) => DeliveryState::Sent { provider_id },
        LoadedState::Failed(reason, permanent) => DeliveryState::Failed { reason, permanent },
        LoadedState::Excluded(reason) => DeliveryState::Excluded { reason },
        LoadedState::Retrying(reason, next_at) => DeliveryState::Retrying { reason, next_at },
    };
    Ok(Delivery {
        channel: l.channel,
        dimension: l.dimension,
        state,
        to: l.to,
        at: l.at,
        attempts: l.attempts,
        parts: l.parts,
        note: l.note,
    })
}

fn key(run: u64, activity: &str, target: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + activity.len());
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(activity.as_bytes());
    k.push(0);
    k.extend_from_slice(&target.to_be_bytes());
    k
}

impl Store {
    /// The log entries of `targets` (in order) for one delivery activity.
    pub fn deliveries(
        &self,
        run: u64,
        activity: &str,
        targets: &[u64],
    ) -> Result<Vec<Option<Delivery>>> {
        let tree = self.tree("deliveries")?;
        targets
            .iter()
            .map(|t| {
                tree.get(key(run, activity, *t))?
                    .map(|v| decode_entry(&v))
                    .transpose()
            })
            .collect()
    }

    /// Writes log entries in one atomic batch and flushes: an intent must be
    /// on disk before its message leaves.
    pub fn record_deliveries(
        &self,
        run: u64,
        activity: &str,
        entries: &[(u64, Delivery)],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (target, d) in entries {
            batch.insert(key(run, activity, *target), encode_entry(d));
        }
        self.tree("deliveries")?.apply_batch(batch)?;
        self.flush()
    }

    /// Every entry of a run: (activity, target id, entry).
    pub fn run_deliveries(&self, run: u64) -> Result<Vec<(String, u64, Delivery)>> {
        let mut out = Vec::new();
        for kv in self.tree("deliveries")?.scan_prefix(run.to_be_bytes()) {
            let (k, v) = kv?;
            let rest = &k[8..];
            let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let activity = String::from_utf8_lossy(&rest[..nul]).into_owned();
            let target = u64::from_be_bytes(rest[nul + 1..].try_into().unwrap_or([0; 8]));
            out.push((activity, target, decode_entry(&v)?));
        }
        Ok(out)
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

    #[test]
    fn every_state_round_trips_and_json_entries_still_read() {
        let states = [
            DeliveryState::Intent,
            DeliveryState::Sent { provider_id: None },
            DeliveryState::Sent {
                provider_id: Some("SM123".into()),
            },
            DeliveryState::Failed {
                reason: "21211 invalid".into(),
                permanent: true,
            },
            DeliveryState::Excluded {
                reason: "on the sms denylist".into(),
            },
            DeliveryState::Retrying {
                reason: "429".into(),
                next_at: 1_767_603_900_000,
            },
        ];
        for state in states {
            let d = entry(state);
            let bytes = encode_entry(&d);
            assert_eq!(bytes[0], BINARY);
            assert_eq!(decode_entry(&bytes).unwrap(), d);
            let json = serde_json::to_vec(&d).unwrap();
            assert!(
                bytes.len() * 2 < json.len(),
                "{} vs {}",
                bytes.len(),
                json.len()
            );
            assert_eq!(decode_entry(&json).unwrap(), d, "an entry written as JSON");
        }
        let mut none = entry(DeliveryState::Intent);
        none.to = None;
        none.note = None;
        assert_eq!(decode_entry(&encode_entry(&none)).unwrap(), none);
        assert!(decode_entry(&[BINARY, 0xff]).is_err());
    }
}
