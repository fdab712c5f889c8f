//! Audience files: CSV (with a header) or NDJSON, upserted by `id`.
//!
//! Two streaming passes keep memory flat at any size: the first validates
//! every record (syntax, email and mobile formats, platform, links to existing
//! records, duplicate ids) without storing anything; the second stores the
//! valid records in chunks of [`CHUNK`] rows, one sled batch each. By default
//! one bad record stores nothing (all-or-nothing); with a rejects file, bad
//! records are written there with their reasons and the rest is stored.
//!
//! The second pass stages its chunks as a new generation of the dimension
//! and publishes them in one small write at the end (see
//! [`crate::store::manifest`]): a crash at any point leaves the audience as
//! it was before the import or as it is after, and the next import says
//! what it found and discarded.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::store::audience::{self, Dimension, KeyIndex, Row};
pub use crate::store::manifest::Interrupted;
use crate::store::{Store, StoreError};

/// Problems listed in an all-or-nothing failure; the rest are counted.
const MAX_LISTED: usize = 20;

/// Rows stored per sled batch: a multiple of the column block size, and the
/// batch size sled handles fastest.
const CHUNK: usize = 16_384;

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
    #[error("{}", render(.file, .problems, *.more))]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, by line (the first [`MAX_LISTED`]).
        problems: Vec<Problem>,
        /// Problems found beyond those listed.
        more: u64,
    },
    /// A file cannot be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Interrupted (Ctrl-C) while checking the file: nothing was stored.
    #[error("interrupted while checking the file: nothing was stored")]
    Interrupted,
}

fn render(file: &str, problems: &[Problem], more: u64) -> String {
    let mut s: Vec<String> = problems
        .iter()
        .map(|p| format!("{file}:{}: {}", p.line, p.message))
        .collect();
    if more > 0 {
        s.push(format!("... and {more} more problem(s)"));
    }
    s.push(format!(
        "nothing was imported from {file}: fix the line(s) above and import it again, \
         or pass --skip-invalid FILE to load the valid rows and write the rejected ones to FILE"
    ));
    s.join("\n")
}

/// How to import.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Store the valid rows and write rejected ones, with reasons, here
    /// (NDJSON); without it the import is all-or-nothing.
    pub rejects: Option<PathBuf>,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records that did not exist.
    pub inserted: u64,
    /// Records that existed and were overwritten.
    pub updated: u64,
    /// Records rejected (only with a rejects file).
    pub rejected: u64,
    /// An earlier import of this dimension found interrupted, and what was
    /// done about it.
    pub interrupted: Option<Interrupted>,
}

/// A record as read: its line and fields by column (`None`: empty). Column
/// names are shared between the records of a file.
struct Record {
    line: u64,
    fields: Vec<(Arc<str>, Option<String>)>,
}

