//! The names each activity's config declares ([`crate::runtime::preflight`])
//! checked against the data and the accounts, for every plugin alike (the
//! host reads no plugin's config fields): dimensions exist; attributes
//! exist in the dimension the activity reads, found by following the graph
//! (an error with the name meant when the dimension has records, a warning
//! while it is empty, as an import may still add the column); accounts
//! exist, are granted to the plugin, and have the secret and parameters
//! their authentication and the plugin need.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::parse::{Diagnostic, Parsed, RawActivity};
use crate::runtime::Configured;
use crate::runtime::preflight::{Needs, Referent};
use crate::spelling::near;
use crate::store::Store;
use crate::store::plugins::PluginRecord;

/// One activity that configured, with what its plugin said.
pub struct Checked<'a> {
    /// As written.
    pub raw: &'a RawActivity,
    /// Its plugin.
    pub plugin: &'a PluginRecord,
    /// What the plugin said of its config.
    pub configured: &'a Configured,
}

/// The problems with the names every activity declares, errors and
/// warnings, each with its activity's id.
pub fn check(parsed: &Parsed, store: &Store, checked: &[Checked<'_>]) -> Vec<(String, Diagnostic)> {
    let reads = dimensions(parsed, checked);
    let mut out = Vec::new();
    let accounts = Accounts::new(store);
    for c in checked {
        let Some(needs) = &c.configured.needs else {
            continue;
        };
        let at = |field: &str, offset: Option<u32>, message: String| {
            let path = match field {
                "" => format!("activity.{}.config", c.raw.id),
                f => format!("activity.{}.config.{}", c.raw.id, toml_path(f)),
            };
            parsed.at(&parsed.config_point(c.raw, field, offset), path, message)
        };
        for r in &needs.references {
            let found = match &r.referent {
                Referent::Dimension(d) => dimension(d).map(|m| (m, false)),
                Referent::Attribute(path) => match reads.get(c.raw.id.as_str()) {
                    Some(Some(dim)) => attribute(store, dim, path),
                    // Unknown: a plugin before 0.4.0 upstream, or a
                    // dimension reported on its own.
                    _ => None,
                },
                Referent::Account(name) => accounts.check(name, c.plugin).map(|m| (m, false)),
                Referent::AccountParam(account, param) => {
                    accounts.param(account, param, c.plugin).map(|m| (m, false))
                }
            };
            if let Some((message, warning)) = found {
                let d = at(&r.field, r.offset, message);
                out.push((c.raw.id.clone(), if warning { d.warning() } else { d }));
            }
        }
    }
    out
}

/// An unknown dimension, with the one meant.
fn dimension(name: &str) -> Option<String> {
    if crate::store::audience::dimension(name).is_ok() {
        return None;
    }
    let names: Vec<&str> = crate::store::audience::SCHEMA
        .iter()
        .map(|d| d.name)
        .collect();
    Some(match near(name, &names) {
        Some(meant) => format!("unknown dimension `{name}`: did you mean `{meant}`?"),
        None => format!(
            "unknown dimension `{name}` (dimensions: {})",
            names.join(", ")
        ),
    })
}

/// An attribute `dim` does not have: the message, and whether it is only
/// a warning (no records yet, so an import may still add it).
fn attribute(store: &Store, dim: &str, path: &str) -> Option<(String, bool)> {
    let audience = store.audience();
    let paths = audience.paths(dim).ok()?;
    let schema = crate::store::audience::dimension(dim).ok()?;
    let whole = path == dim || schema.links.iter().any(|l| l.name == path);
    // Templates on recipients may name them `recipient.x` too.
    let own = path
        .strip_prefix(dim)
        .and_then(|p| p.strip_prefix('.'))
        .is_some_and(|p| paths.iter().any(|c| c == p));
    if whole || own || paths.iter().any(|c| c == path) {
        return None;
    }
    let names: Vec<&str> = paths.iter().map(String::as_str).collect();
    let meant =
        near(path, &names).or_else(|| names.iter().copied().find(|n| n.eq_ignore_ascii_case(path)));
    let count = audience.count(dim).unwrap_or(0);
    let mut message = match meant {
        Some(m) => format!("`{path}` is not an attribute of {dim}: did you mean `{m}`?"),
        None => format!("`{path}` is not an attribute of {dim}"),
    };
    if count == 0 {
        message.push_str(&format!(
            " (no {dim} imported yet: an import with a `{path}` column would add it)"
        ));
    }
    Some((message, count == 0))
}

/// Accounts, read once.
struct Accounts {
    all: HashMap<String, crate::store::settings::Account>,
    secrets: BTreeSet<String>,
}

impl Accounts {
    fn new(store: &Store) -> Accounts {
        Accounts {
            all: store
                .accounts()
                .unwrap_or_default()
                .into_iter()
                .map(|a| (a.name.clone(), a))
                .collect(),
            secrets: store
                .secret_names()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    /// What keeps `plugin` from sending through account `name`.
    fn check(&self, name: &str, plugin: &PluginRecord) -> Option<String> {
        let Some(account) = self.all.get(name) else {
            let names: Vec<&str> = self.all.keys().map(String::as_str).collect();
            return Some(match near(name, &names) {
                Some(meant) => format!("no account `{name}`: did you mean `{meant}`?"),
                None => format!(
                    "no account `{name}`: create it with `crosscast account set {name} --url URL ...`"
                ),
            });
        };
        if !plugin.accounts.iter().any(|a| a == name) {
            return Some(format!(
                "account `{name}` is not granted to plugin `{}`: `crosscast plugin grant {} --account {name}`",
                plugin.name, plugin.name
            ));
        }
        match &account.secret {
            Some(secret) if !self.secrets.contains(secret) => {
                return Some(format!(
                    "account `{name}` uses secret `{secret}`, which is not set: `crosscast secret set {secret} --from-file FILE`"
                ));
            }
            None if account.needs_secret() => {
                return Some(format!(
                    "account `{name}` authenticates with {:?} but has no secret: `crosscast account set {name} ... --secret NAME`",
                    account.auth
                ));
            }
            _ => {}
        }
        account
            .check()
            .err()
            .map(|e| format!("account `{name}`: {e}"))
    }

    /// What is missing for `plugin` to read `param` from `account`
    /// (nothing to say of an account reported on its own).
    fn param(&self, account: &str, param: &str, plugin: &PluginRecord) -> Option<String> {
        let a = self.all.get(account)?;
        if a.params.contains_key(param) {
            return None;
        }
        let names: Vec<&str> = a.params.keys().map(String::as_str).collect();
        let typo = near(param, &names)
            .map(|m| format!(" (it has `{m}`: a typo?)"))
            .unwrap_or_default();
        Some(format!(
            "plugin `{}` reads parameter `{param}` of account `{account}`, which has none{typo}: `crosscast account set {account} ... --param {param}=VALUE`",
            plugin.name
        ))
    }
}

/// The dimension each activity reads, where the graph tells: a config that
/// names one, a channel's target, else what arrives from upstream (when
/// every incoming transition brings the same). Activities on a cycle, or
/// below a plugin that declares nothing, are left unknown.
fn dimensions<'a>(parsed: &'a Parsed, checked: &[Checked<'a>]) -> HashMap<&'a str, Option<String>> {
    let by_id: HashMap<&str, &RawActivity> = parsed
        .activities
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    let configured: HashMap<&str, &Configured> = checked
        .iter()
        .map(|c| (c.raw.id.as_str(), c.configured))
        .collect();
    let mut incoming: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut pending: HashMap<&str, usize> = HashMap::new();
    for a in &parsed.activities {
        pending.entry(a.id.as_str()).or_default();
        for (_, targets) in a.next.values() {
            for (t, _) in targets {
                incoming.entry(t.as_str()).or_default().push(a.id.as_str());
                *pending.entry(t.as_str()).or_default() += 1;
            }
        }
    }
    let mut ready: VecDeque<&str> = parsed
        .activities
        .iter()
        .map(|a| a.id.as_str())
        .filter(|id| pending.get(id) == Some(&0))
        .collect();
    let mut reads: HashMap<&str, Option<String>> = HashMap::new();
    let mut emits: HashMap<&str, Option<String>> = HashMap::new();
    while let Some(id) = ready.pop_front() {
        let sources = incoming.get(id).map(Vec::as_slice).unwrap_or_default();
        let arriving: BTreeSet<Option<&String>> = sources
            .iter()
            .map(|s| emits.get(s).and_then(Option::as_ref))
            .collect();
        let input = match arriving.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(d)] => Some((*d).clone()),
            _ => None,
        };
        let (r, e) = match configured.get(id) {
            Some(c) => {
                let needs: Option<&Needs> = c.needs.as_ref();
                let r = needs
                    .and_then(|n| n.reads.clone())
                    .or(c.target.map(str::to_string))
                    .or_else(|| input.clone());
                let e = match (c.delivery, needs) {
                    // A delivery passes on the population it received.
                    (true, _) => input.clone(),
                    (false, Some(n)) => n.emits.clone().or_else(|| r.clone()),
                    (false, None) => None,
                };
                (r, e)
            }
            None => (None, None),
        };
        reads.insert(id, r);
        emits.insert(id, e);
        if let Some(a) = by_id.get(id) {
            for (_, targets) in a.next.values() {
                for (t, _) in targets {
                    if let Some(n) = pending.get_mut(t.as_str()) {
                        *n -= 1;
                        if *n == 0 {
                            ready.push_back(t.as_str());
                        }
                    }
                }
            }
        }
    }
    reads
}

/// `subsets.1.filter` → `subsets[1].filter`, as a TOML reader writes it.
pub fn toml_path(field: &str) -> String {
    let mut out = String::new();
    for part in field.split('.') {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}
