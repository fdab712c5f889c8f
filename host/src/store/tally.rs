//! A run's delivery counts by state, kept up to date from the delivery log
//! incrementally, so a status asked for every second (the web UI) reads
//! only what was written since the last one instead of the whole log.
//!
//! Sound because the log only grows, and each delivery activity of a run
//! has one writer at a time (its driver, or `cancel`/`retry` holding the
//! run), whose batch keys increase: once a key is seen, every key below it
//! in that activity's range is there too. Each target's latest state takes
//! a byte (targets are dense record ids), for the few runs looked at last.

use std::collections::HashMap;
use std::sync::Mutex;

use super::deliveries::{
    LOG, PER_TARGET, StateKind, decode_batch, decode_entry, prefix, split_key,
};
use super::{Result, Store};

/// Runs whose tallies are kept; the one looked at longest ago goes first.
const KEPT: usize = 8;

/// How many targets of one delivery activity are in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateCounts {
    /// Intent written, no outcome yet.
    pub intent: u64,
    /// Accepted by the provider.
    pub sent: u64,
    /// Failed.
    pub failed: u64,
    /// Not sent on purpose.
    pub excluded: u64,
    /// To be sent again.
    pub retrying: u64,
    /// Never sent: the run was cancelled.
    pub cancelled: u64,
}

impl StateCounts {
    fn slot(&mut self, kind: StateKind) -> &mut u64 {
        match kind {
            StateKind::Intent => &mut self.intent,
            StateKind::Sent => &mut self.sent,
            StateKind::Failed => &mut self.failed,
            StateKind::Excluded => &mut self.excluded,
            StateKind::Retrying => &mut self.retrying,
            StateKind::Cancelled => &mut self.cancelled,
        }
    }
}

const KINDS: [StateKind; 6] = [
    StateKind::Intent,
    StateKind::Sent,
    StateKind::Failed,
    StateKind::Excluded,
    StateKind::Retrying,
    StateKind::Cancelled,
];

/// One delivery activity's tally.
#[derive(Default)]
struct Tally {
    /// The last log key folded in.
    after: Option<Vec<u8>>,
    /// Each target's latest state: 0 none, else its index in `KINDS` + 1.
    states: Vec<u8>,
    counts: StateCounts,
}

impl Tally {
    fn set(&mut self, target: u64, kind: StateKind) {
        let i = target as usize;
        if i >= self.states.len() {
            self.states.resize(i + 1, 0);
        }
        let code = KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u8 + 1;
        let old = std::mem::replace(&mut self.states[i], code);
        if old != 0 {
            *self.counts.slot(KINDS[old as usize - 1]) -= 1;
        }
        *self.counts.slot(kind) += 1;
    }
}

/// The tallies of the runs looked at last.
#[derive(Default)]
pub struct Tallies {
    runs: Mutex<Vec<(u64, HashMap<String, Tally>)>>,
}

