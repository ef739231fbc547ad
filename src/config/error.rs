//! The one error type of configuration: which key, and what is wrong with its value.

use std::fmt;
use std::path::Path;

/// A configuration error. `key` names the option (coturn's name, as in the file) when one
/// is to blame; a syntax error of the file as a whole has none, and its message quotes
/// what the TOML parser found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: Option<&'static str>,
    pub message: String,
}

impl ConfigError {
    /// The value of `key` is wrong.
    pub fn new(key: &'static str, message: impl fmt::Display) -> Self {
        Self {
            key: Some(key),
            message: message.to_string(),
        }
    }

    /// The file (or flag) could not be read or parsed as a whole.
    pub fn syntax(message: impl fmt::Display) -> Self {
        Self {
            key: None,
            message: message.to_string(),
        }
    }

    /// The same error, said of `file`.
    pub fn in_file(self, file: &Path) -> Self {
        Self {
            key: self.key,
            message: format!("{}: {}", file.display(), self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(key) => write!(f, "`{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `Err` for `key` with `message`.
pub(super) fn err<T>(key: &'static str, message: impl fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError::new(key, message))
}
