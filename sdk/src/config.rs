//! Reading an activity's JSON config with errors that name the field, and
//! noting what it names outside itself (attributes, dimensions, accounts)
//! so that `crosscast validate` checks those names before a run.
//!
//! The helpers that read a name note it as they go: [`filter`] notes each
//! attribute its filter reads, [`crate::template::Templates::compile`] each
//! variable, [`account`] the account. The export macros run `configure`
//! under [`noting`] to answer the host's `config-needs`, so a plugin declares what
//! it uses by reading its config with these helpers, and nothing else.

use std::cell::RefCell;

use serde::de::DeserializeOwned;

/// Something outside a config that it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referent {
    /// An attribute path of the records the plugin reads (`first_name`,
    /// `recipient.email`).
    Attribute(String),
    /// A dimension (`recipient`).
    Dimension(String),
    /// An account the plugin sends through.
    Account(String),
    /// A public parameter the plugin reads from an account: (account,
    /// parameter).
    AccountParam(String, String),
}

/// A name in a config, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The dotted config path it is in; empty for a default the config
    /// does not spell out.
    pub field: String,
    /// Where it starts in that field's text, in characters, when the field
    /// holds more than the name (a filter, a template).
    pub offset: Option<u32>,
    /// What it names.
    pub referent: Referent,
}

/// What a config needs from outside itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The dimension of the records the activity reads, when the config
    /// fixes it (a query's `dimension`).
    pub reads: Option<String>,
    /// The dimension of what it emits, when it differs from what it reads.
    pub emits: Option<String>,
    /// Every name, in the order noted.
    pub references: Vec<Reference>,
}

thread_local! {
    /// What the config being checked names, while [`noting`] runs.
    static NOTED: RefCell<Option<Needs>> = const { RefCell::new(None) };
}

/// Runs `f` (a plugin's `configure`) and returns what the helpers it
/// called noted.
pub fn noting<T>(f: impl FnOnce() -> T) -> (T, Needs) {
    NOTED.with(|n| *n.borrow_mut() = Some(Needs::default()));
    let out = f();
    let needs = NOTED.with(|n| n.borrow_mut().take()).unwrap_or_default();
    (out, needs)
}

/// Notes a name, if a [`noting`] is running (building messages notes
/// nothing).
pub fn note(field: &str, offset: Option<usize>, referent: Referent) {
    NOTED.with(|n| {
        if let Some(needs) = n.borrow_mut().as_mut() {
            needs.references.push(Reference {
                field: field.to_string(),
                offset: offset.and_then(|o| u32::try_from(o).ok()),
                referent,
            });
        }
    });
}

/// Declares the account at config `field` (empty for a default the config
/// does not spell out) and returns it.
pub fn account<'a>(field: &str, name: &'a str) -> &'a str {
    note(field, None, Referent::Account(name.to_string()));
    name
}

/// Declares that the plugin reads `param` from `account` (named at
/// `field`): the host checks the account has it before a run.
pub fn account_param(field: &str, account: &str, param: &str) {
    note(
        field,
        None,
        Referent::AccountParam(account.to_string(), param.to_string()),
    );
}

/// Declares that the activity reads records of the dimension named at
/// `field` (a query's `dimension`), rather than its input's.
pub fn reads(field: &str, dimension: &str) {
    note(field, None, Referent::Dimension(dimension.to_string()));
    NOTED.with(|n| {
        if let Some(needs) = n.borrow_mut().as_mut() {
            needs.reads = Some(dimension.to_string());
        }
    });
}

/// Declares that the activity emits records of the dimension named at
/// `field` (a change of dimension).
pub fn emits(field: &str, dimension: &str) {
    note(field, None, Referent::Dimension(dimension.to_string()));
    NOTED.with(|n| {
        if let Some(needs) = n.borrow_mut().as_mut() {
            needs.emits = Some(dimension.to_string());
        }
    });
}

/// Declares the attribute path at `field` (a ranking's `by`).
pub fn attribute(field: &str, path: &str) {
    note(field, None, Referent::Attribute(path.to_string()));
}

/// A config problem at a dotted field path (`subsets.1.filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path inside the activity's config; empty for the whole table.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Deserializes a config, naming the field that does not fit.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, Vec<ConfigError>> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            String::new()
        } else {
            field.replace('[', ".").replace(']', "")
        };
        let message = e.inner().to_string();
        // serde_json appends " at line L column C" of the JSON text, which
        // means nothing to someone reading the TOML workflow.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        vec![ConfigError { field, message }]
    })
}

/// Parses a filter found at `field`, as a config error on failure, and
/// notes each attribute it reads at its place.
pub fn filter(field: &str, source: &str) -> Result<crate::filter::Filter, ConfigError> {
    let f = crate::filter::Filter::parse(source)
        .map_err(|e| ConfigError::new(field, format!("invalid filter: {e}")))?;
    for (path, offset) in f.locations() {
        note(field, Some(*offset), Referent::Attribute(path.clone()));
    }
    Ok(f)
}
