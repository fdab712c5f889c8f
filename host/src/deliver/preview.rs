//! A dry run's delivery: every message built, none sent or logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::targets::{passes_on, task_targets};
use super::vet::{Stored, Vetted, lists, suppressions, vet};
use super::{Needs, ROUND};
use crate::caps::{Context, crash_reporter};
use crate::runtime::channel::{ChannelPre, wit};
use crate::store::runs::{OutputRef, Task};
use crate::store::suppression::{Suppression, SuppressionKind};
use crate::workflow::Activity;

/// Most distinct exclusion reasons a preview lists.
const PREVIEW_REASONS: usize = 10;

/// A dry run's delivery: builds every message without sending or logging
/// anything; returns what would be sent and excluded, with the first message
/// as it would leave, what became of the first `listed` targets, and the
/// outputs (the population received, on `done`).
pub(crate) fn preview(
    needs: &Needs<'_>,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
    listed: u32,
) -> Result<(serde_json::Value, BTreeMap<String, OutputRef>), String> {
    preview_first(needs, activity, task, pre, ctx, listed, usize::MAX)
}

/// A message of a delivery's task built now for one of its first targets,
/// as it would leave: nothing sent or logged. `None` when none of the first
/// round's targets would get one.
pub(crate) fn sample(
    needs: &Needs<'_>,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
) -> Result<Option<serde_json::Value>, String> {
    let (preview, _) = preview_first(needs, activity, task, pre, ctx, 0, ROUND)?;
    Ok(Some(preview["sample"].clone()).filter(|s| !s.is_null()))
}

/// [`preview`] of the first `only` targets.
fn preview_first(
    needs: &Needs<'_>,
    activity: &Activity,
    task: &Task,
    pre: ChannelPre,
    ctx: Arc<Context>,
    listed: u32,
    only: usize,
) -> Result<(serde_json::Value, BTreeMap<String, OutputRef>), String> {
    let limits = needs.runtime.limits();
    let plugin = ctx.plugin.clone();
    let accounts = ctx.accounts.clone();
    let mut st = needs.runtime.new_store(ctx);
    let crash = crash_reporter(plugin.clone(), limits);
    let channel = pre.instantiate(&mut st).map_err(|e| crash(e, st.data()))?;
    let descriptor = channel.describe(&mut st).map_err(|e| crash(e, st.data()))?;
    let config = activity.config.to_string();
    let (input, target_dim, mut targets) = task_targets(needs, task, descriptor.target)?;
    targets.truncate(only);
    let lists = lists(needs.store, &plugin, &descriptor, &target_dim)?;
    let mut tally = Tally {
        listed: listed as usize,
        ..Tally::default()
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
        let keys = tally.keys_wanted(needs, &target_dim, round)?;
        for (i, (v, suppressed)) in vetted.into_iter().zip(suppressed).enumerate() {
            tally.add(v, suppressed, keys.get(i).cloned().flatten());
        }
    }
    let preview = serde_json::json!({
        "channel": plugin,
        "target": target_dim,
        "targets": targets.len(),
        "would_send": tally.would_send,
        "parts": tally.parts,
        "notes": tally.notes,
        "excluded": tally.excluded,
        "reasons": tally.reasons,
        "sample": tally.sample,
        "messages": tally.messages,
    });
    Ok((preview, passes_on(input)))
}

/// What a dry run counts.
#[derive(Default)]
struct Tally {
    would_send: u64,
    excluded: u64,
    parts: u64,
    /// Exclusions by reason (the first [`PREVIEW_REASONS`], then others).
    reasons: BTreeMap<String, u64>,
    /// The plugin's notes on messages that would go, likewise.
    notes: BTreeMap<String, u64>,
    /// The first message that would go, as it would leave.
    sample: Option<serde_json::Value>,
    /// How many targets [`Tally::messages`] lists.
    listed: usize,
    /// The first targets, by external id: the message each would get, or
    /// why it would be excluded, refused or suppressed.
    messages: Vec<serde_json::Value>,
}

impl Tally {
    /// The external ids of a round's targets while more are to be listed.
    fn keys_wanted(
        &self,
        needs: &Needs<'_>,
        dimension: &str,
        round: &[u64],
    ) -> Result<Vec<Option<String>>, String> {
        let wanted = self
            .listed
            .saturating_sub(self.messages.len())
            .min(round.len());
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let columns = needs
            .store
            .audience()
            .fetch(dimension, &round[..wanted], &["id".to_string()])
            .map_err(|e| e.to_string())?;
        Ok(columns.into_iter().next().unwrap_or_default())
    }

    /// Counts a vetted message and its suppression, if any; lists it under
    /// `key` when it is one of the first targets.
    fn add(&mut self, v: Vetted, suppressed: Option<(String, Suppression)>, key: Option<String>) {
        let (verdict, reason) = match (v, suppressed) {
            (Vetted::Excluded(reason), _) => ("excluded", reason),
            (Vetted::Refused(_, failure), _) => ("refused", failure.message),
            // One line per list and kind, not per address.
            (Vetted::Send(..), Some((list, s))) => match s.kind {
                SuppressionKind::Quarantine => ("suppressed", format!("quarantined on {list}")),
                SuppressionKind::Denylist => ("suppressed", format!("on the {list} denylist")),
            },
            (Vetted::Send(out, _), None) => {
                self.would_send += 1;
                self.parts += u64::from(out.parts);
                if let Some(note) = &out.note {
                    count(&mut self.notes, note.clone());
                }
                // Made only for what is shown: a dry run of a million
                // messages renders two.
                if key.is_none() && self.sample.is_some() {
                    return;
                }
                let message = message_json(&out);
                if let Some(key) = key {
                    self.messages
                        .push(serde_json::json!({ "target": key, "send": message.clone() }));
                }
                self.sample.get_or_insert(message);
                return;
            }
        };
        if let Some(key) = key {
            self.messages
                .push(serde_json::json!({ "target": key, verdict: reason }));
        }
        self.excluded += 1;
        count(&mut self.reasons, reason);
    }
}

/// Counts `key` in `map`, or under `(others)` once it names enough.
fn count(map: &mut BTreeMap<String, u64>, key: String) {
    if map.len() < PREVIEW_REASONS || map.contains_key(&key) {
        *map.entry(key).or_default() += 1;
    } else {
        *map.entry("(others)".into()).or_default() += 1;
    }
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
