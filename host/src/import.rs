//! Audience files: CSV (with a header) or NDJSON, upserted by `id`.
//!
//! One streaming pass checks every record (syntax, email and mobile formats,
//! platform, links to existing records, duplicate ids) and stages the valid
//! ones, [`CHUNK`] rows at a time, as a new generation of the dimension,
//! published in one small write at the end (see [`crate::store::manifest`]).
//! So by default one bad record stores nothing (all-or-nothing), and a crash
//! at any point leaves the audience as it was before the import or as it is
//! after; the next import says what it found and discarded. With a rejects
//! file, bad records are written there with their reasons (read again from
//! the file: the import keeps no record it refused) and the rest is stored.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::store::audience::{self, Claim, Dimension, KeyIndex, Row};
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
    /// Interrupted (Ctrl-C) before it took effect: nothing was stored.
    #[error("interrupted before the import took effect: nothing was stored")]
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
#[derive(Default, Clone)]
pub struct Options {
    /// Store the valid rows and write rejected ones, with reasons, here
    /// (NDJSON); without it the import is all-or-nothing.
    pub rejects: Option<PathBuf>,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Asked to stop: the client a server imports for went away. Checked
    /// with Ctrl-C; the import then stops having stored nothing.
    pub cancelled: Option<crate::cli::Cancelled>,
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
    let audience = store.audience();
    let interrupted = audience.recover(dimension)?;
    let mut links = LinkCache::default();

