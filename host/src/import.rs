//! Audience files: CSV (with a header) or NDJSON, validated in full before
//! anything is stored, then upserted in one atomic batch.

use std::collections::HashMap;
use std::path::Path;

use crate::store::audience::{self, Row, Upserted};
use crate::store::{Store, StoreError};

/// Most problems listed before the import gives up reading.
const MAX_PROBLEMS: usize = 20;

/// A problem with one line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the file.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Why an import stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Lines that do not fit; nothing was stored.
    #[error("{}", render(.file, .problems))]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, by line.
        problems: Vec<Problem>,
    },
    /// The file cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn render(file: &str, problems: &[Problem]) -> String {
    let mut s: Vec<String> = problems
        .iter()
        .map(|p| format!("{file}:{}: {}", p.line, p.message))
        .collect();
    s.push(format!(
        "nothing was imported from {file}: fix the line(s) above and import it again"
    ));
    s.join("\n")
}

/// Imports a file into a dimension (`recipient` or `subscription`).
pub fn import_file(store: &Store, dimension: &str, path: &Path) -> Result<Upserted, ImportError> {
    let file = path.display().to_string();
    let dim = audience::dimension(dimension)?;
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        file: file.clone(),
        source,
    })?;
    let is_json = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("ndjson" | "jsonl" | "json")
    );
    let records = if is_json {
        read_ndjson(&text)
    } else {
        read_csv(&text, dim)
    };
    let records = records.map_err(|problems| ImportError::Invalid {
        file: file.clone(),
        problems,
    })?;
    let rows = check(store, dim, records).map_err(|problems| ImportError::Invalid {
        file: file.clone(),
        problems,
    })?;
    Ok(store.audience().upsert(dimension, &rows)?)
}

/// A record as read: its line and fields by column.
type Record = (u64, Vec<(String, Option<String>)>);

fn read_csv(text: &str, dim: &audience::Dimension) -> Result<Vec<Record>, Vec<Problem>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| {
            vec![Problem {
                line: 1,
                message: format!("unreadable header: {e}"),
            }]
        })?
        .clone();
    let missing: Vec<&str> = std::iter::once("id")
        .chain(dim.columns.iter().copied())
        .filter(|c| !headers.iter().any(|h| h == *c))
        .collect();
    if !missing.is_empty() {
        return Err(vec![Problem {
            line: 1,
            message: format!(
                "the header lacks {} (a {} file has id,{})",
                missing.join(", "),
                dim.name,
                dim.columns.join(",")
            ),
        }]);
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for rec in reader.records() {
        match rec {
            Ok(r) => {
                let line = r.position().map(|p| p.line()).unwrap_or(0);
                let fields = headers
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| {
                        (
                            h.to_string(),
                            if v.is_empty() {
                                None
                            } else {
                                Some(v.to_string())
                            },
                        )
                    })
                    .collect();
                out.push((line, fields));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push(Problem {
                    line,
                    message: format!("unreadable row: {e}"),
                });
                if problems.len() >= MAX_PROBLEMS {
                    break;
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn read_ndjson(text: &str) -> Result<Vec<Record>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line) {
            Ok(obj) => {
                let mut fields = Vec::new();
                for (k, v) in obj {
                    let v = match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) if s.trim().is_empty() => None,
                        serde_json::Value::String(s) => Some(s.trim().to_string()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        serde_json::Value::Bool(b) => Some(b.to_string()),
                        other => {
                            problems.push(Problem {
                                line: line_no,
                                message: format!(
                                    "field `{k}`: expected a text, number or boolean, found {other}"
                                ),
                            });
                            continue;
                        }
                    };
                    fields.push((k, v));
                }
                out.push((line_no, fields));
            }
            Err(e) => problems.push(Problem {
                line: line_no,
                message: format!("not a JSON object: {e}"),
            }),
        }
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Validates records and resolves links; every problem is reported.
fn check(
    store: &Store,
    dim: &audience::Dimension,
    records: Vec<Record>,
) -> Result<Vec<Row>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut rows = Vec::with_capacity(records.len());
    let mut link_cache: HashMap<String, Option<u64>> = HashMap::new();
    for (line, fields) in records {
        let mut bad = |message: String| problems.push(Problem { line, message });
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
        };
        let Some(key) = get("id") else {
            bad("`id` is empty".into());
            continue;
        };
        if let Some(first) = seen.insert(key.clone(), line) {
            bad(format!(
                "id `{key}` appears twice in the file (first on line {first})"
            ));
        }
        match dim.name {
            "recipient" => {
                if let Some(email) = get("email")
                    && !plausible_email(&email)
                {
                    bad(format!("email `{email}` is not an address"));
                }
                if let Some(mobile) = get("mobile")
                    && !plausible_mobile(&mobile)
                {
                    bad(format!(
                        "mobile `{mobile}` is not an E.164 number such as +15550001111"
                    ));
                }
            }
            "subscription" => {
                match get("platform").as_deref() {
                    Some("ios" | "android") => {}
                    Some(p) => bad(format!(
                        "platform `{p}` is unknown (expected ios or android)"
                    )),
                    None => bad("`platform` is empty (expected ios or android)".into()),
                }
                for required in ["app", "token"] {
                    if get(required).is_none() {
                        bad(format!("`{required}` is empty"));
                    }
                }
            }
            _ => {}
        }
        let mut links = Vec::new();
        for link in dim.links {
            let Some(target_key) = get(link.column) else {
                bad(format!("`{}` is empty", link.column));
                continue;
            };
            let resolved = match link_cache.get(&target_key) {
                Some(r) => *r,
                None => {
                    let r = match store.audience().lookup(link.target, &target_key) {
                        Ok(r) => r,
                        Err(e) => {
                            bad(e.to_string());
                            continue;
                        }
                    };
                    link_cache.insert(target_key.clone(), r);
                    r
                }
            };
            match resolved {
                Some(id) => links.push((link.name, id)),
                None => bad(format!(
                    "{} `{target_key}` does not exist (import the {}s first)",
                    link.column, link.target
                )),
            }
        }
        let values = fields.into_iter().filter(|(k, _)| k != "id").collect();
        rows.push(Row { key, values, links });
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

fn plausible_email(s: &str) -> bool {
    s.parse::<lettre::Address>().is_ok()
}

fn plausible_mobile(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}
