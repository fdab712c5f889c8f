//! A workflow, or a run of one, as a graph: for people in a terminal
//! (`text`), for Graphviz (`dot`) and as a picture (`svg`, laid out by the
//! `layout-rs` crate inside the binary: no Graphviz to install).
//!
//! A run's graph carries each transition's count and each activity's
//! state, from the same status `crosscast status` prints.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::cli::ActivityStatus;
use crate::workflow::Workflow;

/// One activity as drawn.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Node {
    /// Its id.
    pub id: String,
    /// Its plugin.
    #[serde(rename = "type")]
    pub kind: String,
    /// For a run: its state as `status` names it (`not_reached`, `pending`,
    /// `waiting`, `done`, `failed`, `cancelled`), for what styles on it.
    pub phase: Option<String>,
    /// For a run: its state, in words (`done`, `waiting until T`,
    /// `failed: first error`, `not reached`, `cancelled`).
    pub state: Option<String>,
    /// For a run's delivery: what its log says (`sent 118, failed 2`).
    pub detail: Option<String>,
}

/// One transition as drawn.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Edge {
    /// The activity it leaves.
    pub from: String,
    /// Its name.
    pub transition: String,
    /// The activity it leads to.
    pub to: String,
    /// For a run: how many records took it (`None`: not taken yet).
    pub count: Option<u64>,
    /// For a run: a transition the activity did not take (a split's empty
    /// subset skipped).
    pub skipped: bool,
}

/// A workflow or a run as nodes and edges, in workflow order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Graph {
    /// What it shows: the workflow's name, and the run's.
    pub title: String,
    /// The activities.
    pub nodes: Vec<Node>,
    /// The transitions, each activity's in the order its plugin gives them
    /// (`error` last).
    pub edges: Vec<Edge>,
}

impl Graph {
    /// The graph of a workflow, nothing run yet.
    pub fn of_workflow(wf: &Workflow) -> Graph {
        let nodes = wf
            .activities
            .iter()
            .map(|a| Node {
                id: a.id.clone(),
                kind: a.kind.clone(),
                phase: None,
                state: None,
                detail: None,
            })
            .collect();
        let mut edges = Vec::new();
        for a in &wf.activities {
            let mut order: Vec<&String> = a.outputs.iter().collect();
            order.extend(a.next.keys().filter(|t| !a.outputs.contains(t)));
            for transition in order {
                for to in a.next.get(transition).into_iter().flatten() {
                    edges.push(Edge {
                        from: a.id.clone(),
                        transition: transition.clone(),
                        to: to.clone(),
                        count: None,
                        skipped: false,
                    });
                }
            }
        }
        Graph {
            title: wf.name.clone(),
            nodes,
            edges,
        }
    }

    /// The graph of a run: `statuses` are its activities' (by id).
    pub fn of_run(
        wf: &Workflow,
        title: String,
        statuses: &BTreeMap<String, ActivityStatus>,
    ) -> Graph {
        let mut g = Graph::of_workflow(wf);
        g.title = title;
        for node in &mut g.nodes {
            let Some(s) = statuses.get(&node.id) else {
                continue;
            };
            node.phase = Some(s.state.clone());
            node.state = Some(match (s.state.as_str(), &s.waiting_until) {
                ("waiting", _) => crate::cli::waiting_words(s),
                ("failed", _) => match s.errors.first() {
                    Some(e) => format!("failed: {}", shorten(e, 60)),
                    None => "failed".into(),
                },
                ("not_reached", _) => "not reached".into(),
                (other, _) => other.to_string(),
            });
            // A dry run's delivery logs nothing: what it would do is in its
            // previews.
            if !s.previews.is_empty() {
                let sum = |key: &str| {
                    s.previews
                        .iter()
                        .filter_map(|p| p[key].as_u64())
                        .sum::<u64>()
                };
                let (send, excluded) = (sum("would_send"), sum("excluded"));
                node.detail = Some(match excluded {
                    0 => format!("would send {send}"),
                    n => format!("would send {send}, exclude {n}"),
                });
                continue;
            }
            // A delivery not reached has no log to summarise.
            let reached = s.state != "not_reached";
            node.detail = s.deliveries.as_ref().filter(|_| reached).map(|d| {
                let mut parts = vec![format!("sent {}", d.sent)];
                for (n, what) in [
                    (d.failed, "failed"),
                    (d.excluded, "excluded"),
                    (d.retrying, "retrying"),
                    (d.in_flight, "in flight"),
                    (d.cancelled, "cancelled"),
                ] {
                    if n > 0 {
                        parts.push(format!("{what} {n}"));
                    }
                }
                parts.join(", ")
            });
        }
        for edge in &mut g.edges {
            let Some(s) = statuses.get(&edge.from) else {
                continue;
            };
            edge.skipped = s.skipped.contains(&edge.transition);
            // A count once the activity produced its outputs (a transition
            // of an activity not done yet has none).
            let produced = s.state == "done" || s.transitions.values().any(|n| *n > 0);
            if produced && !edge.skipped {
                edge.count = s.transitions.get(&edge.transition).copied();
            }
        }
        g
    }

