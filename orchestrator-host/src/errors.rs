//! How ferry's errors read, in one place.
//!
//! The convention every error type in the host follows (thiserror enums):
//! - a variant either shows its cause in its message or exposes it as `source()`, never both:
//!   a reader joins the chain (`what failed: why: why that`) without removing repeats;
//! - what to do about an error is not part of its message: a type with advice has
//!   `fn hint(&self) -> Option<String>`, printed on its own line after the error.
//!
//! Errors that cross the plugin boundary are `PluginError`s (a kind and one message line), so a
//! plugin's own causes are already in its message.

use std::error::Error;

use crate::config::ConfigError;
use crate::package;

/// The error and every cause under it on one line: `outer: inner: innermost`.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !text.is_empty() {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = error.source();
    }
    line
}

/// The advice of the outermost error in the chain that has some.
pub fn hint(error: &(dyn Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        let hint = if let Some(e) = error.downcast_ref::<ConfigError>() {
            e.hint()
        } else if let Some(e) = error.downcast_ref::<package::Error>() {
            e.hint()
        } else if let Some(e) = error.downcast_ref::<package::files::Error>() {
            e.hint()
        } else if let Some(e) = error.downcast_ref::<package::archive::Error>() {
            e.hint()
        } else if let Some(e) = error.downcast_ref::<crate::retention::Error>() {
            e.hint()
        } else {
            None
        };
        if hint.is_some() {
            return hint;
        }
        next = error.source();
    }
    None
}

/// [`chain`] and, after a `; `, the [`hint`]: for places that have one line only (a run
/// record's error, a log).
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    match hint(error) {
        Some(hint) => format!("{}; {hint}", chain(error)),
        None => chain(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] ConfigError);

    #[test]
    fn the_chain_is_joined_once_and_the_hint_found_under_a_wrapper() {
        let error = Outer(ConfigError::Read {
            path: "/etc/ferry.toml".into(),
            source: std::io::Error::other("permission denied"),
        });
        assert_eq!(
            chain(&error),
            "outer: cannot read config file /etc/ferry.toml: permission denied"
        );
        assert_eq!(
            hint(&error).as_deref(),
            Some("check that it is a readable file")
        );
        assert_eq!(
            one_line(&error),
            "outer: cannot read config file /etc/ferry.toml: permission denied; check that it is a readable file"
        );
        let plain = Outer(ConfigError::Invalid("x".into()));
        assert_eq!(hint(&plain), None);
        assert_eq!(one_line(&plain), "outer: invalid configuration: x");
    }
}
