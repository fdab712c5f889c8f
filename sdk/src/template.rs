//! Message templates (minijinja) for channels: compiled from the config,
//! rendered per record with the record's attributes as variables.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object};
use minijinja::{Environment, UndefinedBehavior, Value};

use crate::config::ConfigError;
use crate::filter::Columns;

/// The templates of one channel config, by config field name.
pub struct Templates {
    env: Environment<'static>,
    /// The templates made only of text and `{{ name }}` / `{{ link.name }}`
    /// (most message templates), by field: rendered by concatenation,
    /// without minijinja's machinery per record.
    plain: BTreeMap<String, Plain>,
}

/// A template of text and variables only.
#[derive(Debug, PartialEq)]
struct Plain {
    parts: Vec<Part>,
    /// Values are HTML-escaped, as minijinja's auto-escaping does for this
    /// template's name (`html`).
    html: bool,
}

/// A piece of a [`Plain`] template.
#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    /// A variable's path: `first_name`, `recipient.email`.
    Var(Vec<String>),
}

/// Names minijinja reads as constants or keywords, not variables.
const RESERVED: &[&str] = &[
    "true", "false", "none", "True", "False", "None", "self", "loop", "and", "or", "not", "in",
    "is", "if", "else",
];

impl Plain {
    /// `source` as a plain template, if it is one: no blocks, comments,
    /// whitespace control, filters or expressions other than variable paths.
    fn parse(name: &str, source: &str) -> Option<Plain> {
        // As minijinja's lexer: one trailing newline is not part of the output.
        let mut source = source.strip_suffix('\n').unwrap_or(source);
        source = source.strip_suffix('\r').unwrap_or(source);
        if source.contains("{%") || source.contains("{#") {
            return None;
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}")?;
            let path: Vec<String> = after[..end]
                .trim_matches(|c: char| c == ' ' || c == '\t' || c == '\n' || c == '\r')
                .split('.')
                .map(str::to_string)
                .collect();
            let ident = |p: &String| {
                let mut chars = p.chars();
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !RESERVED.contains(&p.as_str())
            };
            if path.len() > 2 || !path.iter().all(ident) {
                return None;
            }
            parts.push(Part::Var(path));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        let html = match minijinja::default_auto_escape_callback(name) {
            minijinja::AutoEscape::None => false,
            minijinja::AutoEscape::Html => true,
            // Other escapings (JSON) are minijinja's to apply.
            _ => return None,
        };
        Some(Plain { parts, html })
    }

    /// Record `i` of `rows` rendered; `None` when a variable is not a
    /// plain attribute of it (minijinja then renders, or says why not).
    fn render(&self, rows: &Rows, i: usize) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(path) => {
                    let value = rows.inner.text(path, i)?;
                    if self.html {
                        use std::fmt::Write as _;
                        let _ = write!(out, "{}", minijinja::HtmlEscape(&value));
                    } else {
                        out.push_str(&value);
                    }
                }
            }
        }
        Some(out)
    }
}

