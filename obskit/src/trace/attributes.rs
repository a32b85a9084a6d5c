//! A span's attributes: the first [`INLINE_ATTRIBUTES`] inside the span itself, the rest on the
//! heap.
//!
//! A sampled span used to allocate its attribute vector on the thread that recorded it, and the
//! vector was freed on the export thread. With glibc's allocator that pairing defeats the
//! per-thread cache on both sides: every sampled span paid a locked, cache-missing allocation on
//! the request path (about an eighth of the calling thread's samples under perf, on an Intel
//! Xeon). The usual span, an `#[instrumented]` function's name and a few parameters, now fits
//! inline and allocates nothing.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Deref, DerefMut};

use smallvec::SmallVec;

use super::AttrValue;

/// Attributes a span holds without allocating: the macro's `code.function.name` and three
/// parameters. The HTTP server span's seven or eight spill to one heap allocation, as before.
pub const INLINE_ATTRIBUTES: usize = 4;

type Entries = SmallVec<[(Cow<'static, str>, AttrValue); INLINE_ATTRIBUTES]>;

/// The attributes of a [`FinishedSpan`](super::FinishedSpan), in the order they were set: a
/// slice of key-value pairs (it dereferences to one), whose first [`INLINE_ATTRIBUTES`] need no
/// allocation.
///
/// ```
/// use obskit::trace::{AttrValue, Attributes};
/// let mut attributes = Attributes::new();
/// attributes.push(("order.id".into(), AttrValue::from("o-1")));
/// attributes.push(("retries".into(), AttrValue::from(2i64)));
/// assert_eq!(attributes.len(), 2);
/// assert_eq!(attributes[1].1, AttrValue::I64(2));
/// let from_vec: Attributes = vec![("a".into(), AttrValue::from(true))].into();
/// assert_eq!(from_vec.iter().map(|(k, _)| &**k).collect::<Vec<_>>(), ["a"]);
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Attributes(Entries);

impl Attributes {
    /// No attributes.
    pub fn new() -> Attributes {
        Attributes(SmallVec::new())
    }

    /// Appends one.
    #[inline]
    pub fn push(&mut self, attribute: (Cow<'static, str>, AttrValue)) {
        self.0.push(attribute);
    }

    /// Room for `additional` more in one allocation, where pushing one at a time would grow
    /// the storage repeatedly once the inline room is full.
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    /// Keeps the first `len`.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// Whether they are all inline (nothing allocated).
    pub fn is_inline(&self) -> bool {
        !self.0.spilled()
    }
}

impl Deref for Attributes {
    type Target = [(Cow<'static, str>, AttrValue)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Attributes {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<(Cow<'static, str>, AttrValue)>> for Attributes {
    fn from(attributes: Vec<(Cow<'static, str>, AttrValue)>) -> Attributes {
        Attributes(SmallVec::from_vec(attributes))
    }
}

impl FromIterator<(Cow<'static, str>, AttrValue)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (Cow<'static, str>, AttrValue)>>(iter: I) -> Attributes {
        Attributes(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = &'a (Cow<'static, str>, AttrValue);
    type IntoIter = std::slice::Iter<'a, (Cow<'static, str>, AttrValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Attributes {
    type Item = (Cow<'static, str>, AttrValue);
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self.0.into_iter())
    }
}

/// The owning iterator of [`Attributes`].
pub struct IntoIter(smallvec::IntoIter<[(Cow<'static, str>, AttrValue); INLINE_ATTRIBUTES]>);

impl Iterator for IntoIter {
    type Item = (Cow<'static, str>, AttrValue);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for IntoIter {}

impl fmt::Debug for IntoIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(i: usize) -> (Cow<'static, str>, AttrValue) {
        (Cow::Owned(format!("k{i}")), AttrValue::I64(i as i64))
    }

    #[test]
    fn the_first_few_stay_inline_and_the_rest_keep_their_order() {
        let mut attributes = Attributes::new();
        for i in 0..INLINE_ATTRIBUTES {
            attributes.push(attribute(i));
        }
        assert!(attributes.is_inline());
        for i in INLINE_ATTRIBUTES..3 * INLINE_ATTRIBUTES {
            attributes.push(attribute(i));
        }
        assert!(!attributes.is_inline());
        let keys: Vec<String> = attributes
            .clone()
            .into_iter()
            .map(|(k, _)| k.into_owned())
            .collect();
        let expected: Vec<String> = (0..3 * INLINE_ATTRIBUTES).map(|i| format!("k{i}")).collect();
        assert_eq!(keys, expected);
        attributes.truncate(2);
        assert_eq!(attributes.len(), 2);
        assert_eq!(attributes, (0..2).map(attribute).collect::<Attributes>());
    }
}
