//! A run's status and who took a transition: what `status`, `run` and
//! `members` show.

use std::io::Write as _;

use anyhow::bail;

use super::io::{Io, out};
use crate::clock::format_ms;
use crate::store::Store;
use crate::store::runs::{Control, TaskState, run_label, run_number};
use crate::workflow::Workflow;

/// The external ids of the records that left `activity` on `transition`
/// (over every execution of the activity, part by part, each in id order).
pub fn members(
    store: &Store,
    run: u64,
    activity: &str,
    transition: &str,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut found = false;
    for t in store.tasks(run)? {
        if t.activity != activity {
            continue;
        }
        let last = match &t.state {
            TaskState::Done { outputs } => outputs.get(transition),
            _ => None,
        };
        let parts = t.released.get(transition).into_iter().flatten();
        for out in parts.chain(last) {
            found = true;
            let meta = store.population_meta(out.population)?;
            for b in 0..meta.blocks {
                let ids = store.population_block(out.population, b)?;
                let cols = store
                    .audience()
                    .fetch(&meta.dimension, &ids, &["id".to_string()])?;
                keys.extend(
                    cols.into_iter()
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .flatten(),
                );
            }
        }
    }
    if !found {
        bail!("run {run} has no population on {activity}.{transition} (not reached, or skipped)");
    }
    Ok(keys)
}

/// An activity's state in words: `waiting until T`, `waiting for signal
/// `x``, both, or its state.
pub fn waiting_words(s: &ActivityStatus) -> String {
    if s.state != "waiting" {
        return s.state.clone();
    }
    match (&s.waiting_for, &s.waiting_until) {
        (Some(name), Some(t)) => format!("waiting for signal {name} until {t}"),
        (Some(name), None) => format!("waiting for signal {name}"),
        (None, Some(t)) => format!("waiting until {t}"),
        (None, None) => s.state.clone(),
    }
}

/// The status of one activity of a run, summed over its tasks.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ActivityStatus {
    /// Plugin name.
    #[serde(rename = "type")]
    pub kind: String,
    /// not_reached, pending, waiting, done or failed.
    pub state: String,
    /// sha256 of the component that executed it.
    pub component_sha256: Option<String>,
    /// Transition → ids that left on it.
    pub transitions: std::collections::BTreeMap<String, u64>,
    /// What the delivery log says (deliveries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<DeliverySummary>,
    /// When a waiting activity resumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_until: Option<String>,
    /// The signal a waiting activity waits for (`crosscast signal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Calls across the wasm boundary (activities; summed over executions).
    pub calls: u64,
    /// Wall time of its executions, summed, in milliseconds.
    pub elapsed_ms: u64,
    /// Dry runs: what each delivery would send, with a sample message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub previews: Vec<serde_json::Value>,
    /// Transitions not taken (a split's skip-empty subsets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Failure messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A delivery activity's log, counted by state.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeliverySummary {
    /// Accepted by the provider.
    pub sent: u64,
    /// Failed, hard or soft.
    pub failed: u64,
    /// Not sent on purpose.
    pub excluded: u64,
    /// Intent recorded, outcome not yet (in flight, or interrupted).
    pub in_flight: u64,
    /// Failed for now, to be sent again.
    pub retrying: u64,
    /// Never sent: the run was cancelled.
    pub cancelled: u64,
}

