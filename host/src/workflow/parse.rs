//! Reads a workflow file, keeping where each field is.

use std::collections::BTreeMap;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// A problem in a workflow file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, as a dotted path (`activity.split.config.subsets[1].filter`).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// A warning: worth saying, not a reason to refuse the workflow.
    pub warning: bool,
}

impl Diagnostic {
    /// Renders as `FILE:LINE:COL: field: message` (`warning: message` for
    /// a warning).
    pub fn render(&self, file: &str) -> String {
        let warning = if self.warning { "warning: " } else { "" };
        format!(
            "{file}:{}:{}: {}: {warning}{}",
            self.line, self.column, self.field, self.message
        )
    }

    /// The same problem, as a warning.
    pub fn warning(mut self) -> Diagnostic {
        self.warning = true;
        self
    }
}

/// A transition as written: the span of its value, and each target with its span.
pub type RawTransition = (Range<usize>, Vec<(String, Range<usize>)>);

/// An activity as written, with positions.
#[derive(Debug, Clone)]
pub struct RawActivity {
    /// Its id.
    pub id: String,
    /// Span of its id (the table key).
    pub id_span: Range<usize>,
    /// `type`, with its span.
    pub kind: Option<(String, Range<usize>)>,
    /// `config` as JSON, and the TOML item to locate fields in it.
    pub config: serde_json::Value,
    /// Transition → targets, each with the span of its value.
    pub next: BTreeMap<String, RawTransition>,
    /// `validity` (deliveries): how long transient failures are retried, in
    /// milliseconds, with the span of its value.
    pub validity: Option<(i64, Range<usize>)>,
}

/// Where each line of a text starts, so that a byte offset becomes a line
/// and column by binary search: positions stay cheap when a file has
/// thousands of problems.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(source: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// Line and column (1-based, in characters) of a byte offset.
    fn position(&self, source: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        (line, source[start..offset].chars().count() + 1)
    }
}

/// A parsed workflow file.
pub struct Parsed {
    /// The text.
    pub source: String,
    lines: Lines,
    doc: ImDocument<String>,
    /// `name`.
    pub name: String,
    /// Activities in file order.
    pub activities: Vec<RawActivity>,
    /// `[schedule]`.
    pub schedule: Option<super::schedule::Schedule>,
}