impl Store {
    /// How many targets of each of `activities` (deliveries of `run`) are
    /// in each state, as the log says now.
    pub fn delivery_counts(
        &self,
        run: u64,
        activities: &[&str],
    ) -> Result<HashMap<String, StateCounts>> {
        let mut runs = self.tallies.runs.lock().unwrap_or_else(|p| p.into_inner());
        let i = match runs.iter().position(|(r, _)| *r == run) {
            Some(i) => i,
            None => {
                if runs.len() >= KEPT {
                    runs.remove(0);
                }
                runs.push((run, HashMap::new()));
                runs.len() - 1
            }
        };
        // The most recently looked at last.
        let entry = runs.remove(i);
        runs.push(entry);
        let tallies = &mut runs.last_mut().expect("just pushed").1;
        let log = self.tree(LOG)?;
        let mut out = HashMap::new();
        for activity in activities {
            let prefix = prefix(run, activity);
            let tally = match tallies.get_mut(*activity) {
                Some(t) => t,
                None => {
                    // Entries of older versions, one per target, come first.
                    let mut t = Tally::default();
                    for kv in self.tree(PER_TARGET)?.scan_prefix(&prefix) {
                        let (k, v) = kv?;
                        t.set(split_key(&k).1, decode_entry(&v)?.state.kind());
                    }
                    tallies.entry(activity.to_string()).or_insert(t)
                }
            };
            let mut end = prefix.clone();
            *end.last_mut().expect("a prefix ends with NUL") = 1;
            let start = match &tally.after {
                // Just past the last key folded in.
                Some(k) => {
                    let mut s = k.clone();
                    s.push(0);
                    s
                }
                None => prefix,
            };
            for kv in log.range(start..end) {
                let (k, v) = kv?;
                for (target, s) in decode_batch(&v)? {
                    tally.set(target, s.kind());
                }
                tally.after = Some(k.to_vec());
            }
            out.insert(activity.to_string(), tally.counts);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deliveries::{Delivery, DeliveryState};

    fn entry(state: DeliveryState) -> Delivery {
        Delivery {
            channel: "email".into(),
            dimension: "recipient".into(),
            state,
            to: Some("a@example.com".into()),
            at: 1,
            attempts: 1,
            parts: 1,
            note: None,
        }
    }

    /// The tally folds what was written since it last looked, and agrees
    /// with a fold of the whole log at every step.
    #[test]
    fn counts_follow_the_log_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let whole = |store: &Store| {
            let mut c = StateCounts::default();
            if let Some(states) = store.run_delivery_states(1).unwrap().get("mail") {
                for k in states.values() {
                    *c.slot(*k) += 1;
                }
            }
            c
        };
        let counts = |store: &Store| store.delivery_counts(1, &["mail"]).unwrap()["mail"];
        assert_eq!(counts(&store), StateCounts::default());
        let intents: Vec<(u64, Delivery)> = (0..600)
            .map(|t| (t, entry(DeliveryState::Intent)))
            .collect();
        store.append_deliveries(1, "mail", &intents).unwrap();
        assert_eq!(counts(&store).intent, 600);
        let sent: Vec<(u64, Delivery)> = (0..400)
            .map(|t| (t, entry(DeliveryState::Sent { provider_id: None })))
            .collect();
        store.append_deliveries(1, "mail", &sent).unwrap();
        // Another activity and another run write between: not counted here.
        store.append_deliveries(1, "text", &intents).unwrap();
        store.append_deliveries(2, "mail", &intents).unwrap();
        let retrying = vec![(
            450,
            entry(DeliveryState::Retrying {
                reason: "429".into(),
                next_at: 2,
                cause: None,
            }),
        )];
        store.append_deliveries(1, "mail", &retrying).unwrap();
        let c = counts(&store);
        assert_eq!((c.intent, c.sent, c.retrying), (199, 400, 1));
        assert_eq!(c, whole(&store));
        // Looked at again with nothing new: the same.
        assert_eq!(counts(&store), c);
        // A fresh handle on the same data (another process) agrees.
        drop(store);
        let store = Store::for_tests(dir.path());
        assert_eq!(counts(&store), c);
        assert_eq!(
            store.delivery_counts(1, &["text"]).unwrap()["text"].intent,
            600
        );
    }

    /// A benchmark, not a test (run with `--ignored --nocapture`, release):
    /// a million messages' log, folded whole, then tallied, then tallied
    /// again after 1,000 more entries, as a page refreshing each second does.
    #[test]
    #[ignore]
    fn bench_status_of_a_million_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let n = 1_000_000u64;
        let ids: Vec<u64> = (0..n).collect();
        for round in ids.chunks(128) {
            let intents: Vec<(u64, Delivery)> = round
                .iter()
                .map(|&t| (t, entry(DeliveryState::Intent)))
                .collect();
            store.append_deliveries(1, "mail", &intents).unwrap();
            let sent = DeliveryState::Sent {
                provider_id: Some("abc".into()),
            };
            let sent: Vec<(u64, Delivery)> =
                round.iter().map(|&t| (t, entry(sent.clone()))).collect();
            store.append_deliveries(1, "mail", &sent).unwrap();
        }
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let s = store.run_delivery_states(1).unwrap();
            eprintln!(
                "whole fold: {} targets in {:?}",
                s["mail"].len(),
                t.elapsed()
            );
        }
        let t = std::time::Instant::now();
        let c = store.delivery_counts(1, &["mail"]).unwrap()["mail"];
        eprintln!("tally, first: {} sent in {:?}", c.sent, t.elapsed());
        for round in 0..3 {
            let more: Vec<(u64, Delivery)> = (n + round * 1000..n + (round + 1) * 1000)
                .map(|t| (t, entry(DeliveryState::Intent)))
                .collect();
            store.append_deliveries(1, "mail", &more).unwrap();
            let t = std::time::Instant::now();
            let c = store.delivery_counts(1, &["mail"]).unwrap()["mail"];
            eprintln!(
                "tally, 1,000 entries later: {} in flight in {:?}",
                c.intent,
                t.elapsed()
            );
        }
    }
}