/// A run's status, activity by activity, in workflow order.
pub fn run_status(
    store: &Store,
    run: u64,
) -> anyhow::Result<(String, Vec<(String, ActivityStatus)>)> {
    let r = store.run(run)?;
    let wf: Workflow = serde_json::from_value(r.workflow)?;
    let tasks = store.tasks(run)?;
    // Delivery counts come from the log itself, the one record of what was
    // sent, whatever number of executions it took: folded incrementally
    // (`store::tally`), so asking again costs what was written since.
    let deliveries: Vec<&str> = wf
        .activities
        .iter()
        .filter(|a| a.delivery)
        .map(|a| a.id.as_str())
        .collect();
    let mut summaries: std::collections::HashMap<String, DeliverySummary> = store
        .delivery_counts(run, &deliveries)?
        .into_iter()
        .map(|(a, c)| {
            let s = DeliverySummary {
                sent: c.sent,
                failed: c.failed,
                excluded: c.excluded,
                in_flight: c.intent,
                retrying: c.retrying,
                cancelled: c.cancelled,
            };
            (a, s)
        })
        .collect();
    let mut out = Vec::new();
    let mut run_state = "done";
    for a in &wf.activities {
        let mine: Vec<_> = tasks.iter().filter(|t| t.activity == a.id).collect();
        let mut st = ActivityStatus {
            kind: a.kind.clone(),
            state: "not_reached".into(),
            component_sha256: None,
            transitions: a.outputs.iter().map(|o| (o.clone(), 0)).collect(),
            deliveries: if a.delivery {
                Some(summaries.remove(&a.id).unwrap_or_default())
            } else {
                None
            },
            waiting_until: None,
            waiting_for: None,
            calls: 0,
            elapsed_ms: 0,
            previews: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
        };
        let mut taken = std::collections::BTreeSet::new();
        let (mut pending, mut waiting, mut failed, mut done, mut cancelled) = (0, 0, 0, 0, 0);
        for t in &mine {
            if t.component.is_some() {
                st.component_sha256 = t.component.clone();
            }
            st.calls += t.calls;
            st.elapsed_ms += t.elapsed_ms;
            st.previews.extend(t.preview.clone());
            // Parts passed on before the rest (a wait until each zone's hour).
            for (k, parts) in &t.released {
                *st.transitions.entry(k.clone()).or_default() +=
                    parts.iter().map(|p| p.count).sum::<u64>();
                taken.insert(k.clone());
            }
            match &t.state {
                TaskState::Pending => pending += 1,
                TaskState::Waiting { until } => {
                    waiting += 1;
                    if *until != crate::store::signals::NO_DEADLINE {
                        st.waiting_until = Some(format_ms(*until));
                    }
                    if t.signal.is_some() {
                        st.waiting_for = t.signal.clone();
                    }
                }
                TaskState::Failed { error } => {
                    failed += 1;
                    st.errors.push(error.clone());
                }
                TaskState::Cancelled { .. } => cancelled += 1,
                TaskState::Done { outputs } => {
                    done += 1;
                    for (k, o) in outputs {
                        *st.transitions.entry(k.clone()).or_default() += o.count;
                        taken.insert(k.clone());
                    }
                }
            }
        }
        if done > 0 {
            st.skipped = a
                .outputs
                .iter()
                .filter(|o| !taken.contains(*o))
                .cloned()
                .collect();
        }
        // A failure the workflow routes on (its `error` transition) is an
        // outcome of the run, not the run's failure.
        let handled = a.next.contains_key(crate::executor::ERROR);
        st.state = if failed > 0 {
            if !handled {
                run_state = "failed";
            }
            "failed"
        } else if cancelled > 0 {
            "cancelled"
        } else if pending > 0 {
            if run_state == "done" || run_state == "waiting" {
                run_state = "running";
            }
            "pending"
        } else if waiting > 0 {
            if run_state == "done" {
                run_state = "waiting";
            }
            "waiting"
        } else if done > 0 {
            "done"
        } else {
            "not_reached"
        }
        .into();
        out.push((a.id.clone(), st));
    }
    let run_state = match r.control {
        Control::Cancelled { .. } => "cancelled",
        Control::Paused { .. } if run_state != "done" => "paused",
        _ => run_state,
    };
    Ok((run_state.to_string(), out))
}

/// A run's status as `status --json` and the API give it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RunStatus {
    /// The run's number in its sequence (real runs, or dry runs).
    pub run: u64,
    /// How commands name it: `7`, or `dry-3` for a dry run.
    pub id: String,
    /// A dry run (nothing sent).
    pub dry_run: bool,
    /// The workflow's name.
    pub workflow: String,
    /// The file (or API name) it was started from.
    pub file: String,
    /// When it started, on its clock (RFC 3339).
    pub started_at: String,
    /// `running`, `waiting`, `paused`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Each activity's status, by id.
    pub activities: std::collections::BTreeMap<String, ActivityStatus>,
    /// The signals sent to the run, oldest first (`crosscast signal`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<SignalView>,
}

/// A signal sent to a run, as its status shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SignalView {
    /// Its number within the run, from 1.
    pub seq: u64,
    /// Its name.
    pub name: String,
    /// When it came, on the run's clock (RFC 3339).
    pub at: String,
    /// How many records it names (none: it names none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<u64>,
    /// The dimension of those records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
}