impl Parsed {
    /// Line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        self.lines.position(&self.source, offset)
    }

    /// A diagnostic at a span.
    pub fn at(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.position(span.start);
        Diagnostic {
            line,
            column,
            field: field.into(),
            message: message.into(),
            warning: false,
        }
    }

    /// The span of a field inside an activity's config (`subsets.1.filter`),
    /// or of the closest enclosing item found.
    pub fn config_span(&self, activity: &RawActivity, field: &str) -> Range<usize> {
        let fallback = activity.id_span.clone();
        let Some(act) = self.activity_table(&activity.id) else {
            return fallback;
        };
        let Some((key, item)) = act.get_key_value("config") else {
            return fallback;
        };
        let mut best = item.span().or_else(|| key.span()).unwrap_or(fallback);
        let mut cur = Cursor::Item(item);
        for part in field.split('.').filter(|p| !p.is_empty()) {
            let next = match (cur, part.parse::<usize>()) {
                (Cursor::Item(Item::Value(Value::Array(a))), Ok(i))
                | (Cursor::Value(Value::Array(a)), Ok(i)) => a.get(i).map(Cursor::Value),
                (Cursor::Item(Item::ArrayOfTables(a)), Ok(i)) => a.get(i).map(Cursor::Table),
                (Cursor::Item(Item::Table(t)), _) | (Cursor::Table(t), _) => {
                    t.get_key_value(part).map(|(k, v)| {
                        if let Some(s) = v.span().or_else(|| k.span()) {
                            best = s;
                        }
                        Cursor::Item(v)
                    })
                }
                (Cursor::Item(Item::Value(Value::InlineTable(t))), _)
                | (Cursor::Value(Value::InlineTable(t)), _) => {
                    t.get_key_value(part).map(|(k, v)| {
                        if let Some(s) = v.span().or_else(|| k.span()) {
                            best = s;
                        }
                        Cursor::Item(v)
                    })
                }
                _ => None,
            };
            match next {
                Some(c) => {
                    if let Some(s) = c.span() {
                        best = s;
                    }
                    cur = c;
                }
                None => break,
            }
        }
        best
    }

    /// Where `offset` characters into the text of config field `field`
    /// are: inside a quoted string, past its opening quotes (escapes
    /// count as written); the field itself without an offset.
    pub fn config_point(
        &self,
        activity: &RawActivity,
        field: &str,
        offset: Option<u32>,
    ) -> Range<usize> {
        let span = self.config_span(activity, field);
        let Some(offset) = offset else {
            return span;
        };
        let rest = &self.source[span.start..];
        let Some(quote) = ["\"\"\"", "'''", "\"", "'"]
            .into_iter()
            .find(|q| rest.starts_with(q))
        else {
            return span;
        };
        let mut start = span.start + quote.len();
        // A newline right after opening triple quotes is not in the text.
        if quote.len() == 3 && self.source[start..].starts_with('\n') {
            start += 1;
        }
        let at = self.source[start..]
            .char_indices()
            .nth(offset as usize)
            .map_or(span.start, |(i, _)| start + i);
        at..at
    }

    fn activity_table(&self, id: &str) -> Option<&Table> {
        self.doc.get("activity")?.as_table()?.get(id)?.as_table()
    }
}

#[derive(Clone, Copy)]
enum Cursor<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl Cursor<'_> {
    fn span(&self) -> Option<Range<usize>> {
        match self {
            Cursor::Item(i) => i.span(),
            Cursor::Value(v) => v.span(),
            Cursor::Table(t) => t.span(),
        }
    }
}

/// Line and column (1-based, in characters) of a byte offset.
pub fn position(source: &str, offset: usize) -> (usize, usize) {
    Lines::new(source).position(source, offset)
}

/// Reads a workflow file's bytes as text; invalid UTF-8 is reported at its
/// line and column.
pub fn decode(bytes: Vec<u8>) -> Result<String, Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bad = e.as_bytes()[valid];
        let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
        let (line, column) = position(prefix, valid);
        Diagnostic {
            line,
            column,
            field: "(encoding)".into(),
            message: format!(
                "invalid UTF-8 (byte 0x{bad:02X}): a workflow file must be UTF-8 text"
            ),
            warning: false,
        }
    })
}