impl Templates {
    /// Compiles `(field, source)` pairs; a syntax error names its field.
    pub fn compile(fields: &[(&str, &str)]) -> Result<Templates, Vec<ConfigError>> {
        let mut env = Environment::new();
        // A misspelt variable is an error, not a silently empty string: every
        // attribute of the record is defined (empty when absent).
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut errors = Vec::new();
        let mut plain = BTreeMap::new();
        for (field, source) in fields {
            if let Err(e) = env.add_template_owned(field.to_string(), source.to_string()) {
                errors.push(ConfigError::new(
                    *field,
                    format!("template error: {}", describe(&e)),
                ));
            } else if let Some(p) = Plain::parse(field, source) {
                plain.insert(field.to_string(), p);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Each variable is an attribute the host checks before a run.
        for (field, source) in fields {
            if let Ok(t) = env.get_template(field) {
                let named: BTreeSet<String> = t.undeclared_variables(true).into_iter().collect();
                for v in named {
                    let at = offset_of(source, &v);
                    crate::config::note(field, at, crate::config::Referent::Attribute(v));
                }
            }
        }
        Ok(Templates { env, plain })
    }

    /// The variables the templates read, as paths (`first_name`,
    /// `recipient.email`); a bare link (`recipient`) where a template reads
    /// it as a whole.
    pub fn variables(&self) -> BTreeSet<String> {
        self.env
            .templates()
            .flat_map(|(_, t)| t.undeclared_variables(true))
            .collect()
    }

    /// The attribute paths of `dimension` to fetch for these templates,
    /// with the `required` ones the channel reads itself: only what is
    /// used, so a batch fetches (and crosses the boundary with) a few
    /// columns rather than every attribute. Everything when a template
    /// reads a link as a whole. A variable that is no attribute is not
    /// fetched: rendering reports it.
    pub fn columns_for(&self, dimension: &str, required: &[&str]) -> Result<Vec<String>, String> {
        let all = crate::host::columns(dimension)?;
        Ok(needed(&all, &self.variables(), required))
    }

    /// Renders the template of config field `field` for record `i` of
    /// `rows`: as [`Templates::render`] with `rows.row(i)`, faster for a
    /// template of text and variables.
    pub fn render_row(&self, field: &str, rows: &Rows, i: usize) -> Result<String, String> {
        if let Some(out) = self.plain.get(field).and_then(|p| p.render(rows, i)) {
            return Ok(out);
        }
        self.render(field, &rows.row(i))
    }

    /// Renders the template of config field `field`.
    pub fn render(&self, field: &str, ctx: &Value) -> Result<String, String> {
        let t = self.env.get_template(field).map_err(|e| describe(&e))?;
        t.render(ctx)
            .map_err(|e| format!("{field}: {}", describe(&e)))
    }
}

/// Where the variable `path` is first read in `source` inside `{{ }}` or
/// `{% %}`, in characters: the name itself, not a longer one holding it.
fn offset_of(source: &str, path: &str) -> Option<usize> {
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let mut from = 0;
    while let Some(i) = source[from..].find(path).map(|i| i + from) {
        let before = source[..i].chars().next_back();
        let after = source[i + path.len()..].chars().next();
        let in_tag = source[..i]
            .rfind(['{'])
            .is_some_and(|open| source[..i].rfind('}').is_none_or(|close| close < open));
        if in_tag && !before.is_some_and(is_name) && !after.is_some_and(is_name) {
            return Some(source[..i].chars().count());
        }
        from = i + path.len();
    }
    None
}

fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!(
            "{} (template line {line})",
            e.detail().unwrap_or(&e.kind().to_string())
        ),
        None => e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.kind().to_string()),
    }
}

/// Which of `all` (a dimension's attribute paths) templates reading
/// `variables` need, besides `required`.
fn needed(all: &[String], variables: &BTreeSet<String>, required: &[&str]) -> Vec<String> {
    let has = |p: &str| all.iter().any(|c| c == p);
    let has_links = all.iter().any(|c| c.contains('.'));
    let is_link = |v: &str| {
        all.iter()
            .any(|c| c.len() > v.len() && c.starts_with(v) && c.as_bytes()[v.len()] == b'.')
    };
    let mut want: BTreeSet<&str> = required.iter().copied().filter(|r| has(r)).collect();
    for v in variables {
        if has(v) {
            want.insert(v);
        } else if is_link(v) || (v == "recipient" && !has_links) {
            // Read as a whole (iterated, subscripted): every attribute.
            return all.to_vec();
        } else if let Some(rest) = v.strip_prefix("recipient.").filter(|_| !has_links)
            && has(rest)
        {
            want.insert(rest);
        }
    }
    want.into_iter().map(str::to_string).collect()
}

/// Template variables of a batch: each record's attributes read from the
/// batch's columns when a template asks for them, so rendering a record
/// builds no map of its values. Names as [`row_context`] gives them.
pub struct Rows {
    inner: Arc<RowsInner>,
}