/// The signals of a run, as its status shows them.
fn signal_views(store: &Store, run: u64) -> anyhow::Result<Vec<SignalView>> {
    Ok(store
        .signals(run)?
        .into_iter()
        .map(|s| SignalView {
            seq: s.seq,
            name: s.name,
            at: format_ms(s.at),
            ids: s.ids.as_ref().map(|i| i.count),
            dimension: s.ids.map(|i| i.dimension),
        })
        .collect())
}

/// A run's status: the run, its state and each activity's.
pub fn status_of(store: &Store, run: u64) -> anyhow::Result<RunStatus> {
    let r = store.run(run)?;
    let (state, activities) = run_status(store, run)?;
    Ok(RunStatus {
        run: run_number(run),
        id: run_label(run),
        dry_run: r.dry_run,
        workflow: r.workflow_name,
        file: r.workflow_file,
        started_at: format_ms(r.created_at),
        state,
        activities: activities.into_iter().collect(),
        signals: signal_views(store, run)?,
    })
}

/// [`status_of`] as JSON.
pub fn status_json(store: &Store, run: u64) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(status_of(store, run)?)?)
}

/// Prints a run's status; returns its state (`done`, `waiting`, `failed`).
pub(super) fn print_status(
    io: &mut Io,
    store: &Store,
    run: u64,
    json: bool,
) -> anyhow::Result<String> {
    if json {
        let v = status_json(store, run)?;
        out!(io, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(v["state"].as_str().unwrap_or_default().to_string());
    }
    let r = store.run(run)?;
    let (state, activities) = run_status(store, run)?;
    let run_state = state.clone();
    out!(
        io,
        "run {}: {} ({}), started {}, {state}",
        run_label(run),
        r.workflow_name,
        r.workflow_file,
        format_ms(r.created_at)
    );
    out!(
        io,
        "{:<16} {:<8} {:<12} {:<36} COMPONENT",
        "ACTIVITY",
        "TYPE",
        "STATE",
        "TRANSITIONS"
    );
    for (id, s) in activities {
        let mut transitions: Vec<String> = s
            .transitions
            .iter()
            .map(|(k, v)| {
                if s.skipped.contains(k) {
                    format!("{k}=skipped")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        if let Some(d) = s.deliveries.as_ref().filter(|_| !r.dry_run) {
            let mut counts = format!(
                "(sent {} failed {} excluded {}",
                d.sent, d.failed, d.excluded
            );
            if d.cancelled > 0 {
                counts.push_str(&format!(" cancelled {}", d.cancelled));
            }
            transitions.push(counts + ")");
        }
        let state = waiting_words(&s);
        out!(
            io,
            "{:<16} {:<8} {:<12} {:<36} {}",
            id,
            s.kind,
            state,
            transitions.join(" "),
            s.component_sha256
                .as_deref()
                .map(|h| &h[..12])
                .unwrap_or("-")
        );
        for e in &s.errors {
            out!(io, "  error: {e}");
        }
        for p in &s.previews {
            print_preview(io, p)?;
        }
    }
    for s in signal_views(store, run)? {
        let named = match (s.ids, &s.dimension) {
            (Some(n), Some(d)) => format!(", naming {n} {d}(s)"),
            _ => String::new(),
        };
        out!(io, "signal {} (#{}) at {}{named}", s.name, s.seq, s.at);
    }
    Ok(run_state)
}

/// A dry run's delivery preview, for people.
fn print_preview(io: &mut Io, p: &serde_json::Value) -> anyhow::Result<()> {
    out!(
        io,
        "  would send {} of {} {}(s), exclude {}",
        p["would_send"],
        p["targets"],
        p["target"].as_str().unwrap_or("record"),
        p["excluded"]
    );
    if let Some(reasons) = p["reasons"].as_object() {
        for (reason, n) in reasons {
            out!(io, "    excluded {n}: {reason}");
        }
    }
    let m = &p["sample"];
    if !m.is_null() {
        print_sample(io, m)?;
    }
    // `--messages N`: what becomes of each of the first targets.
    let listed = p["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if listed.len() > 1 {
        out!(io, "  first {} targets:", listed.len());
        for l in listed {
            let target = l["target"].as_str().unwrap_or("?");
            let m = &l["send"];
            if m.is_null() {
                for verdict in ["excluded", "refused", "suppressed"] {
                    if let Some(reason) = l[verdict].as_str() {
                        out!(io, "    {target}: {verdict}: {reason}");
                    }
                }
            } else if let Some(subject) = m["subject"].as_str() {
                out!(
                    io,
                    "    {target}: email to {}: {subject}",
                    m["to"].as_str().unwrap_or("?")
                );
            } else {
                out!(
                    io,
                    "    {target}: {} {} for {}: {}",
                    m["method"].as_str().unwrap_or(""),
                    m["path"].as_str().unwrap_or(""),
                    m["recipient"].as_str().unwrap_or("?"),
                    m["body"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// The first message a dry run's delivery would send, for people.
fn print_sample(io: &mut Io, m: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(subject) = m["subject"].as_str() {
        out!(io, "  sample email to {}", m["to"].as_str().unwrap_or("?"));
        out!(io, "    From: {}", m["from"].as_str().unwrap_or(""));
        out!(io, "    Subject: {subject}");
        for line in m["text"].as_str().unwrap_or("").lines() {
            out!(io, "    | {line}");
        }
    } else {
        out!(
            io,
            "  sample request to {}: {} {}",
            m["recipient"].as_str().unwrap_or("?"),
            m["method"].as_str().unwrap_or(""),
            m["path"].as_str().unwrap_or("")
        );
        if let Some(headers) = m["headers"].as_array() {
            for h in headers {
                out!(
                    io,
                    "    {}: {}",
                    h[0].as_str().unwrap_or(""),
                    h[1].as_str().unwrap_or("")
                );
            }
        }
        out!(io, "    | {}", m["body"].as_str().unwrap_or(""));
    }
    Ok(())
}

/// One run as `crosscast runs` and `GET /api/v1/runs` list it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    /// Its number in its sequence (real runs, or dry runs).
    pub run: u64,
    /// How commands name it: `7`, or `dry-3`.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The file (or API name) it was started from.
    pub file: String,
    /// A dry run (nothing sent).
    pub dry_run: bool,
    /// RFC 3339, on the run's clock.
    pub started_at: String,
    /// `running`, `waiting`, `paused`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Its deliveries' messages, summed over its delivery activities.
    pub messages: DeliverySummary,
}

/// Which runs to list.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    /// Only runs in this state.
    pub state: Option<String>,
    /// Only runs of the workflow of this name.
    pub workflow: Option<String>,
    /// Dry runs instead of real ones.
    pub dry: bool,
}

/// The runs `filter` selects, oldest first.
pub fn list_runs(store: &Store, filter: &RunFilter) -> anyhow::Result<Vec<RunSummary>> {
    let mut out = Vec::new();
    for r in store.runs()? {
        if r.dry_run != filter.dry
            || filter
                .workflow
                .as_ref()
                .is_some_and(|w| *w != r.workflow_name)
        {
            continue;
        }
        let (state, activities) = run_status(store, r.id)?;
        if filter.state.as_ref().is_some_and(|s| *s != state) {
            continue;
        }
        let mut messages = DeliverySummary::default();
        for (_, a) in &activities {
            if let Some(d) = &a.deliveries {
                messages.sent += d.sent;
                messages.failed += d.failed;
                messages.excluded += d.excluded;
                messages.in_flight += d.in_flight;
                messages.retrying += d.retrying;
                messages.cancelled += d.cancelled;
            }
        }
        out.push(RunSummary {
            run: run_number(r.id),
            id: run_label(r.id),
            workflow: r.workflow_name,
            file: r.workflow_file,
            dry_run: r.dry_run,
            started_at: format_ms(r.created_at),
            state,
            messages,
        });
    }
    Ok(out)
}

/// Prints runs for people: one line each.
pub(super) fn print_runs(io: &mut Io, runs: &[RunSummary]) -> anyhow::Result<()> {
    out!(
        io,
        "{:<8} {:<20} {:<10} {:<25} MESSAGES",
        "RUN",
        "WORKFLOW",
        "STATE",
        "STARTED"
    );
    for r in runs {
        let m = &r.messages;
        let mut counts = format!(
            "sent {} failed {} excluded {}",
            m.sent, m.failed, m.excluded
        );
        if m.cancelled > 0 {
            counts.push_str(&format!(" cancelled {}", m.cancelled));
        }
        if m.retrying > 0 {
            counts.push_str(&format!(" retrying {}", m.retrying));
        }
        out!(
            io,
            "{:<8} {:<20} {:<10} {:<25} {counts}",
            r.id,
            r.workflow,
            r.state,
            r.started_at
        );
    }
    Ok(())
}
