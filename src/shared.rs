//! The state every request and background task shares: the routes (swapped whole on
//! reload), the duplicate memory, the app client and the metrics.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dedupe::Dedupe;
use crate::forward::AppClient;
use crate::metrics::Metrics;
use crate::route::Routes;

pub struct Shared {
    routes: ArcSwap<Routes>,
    pub dedupe: Dedupe,
    pub client: AppClient,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(routes: Routes, dedupe: Dedupe, metrics: Arc<Metrics>) -> Shared {
        Shared {
            routes: ArcSwap::from_pointee(routes),
            dedupe,
            client: AppClient::default(),
            metrics,
        }
    }

    /// The routes as of now; a request keeps the table it started with.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    pub fn swap_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }
}
