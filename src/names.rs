//! The names that travel with a notification from the listener to the app — its route, its
//! event ids, its sender's DN — as newtypes in one leaf module, so every stage can name them
//! without depending on the stage that first made them (config, profile, TLS).

use std::fmt;
use std::sync::Arc;

pub use crate::listener::identity::ClientDn;

/// A route's name, as used in metrics labels, headers and logs. Restricted to a safe alphabet
/// so it can go anywhere without escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteName(Arc<str>);

impl RouteName {
    pub fn new(s: &str) -> Result<RouteName, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(RouteName(Arc::from(s)))
        } else {
            Err(format!("`{s}` must be 1-64 characters of A-Z a-z 0-9 - _ ."))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's dedupe key within its route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Arc<str>);

impl EventId {
    pub fn new(s: &str) -> EventId {
        EventId(Arc::from(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
