//! `ferroturn import-coturn`: a coturn `turnserver.conf` turned into ferroturn's TOML.
//!
//! [`import`] is a pure function: the file's text and a few facts about the host in,
//! the TOML and a list of [`Note`]s out. Every option of the file is either translated
//! or named in a note that says why it is left out (unsupported, not needed, unknown, or
//! a value that cannot be parsed, with its line); a coturn default that differs from
//! ferroturn's gets a note where the file relies on it. Secrets (REST secrets, user
//! passwords, database passwords) go into the TOML only, never into a note. The result
//! is checked with the same code as `check-config` before it is returned.
//!
//! - [`syntax`]: coturn's line syntax.
//! - [`translate`]: the options that have a ferroturn equivalent.
//! - [`options`]: every coturn option name, and why the others are left out.
//! - [`values`]: address ranges and the Redis connection string, respelled.
//! - [`network`]: listeners, relay addresses (which coturn picks at run time when the
//!   file names none), NAT mappings, TLS files.
//! - [`finish`]: credentials, limits and the other defaults, and the TOML text.

mod finish;
mod network;
mod options;
mod syntax;
mod translate;
mod values;

use std::fmt;
use std::net::IpAddr;

/// What the host contributes to an import: coturn picks some things at run time that
/// ferroturn wants written down.
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// The host's interface addresses: a relay address is picked from them when the
    /// file names none and listens on every address (coturn relays from whichever
    /// address the client reached; ferroturn binds relays to one address per family).
    pub addresses: Vec<IpAddr>,
    /// A fresh random secret, used only when the file configures no credentials at all
    /// (ferroturn has no anonymous mode), so that no client knows it.
    pub placeholder_secret: String,
}

/// Why a note was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// coturn does this, ferroturn cannot: left out.
    Unsupported,
    /// ferroturn does this anyway, or the option has no meaning for it: left out.
    NotNeeded,
    /// Not a coturn option: left out.
    Unknown,
    /// The line's value cannot be read: left out.
    Invalid,
    /// Translated, but not one to one (a value adjusted, an address chosen).
    Changed,
    /// The file relies on a coturn default that ferroturn does not share.
    Default,
}

impl NoteKind {
    fn label(self) -> &'static str {
        match self {
            Self::Unsupported => "left out (unsupported)",
            Self::NotNeeded => "left out (not needed)",
            Self::Unknown => "left out (unknown option)",
            Self::Invalid => "left out (cannot parse)",
            Self::Changed => "translated with a change",
            Self::Default => "different default",
        }
    }

    /// Whether the option (or that one value of it) is missing from the output.
    pub fn left_out(self) -> bool {
        matches!(
            self,
            Self::Unsupported | Self::NotNeeded | Self::Unknown | Self::Invalid
        )
    }
}

/// One remark about the import, for stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The line of the file it is about, if it is about one.
    pub line: Option<usize>,
    /// The coturn option (or, for a default, the ferroturn option) it is about.
    pub option: String,
    pub kind: NoteKind,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(
            f,
            "{}: {}: {}",
            self.option,
            self.kind.label(),
            self.message
        )
    }
}

/// The result of an import.
#[derive(Clone, Debug)]
pub struct Import {
    /// ferroturn's configuration file.
    pub toml: String,
    pub notes: Vec<Note>,
    /// What `check-config` says against `toml`, if anything: the file holds values
    /// ferroturn refuses together (a port range upside down, say).
    pub error: Option<super::ConfigError>,
}

/// Translates the coturn configuration `text`. `source` names the file in the output's
/// header comment.
pub fn import(text: &str, source: &str, host: &Host) -> Import {
    let mut draft = translate::Draft::default();
    for entry in syntax::entries(text) {
        draft.apply(&entry);
    }
    let (toml, notes) = finish::finish(draft, source, host);
    let error = super::Config::from_toml_str(&toml).err();
    Import { toml, notes, error }
}

#[cfg(test)]
mod tests;
