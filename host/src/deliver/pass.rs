//! One execution of a delivery task: its rounds built, vetted and written
//! as intents (`prepare`), and its answers classified and written as
//! outcomes (`record`).

use std::sync::Arc;

use super::failure::Failure;
use super::pipeline::session::{self, Send};
use super::request::AnswerHeaders;
use super::vet::{Lists, Stored, Vetted, add_list_unsubscribe, suppressions, vet};
use super::{Needs, backoff_ms, email, routes};
use crate::caps::{Context, crash_reporter};
use crate::runtime::channel::{ChannelPre, wit};
use crate::store::deliveries::{Cause, Delivery, DeliveryState, Progress};
use crate::store::runs::DeliveryCounts;
use crate::store::runs::{InputRef, Task};
use crate::store::suppression::{Suppression, SuppressionKind};
use crate::workflow::{Activity, DEFAULT_VALIDITY_MS};

/// One execution of a delivery task: what its rounds and answers share.
pub(super) struct Pass<'a> {
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

/// What opening a pass found besides the pass itself.
pub(super) struct Opened<'t> {
    /// The task's input population.
    pub input: &'t InputRef,
    /// The ids to send to.
    pub targets: Vec<u64>,
    /// The response headers the channel reads.
    pub answer_headers: AnswerHeaders,
}

