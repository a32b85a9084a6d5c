//! Route templates a framework's router matched, for a layer that runs after routing (axum's
//! `Router::layer` runs its layers once a route is chosen, with `MatchedPath` in the request's
//! extensions). The layer reads the template with the hook it was given
//! ([`HttpMetricsLayer::route_template_from`](super::HttpMetricsLayer::route_template_from))
//! and files the request under it.
//!
//! A template the layer's [`Routes`](super::Routes) declare keeps its row; any other is learned,
//! once, into a table of fixed size, so that a framework's templates need not be declared twice.
//! The table is what bounds the `endpoint` label: a hook that returned raw paths would fill it,
//! and every template past it is counted under [`OVERFLOW_LABEL_VALUE`](crate::metrics::OVERFLOW_LABEL_VALUE).

use std::sync::{Mutex, OnceLock};

/// How a layer reads a request's route template from its extensions.
pub(crate) type TemplateFrom = fn(&http::Extensions) -> Option<&str>;

/// How many distinct templates a layer learns from its hook beyond the ones it declares.
pub const LEARNED_TEMPLATES: usize = 128;

/// The templates learned so far, in the order first seen. Read without a lock (a template is
/// found by comparing the ones learned before it); learning one takes the lock.
pub(crate) struct LearnedTemplates {
    slots: Box<[OnceLock<&'static str>]>,
    learning: Mutex<()>,
}

impl LearnedTemplates {
    pub(crate) fn new(capacity: usize) -> LearnedTemplates {
        LearnedTemplates {
            slots: (0..capacity).map(|_| OnceLock::new()).collect(),
            learning: Mutex::new(()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The position of `template`, learned now if it is new and there is room; `None` when the
    /// table is full of others.
    pub(crate) fn position(&self, template: &str) -> Option<usize> {
        if let Lookup::Found(at) = self.find(template) {
            return Some(at);
        }
        let _learning = self.learning.lock().unwrap_or_else(|p| p.into_inner());
        // Another request may have learned it, or taken the free slot, meanwhile.
        match self.find(template) {
            Lookup::Found(at) => Some(at),
            Lookup::Free(at) => {
                let _ = self.slots[at].set(super::routes::intern_template(template));
                Some(at)
            }
            Lookup::Full => None,
        }
    }

    fn find(&self, template: &str) -> Lookup {
        for (at, slot) in self.slots.iter().enumerate() {
            match slot.get() {
                Some(learned) if *learned == template => return Lookup::Found(at),
                Some(_) => {}
                None => return Lookup::Free(at),
            }
        }
        Lookup::Full
    }

    /// The template learned at `position`.
    pub(crate) fn get(&self, position: usize) -> Option<&'static str> {
        self.slots.get(position).and_then(|slot| slot.get().copied())
    }
}

/// Where a template is in the table: slots fill in order, so the first free one ends the search.
enum Lookup {
    Found(usize),
    Free(usize),
    Full,
}