impl Record {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| &**k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Imports a file into a dimension (`recipient` or `subscription`).
pub fn import_file(
    store: &Store,
    dimension: &str,
    path: &Path,
    options: &Options,
) -> Result<Summary, ImportError> {
    let file = path.display().to_string();
    let dim = audience::dimension(dimension)?;
    let io = |source| ImportError::Io {
        file: file.clone(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    let interrupted = store.audience().recover(dimension)?;
    let mut links = LinkCache::default();

    // Pass 1: validate everything, store nothing.
    let bar = progress(options.progress, size, "checking");
    let mut seen: rustc_hash::FxHashMap<Box<str>, u64> = Default::default();
    let mut listed = Vec::new();
    let mut more = 0u64;
    let mut rejected: HashSet<u64> = HashSet::new();
    let mut rejects = match &options.rejects {
        Some(p) => Some(BufWriter::new(File::create(p).map_err(|source| {
            ImportError::Io {
                file: p.display().to_string(),
                source,
            }
        })?)),
        None => None,
    };
    crate::interrupt::doing(crate::interrupt::Doing::Checking);
    for_each_record(path, dim, &bar, |rec| {
        if crate::interrupt::requested() {
            return Err(ImportError::Interrupted);
        }
        let (line, reasons, fields) = match rec {
            Err(p) => (p.line, vec![p.message], None),
            Ok(r) => {
                let reasons = check(store, dim, &r, &mut seen, &mut links)?;
                (r.line, reasons, Some(r.fields))
            }
        };
        if reasons.is_empty() {
            return Ok(());
        }
        rejected.insert(line);
        match &mut rejects {
            Some(w) => {
                let record: serde_json::Map<String, serde_json::Value> = fields
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_string(), serde_json::Value::String(v))))
                    .collect();
                let json =
                    serde_json::json!({ "line": line, "reasons": reasons, "record": record });
                writeln!(w, "{json}").map_err(|source| ImportError::Io {
                    file: options
                        .rejects
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    source,
                })?;
            }
            None => {
                for message in reasons {
                    if listed.len() < MAX_LISTED {
                        listed.push(Problem { line, message });
                    } else {
                        more += 1;
                    }
                }
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    drop(seen);
    if let Some(mut w) = rejects {
        w.flush().map_err(io)?;
    }
    if options.rejects.is_none() && !listed.is_empty() {
        return Err(ImportError::Invalid {
            file,
            problems: listed,
            more,
        });
    }

    // Pass 2: store the valid records, a chunk at a time. An interrupt from
    // here on lets it finish, so it stores everything.
    if crate::interrupt::requested() {
        return Err(ImportError::Interrupted);
    }
    crate::interrupt::doing(crate::interrupt::Doing::Storing);
    let bar = progress(options.progress, size, "storing");
    let audience = store.audience();
    let mut import = audience.begin(dimension, &file)?;
    let mut chunk: Vec<Row> = Vec::with_capacity(CHUNK);
    let mut stage = |chunk: &mut Vec<Row>| -> Result<(), ImportError> {
        import.write(std::mem::take(chunk))?;
        tracing::debug!(dimension, rows = import.staged(), "staged");
        Ok(())
    };
    for_each_record(path, dim, &bar, |rec| {
        let Ok(rec) = rec else { return Ok(()) };
        if rejected.contains(&rec.line) {
            return Ok(());
        }
        chunk.push(to_row(store, dim, rec, &mut links)?);
        if chunk.len() >= CHUNK {
            stage(&mut chunk)?;
        }
        Ok(())
    })?;
    stage(&mut chunk)?;
    let upserted = import.publish()?;
    tracing::debug!(dimension, "published");
    let summary = Summary {
        inserted: upserted.inserted,
        updated: upserted.updated,
        rejected: rejected.len() as u64,
        interrupted,
    };
    bar.finish_and_clear();
    crate::interrupt::doing(crate::interrupt::Doing::Other);
    Ok(summary)
}

fn progress(show: bool, bytes: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("a valid progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Calls `f` on every record of the file, in order, with the problem of a
/// record that cannot be read.
fn for_each_record(
    path: &Path,
    dim: &Dimension,
    bar: &ProgressBar,
    mut f: impl FnMut(Result<Record, Problem>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let file = path.display().to_string();
    let io = |source| ImportError::Io {
        file: file.clone(),
        source,
    };
    let reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let is_json = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("ndjson" | "jsonl" | "json")
    );
    if is_json {
        let mut bytes = 0u64;
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(io)?;
            bytes += line.len() as u64 + 1;
            if i.is_multiple_of(4096) {
                bar.set_position(bytes);
            }
            if line.trim().is_empty() {
                continue;
            }
            f(parse_json_line(dim, i as u64 + 1, &line))?;
        }
        return Ok(());
    }
    read_csv(reader, dim, bar, &file, f)
}

fn read_csv(
    reader: impl Read,
    dim: &Dimension,
    bar: &ProgressBar,
    file: &str,
    mut f: impl FnMut(Result<Record, Problem>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(ImportError::Invalid {
                file: file.to_string(),
                problems: vec![Problem {
                    line: 1,
                    message: format!("unreadable header: {e}"),
                }],
                more: 0,
            });
        }
    };
    // A header that means a documented column imports nothing into it:
    // all or nothing, said before anything else.
    let misnamed: Vec<Problem> = headers
        .iter()
        .filter_map(|h| {
            dim.meant(h).map(|c| Problem {
                line: 1,
                message: format!(
                    "header `{h}` is not a {} column: did you mean `{c}`? (a {} file has id,{})",
                    dim.name,
                    dim.name,
                    dim.columns.join(",")
                ),
            })
        })
        .collect();
    if !misnamed.is_empty() {
        return Err(ImportError::Invalid {
            file: file.to_string(),
            problems: misnamed,
            more: 0,
        });
    }
    let missing: Vec<&str> = std::iter::once("id")
        .chain(dim.required())
        .filter(|c| !headers.iter().any(|h| h == *c))
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::Invalid {
            file: file.to_string(),
            problems: vec![Problem {
                line: 1,
                message: format!(
                    "the header lacks {} (a {} file has id,{})",
                    missing.join(", "),
                    dim.name,
                    dim.columns.join(",")
                ),
            }],
            more: 0,
        });
    }
    let headers: Vec<Arc<str>> = headers.iter().map(Arc::from).collect();
    let mut record = csv::StringRecord::new();
    let mut n = 0u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let pos = record
                    .position()
                    .expect("a record read from a file has a position");
                n += 1;
                if n.is_multiple_of(4096) {
                    bar.set_position(pos.byte());
                }
                let fields = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (h.clone(), (!v.is_empty()).then(|| v.to_string())))
                    .collect();
                f(Ok(Record {
                    line: pos.line(),
                    fields,
                }))?;
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let recoverable = matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. });
                f(Err(Problem {
                    line,
                    message: format!("unreadable row: {e}"),
                }))?;
                if !recoverable {
                    return Ok(());
                }
            }
        }
    }
}