impl<'a> Pass<'a> {
    /// Instantiates the channel for one execution of `task` and reads
    /// where its targets stand.
    pub(super) fn open<'t>(
        needs: &'a Needs<'a>,
        run: u64,
        activity: &'a Activity,
        task: &'t Task,
        pre: ChannelPre,
        ctx: Arc<Context>,
    ) -> Result<(Pass<'a>, Opened<'t>), String> {
        let limits = needs.runtime.limits();
        let plugin = ctx.plugin.clone();
        let accounts = ctx.accounts.clone();
        let now = ctx.now_ms;
        let mut st = needs.runtime.new_store(ctx);
        let crash = crash_reporter(plugin.clone(), limits);
        let channel = pre.instantiate(&mut st).map_err(|e| crash(e, st.data()))?;
        let descriptor = channel.describe(&mut st).map_err(|e| crash(e, st.data()))?;
        let (input, target_dim, targets) =
            super::targets::task_targets(needs, task, descriptor.target)?;
        let deadline = task
            .started_at
            .unwrap_or(now)
            .saturating_add(activity.validity_ms.unwrap_or(DEFAULT_VALIDITY_MS));
        let store = needs.store;
        let unsubscribe = store.unsubscribe_settings().map_err(|e| e.to_string())?;
        // Where every target stands, read once: what is final is skipped,
        // what retries later waits, the rest (never tried, or in flight
        // when the process died) is sent.
        let progress = store
            .delivery_progress(run, &activity.id)
            .map_err(|e| e.to_string())?;
        let lists = super::vet::lists(needs.store, &plugin, &descriptor, &target_dim)?;
        let key = store.instance_key().map_err(|e| e.to_string())?;
        let pass = Pass {
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
        let opened = Opened {
            input,
            targets,
            answer_headers: AnswerHeaders::new(descriptor.answer_headers.as_deref()),
        };
        Ok((pass, opened))
    }

    /// The accounts granted to the channel.
    pub(super) fn accounts(&self) -> &[String] {
        &self.accounts
    }

    /// This execution's counts, and when its earliest retry is due.
    pub(super) fn finish(self) -> (DeliveryCounts, Option<i64>) {
        (self.counts, self.wake_at)
    }

    /// Writes a `cancelled` entry for each target never sent or retrying,
    /// and flushes; returns how many.
    pub(super) fn cancel(&self, targets: &[u64], at: i64) -> Result<usize, String> {
        let log: Vec<(u64, Delivery)> = targets
            .iter()
            .filter(|id| match self.progress.get(id) {
                None => true,
                Some(p) => p.next_at.is_some() && !p.done,
            })
            .map(|id| {
                let mut e = self.entry(DeliveryState::Cancelled, None, None);
                e.at = at;
                e.attempts = self.attempt(*id) - 1;
                (*id, e)
            })
            .collect();
        self.needs
            .store
            .record_deliveries(self.run, self.activity, &log)
            .map_err(|e| e.to_string())?;
        Ok(log.len())
    }

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
    pub(super) fn prepare(&mut self, round: &[u64]) -> Result<session::Sends, String> {
        let todo = self.unsettled(round);
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = self.build(&todo)?;
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
            let message_id = self.stamp(&mut out, *id, &to)?;
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

    /// The ids of a round still to send to: those with a final outcome are
    /// skipped, those retrying later wait for their time.
    fn unsettled(&mut self, round: &[u64]) -> Vec<u64> {
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
        todo
    }

    /// The plugin's messages for `todo`, one per id.
    fn build(&mut self, todo: &[u64]) -> Result<Vec<wit::Prepared>, String> {
        self.needs.runtime.arm(&mut self.st);
        let prepared = self
            .channel
            .build(&mut self.st, &self.config, &self.target_dim, todo)
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
        Ok(prepared)
    }

    /// What the host adds to an email for `id` going to `to`: the one-click
    /// unsubscribe headers, and its Message-ID (returned).
    fn stamp(&self, out: &mut wit::Outgoing, id: u64, to: &str) -> Result<Option<String>, String> {
        let wit::Message::Email(email) = &mut out.message else {
            return Ok(None);
        };
        // Links name a recipient: only a per-recipient email gets one.
        if let (Some(u), "recipient") = (&self.unsubscribe, self.target_dim.as_str()) {
            let link = u.link(self.run, id, to)?;
            add_list_unsubscribe(email, &link);
        }
        let domain = email::sender_domain(&email.from);
        Ok(Some(email::message_id(
            &self.key,
            self.run,
            self.activity,
            id,
            &domain,
        )))
    }

    /// Records a batch of outcomes: the providers' answers classified
    /// through the plugin, the failures decided by the host (retried when
    /// transient, failed when not); suppressions first (flushed), then the
    /// log entries (durable at the caller's next flush).
    pub(super) fn record(
        &mut self,
        answered: Vec<(Arc<session::Sends>, usize, routes::Outcome)>,
    ) -> Result<(), String> {
        let mut verdicts = self.classify(&answered)?;
        verdicts.reverse();
        let mut outcomes = Vec::new();
        let mut listed: Vec<(String, String, Suppression)> = Vec::new();
        for (sends, i, outcome) in &answered {
            let send = &sends[*i];
            let (verdict, cause) = match outcome {
                Ok(_) => (verdicts.pop().expect("one per answer"), Cause::Provider),
                Err(f) if f.permanent => (wit::Verdict::Failed(f.message.clone()), f.cause),
                Err(f) => (wit::Verdict::Retry((f.message.clone(), None)), f.cause),
            };
            let (list, _) = self.lists.of(&send.out.message);
            let list = list.to_string();
            let (state, suppress) = self.state(send.id, &list, verdict, cause);
            if let Some((kind, reason)) = suppress {
                let s = Suppression {
                    kind,
                    reason,
                    source: self.source.clone(),
                    at: self.now,
                };
                listed.push((list, send.to.clone(), s));
            }
            let mut e = self.entry(state, Some(&send.out), Some(send.to.clone()));
            e.attempts = self.attempt(send.id);
            outcomes.push((send.id, e));
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

    /// The plugin's verdicts on the providers' answers among `answered`
    /// (only those cross into the plugin, in one call).
    fn classify(
        &mut self,
        answered: &[(Arc<session::Sends>, usize, routes::Outcome)],
    ) -> Result<Vec<wit::Verdict>, String> {
        let answers: Vec<wit::Answer> = answered
            .iter()
            .filter_map(|(_, _, outcome)| outcome.as_ref().ok().cloned())
            .collect();
        if answers.is_empty() {
            return Ok(Vec::new());
        }
        self.needs.runtime.arm(&mut self.st);
        let verdicts = self
            .channel
            .classify(&mut self.st, &self.config, &answers)
            .map_err(|e| (self.crash)(e, self.st.data()))?;
        if verdicts.len() != answers.len() {
            return Err(format!(
                "plugin `{}` classified {} answers out of {}",
                self.plugin,
                verdicts.len(),
                answers.len()
            ));
        }
        Ok(verdicts)
    }

    /// The log state a verdict on `id` makes (counted), and the suppression
    /// it asks for on `list`: (kind, reason).
    fn state(
        &mut self,
        id: u64,
        list: &str,
        verdict: wit::Verdict,
        cause: Cause,
    ) -> (DeliveryState, Option<(SuppressionKind, String)>) {
        let failed = |reason| DeliveryState::Failed {
            reason,
            permanent: true,
            cause: Some(cause),
        };
        match verdict {
            wit::Verdict::Sent(provider_id) => {
                self.counts.sent += 1;
                (DeliveryState::Sent { provider_id }, None)
            }
            wit::Verdict::Failed(reason) => {
                self.counts.failed += 1;
                (failed(reason), None)
            }
            wit::Verdict::Quarantine(reason) => {
                self.counts.failed += 1;
                let shown = format!("{reason} (address quarantined on {list})");
                (failed(shown), Some((SuppressionKind::Quarantine, reason)))
            }
            wit::Verdict::OptedOut(reason) => {
                self.counts.failed += 1;
                let shown = format!("{reason} (opted out: added to the {list} denylist)");
                (failed(shown), Some((SuppressionKind::Denylist, reason)))
            }
            wit::Verdict::Retry((reason, after)) => (self.retry(id, reason, after, cause), None),
        }
    }

    /// A transient failure: retried later, through a persisted timer, until
    /// the validity period ends.
    fn retry(
        &mut self,
        id: u64,
        reason: String,
        after: Option<u32>,
        cause: Cause,
    ) -> DeliveryState {
        let attempts = self.attempt(id);
        let next_at = self.now.saturating_add(backoff_ms(attempts, after));
        if next_at > self.deadline {
            self.counts.failed += 1;
            return DeliveryState::Failed {
                reason: format!(
                    "{reason} (gave up after {attempts} attempt(s): the validity period ends {})",
                    crate::clock::format_ms(self.deadline)
                ),
                permanent: false,
                cause: Some(cause),
            };
        }
        self.counts.retrying += 1;
        self.retry_at(next_at);
        DeliveryState::Retrying {
            reason,
            next_at,
            cause: Some(cause),
        }
    }
}
