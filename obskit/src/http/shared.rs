//! What the layer, its services, their futures and bodies share: the configuration and the
//! handle table. Everything else in `http` imports this module; it imports none of them, so the
//! module graph is a tree (layer → service → future → body → guard → shared).

use std::sync::Arc;

use super::metrics::{HandleTable, Handles, HttpMetrics};
use super::routes::{Routes, METHOD_COUNT, METHOD_LABELS, UNMATCHED_ENDPOINT};

/// What a layer is configured with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) metrics: HttpMetrics,
    pub(crate) routes: Routes,
    pub(crate) excluded: Box<[Box<str>]>,
    pub(crate) exclude_admin: bool,
    pub(crate) insert_matched_route: bool,
    pub(crate) response_traceparent: bool,
}

/// What every service of one layer shares: immutable after construction except for the
/// once-initialised handle slots, so the request path takes no lock.
pub(crate) struct Shared {
    pub(crate) config: Config,
    handles: HandleTable,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Arc<Shared> {
        // One row per template plus one for unmatched paths, one column per method label.
        let handles = HandleTable::new((config.routes.len() + 1) * METHOD_COUNT);
        Arc::new(Shared { config, handles })
    }

    pub(crate) fn metrics(&self) -> &HttpMetrics {
        &self.config.metrics
    }

    /// The handle slot of a request: its route's row (the unmatched row is the one past the
    /// last template) and its method's column.
    pub(crate) fn slot(&self, route: Option<usize>, method_index: usize) -> usize {
        route.unwrap_or(self.config.routes.len()) * METHOD_COUNT + method_index
    }

    /// The `endpoint` label of the route row of `slot`.
    pub(crate) fn endpoint(&self, slot: usize) -> &str {
        self.config
            .routes
            .template(slot / METHOD_COUNT)
            .unwrap_or(UNMATCHED_ENDPOINT)
    }

    /// The `method` label of `slot`.
    pub(crate) fn method(slot: usize) -> &'static str {
        METHOD_LABELS[slot % METHOD_COUNT]
    }

    /// The series of `slot`, resolved (labels hashed, families looked up) on its first request
    /// only.
    pub(crate) fn handles(&self, slot: usize) -> &Handles {
        self.handles.get(slot, || {
            Handles::resolve(&self.config.metrics, Shared::method(slot), self.endpoint(slot))
        })
    }

    pub(crate) fn response_traceparent(&self) -> bool {
        self.config.response_traceparent
    }

    pub(crate) fn is_excluded(&self, path: &str) -> bool {
        // The admin question is the table's, asked as the dispatcher asks it.
        (self.config.exclude_admin && crate::admin::AdminRoute::find(path).is_some())
            || self.config.excluded.iter().any(|prefix| {
                path.strip_prefix(&**prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}
