//! Workflows: graphs of activities written in TOML.
//!
//! ```toml
//! name = "welcome"
//! [activity.query]
//! type = "query"
//! config = { dimension = "recipient", filter = "email is not empty" }
//! next = { done = "send" }
//! [activity.send]
//! type = "email"
//! config = { from = "news@acme.example", subject = "Hi", text = "Hello {{ first_name }}" }
//! ```
//! [`parse`] reads the file keeping every position; [`validate`] checks it
//! against the installed plugins and reports `FILE:LINE:COL: field: message`.

mod needs;
mod parse;
pub mod schedule;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use parse::{Diagnostic, Parsed, decode, parse};
pub use validate::validate;

/// A validated workflow, as stored with each run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Workflow {
    /// Its name.
    pub name: String,
    /// Its activities, in file order.
    pub activities: Vec<Activity>,
    /// When `crosscast serve` starts its runs (`crosscast schedule add`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<schedule::Schedule>,
}

/// One node of the graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    /// Its id, unique in the workflow.
    pub id: String,
    /// The plugin that implements it.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its config, as given to the plugin.
    pub config: serde_json::Value,
    /// Transition → activities it leads to.
    pub next: BTreeMap<String, Vec<String>>,
    /// The transitions its config gives (from the plugin).
    pub outputs: Vec<String>,
    /// True for a delivery (channel plugin).
    pub delivery: bool,
    /// True when its plugin joins several inputs (a union, an intersection):
    /// it runs once every incoming transition has delivered, with all of them.
    #[serde(default)]
    pub join: bool,
    /// Deliveries: how long transient failures are retried, from the first
    /// attempt (ms); [`DEFAULT_VALIDITY_MS`] when absent.
    #[serde(default)]
    pub validity_ms: Option<i64>,
}

/// How long a delivery retries transient failures when its workflow does not
/// say: three days.
pub const DEFAULT_VALIDITY_MS: i64 = 3 * 86_400_000;

impl Workflow {
    /// An activity by id.
    pub fn activity(&self, id: &str) -> Option<&Activity> {
        self.activities.iter().find(|a| a.id == id)
    }

    /// The transitions leading to an activity, as `activity.transition`.
    pub fn incoming(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.activities {
            for (transition, targets) in &a.next {
                if targets.iter().any(|t| t == id) {
                    out.push(format!("{}.{transition}", a.id));
                }
            }
        }
        out
    }

    /// Activities nothing leads to: where a run starts.
    pub fn starts(&self) -> Vec<&Activity> {
        let targets: std::collections::HashSet<&str> = self
            .activities
            .iter()
            .flat_map(|b| b.next.values().flatten().map(String::as_str))
            .collect();
        self.activities
            .iter()
            .filter(|a| !targets.contains(a.id.as_str()))
            .collect()
    }
}