    /// The graph of run `run` as stored: its workflow, with the counts and
    /// states `crosscast status` shows.
    pub fn of_stored_run(store: &crate::store::Store, run: u64) -> anyhow::Result<Graph> {
        let st = crate::cli::status_of(store, run)?;
        let wf: Workflow = serde_json::from_value(store.run(run)?.workflow)?;
        let title = format!("run {}: {}, {}", st.id, st.workflow, st.state);
        Ok(Graph::of_run(&wf, title, &st.activities))
    }

    /// For people, in a terminal: each activity under the one leading to
    /// it, left to right by depth; an activity reached twice is drawn once
    /// (`see above`). Lines stay within `width` columns.
    pub fn text(&self, width: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title);
        let targets: HashSet<&str> = self.edges.iter().map(|e| e.to.as_str()).collect();
        let mut drawn: HashSet<&str> = HashSet::new();
        for n in self
            .nodes
            .iter()
            .filter(|n| !targets.contains(n.id.as_str()))
        {
            self.draw(&mut out, n, "", "", &mut drawn, width);
        }
        out
    }

    fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn draw<'a>(
        &'a self,
        out: &mut String,
        node: &'a Node,
        lead: &str,
        indent: &str,
        drawn: &mut HashSet<&'a str>,
        width: usize,
    ) {
        drawn.insert(&node.id);
        let mut line = format!("{lead}{} [{}]", node.id, node.kind);
        if let Some(s) = &node.state {
            let _ = write!(line, " {s}");
        }
        if let Some(d) = &node.detail {
            let _ = write!(line, " ({d})");
        }
        let _ = writeln!(out, "{}", shorten(&line, width));
        let edges: Vec<&Edge> = self.edges.iter().filter(|e| e.from == node.id).collect();
        for (i, e) in edges.iter().enumerate() {
            let last = i + 1 == edges.len();
            let branch = if last { "└─ " } else { "├─ " };
            let below = if last { "   " } else { "│  " };
            let count = match (e.skipped, e.count) {
                (true, _) => " skipped".to_string(),
                (false, Some(n)) => format!(" {n}"),
                (false, None) => String::new(),
            };
            let lead = format!("{indent}{branch}{}{count} → ", e.transition);
            let Some(next) = self.node(&e.to) else {
                continue;
            };
            if drawn.contains(next.id.as_str()) {
                let line = format!("{lead}{} (see above)", next.id);
                let _ = writeln!(out, "{}", shorten(&line, width));
                continue;
            }
            self.draw(out, next, &lead, &format!("{indent}{below}"), drawn, width);
        }
    }

    /// For Graphviz: left to right, one box per activity (id, plugin,
    /// state), one labelled arrow per transition; dashed when skipped.
    pub fn dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph workflow {{");
        let _ = writeln!(out, "  rankdir=LR;");
        let _ = writeln!(out, "  label={};", quote(&self.title));
        let _ = writeln!(out, "  node [shape=box];");
        for n in &self.nodes {
            let mut label = format!("{}\\n{}", escape(&n.id), escape(&n.kind));
            for extra in [&n.state, &n.detail].into_iter().flatten() {
                let _ = write!(label, "\\n{}", escape(&shorten(extra, 48)));
            }
            let _ = writeln!(out, "  {} [label=\"{label}\"];", quote(&n.id));
        }
        for e in &self.edges {
            let label = match (e.skipped, e.count) {
                (true, _) => format!("{} skipped", e.transition),
                (false, Some(n)) => format!("{} {n}", e.transition),
                (false, None) => e.transition.clone(),
            };
            let style = if e.skipped { ", style=dashed" } else { "" };
            let _ = writeln!(
                out,
                "  {} -> {} [label={}{style}];",
                quote(&e.from),
                quote(&e.to),
                quote(&label)
            );
        }
        out.push_str("}\n");
        out
    }

    /// As an SVG picture, laid out by `layout-rs` from [`Graph::dot`].
    pub fn svg(&self) -> anyhow::Result<String> {
        let dot = self.dot();
        let mut parser = layout::gv::DotParser::new(&dot);
        let parsed = parser
            .process()
            .map_err(|e| anyhow::anyhow!("the graph's DOT does not parse: {e}"))?;
        let mut builder = layout::gv::GraphBuilder::new();
        builder.visit_graph(&parsed);
        let mut visual = builder.get();
        let mut svg = layout::backends::svg::SVGWriter::new();
        visual.do_it(false, false, false, &mut svg);
        Ok(svg.finalize())
    }
}

