//! Routes: a configured path → everything needed to judge and deliver what arrives on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::forward::Upstream;
use crate::ingress::checks::RouteAuth;
use crate::jwe::DecryptKey;
use crate::names::RouteName;
use crate::profile::Profile;

/// When the sender gets its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// 200 as soon as the event is durable; the app gets it from the spool afterwards.
    #[default]
    Spool,
    /// Forward synchronously and relay the app's answer.
    Upstream,
}

/// What happens to an event whose id was seen with other content (a conflict). It is never
/// answered as a duplicate: whatever the choice, it is counted and logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Stored and delivered like a new event, flagged `X-Pushgate-Conflict`.
    #[default]
    Deliver,
    /// Stored quarantined: listed, and delivered only when replayed.
    Quarantine,
    /// Answered like the others but neither stored nor delivered.
    Drop,
}

/// One configured route, compiled.
#[derive(Debug)]
pub struct Route {
    pub name: RouteName,
    pub path: String,
    pub auth: RouteAuth,
    pub profile: Profile,
    pub decrypt_keys: Vec<DecryptKey>,
    pub ack: AckMode,
    pub on_conflict: OnConflict,
    pub max_body: u64,
    pub read_timeout: Duration,
    pub upstream: Arc<Upstream>,
    /// The out-of-date status guard (`status_timestamp:`, `on_stale:`), when on.
    pub stale: Option<crate::ingress::stale::Guard>,
}

/// The routing table: exact path match, nothing clever (senders register one URL each).
#[derive(Debug, Default)]
pub struct Routes {
    by_path: HashMap<String, Arc<Route>>,
    in_order: Vec<Arc<Route>>,
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Routes {
        let in_order: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        let by_path = in_order.iter().map(|r| (r.path.clone(), r.clone())).collect();
        Routes { by_path, in_order }
    }

    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_path.get(path)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.in_order.iter().find(|r| r.name.as_str() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.in_order.iter()
    }
}
