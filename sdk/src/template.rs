//! Message templates (minijinja) for channels: compiled from the config,
//! rendered per record with the record's attributes as variables.

use std::collections::BTreeMap;

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