/// `s` cut to `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    let first_line = s.lines().next().unwrap_or_default();
    if first_line.chars().count() <= max && first_line.len() == s.len() {
        return s.to_string();
    }
    let kept: String = first_line.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// A DOT string's escapes: quotes and backslashes.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A DOT identifier or label, quoted.
fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow() -> Workflow {
        let activity = |id: &str, kind: &str, outputs: &[&str], next: &[(&str, &str)]| {
            crate::workflow::Activity {
                id: id.into(),
                kind: kind.into(),
                config: serde_json::json!({}),
                next: next
                    .iter()
                    .map(|(t, to)| (t.to_string(), vec![to.to_string()]))
                    .collect(),
                outputs: outputs.iter().map(|o| o.to_string()).collect(),
                delivery: kind == "email",
                join: false,
                validity_ms: None,
            }
        };
        Workflow {
            name: "news".into(),
            schedule: None,
            activities: vec![
                activity("q", "query", &["done"], &[("done", "split")]),
                activity(
                    "split",
                    "split",
                    &["vip", "rest"],
                    &[("vip", "mail"), ("rest", "mail")],
                ),
                activity("mail", "email", &["done"], &[]),
            ],
        }
    }

    #[test]
    fn text_draws_each_activity_once_in_transition_order() {
        let text = Graph::of_workflow(&workflow()).text(100);
        assert_eq!(
            text,
            "news\n\
             q [query]\n\
             └─ done → split [split]\n   \
             ├─ vip → mail [email]\n   \
             └─ rest → mail (see above)\n"
        );
        let narrow = Graph::of_workflow(&workflow()).text(20);
        assert!(narrow.lines().all(|l| l.chars().count() <= 20), "{narrow}");
    }

    #[test]
    fn dot_quotes_what_it_is_given_and_svg_lays_it_out() {
        let mut g = Graph::of_workflow(&workflow());
        g.nodes[0].state = Some("failed: \"bad\" filter".into());
        let dot = g.dot();
        assert!(dot.contains(r#"failed: \"bad\" filter"#), "{dot}");
        assert!(dot.contains(r#""split" -> "mail" [label="vip"];"#), "{dot}");
        let svg = g.svg().unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        for text in ["split", "mail", "vip", "rest"] {
            assert!(svg.contains(text), "{text} in {svg}");
        }
    }
}