    // One pass: check each record and stage the valid ones. Nothing takes
    // effect before `publish`, so a bad record (all-or-nothing), an error
    // or an interrupt leaves the audience as it was.
    crate::interrupt::doing(crate::interrupt::Doing::Importing);
    let bar = progress(options.progress, size, "importing");
    let mut import = audience.begin(dimension, &file, estimate_rows(path, size))?;
    let all_or_nothing = options.rejects.is_none();
    // Bad records: every one with a rejects file, else the first listed.
    let mut bad: Vec<Bad> = Vec::new();
    let mut problems = 0u64;
    let mut chunk: Vec<Row> = Vec::with_capacity(CHUNK);
    for_each_record(path, dim, &bar, |rec| {
        if crate::interrupt::requested() || options.cancelled.as_ref().is_some_and(|c| c()) {
            return Err(ImportError::Interrupted);
        }
        let (line, mut reasons, rec) = match rec {
            Err(p) => (p.line, vec![Reason::Text(p.message)], None),
            Ok(r) => (r.line, check(store, dim, &r, &mut links)?, Some(r)),
        };
        if let Some(rec) = rec.filter(|_| reasons.is_empty()) {
            let key = rec.get("id").unwrap_or_default().to_string();
            match import.claim(&key)? {
                Claim::Again(_) => reasons.push(Reason::Duplicate { key }),
                Claim::New(id) | Claim::Existing(id) => {
                    if !(all_or_nothing && problems > 0) {
                        chunk.push(to_row(store, dim, rec, id, &mut links)?);
                    }
                    if chunk.len() >= CHUNK {
                        import.write(std::mem::take(&mut chunk))?;
                        tracing::debug!(dimension, rows = import.staged(), "staged");
                    }
                    return Ok(());
                }
            }
        }
        problems += reasons.len() as u64;
        if !all_or_nothing || bad.iter().map(|b| b.reasons.len()).sum::<usize>() < MAX_LISTED {
            bad.push(Bad { line, reasons });
        }
        // All or nothing: no use staging any more.
        if all_or_nothing {
            chunk.clear();
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let first_lines = first_lines(path, dim, &bad)?;
    if all_or_nothing && problems > 0 {
        drop(import);
        let mut listed = Vec::new();
        for b in &bad {
            for r in &b.reasons {
                if listed.len() < MAX_LISTED {
                    listed.push(Problem {
                        line: b.line,
                        message: r.message(&first_lines),
                    });
                }
            }
        }
        let more = problems - listed.len() as u64;
        return Err(ImportError::Invalid {
            file,
            problems: listed,
            more,
        });
    }
    import.write(chunk)?;
    tracing::debug!(dimension, rows = import.staged(), "staged");
    if let Some(rejects) = &options.rejects {
        write_rejects(path, dim, rejects, &bad, &first_lines)?;
    }
    let upserted = import.publish()?;
    tracing::debug!(dimension, "published");
    crate::interrupt::doing(crate::interrupt::Doing::Other);
    Ok(Summary {
        inserted: upserted.inserted,
        updated: upserted.updated,
        rejected: bad.len() as u64,
        interrupted,
    })
}

/// About how many records a file of `size` bytes holds, from its first
/// MiB: what an import sizes its id index for.
fn estimate_rows(path: &Path, size: u64) -> u64 {
    let mut head = Vec::with_capacity(1 << 20);
    let read = File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut head));
    let lines = head.iter().filter(|b| **b == b'\n').count() as u64;
    match read {
        Ok(n) if n > 0 && lines > 0 => size * lines / n as u64,
        _ => 0,
    }
}

/// Why a record is refused.
enum Reason {
    /// Said as it is.
    Text(String),
    /// Its id appeared on an earlier line.
    Duplicate {
        /// The id.
        key: String,
    },
}

impl Reason {
    fn message(&self, first_lines: &HashMap<String, u64>) -> String {
        match self {
            Reason::Text(t) => t.clone(),
            Reason::Duplicate { key } => match first_lines.get(key) {
                Some(first) => {
                    format!("id `{key}` appears twice in the file (first on line {first})")
                }
                None => format!("id `{key}` appears twice in the file"),
            },
        }
    }
}

/// A refused record: its line and why.
struct Bad {
    line: u64,
    reasons: Vec<Reason>,
}

/// The first line of each id that appears twice among `bad`: read again
/// from the file, only when there is one, so an import keeps no line per
/// record.
fn first_lines(
    path: &Path,
    dim: &Dimension,
    bad: &[Bad],
) -> Result<HashMap<String, u64>, ImportError> {
    let wanted: HashSet<&str> = bad
        .iter()
        .flat_map(|b| &b.reasons)
        .filter_map(|r| match r {
            Reason::Duplicate { key } => Some(key.as_str()),
            Reason::Text(_) => None,
        })
        .collect();
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    for_each_record(path, dim, &ProgressBar::hidden(), |rec| {
        if let Ok(rec) = rec
            && let Some(key) = rec.get("id")
            && wanted.contains(key)
            && !found.contains_key(key)
        {
            found.insert(key.to_string(), rec.line);
        }
        Ok(())
    })?;
    Ok(found)
}

/// Writes the refused records, whole, with their reasons (NDJSON), read
/// again from the file so that an import keeps no record it refused.
fn write_rejects(
    path: &Path,
    dim: &Dimension,
    rejects: &Path,
    bad: &[Bad],
    first_lines: &HashMap<String, u64>,
) -> Result<(), ImportError> {
    let io = |source| ImportError::Io {
        file: rejects.display().to_string(),
        source,
    };
    let mut w = BufWriter::new(File::create(rejects).map_err(io)?);
    let mut next = bad.iter().peekable();
    for_each_record(path, dim, &ProgressBar::hidden(), |rec| {
        let line = match &rec {
            Ok(r) => r.line,
            Err(p) => p.line,
        };
        while let Some(b) = next.next_if(|b| b.line <= line) {
            if b.line < line {
                continue;
            }
            let record: serde_json::Map<String, serde_json::Value> = match &rec {
                Ok(r) => r
                    .fields
                    .iter()
                    .filter_map(|(k, v)| {
                        v.as_ref()
                            .map(|v| (k.to_string(), serde_json::Value::String(v.clone())))
                    })
                    .collect(),
                Err(_) => Default::default(),
            };
            let reasons: Vec<String> = b.reasons.iter().map(|r| r.message(first_lines)).collect();
            let json = serde_json::json!({ "line": b.line, "reasons": reasons, "record": record });
            writeln!(w, "{json}").map_err(io)?;
        }
        Ok(())
    })?;
    w.flush().map_err(io)?;
    Ok(())
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
        // Fields are trimmed as they are copied out: trimming the record in
        // place cost a tenth of an import.
        .trim(csv::Trim::Headers)
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
                    .map(|(h, v)| {
                        let v = v.trim();
                        (h.clone(), (!v.is_empty()).then(|| v.to_string()))
                    })
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

/// Every problem of one record but a repeated id (empty when it is valid).
fn check(
    store: &Store,
    dim: &Dimension,
    rec: &Record,
    links: &mut LinkCache,
) -> Result<Vec<Reason>, ImportError> {
    let mut bad = Vec::new();
    if rec.get("id").is_none() {
        bad.push(Reason::Text("`id` is empty".to_string()));
    }
    for (column, rule) in dim.checks {
        if let Err(e) = rule.apply(rec.get(column)) {
            bad.push(Reason::Text(format!("{column} {e}")));
        }
    }
    for link in dim.links {
        let Some(target_key) = rec.get(link.column) else {
            bad.push(Reason::Text(format!("`{}` is empty", link.column)));
            continue;
        };
        if links.resolve(store, link.target, target_key)?.is_none() {
            bad.push(Reason::Text(format!(
                "{} `{target_key}` does not exist (import the {}s first)",
                link.column, link.target
            )));
        }
    }
    Ok(bad)
}

/// A valid record as a row to store: normalised values and resolved links.
fn to_row(
    store: &Store,
    dim: &Dimension,
    rec: Record,
    id: u64,
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
        id: Some(id),
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