#[derive(Debug)]
struct RowsInner {
    columns: Vec<crate::filter::Column>,
    /// Attributes of the record itself: name → column.
    top: BTreeMap<String, usize>,
    /// Linked attributes: link → (name → column).
    links: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Rows {
    /// The variables of every record of a batch of `columns`.
    pub fn new(columns: Columns) -> Rows {
        let mut inner = RowsInner {
            columns: Vec::with_capacity(columns.len()),
            top: BTreeMap::new(),
            links: BTreeMap::new(),
        };
        for (k, c) in columns {
            let at = inner.columns.len();
            inner.columns.push(c);
            match k.split_once('.') {
                Some((link, rest)) => {
                    inner
                        .links
                        .entry(link.to_string())
                        .or_default()
                        .insert(rest.to_string(), at);
                }
                None => {
                    inner.top.insert(k, at);
                }
            }
        }
        Rows {
            inner: Arc::new(inner),
        }
    }

    /// The column of attribute `path`, as fetched.
    pub fn column(&self, path: &str) -> Option<&crate::filter::Column> {
        let at = match path.split_once('.') {
            Some((link, rest)) => self.inner.links.get(link)?.get(rest)?,
            None => self.inner.top.get(path)?,
        };
        self.inner.columns.get(*at)
    }

    /// The variables of record `i`.
    pub fn row(&self, i: usize) -> Value {
        Value::from_object(Row {
            rows: self.inner.clone(),
            i,
            level: Level::Top,
        })
    }
}

impl RowsInner {
    /// The text of attribute `path` of record `i` as a template reads it
    /// (as [`Row`] resolves names); `None` unless it is an attribute.
    fn text(&self, path: &[String], i: usize) -> Option<std::borrow::Cow<'_, str>> {
        let column = match path {
            [name] => *self.top.get(name)?,
            [link, name] => {
                if self.top.contains_key(link) {
                    return None;
                }
                match self.links.get(link) {
                    Some(names) => *names.get(name)?,
                    None if link == "recipient" && self.links.is_empty() => *self.top.get(name)?,
                    None => return None,
                }
            }
            _ => return None,
        };
        Some(match self.columns[column].get(i) {
            Some(crate::filter::Scalar::Text(s)) => std::borrow::Cow::Borrowed(s),
            Some(other) => std::borrow::Cow::Owned(other.to_text()),
            None => std::borrow::Cow::Borrowed(""),
        })
    }
}

/// One record's variables, at one level.
#[derive(Debug)]
struct Row {
    rows: Arc<RowsInner>,
    i: usize,
    level: Level,
}

/// Which of a record's variables a [`Row`] shows.
#[derive(Debug)]
enum Level {
    /// The record's own, with its links.
    Top,
    /// The record's own as `recipient` (a recipient population): no links.
    Alias,
    /// Those of the record it links to.
    Link(String),
}

impl Row {
    fn names(&self) -> Option<&BTreeMap<String, usize>> {
        match &self.level {
            Level::Top | Level::Alias => Some(&self.rows.top),
            Level::Link(l) => self.rows.links.get(l),
        }
    }

    fn cell(&self, column: usize) -> Value {
        match self.rows.columns[column].get(self.i) {
            Some(crate::filter::Scalar::Text(s)) => Value::from(s),
            Some(other) => Value::from(other.to_text()),
            None => Value::from(""),
        }
    }

    fn at(&self, level: Level) -> Value {
        Value::from_object(Row {
            rows: self.rows.clone(),
            i: self.i,
            level,
        })
    }
}

impl Object for Row {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        if let Some(&c) = self.names()?.get(key) {
            return Some(self.cell(c));
        }
        if !matches!(self.level, Level::Top) {
            return None;
        }
        if self.rows.links.contains_key(key) {
            return Some(self.at(Level::Link(key.to_string())));
        }
        // On a recipient population its own attributes are `recipient.NAME` too.
        if key == "recipient" && self.rows.links.is_empty() {
            return Some(self.at(Level::Alias));
        }
        None
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = self
            .names()
            .into_iter()
            .flat_map(|m| m.keys().map(|k| Value::from(k.as_str())))
            .collect();
        if matches!(self.level, Level::Top) {
            keys.extend(self.rows.links.keys().map(|k| Value::from(k.as_str())));
            if self.rows.links.is_empty() {
                keys.push(Value::from("recipient"));
            }
        }
        Enumerator::Values(keys)
    }
}

