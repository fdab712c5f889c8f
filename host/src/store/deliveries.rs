//! The delivery log: one entry per (run, activity, target id).
//!
//! The intent is written (and flushed) before a message is sent and the
//! outcome after, so after a crash the log tells which messages may have been
//! in flight (intent without outcome): those, and only those, are sent again.

use serde::{Deserialize, Serialize};

use super::{Result, Store, json_decode, json_encode};

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
                    .map(|v| json_decode("deliveries", &v))
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
            batch.insert(key(run, activity, *target), json_encode(d));
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
            out.push((activity, target, json_decode("deliveries", &v)?));
        }
        Ok(out)
    }
}
