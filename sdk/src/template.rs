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
}

impl Templates {
    /// Compiles `(field, source)` pairs; a syntax error names its field.
    pub fn compile(fields: &[(&str, &str)]) -> Result<Templates, Vec<ConfigError>> {
        let mut env = Environment::new();
        // A misspelt variable is an error, not a silently empty string: every
        // attribute of the record is defined (empty when absent).
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut errors = Vec::new();
        for (field, source) in fields {
            if let Err(e) = env.add_template_owned(field.to_string(), source.to_string()) {
                errors.push(ConfigError::new(
                    *field,
                    format!("template error: {}", describe(&e)),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Templates { env })
        } else {
            Err(errors)
        }
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

    /// Renders the template of config field `field`.
    pub fn render(&self, field: &str, ctx: &Value) -> Result<String, String> {
        let t = self.env.get_template(field).map_err(|e| describe(&e))?;
        t.render(ctx)
            .map_err(|e| format!("{field}: {}", describe(&e)))
    }
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
}
