//! What the layer, its services, their futures and bodies share: the configuration and the
//! handle table. Everything else in `http` imports this module; it imports none of them, so the
//! module graph is a tree (layer → service → future → body → guard → shared).

use std::sync::Arc;

use super::framework::{LearnedTemplates, TemplateFrom, LEARNED_TEMPLATES};
use super::metrics::{HandleTable, Handles, HttpMetrics};
use super::routes::{RouteNames, Routes, METHOD_COUNT, METHOD_LABELS, UNMATCHED_ENDPOINT};
use crate::metrics::OVERFLOW_LABEL_VALUE;

/// What a layer is configured with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) metrics: HttpMetrics,
    pub(crate) routes: Routes,
    pub(crate) excluded: Box<[Box<str>]>,
    pub(crate) exclude_admin: bool,
    pub(crate) insert_matched_route: bool,
    pub(crate) response_traceparent: bool,
    /// Where a framework that routed the request put its template, if one did.
    pub(crate) template_from: Option<TemplateFrom>,
}

/// What every service of one layer shares: immutable after construction except for the
/// once-initialised handle slots, so the request path takes no lock.
pub(crate) struct Shared {
    pub(crate) config: Config,
    handles: HandleTable,
    /// The templates learned from [`Config::template_from`] (none without it).
    learned: LearnedTemplates,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Arc<Shared> {
        let learned = LearnedTemplates::new(if config.template_from.is_some() {
            LEARNED_TEMPLATES
        } else {
            0
        });
        // Rows: one per declared template, one for unmatched paths, then with a framework's
        // templates one per learned template and one for those past the table. One column per
        // method label.
        let framework_rows = if learned.capacity() > 0 {
            learned.capacity() + 1
        } else {
            0
        };
        let rows = config.routes.len() + 1 + framework_rows;
        let handles = HandleTable::new(rows * METHOD_COUNT);
        Arc::new(Shared {
            config,
            handles,
            learned,
        })
    }

    /// The route row of a template a framework matched: a declared template's own row, else a
    /// learned one's, else (the table full) the overflow row.
    pub(crate) fn framework_route(&self, template: &str) -> usize {
        let declared = self.config.routes.len();
        if let Some(row) = self.config.routes.position(template) {
            return row;
        }
        match self.learned.position(template) {
            Some(at) => declared + 1 + at,
            None => declared + 1 + self.learned.capacity(),
        }
    }

    pub(crate) fn metrics(&self) -> &HttpMetrics {
        &self.config.metrics
    }

    /// The handle slot of a request: its route's row (the unmatched row is the one past the
    /// last declared template; a framework's rows follow it) and its method's column.
    pub(crate) fn slot(&self, route: Option<usize>, method_index: usize) -> usize {
        route.unwrap_or(self.config.routes.len()) * METHOD_COUNT + method_index
    }

    /// The `endpoint` label of the route row of `slot`.
    pub(crate) fn endpoint(&self, slot: usize) -> &'static str {
        let row = slot / METHOD_COUNT;
        let declared = self.config.routes.len();
        match row.checked_sub(declared + 1) {
            None => self.config.routes.template(row).unwrap_or(UNMATCHED_ENDPOINT),
            Some(at) => self.learned.get(at).unwrap_or(OVERFLOW_LABEL_VALUE),
        }
    }

    /// The `method` label of `slot`.
    pub(crate) fn method(slot: usize) -> &'static str {
        METHOD_LABELS[slot % METHOD_COUNT]
    }

    /// The series of `slot`, resolved (labels hashed, families looked up) on its first request
    /// only.
    pub(crate) fn handles(&self, slot: usize) -> &Handles {
        self.handles.get(slot, || {
            let endpoint = self.endpoint(slot);
            let route_names = RouteNames::resolve(slot % METHOD_COUNT, endpoint);
            Handles::resolve(&self.config.metrics, Shared::method(slot), endpoint, route_names)
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
