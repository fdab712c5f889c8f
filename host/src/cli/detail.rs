//! One activity of a run in detail, as the web UI shows it: its status and
//! why messages were excluded or failed, counted by reason.

use std::collections::HashMap;

use super::status::{ActivityStatus, run_status};
use crate::store::Store;
use crate::store::deliveries::DeliveryState;

/// Most reasons listed; the rest are counted under `(others)`.
const REASONS: usize = 10;

/// Distinct reasons counted before the rest go to `(others)`: a reason
/// that names each recipient must not grow without bound.
const DISTINCT: usize = 10_000;

/// How many messages had one reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReasonCount {
    /// The reason, as the delivery log gives it.
    pub reason: String,
    /// Messages with it.
    pub count: u64,
}

/// One activity of a run: its status, and its delivery log summed by
/// reason.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ActivityDetail {
    /// The activity's id.
    pub activity: String,
    /// Its status, as in the run's.
    pub status: ActivityStatus,
    /// Deliveries: messages not sent on purpose, by reason, most first.
    pub exclusions: Vec<ReasonCount>,
    /// Deliveries: messages that failed (or are retrying), by reason, most
    /// first.
    pub failures: Vec<ReasonCount>,
    /// Deliveries: a message built now for one of its recipients, as it
    /// would leave (nothing is sent or logged); none when no recipient of
    /// the first batch would get one.
    #[schema(value_type = Option<Object>)]
    pub sample: Option<serde_json::Value>,
}

/// `activity` of `run` in detail, without its sample message.
pub fn activity_detail(store: &Store, run: u64, activity: &str) -> anyhow::Result<ActivityDetail> {
    let (_, activities) = run_status(store, run)?;
    let Some((_, status)) = activities.into_iter().find(|(id, _)| id == activity) else {
        return Err(crate::executor::Refused::NoActivity(
            crate::store::runs::run_label(run),
            activity.to_string(),
        )
        .into());
    };
    let (mut exclusions, mut failures) = (Tally::default(), Tally::default());
    if status.deliveries.is_some() {
        for (a, _, d) in store.run_deliveries(run)? {
            if a != activity {
                continue;
            }
            match d.state {
                DeliveryState::Excluded { reason } => exclusions.add(reason),
                DeliveryState::Failed { reason, .. } | DeliveryState::Retrying { reason, .. } => {
                    failures.add(reason)
                }
                _ => {}
            }
        }
    }
    Ok(ActivityDetail {
        activity: activity.to_string(),
        status,
        exclusions: exclusions.top(),
        failures: failures.top(),
        sample: None,
    })
}

/// Counts by reason, bounded.
#[derive(Default)]
struct Tally {
    counts: HashMap<String, u64>,
    others: u64,
}

impl Tally {
    fn add(&mut self, reason: String) {
        if self.counts.len() < DISTINCT || self.counts.contains_key(&reason) {
            *self.counts.entry(reason).or_default() += 1;
        } else {
            self.others += 1;
        }
    }

    /// The [`REASONS`] most frequent (ties by reason), then the rest summed.
    fn top(self) -> Vec<ReasonCount> {
        let mut all: Vec<ReasonCount> = self
            .counts
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        let rest: u64 = all.iter().skip(REASONS).map(|r| r.count).sum::<u64>() + self.others;
        all.truncate(REASONS);
        if rest > 0 {
            all.push(ReasonCount {
                reason: "(others)".into(),
                count: rest,
            });
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_frequent_reasons_come_first_and_the_rest_are_summed() {
        let mut t = Tally::default();
        for i in 0..12u64 {
            for _ in 0..=i {
                t.add(format!("reason {i:02}"));
            }
        }
        let top = t.top();
        assert_eq!(top.len(), REASONS + 1);
        assert_eq!(
            top[0],
            ReasonCount {
                reason: "reason 11".into(),
                count: 12
            }
        );
        // reasons 00 and 01 (1 + 2 messages) did not make the list.
        assert_eq!(
            top[REASONS],
            ReasonCount {
                reason: "(others)".into(),
                count: 3
            }
        );
    }
}
