//! `crosscast deliveries RUN`: the delivery log, filtered.

use std::io::Write as _;

use super::io::{Io, out};
use clap::{Args, ValueEnum};

use crate::clock::format_ms;
use crate::store::Store;
use crate::store::deliveries::{Cause, Delivery, DeliveryState};

/// Which entries to list.
#[derive(Args, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    /// Only this delivery activity.
    #[arg(long)]
    pub activity: Option<String>,
    /// Only entries in these states (repeatable).
    #[arg(long, value_enum)]
    pub state: Vec<State>,
    /// Only messages to this address (email, number, device token).
    #[arg(long)]
    pub to: Option<String>,
    /// Only the record with this external id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only entries whose reason contains this text.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only failures (and retries) of these causes (repeatable): the host's
    /// (policy, account, credentials, certificate, connect, timeout,
    /// protocol, plugin) or the provider's verdict (provider).
    #[arg(long, value_enum)]
    pub cause: Vec<Cause>,
    /// At most this many entries.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// A delivery state, as filters name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Intent written, outcome not (in flight when a process died).
    InFlight,
    /// Accepted by the provider.
    Sent,
    /// Failed for good (hard or after the validity period).
    Failed,
    /// Not sent on purpose (no address, quarantine, denylist...).
    Excluded,
    /// Waiting for another attempt.
    Retrying,
    /// Never sent: the run was cancelled.
    Cancelled,
}

fn state_of(d: &DeliveryState) -> State {
    match d {
        DeliveryState::Intent => State::InFlight,
        DeliveryState::Sent { .. } => State::Sent,
        DeliveryState::Failed { .. } => State::Failed,
        DeliveryState::Excluded { .. } => State::Excluded,
        DeliveryState::Retrying { .. } => State::Retrying,
        DeliveryState::Cancelled => State::Cancelled,
    }
}

fn cause_of(d: &DeliveryState) -> Option<Cause> {
    match d {
        DeliveryState::Failed { cause, .. } | DeliveryState::Retrying { cause, .. } => *cause,
        _ => None,
    }
}

fn reason_of(d: &DeliveryState) -> Option<&str> {
    match d {
        DeliveryState::Failed { reason, .. }
        | DeliveryState::Excluded { reason }
        | DeliveryState::Retrying { reason, .. } => Some(reason),
        _ => None,
    }
}

/// One entry of a run's log: the activity, the target's internal id, the
/// entry and the target's external id.
pub type Entry = (String, u64, Delivery, Option<String>);

/// A run's log, filtered, in log order.
pub fn select(store: &Store, run: u64, filter: &Filter) -> anyhow::Result<Vec<Entry>> {
    store.run(run)?;
    let mut rows: Vec<(String, u64, Delivery)> = Vec::new();
    for (activity, target, d) in store.run_deliveries(run)? {
        if filter.activity.as_ref().is_some_and(|a| *a != activity)
            || (!filter.state.is_empty() && !filter.state.contains(&state_of(&d.state)))
            || filter
                .to
                .as_ref()
                .is_some_and(|t| d.to.as_deref() != Some(t))
            || filter
                .reason
                .as_ref()
                .is_some_and(|r| !reason_of(&d.state).is_some_and(|x| x.contains(r.as_str())))
            || (!filter.cause.is_empty()
                && !cause_of(&d.state).is_some_and(|c| filter.cause.contains(&c)))
        {
            continue;
        }
        rows.push((activity, target, d));
    }
    // Without an id to match, the limit applies before ids are looked up:
    // the UI's first page of a million entries reads a hundred ids.
    if let (None, Some(limit)) = (&filter.id, filter.limit) {
        rows.truncate(limit);
    }
    let ids = external_ids(store, &rows)?;
    let mut out = Vec::new();
    for ((activity, target, d), id) in rows.into_iter().zip(ids) {
        if filter
            .id
            .as_ref()
            .is_some_and(|want| id.as_ref() != Some(want))
        {
            continue;
        }
        if filter.limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        out.push((activity, target, d, id));
    }
    Ok(out)
}

/// An entry as `deliveries --json` and the API show it: the entry and
/// whose it is.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EntryView {
    /// The delivery activity.
    pub activity: String,
    /// The target's internal id.
    pub target: u64,
    /// The target's external id (`None` if it is no longer stored).
    pub id: Option<String>,
    /// The entry.
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// An entry as `deliveries --json` and the API show it.
pub fn entry_view(entry: &Entry) -> EntryView {
    let (activity, target, d, id) = entry;
    EntryView {
        activity: activity.clone(),
        target: *target,
        id: id.clone(),
        delivery: d.clone(),
    }
}

/// Prints a run's log, filtered; text or one JSON object per line.
pub fn print(
    io: &mut Io,
    store: &Store,
    run: u64,
    filter: &Filter,
    json: bool,
) -> anyhow::Result<()> {
    for entry in select(store, run, filter)? {
        if json {
            out!(io, "{}", serde_json::to_string(&entry_view(&entry))?);
            continue;
        }
        let (activity, _, d, id) = &entry;
        let because = cause_of(&d.state)
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        let state = match &d.state {
            DeliveryState::Intent => "in flight".to_string(),
            DeliveryState::Sent { provider_id } => {
                format!("sent {}", provider_id.as_deref().unwrap_or(""))
            }
            DeliveryState::Failed {
                reason,
                permanent: true,
                ..
            } => format!("failed{because}: {reason}"),
            DeliveryState::Failed {
                reason,
                permanent: false,
                ..
            } => format!("failed (transient){because}: {reason}"),
            DeliveryState::Excluded { reason } => format!("excluded: {reason}"),
            DeliveryState::Retrying {
                reason, next_at, ..
            } => {
                format!("retrying at {}{because}: {reason}", format_ms(*next_at))
            }
            DeliveryState::Cancelled => "cancelled".to_string(),
        };
        let note = d
            .note
            .as_deref()
            .map(|n| format!(" [{n}]"))
            .unwrap_or_default();
        out!(
            io,
            "{activity:<16} {:<12} {:<10} {:<28} {state}{note}",
            d.dimension,
            id.as_deref().unwrap_or("?"),
            d.to.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// The external id of each entry's target, looked up a chunk at a time.
fn external_ids(
    store: &Store,
    rows: &[(String, u64, Delivery)],
) -> anyhow::Result<Vec<Option<String>>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(10_000) {
        let mut ids: Vec<Option<String>> = vec![None; chunk.len()];
        let mut dims: Vec<&str> = chunk.iter().map(|r| r.2.dimension.as_str()).collect();
        dims.sort_unstable();
        dims.dedup();
        for dim in dims {
            let (pos, targets): (Vec<usize>, Vec<u64>) = chunk
                .iter()
                .enumerate()
                .filter(|(_, r)| r.2.dimension == dim)
                .map(|(i, r)| (i, r.1))
                .unzip();
            let col = store
                .audience()
                .fetch(dim, &targets, &["id".to_string()])?
                .into_iter()
                .next()
                .unwrap_or_default();
            for (i, v) in pos.into_iter().zip(col) {
                ids[i] = v;
            }
        }
        out.extend(ids);
    }
    Ok(out)
}
