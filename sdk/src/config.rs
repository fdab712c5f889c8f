//! Reading an activity's JSON config with errors that name the field.

use serde::de::DeserializeOwned;

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

/// Parses a filter found at `field`, as a config error on failure.
pub fn filter(field: &str, source: &str) -> Result<crate::filter::Filter, ConfigError> {
    crate::filter::Filter::parse(source)
        .map_err(|e| ConfigError::new(field, format!("invalid filter: {e}")))
}