fn parse_json_line(dim: &Dimension, line: u64, text: &str) -> Result<Record, Problem> {
    let obj =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).map_err(|e| {
            Problem {
                line,
                message: format!("not a JSON object: {e}"),
            }
        })?;
    let mut fields = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        // A key that means a documented column, as a CSV header would.
        if let Some(c) = dim.meant(&k) {
            return Err(Problem {
                line,
                message: format!(
                    "key `{k}` is not a {} column: did you mean `{c}`?",
                    dim.name
                ),
            });
        }
        let v = match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) if s.trim().is_empty() => None,
            serde_json::Value::String(s) => Some(s.trim().to_string()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            other => {
                return Err(Problem {
                    line,
                    message: format!(
                        "field `{k}`: expected a text, number or boolean, found {other}"
                    ),
                });
            }
        };
        fields.push((Arc::from(k), v));
    }
    Ok(Record { line, fields })
}

/// Key indexes of the dimensions a file links to, loaded on first use.
#[derive(Default)]
struct LinkCache {
    indexes: HashMap<&'static str, KeyIndex>,
}

impl LinkCache {
    fn resolve(
        &mut self,
        store: &Store,
        target: &'static str,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        if !self.indexes.contains_key(target) {
            let index = store.audience().key_index(target)?;
            self.indexes.insert(target, index);
        }
        Ok(self.indexes[target].get(key))
    }
}

/// Every problem of one record (empty when it is valid).
fn check(
    store: &Store,
    dim: &Dimension,
    rec: &Record,
    seen: &mut rustc_hash::FxHashMap<Box<str>, u64>,
    links: &mut LinkCache,
) -> Result<Vec<String>, ImportError> {
    let mut bad = Vec::new();
    match rec.get("id") {
        None => bad.push("`id` is empty".to_string()),
        Some(key) => {
            if let Some(first) = seen.get(key) {
                bad.push(format!(
                    "id `{key}` appears twice in the file (first on line {first})"
                ));
            } else {
                seen.insert(key.into(), rec.line);
            }
        }
    }
    for (column, rule) in dim.checks {
        if let Err(e) = rule.apply(rec.get(column)) {
            bad.push(format!("{column} {e}"));
        }
    }
    for link in dim.links {
        let Some(target_key) = rec.get(link.column) else {
            bad.push(format!("`{}` is empty", link.column));
            continue;
        };
        if links.resolve(store, link.target, target_key)?.is_none() {
            bad.push(format!(
                "{} `{target_key}` does not exist (import the {}s first)",
                link.column, link.target
            ));
        }
    }
    Ok(bad)
}

/// A valid record as a row to store: normalised values and resolved links.
fn to_row(
    store: &Store,
    dim: &Dimension,
    rec: Record,
    links: &mut LinkCache,
) -> Result<Row, ImportError> {
    let mut resolved = Vec::with_capacity(dim.links.len());
    for link in dim.links {
        let key = rec.get(link.column).unwrap_or_default();
        if let Some(id) = links.resolve(store, link.target, key)? {
            resolved.push((link.name, id));
        }
    }
    let mut key = String::new();
    let mut values = Vec::with_capacity(rec.fields.len());
    for (k, v) in rec.fields {
        if &*k == "id" {
            key = v.unwrap_or_default();
            continue;
        }
        // Only phone numbers change when normalised; the other checks passed.
        let v = match (dim.checks.iter().find(|(c, _)| **c == *k), v) {
            (Some((_, rule @ audience::Check::Phone)), Some(v)) => {
                Some(rule.apply(Some(&v)).ok().flatten().unwrap_or(v))
            }
            (_, v) => v,
        };
        values.push((k, v));
    }
    Ok(Row {
        key,
        values,
        links: resolved,
    })
}

/// Writes every record of a dimension as NDJSON, in id order; returns how many.
pub fn export(store: &Store, dimension: &str, out: &mut impl Write) -> anyhow::Result<u64> {
    let audience = store.audience();
    let count = audience.count(dimension)?;
    let mut start = 0;
    while start < count {
        let len = audience::BLOCK.min(count - start);
        let columns = audience.read_range(dimension, start, len)?;
        for i in 0..len as usize {
            let obj: serde_json::Map<String, serde_json::Value> = columns
                .iter()
                .filter_map(|(c, v)| {
                    v.get(i)
                        .cloned()
                        .flatten()
                        .map(|v| (c.clone(), serde_json::Value::String(v)))
                })
                .collect();
            serde_json::to_writer(&mut *out, &obj)?;
            out.write_all(b"\n")?;
        }
        start += len;
    }
    out.flush()?;
    Ok(count)
}