/// Parses a workflow file; every problem found is reported, not only the first.
pub fn parse(source: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let lines = Lines::new(source);
    let doc = ImDocument::parse(source.to_string()).map_err(|e| {
        let (line, column) = lines.position(source, e.span().map(|s| s.start).unwrap_or(0));
        vec![Diagnostic {
            line,
            column,
            field: "(syntax)".into(),
            message: e.message().trim().lines().collect::<Vec<_>>().join("; "),
            warning: false,
        }]
    })?;
    let mut diags = Vec::new();
    let at = |span: Option<Range<usize>>, field: &str, message: String| {
        let (line, column) = lines.position(source, span.map(|s| s.start).unwrap_or(0));
        Diagnostic {
            line,
            column,
            field: field.to_string(),
            message,
            warning: false,
        }
    };
    let mut name = String::new();
    for (key, item) in doc.iter() {
        let span = doc.get_key_value(key).and_then(|(k, _)| k.span());
        match key {
            "name" => match item.as_str() {
                Some(s) => name = s.to_string(),
                None => diags.push(at(item.span(), "name", "expected a string".into())),
            },
            "description" => {}
            "activity" => {}
            "schedule" => {}
            other => diags.push(at(
                span,
                other,
                format!("unknown field `{other}` (expected name, description, schedule, activity)"),
            )),
        }
    }
    let schedule = match doc.get("schedule").map(super::schedule::parse) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(problems)) => {
            for (span, field, message) in problems {
                diags.push(at(span, &field, message));
            }
            None
        }
    };
    if name.is_empty() && !diags.iter().any(|d| d.field == "name") {
        diags.push(at(Some(0..0), "name", "the workflow needs a `name`".into()));
    }
    let mut activities = Vec::new();
    match doc.get("activity") {
        None => diags.push(at(
            Some(0..0),
            "activity",
            "the workflow has no activities: add [activity.ID] tables".into(),
        )),
        Some(item) => match item.as_table_like() {
            None => diags.push(at(
                item.span(),
                "activity",
                "expected a table of activities ([activity.ID])".into(),
            )),
            Some(table) => {
                for (id, item) in table.iter() {
                    let id_span = doc["activity"]
                        .as_table()
                        .and_then(|t| t.get_key_value(id))
                        .and_then(|(k, _)| k.span())
                        .or_else(|| item.span())
                        .unwrap_or(0..0);
                    let prefix = format!("activity.{id}");
                    let Some(act) = item.as_table_like() else {
                        diags.push(at(Some(id_span), &prefix, "expected a table".into()));
                        continue;
                    };
                    let mut kind_reported = false;
                    let mut raw = RawActivity {
                        id: id.to_string(),
                        id_span: id_span.clone(),
                        kind: None,
                        config: serde_json::Value::Object(Default::default()),
                        next: BTreeMap::new(),
                        validity: None,
                    };
                    for (k, v) in act.iter() {
                        let field = format!("{prefix}.{k}");
                        match k {
                            "type" => match v.as_str() {
                                Some(s) => {
                                    raw.kind =
                                        Some((s.to_string(), v.span().unwrap_or(id_span.clone())))
                                }
                                None => {
                                    kind_reported = true;
                                    diags.push(at(
                                        v.span(),
                                        &field,
                                        "expected the plugin name as a string".into(),
                                    ))
                                }
                            },
                            "config" => match to_json(v) {
                                Some(j @ serde_json::Value::Object(_)) => raw.config = j,
                                _ => diags.push(at(v.span(), &field, "expected a table".into())),
                            },
                            "next" => match v.as_table_like() {
                                None => diags.push(at(
                                    v.span(),
                                    &field,
                                    "expected a table of transition = activity".into(),
                                )),
                                Some(t) => {
                                    for (tr, target) in t.iter() {
                                        let tspan = target.span().unwrap_or(id_span.clone());
                                        let targets: Option<Vec<(String, Range<usize>)>> =
                                            match target {
                                                Item::Value(Value::String(s)) => {
                                                    Some(vec![(s.value().clone(), tspan.clone())])
                                                }
                                                Item::Value(Value::Array(a)) => a
                                                    .iter()
                                                    .map(|x| {
                                                        x.as_str().map(|s| {
                                                            (
                                                                s.to_string(),
                                                                x.span().unwrap_or(tspan.clone()),
                                                            )
                                                        })
                                                    })
                                                    .collect(),
                                                _ => None,
                                            };
                                        match targets {
                                            Some(ts) => {
                                                raw.next.insert(tr.to_string(), (tspan, ts));
                                            }
                                            None => diags.push(at(
                                                Some(tspan),
                                                &format!("{field}.{tr}"),
                                                "expected an activity id or a list of them".into(),
                                            )),
                                        }
                                    }
                                }
                            },
                            "validity" => {
                                let span = v.span().unwrap_or(id_span.clone());
                                match v.as_str().map(humantime::parse_duration) {
                                    Some(Ok(d)) if !d.is_zero() => {
                                        raw.validity = Some((d.as_millis() as i64, span))
                                    }
                                    _ => diags.push(at(
                                        Some(span),
                                        &field,
                                        "expected a duration such as \"3d\" or \"12h\"".into(),
                                    )),
                                }
                            }
                            other => diags.push(at(
                                act.get_key_value(other)
                                    .and_then(|(key, _)| key.span())
                                    .or_else(|| v.span()),
                                &field,
                                format!(
                                    "unknown field `{other}` (expected type, config, next, validity)"
                                ),
                            )),
                        }
                    }
                    if raw.kind.is_none() && !kind_reported {
                        diags.push(at(
                            Some(id_span),
                            &format!("{prefix}.type"),
                            "missing `type` (the plugin to run)".into(),
                        ));
                    }
                    activities.push(raw);
                }
            }
        },
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Parsed {
        source: source.to_string(),
        lines,
        doc,
        name,
        activities,
        schedule,
    })
}