/// The variables for record `i`: each column by name (empty text when
/// absent); a linked attribute `recipient.email` becomes `recipient.email` in
/// the template too. On a recipient population the record's own attributes
/// are also reachable as `recipient.NAME`.
pub fn row_context(columns: &Columns, i: usize) -> Value {
    let mut top: BTreeMap<String, Value> = BTreeMap::new();
    let mut nested: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (k, c) in columns {
        let v = Value::from(c.text(i).unwrap_or_default());
        match k.split_once('.') {
            Some((link, rest)) => {
                nested
                    .entry(link.to_string())
                    .or_default()
                    .insert(rest.to_string(), v);
            }
            None => {
                top.insert(k.clone(), v);
            }
        }
    }
    if nested.is_empty() {
        top.insert("recipient".into(), Value::from(top.clone()));
    }
    for (link, values) in nested {
        top.insert(link, Value::from(values));
    }
    Value::from(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Column;

    fn text(v: &[Option<&str>]) -> Column {
        Column::Text(v.iter().map(|x| x.map(str::to_string)).collect())
    }

    fn recipients() -> Columns {
        Columns::from([
            ("first_name".to_string(), text(&[Some("Ada"), None])),
            (
                "email".to_string(),
                text(&[Some("ada@x.example"), Some("b@x.example")]),
            ),
            ("loyalty".to_string(), Column::Integer(vec![Some(3), None])),
        ])
    }

    fn subscriptions() -> Columns {
        Columns::from([
            ("token".to_string(), text(&[Some("t1"), Some("t2")])),
            (
                "recipient.first_name".to_string(),
                text(&[Some("Ada"), Some("Bo")]),
            ),
            (
                "recipient.email".to_string(),
                text(&[None, Some("b@x.example")]),
            ),
        ])
    }

    /// Every way a template names a variable renders the same through
    /// [`Rows`] as through [`row_context`].
    #[test]
    fn rows_render_as_row_context_does() {
        let sources = [
            "Hi {{ first_name }} ({{ loyalty }}) <{{ email }}>",
            "Hi {{ recipient.first_name }}{% if not first_name %} there{% endif %}",
            "{% for k in recipient|sort %}{{ k }}={{ recipient[k] }};{% endfor %}",
            "{{ recipient['email']|upper }} {{ first_name|default('x') }}",
        ];
        for (columns, sources) in [
            (recipients(), &sources[..]),
            (
                subscriptions(),
                &[
                    "Hi {{ recipient.first_name }}, {{ token }}",
                    "{% for k in recipient|sort %}{{ k }}={{ recipient[k] }};{% endfor %}",
                    "{{ recipient.email or 'none' }}",
                ][..],
            ),
        ] {
            let rows = Rows::new(columns.clone());
            for source in sources {
                let t = Templates::compile(&[("body", source)]).unwrap();
                for i in 0..2 {
                    let eager = t.render("body", &row_context(&columns, i)).unwrap();
                    let lazy = t.render("body", &rows.row(i)).unwrap();
                    assert_eq!(lazy, eager, "{source} row {i}");
                }
            }
        }
    }

    #[test]
    fn a_misspelt_variable_is_still_an_error() {
        let rows = Rows::new(recipients());
        let t = Templates::compile(&[("body", "Hi {{ frist_name }}")]).unwrap();
        let e = t.render("body", &rows.row(0)).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        let rows = Rows::new(subscriptions());
        let t = Templates::compile(&[("body", "Hi {{ recipient.frist_name }}")]).unwrap();
        assert!(t.render("body", &rows.row(0)).is_err());
    }

    #[test]
    fn only_the_columns_templates_read_are_fetched() {
        let all = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let vars = |t: &[&str]| {
            let fields: Vec<(String, &str)> = t
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("f{i}"), *s))
                .collect();
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(f, s)| (f.as_str(), *s)).collect();
            Templates::compile(&pairs).unwrap().variables()
        };
        let recipient = all(&["id", "email", "mobile", "first_name", "last_name"]);
        assert_eq!(
            needed(&recipient, &vars(&["Hi {{ first_name }}"]), &["mobile"]),
            all(&["first_name", "mobile"])
        );
        // `recipient.NAME` on a recipient population is the record's own.
        assert_eq!(
            needed(
                &recipient,
                &vars(&["{{ recipient.last_name }}"]),
                &["email"]
            ),
            all(&["email", "last_name"])
        );
        // Read as a whole: everything.
        assert_eq!(
            needed(&recipient, &vars(&["{{ recipient['email'] }}"]), &[]),
            recipient
        );
        // Not an attribute: nothing fetched for it, rendering reports it.
        assert_eq!(
            needed(
                &recipient,
                &vars(&["{{ frist_name }} {{ range(3)|length }}"]),
                &["email"]
            ),
            all(&["email"])
        );
        let subscription = all(&[
            "id",
            "token",
            "platform",
            "recipient.first_name",
            "recipient.email",
        ]);
        assert_eq!(
            needed(
                &subscription,
                &vars(&["Hi {{ recipient.first_name }}"]),
                &["token", "platform"]
            ),
            all(&["platform", "recipient.first_name", "token"])
        );
        assert_eq!(
            needed(
                &subscription,
                &vars(&["{% for k in recipient %}{{ k }}{% endfor %}"]),
                &[]
            ),
            subscription
        );
        // A required attribute the dimension lacks is left for the plugin to report.
        assert_eq!(
            needed(&subscription, &vars(&["x"]), &["mobile"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn plain_templates_are_recognised_and_the_rest_left_to_minijinja() {
        let parts = |src: &str| Plain::parse("body", src).map(|p| p.parts);
        assert_eq!(
            parts("Hi {{ first_name }}, {{recipient.email}}!\n"),
            Some(vec![
                Part::Text("Hi ".into()),
                Part::Var(vec!["first_name".into()]),
                Part::Text(", ".into()),
                Part::Var(vec!["recipient".into(), "email".into()]),
                Part::Text("!".into()),
            ])
        );
        assert_eq!(
            parts("No variables"),
            Some(vec![Part::Text("No variables".into())])
        );
        for not_plain in [
            "{% if x %}y{% endif %}",
            "{# note #}x",
            "{{ x|upper }}",
            "{{- x }}",
            "{{ x -}}",
            "{{ 'a' }}",
            "{{ true }}",
            "{{ a.b.c }}",
            "{{ x[0] }}",
            "{{ x + 1 }}",
        ] {
            assert_eq!(parts(not_plain), None, "{not_plain}");
        }
        assert!(Plain::parse("html", "<p>{{ x }}</p>").unwrap().html);
        assert!(!Plain::parse("text", "{{ x }}").unwrap().html);
    }

    fn tricky() -> Columns {
        Columns::from([
            (
                "first_name".to_string(),
                text(&[Some("Ada <&> \"O'Neil\" /"), None, Some("Bo")]),
            ),
            (
                "email".to_string(),
                text(&[Some("a@x.example"), Some(""), Some("b@x.example")]),
            ),
            (
                "loyalty".to_string(),
                Column::Integer(vec![Some(3), None, Some(-1)]),
            ),
        ])
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// A template renders the same through the plain path as through
        /// minijinja: text, escaping, trailing newlines, absent values,
        /// links, and undefined variables (both fail).
        #[test]
        fn render_row_is_minijinja_rendering(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z <>&\"'/{}\n\r]{0,6}".prop_map(|t| (t, None)),
                    (
                        proptest::sample::select(vec![
                            "first_name", "email", "loyalty", "token", "recipient.first_name",
                            "recipient.email", "recipient.loyalty", "recipient", "frist_name",
                            "recipient.nope", "first_name.x", "none", "_x",
                        ]),
                        proptest::sample::select(vec![("{{", "}}"), ("{{ ", " }}"), ("{{\t", "\n}}")]),
                    )
                        .prop_map(|(v, (open, close))| (String::new(), Some(format!("{open}{v}{close}")))),
                ],
                0..6,
            ),
            field in proptest::sample::select(vec!["body", "html", "subject.html", "text"]),
            subscriptions_population in proptest::bool::ANY,
        ) {
            let source: String = pieces
                .iter()
                .map(|(t, v)| v.clone().unwrap_or_else(|| t.clone()))
                .collect();
            let Ok(t) = Templates::compile(&[(field, source.as_str())]) else {
                return Ok(());
            };
            let columns = if subscriptions_population { subscriptions() } else { tricky() };
            let rows = Rows::new(columns);
            let n = if subscriptions_population { 2 } else { 3 };
            for i in 0..n {
                let fast = t.render_row(field, &rows, i);
                let slow = t.render(field, &rows.row(i));
                prop_assert_eq!(&fast, &slow, "{:?} row {}", source, i);
            }
        }
    }
}