fn to_json(item: &Item) -> Option<serde_json::Value> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(value_json(v)),
        Item::Table(t) => Some(serde_json::Value::Object(
            t.iter()
                .filter_map(|(k, v)| to_json(v).map(|j| (k.to_string(), j)))
                .collect(),
        )),
        Item::ArrayOfTables(a) => Some(serde_json::Value::Array(
            a.iter()
                .map(|t| {
                    serde_json::Value::Object(
                        t.iter()
                            .filter_map(|(k, v)| to_json(v).map(|j| (k.to_string(), j)))
                            .collect(),
                    )
                })
                .collect(),
        )),
    }
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => serde_json::Value::String(s.value().clone()),
        Value::Integer(i) => serde_json::Value::from(*i.value()),
        Value::Float(f) => serde_json::Value::from(*f.value()),
        Value::Boolean(b) => serde_json::Value::Bool(*b.value()),
        Value::Datetime(d) => serde_json::Value::String(d.value().to_string()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(value_json).collect()),
        Value::InlineTable(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_string(), value_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WF: &str = r#"name = "t"

[activity.q]
type = "query"
next = { done = ["s", "w"] }
[activity.q.config]
dimension = "recipient"
subsets = [
    { name = "a", filter = "x is empty" },
    { name = "b", filter = "y" },
]
"#;

    #[test]
    fn keeps_positions_of_fields_and_config_paths() {
        let p = parse(WF).unwrap();
        assert_eq!(p.name, "t");
        let q = &p.activities[0];
        assert_eq!(q.id, "q");
        assert_eq!(q.kind.as_ref().unwrap().0, "query");
        assert_eq!(p.position(q.kind.as_ref().unwrap().1.start), (4, 8));
        let targets: Vec<&str> = q.next["done"].1.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(targets, ["s", "w"]);
        assert_eq!(p.position(q.next["done"].1[1].1.start), (5, 23));
        assert_eq!(q.config["subsets"][1]["filter"], "y");
        assert_eq!(
            p.position(p.config_span(q, "subsets.1.filter").start),
            (10, 28)
        );
        assert_eq!(p.position(p.config_span(q, "dimension").start), (7, 13));
        // An unknown path falls back to the closest known item.
        assert_eq!(
            p.position(p.config_span(q, "subsets.7.filter").start),
            (8, 11)
        );
    }

    #[test]
    fn reports_every_structural_problem_with_its_position() {
        let errs = parse("nam = 1\n[activity.a]\ntipe = \"x\"\n")
            .err()
            .unwrap();
        let rendered: Vec<String> = errs.iter().map(|d| d.render("f.toml")).collect();
        assert_eq!(
            rendered,
            [
                "f.toml:1:1: nam: unknown field `nam` (expected name, description, schedule, activity)",
                "f.toml:1:1: name: the workflow needs a `name`",
                "f.toml:3:1: activity.a.tipe: unknown field `tipe` (expected type, config, next, validity)",
                "f.toml:2:11: activity.a.type: missing `type` (the plugin to run)",
            ]
        );
    }
}
