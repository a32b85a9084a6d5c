//! Route templates, the match a request carries into the inner service, and method labels.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use http::Method;

use super::matcher::{Matcher, Spans, MAX_PARAMS};

/// The `endpoint` label of a request whose path matches none of the [`Routes`].
///
/// ```
/// use obskit::http::{Routes, UNMATCHED_ENDPOINT};
/// let routes = Routes::new(["/api/products"]).unwrap();
/// assert_eq!(routes.endpoint("/wp-login.php"), UNMATCHED_ENDPOINT);
/// ```
pub const UNMATCHED_ENDPOINT: &str = "unmatched";

/// The `method` label of a request whose method is not one of the nine standard ones
/// (`GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH`).
///
/// ```
/// use obskit::http::{method_label, OTHER_METHOD};
/// let purge = http::Method::from_bytes(b"PURGE").unwrap();
/// assert_eq!(method_label(&purge), OTHER_METHOD);
/// assert_eq!(method_label(&http::Method::GET), "GET");
/// ```
pub const OTHER_METHOD: &str = "other";

/// Label values of the methods, indexed by [`method_index`]; the last one is [`OTHER_METHOD`].
pub(crate) const METHOD_LABELS: [&str; METHOD_COUNT] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    OTHER_METHOD,
];

/// The label value of the method at `index` (of [`method_index`]).
pub(crate) fn method_label_at(index: usize) -> &'static str {
    METHOD_LABELS.get(index).copied().unwrap_or(OTHER_METHOD)
}

/// How many distinct `method` label values there are: the nine standard methods and `other`.
pub(crate) const METHOD_COUNT: usize = 10;

/// Index of `HEAD` in [`METHOD_LABELS`].
pub(crate) const HEAD_INDEX: usize = 1;

/// Index of [`OTHER_METHOD`] in [`METHOD_LABELS`].
pub(crate) const OTHER_INDEX: usize = METHOD_COUNT - 1;

/// Position of `method` in [`METHOD_LABELS`].
///
/// Methods are case-sensitive (RFC 9110), so `get` is `other`, not `GET`: a client choosing
/// its own spelling must not create series.
pub(crate) fn method_index(method: &Method) -> usize {
    match method.as_str() {
        "GET" => 0,
        "HEAD" => 1,
        "POST" => 2,
        "PUT" => 3,
        "DELETE" => 4,
        "CONNECT" => 5,
        "OPTIONS" => 6,
        "TRACE" => 7,
        "PATCH" => 8,
        _ => OTHER_INDEX,
    }
}

/// The `method` label value for `method`: its name for the nine standard methods,
/// [`OTHER_METHOD`] for anything else, so a client cannot create series by inventing methods.
///
/// ```
/// use http::Method;
/// use obskit::http::method_label;
/// assert_eq!(method_label(&Method::PATCH), "PATCH");
/// assert_eq!(method_label(&Method::from_bytes(b"PROPFIND").unwrap()), "other");
/// ```
pub fn method_label(method: &Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// Why [`Routes::new`] refused a template.
///
/// ```
/// use obskit::http::Routes;
/// let err = Routes::new(["/api/products/{id"]).unwrap_err();
/// assert_eq!(err.template(), "/api/products/{id");
/// assert!(err.to_string().starts_with("invalid route template `/api/products/{id`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    template: String,
    reason: String,
}

impl RouteError {
    /// `template` refused for `reason`.
    pub(crate) fn new(template: &str, reason: impl Into<String>) -> RouteError {
        RouteError {
            template: template.to_string(),
            reason: reason.into(),
        }
    }

    /// The template that was refused.
    ///
    /// ```
    /// let err = obskit::http::Routes::new(["no-leading-slash"]).unwrap_err();
    /// assert_eq!(err.template(), "no-leading-slash");
    /// ```
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Why it was refused, in words.
    ///
    /// ```
    /// let err = obskit::http::Routes::new(["/a/{x}", "/a/{y}"]).unwrap_err();
    /// assert!(err.reason().contains("conflict"), "{}", err.reason());
    /// ```
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid route template `{}`: {}", self.template, self.reason)
    }
}

impl std::error::Error for RouteError {}

/// The route templates of a service, matched against request paths to produce the `endpoint`
/// label. Cheap to clone (shared).
///
/// Templates use [matchit](https://docs.rs/matchit/0.9) syntax: `{id}` matches one path
/// segment, `{*rest}` the rest of the path; `{{` and `}}` are literal braces. Static segments
/// win over parameters (`/users/me` before `/users/{id}`). Paths are matched as they arrive,
/// not percent-decoded, and a trailing slash matters (`/api/products/` is not
/// `/api/products`).
///
/// The `endpoint` label is always a template or [`UNMATCHED_ENDPOINT`], never the raw path, so
/// the number of series is bounded by the number of templates whatever clients send.
///
/// ```
/// use obskit::http::Routes;
///
/// let routes = Routes::new(["/api/products", "/api/products/{id}", "/static/{*file}"]).unwrap();
/// assert_eq!(routes.endpoint("/api/products/42"), "/api/products/{id}");
/// assert_eq!(routes.endpoint("/static/css/site.css"), "/static/{*file}");
/// assert_eq!(routes.endpoint("/api/products/42/reviews"), "unmatched");
///
/// let matched = routes.find("/api/products/42").unwrap();
/// assert_eq!(matched.param("id"), Some("42"));
/// ```
#[derive(Clone)]
pub struct Routes {
    inner: Arc<RoutesInner>,
}

struct RoutesInner {
    matcher: Matcher,
    templates: Box<[&'static Template]>,
}

/// A route template and its parameter names, in template order: interned (one per distinct
/// text, for the life of the process), so that a [`MatchedRoute`] refers to it without a
/// reference count. A request's match is then copied into its body, and dropped, with no
/// locked instruction. The memory held is bounded by the distinct templates a process
/// declares, however often it builds [`Routes`] from them.
struct Template {
    text: Box<str>,
    param_names: Box<[Box<str>]>,
}

impl Template {
    /// The interned template of `text` (already validated).
    fn interned(text: &str) -> &'static Template {
        static INTERNED: OnceLock<Mutex<HashMap<Box<str>, &'static Template>>> = OnceLock::new();
        let mut interned = INTERNED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(template) = interned.get(text) {
            return template;
        }
        let template: &'static Template = Box::leak(Box::new(Template {
            text: Box::from(text),
            param_names: parse_param_names(text),
        }));
        interned.insert(Box::from(text), template);
        template
    }
}

/// `text`, interned for the life of the process (see [`Template`]): a label value a layer can
/// hold without a reference count.
pub(crate) fn intern_template(text: &str) -> &'static str {
    &Template::interned(text).text
}

/// A matched route's names for its server span, resolved once per method and route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteNames {
    /// The route's template: the `http.route` attribute.
    pub(crate) template: &'static str,
    /// `{method} {template}`: the span's name.
    pub(crate) span_name: &'static str,
}

impl RouteNames {
    /// The names of `template` requested with the method at `method_index`. The span name is
    /// interned, so a request formats and allocates no name; the texts kept are bounded by the
    /// methods times the templates a process declares (or learns, within its label limit).
    pub(crate) fn resolve(method_index: usize, template: &'static str) -> RouteNames {
        static INTERNED: OnceLock<Mutex<HashMap<(usize, &'static str), &'static str>>> = OnceLock::new();
        let mut interned = INTERNED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let span_name = *interned.entry((method_index, template)).or_insert_with(|| {
            let name = format!("{} {template}", span_name_method(method_index));
            Box::leak(name.into_boxed_str())
        });
        RouteNames { template, span_name }
    }
}

/// The method part of a server span's name: `HTTP` for a non-standard method.
pub(crate) fn span_name_method(method_index: usize) -> &'static str {
    if method_index == OTHER_INDEX {
        "HTTP"
    } else {
        METHOD_LABELS[method_index]
    }
}

impl Default for Routes {
    /// No templates: every path is unmatched.
    fn default() -> Self {
        Routes {
            inner: Arc::new(RoutesInner {
                matcher: Matcher::default(),
                templates: Box::default(),
            }),
        }
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.templates()).finish()
    }
}

impl Routes {
    /// Compiles `templates`, in order; a template's position is its [`MatchedRoute::index`].
    ///
    /// Fails on the first template that does not start with `/`, has unbalanced braces or an
    /// empty parameter name, two parameters in one segment, a catch-all that is not last, or
    /// that conflicts with an earlier template (including a duplicate).
    ///
    /// ```
    /// use obskit::http::Routes;
    /// let routes = Routes::new(vec![String::from("/health"), String::from("/users/{id}")]).unwrap();
    /// assert_eq!(routes.len(), 2);
    /// assert!(Routes::new(["/files/{*path}/meta"]).is_err());
    /// ```
    pub fn new<I>(templates: I) -> Result<Routes, RouteError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut router = matchit::Router::new();
        let mut list = Vec::new();
        for template in templates {
            let template = template.as_ref();
            let refuse = |reason: String| RouteError {
                template: template.to_string(),
                reason,
            };
            if !template.starts_with('/') {
                return Err(refuse("a template must start with `/`".to_string()));
            }
            let names = parse_param_names(template);
            // matchit panics past its own limit; a template is refused before it gets there.
            if names.len() > MAX_PARAMS {
                return Err(refuse(format!(
                    "a template has at most {MAX_PARAMS} parameters, this one has {}",
                    names.len()
                )));
            }
            // matchit 0.9 refuses `/` in a parameter name except as its first byte (`{/x}`);
            // a name lies within one segment, so it is refused here, before matchit sees it.
            if let Some(name) = names.iter().find(|n| n.contains('/')) {
                return Err(refuse(format!("the parameter name `{name}` contains `/`")));
            }
            if let Some(twice) = names
                .iter()
                .enumerate()
                .find_map(|(i, n)| names[..i].contains(n).then_some(n))
            {
                return Err(refuse(format!("the parameter `{twice}` is named twice")));
            }
            router
                .insert(template, list.len())
                .map_err(|e| refuse(e.to_string()))?;
            list.push(Template::interned(template));
        }
        // matchit has validated the templates (syntax, conflicts); matching is the matcher's.
        drop(router);
        Ok(Routes {
            inner: Arc::new(RoutesInner {
                matcher: Matcher::new(list.iter().map(|t| &*t.text)),
                templates: list.into_boxed_slice(),
            }),
        })
    }

    /// How many templates there are.
    ///
    /// ```
    /// assert_eq!(obskit::http::Routes::new(["/a", "/b"]).unwrap().len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.templates.len()
    }

    /// Whether there are no templates (every request is [`UNMATCHED_ENDPOINT`]).
    ///
    /// ```
    /// assert!(obskit::http::Routes::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.inner.templates.is_empty()
    }

    /// The templates, in the order given to [`Routes::new`].
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/a", "/b/{id}"]).unwrap();
    /// assert_eq!(routes.templates().collect::<Vec<_>>(), ["/a", "/b/{id}"]);
    /// ```
    pub fn templates(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.inner.templates.iter().map(|t| &*t.text)
    }

    /// The template at `index` (see [`MatchedRoute::index`]).
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/a", "/b/{id}"]).unwrap();
    /// assert_eq!(routes.template(1), Some("/b/{id}"));
    /// assert_eq!(routes.template(2), None);
    /// ```
    pub fn template(&self, index: usize) -> Option<&'static str> {
        self.inner.templates.get(index).map(|t| &*t.text)
    }

    /// The position of `template` among the templates, compared as text.
    pub(crate) fn position(&self, template: &str) -> Option<usize> {
        self.inner.templates.iter().position(|t| &*t.text == template)
    }

    /// The position of the template `path` matches and where its parameters are in `path`.
    /// Does not allocate.
    pub(crate) fn match_path(&self, path: &str, spans: &mut Spans) -> Option<usize> {
        self.inner.matcher.find(path, spans)
    }

    /// The `endpoint` label for `path`: the matching template, or [`UNMATCHED_ENDPOINT`].
    /// Does not allocate.
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/api/products/{id}"]).unwrap();
    /// assert_eq!(routes.endpoint("/api/products/7"), "/api/products/{id}");
    /// assert_eq!(routes.endpoint("/api/products/7/"), "unmatched");
    /// ```
    pub fn endpoint(&self, path: &str) -> &str {
        match self.match_path(path, &mut Spans::new()) {
            Some(index) => &self.inner.templates[index].text,
            None => UNMATCHED_ENDPOINT,
        }
    }

    /// Matches `path` and returns the template with the path parameters, or `None` when no
    /// template matches.
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/cart/{user_id}/items/{product_id}"]).unwrap();
    /// let m = routes.find("/cart/u1/items/p9").unwrap();
    /// assert_eq!(m.template(), "/cart/{user_id}/items/{product_id}");
    /// assert_eq!(m.param("user_id"), Some("u1"));
    /// assert_eq!(m.param("product_id"), Some("p9"));
    /// assert!(routes.find("/cart/u1").is_none());
    /// ```
    pub fn find(&self, path: &str) -> Option<MatchedRoute> {
        let mut spans = Spans::new();
        let index = self.match_path(path, &mut spans)?;
        Some(self.matched(index, path, &spans))
    }

    /// The [`MatchedRoute`] of a match [`match_path`](Routes::match_path) found in `path`.
    pub(crate) fn matched(&self, index: usize, path: &str, spans: &Spans) -> MatchedRoute {
        MatchedRoute {
            template: self.inner.templates[index],
            index,
            values: ParamValues::copy(path, spans.as_slice()),
        }
    }
}

/// The parameter names of a template, in order: `{name}` and `{*name}`, skipping the `{{` and
/// `}}` escapes. Braces may be unbalanced here: matchit refuses such a template afterwards.
fn parse_param_names(template: &str) -> Box<[Box<str>]> {
    let mut names = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                let start = i + 1;
                let end = template[start..].find('}').map_or(template.len(), |e| start + e);
                let name = template[start..end].trim_start_matches('*');
                names.push(Box::from(name));
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    names.into_boxed_slice()
}

/// The route a request matched, handed to the inner service by
/// [`HttpMetricsService`](super::HttpMetricsService) in the request's body
/// ([`RequestBody::matched_route`](super::RequestBody::matched_route); read it with
/// [`MatchedRoute::of`]), and also as a request extension when
/// [`insert_matched_route`](super::HttpMetricsLayer::insert_matched_route) is set.
///
/// The layer has to match the path anyway to label the request, so a hand-written router can
/// dispatch on [`template`](MatchedRoute::template) (or [`index`](MatchedRoute::index)) and read
/// its [`param`](MatchedRoute::param)s instead of matching a second time. It is absent when no
/// template matched: answer 404. Parameter values are the raw (not percent-decoded) path
/// segments. Excluded paths (see [`HttpMetricsLayer::exclude_paths`](super::HttpMetricsLayer::exclude_paths))
/// get it too: exclusion is about recording, not routing.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use obskit::http::{HttpMetrics, HttpMetricsLayer, MatchedRoute, RequestBody, Routes};
/// use obskit::metrics::Registry;
/// use tower::{Layer, ServiceExt};
///
/// async fn router<B>(req: Request<RequestBody<B>>) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
///     let route = MatchedRoute::of(&req);
///     let (status, body) = match route.map(|r| (r.template(), r)) {
///         Some(("/api/products/{id}", r)) => (StatusCode::OK, format!("product {}", r.param("id").unwrap())),
///         _ => (StatusCode::NOT_FOUND, "not found".to_string()),
///     };
///     Ok(Response::builder().status(status).body(Full::from(body)).unwrap())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = HttpMetricsLayer::new(HttpMetrics::new(&Registry::new()).unwrap())
///     .routes(Routes::new(["/api/products/{id}"]).unwrap());
/// let service = layer.layer(tower::service_fn(router));
/// let request = Request::get("/api/products/42").body(Full::<bytes::Bytes>::default()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Clone)]
pub struct MatchedRoute {
    template: &'static Template,
    index: usize,
    values: ParamValues,
}

/// The parameter values of a match, copied out of the request path (the match outlives the
/// path's borrow once it sits in the extensions): concatenated, with where each one ends.
/// Short values (the usual ids) stay inline, so a match allocates nothing of its own; past
/// [`INLINE_VALUE_BYTES`] they go to the heap.
#[derive(Clone)]
enum ParamValues {
    Inline {
        count: u8,
        ends: [u8; MAX_PARAMS],
        bytes: [u8; INLINE_VALUE_BYTES],
    },
    Heap {
        ends: Box<[usize]>,
        text: Box<str>,
    },
}

/// Bytes kept inline for the parameter values of a match: a few ids, a short slug.
const INLINE_VALUE_BYTES: usize = 46;

impl ParamValues {
    fn copy(path: &str, ranges: &[Range<usize>]) -> ParamValues {
        let total: usize = ranges.iter().map(|r| r.len()).sum();
        if total <= INLINE_VALUE_BYTES {
            let mut ends = [0u8; MAX_PARAMS];
            let mut bytes = [0u8; INLINE_VALUE_BYTES];
            let mut at = 0;
            for (end, range) in ends.iter_mut().zip(ranges) {
                bytes[at..at + range.len()].copy_from_slice(&path.as_bytes()[range.clone()]);
                at += range.len();
                // At most INLINE_VALUE_BYTES.
                *end = at as u8;
            }
            ParamValues::Inline {
                count: ranges.len() as u8,
                ends,
                bytes,
            }
        } else {
            let mut text = String::with_capacity(total);
            let ends = ranges
                .iter()
                .map(|range| {
                    text.push_str(&path[range.clone()]);
                    text.len()
                })
                .collect();
            ParamValues::Heap {
                ends,
                text: text.into_boxed_str(),
            }
        }
    }

    fn count(&self) -> usize {
        match self {
            ParamValues::Inline { count, .. } => usize::from(*count),
            ParamValues::Heap { ends, .. } => ends.len(),
        }
    }

    /// Value `i`, in template order (`i < self.count()`).
    fn get(&self, i: usize) -> &str {
        match self {
            ParamValues::Inline { ends, bytes, .. } => {
                let start = if i == 0 { 0 } else { usize::from(ends[i - 1]) };
                let value = &bytes[start..usize::from(ends[i])];
                // Whole values copied from a `&str`, each delimited by ASCII (`/`, the end, or
                // the template's literal text), so each is UTF-8 on its own.
                std::str::from_utf8(value).unwrap_or_default()
            }
            ParamValues::Heap { ends, text } => {
                let start = if i == 0 { 0 } else { ends[i - 1] };
                text.get(start..ends[i]).unwrap_or_default()
            }
        }
    }
}

impl fmt::Debug for MatchedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatchedRoute")
            .field("template", &self.template())
            .field("params", &self.params().collect::<Vec<_>>())
            .finish()
    }
}

impl MatchedRoute {
    /// The route `request` matched: from its body, where the layer puts it, or else from its
    /// extensions (a layer with [`insert_matched_route`](super::HttpMetricsLayer::insert_matched_route)
    /// further out, or a test that put one there). `None`: no template matched.
    ///
    /// ```
    /// use obskit::http::{MatchedRoute, RequestBody, Routes};
    /// let routes = Routes::new(["/items/{id}"]).unwrap();
    /// let mut request = http::Request::new(RequestBody::new(http_body_util::Empty::<bytes::Bytes>::new()));
    /// assert!(MatchedRoute::of(&request).is_none());
    /// request.extensions_mut().insert(routes.find("/items/7").unwrap());
    /// assert_eq!(MatchedRoute::of(&request).unwrap().param("id"), Some("7"));
    /// ```
    pub fn of<B>(request: &http::Request<super::RequestBody<B>>) -> Option<&MatchedRoute> {
        request
            .body()
            .matched_route()
            .or_else(|| request.extensions().get::<MatchedRoute>())
    }

    /// The template that matched, e.g. `/api/products/{id}`.
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/api/products/{id}"]).unwrap();
    /// assert_eq!(routes.find("/api/products/1").unwrap().template(), "/api/products/{id}");
    /// ```
    pub fn template(&self) -> &str {
        &self.template.text
    }

    /// The template's position in the list given to [`Routes::new`]: a cheap key to dispatch on.
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/a", "/b/{id}"]).unwrap();
    /// assert_eq!(routes.find("/b/1").unwrap().index(), 1);
    /// ```
    pub fn index(&self) -> usize {
        self.index
    }

    /// The value of the path parameter `name`, as it appears in the path.
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/files/{*path}"]).unwrap();
    /// let m = routes.find("/files/a/b%20c.txt").unwrap();
    /// assert_eq!(m.param("path"), Some("a/b%20c.txt"));
    /// assert_eq!(m.param("other"), None);
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        let i = self.names().iter().position(|key| &**key == name)?;
        (i < self.values.count()).then(|| self.values.get(i))
    }

    /// All path parameters as `(name, value)`, in template order.
    ///
    /// ```
    /// let routes = obskit::http::Routes::new(["/u/{user}/o/{order}"]).unwrap();
    /// let m = routes.find("/u/7/o/9").unwrap();
    /// assert_eq!(m.params().collect::<Vec<_>>(), [("user", "7"), ("order", "9")]);
    /// ```
    pub fn params(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        let count = self.values.count();
        self.names()
            .iter()
            .take(count)
            .enumerate()
            .map(|(i, name)| (&**name, self.values.get(i)))
    }

    fn names(&self) -> &[Box<str>] {
        &self.template.param_names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_and_label_by_template() {
        let routes = Routes::new([
            "/api/products",
            "/api/products/{id}",
            "/api/products/featured",
            "/static/{*file}",
        ])
        .unwrap();
        assert_eq!(routes.endpoint("/api/products"), "/api/products");
        assert_eq!(routes.endpoint("/api/products/17"), "/api/products/{id}");
        // Static segments win over parameters.
        assert_eq!(
            routes.endpoint("/api/products/featured"),
            "/api/products/featured"
        );
        assert_eq!(routes.endpoint("/static/a/b/c.js"), "/static/{*file}");
        let m = routes.find("/static/a/b/c.js").unwrap();
        assert_eq!(m.param("file"), Some("a/b/c.js"));
        assert_eq!(m.index(), 3);
    }

    #[test]
    fn unknown_paths_are_unmatched() {
        let routes = Routes::new(["/api/products/{id}"]).unwrap();
        for path in [
            "/",
            "",
            "*",
            "/api",
            "/api/products",
            "/api/products/1/2",
            "/API/products/1",
        ] {
            assert_eq!(routes.endpoint(path), UNMATCHED_ENDPOINT, "{path}");
            assert!(routes.find(path).is_none(), "{path}");
        }
        assert_eq!(Routes::default().endpoint("/anything"), UNMATCHED_ENDPOINT);
    }

    #[test]
    fn invalid_templates_are_refused_with_the_template_named() {
        for bad in ["api/products", "/a/{id", "/a/{}", "/a/{x}{y}", "/a/{*rest}/b"] {
            let err = Routes::new(["/ok", bad]).unwrap_err();
            assert_eq!(err.template(), bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
        let dup = Routes::new(["/a/{id}", "/a/{id}"]).unwrap_err();
        assert!(dup.reason().contains("conflict"), "{dup}");
        // Found by the `routes` fuzz target: matchit panics on 26 parameters.
        let many: String = (0..26).map(|i| format!("/{{p{i}}}")).collect();
        let err = Routes::new([many.as_str()]).unwrap_err();
        assert!(err.reason().contains("at most 16 parameters"), "{err}");
        let sixteen: String = (0..16).map(|i| format!("/{{p{i}}}")).collect();
        assert!(Routes::new([sixteen.as_str()]).is_ok());
        let twice = Routes::new(["/a/{x}/{x}"]).unwrap_err();
        assert!(twice.reason().contains("named twice"), "{twice}");
        // Found by the `routes` fuzz target: matchit accepts a `/` as a name's first byte,
        // which split the template mid-parameter and panicked the matcher.
        for slash in ["/a/{/x}", "/aers/m'sa/{/{i1y}d"] {
            let err = Routes::new(["/a/{x}", slash]).unwrap_err();
            assert_eq!(err.template(), slash);
            assert!(err.reason().contains("contains `/`"), "{err}");
        }
    }

    #[test]
    fn param_names_skip_escaped_braces() {
        let names = parse_param_names("/a/{{literal}}/{id}/x-{name}.json/{*rest}");
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        assert_eq!(names, ["id", "name", "rest"]);
        let routes = Routes::new(["/a/{{x}}/{id}"]).unwrap();
        let m = routes.find("/a/{x}/5").unwrap();
        assert_eq!(m.params().collect::<Vec<_>>(), [("id", "5")]);
    }

    #[test]
    fn templates_are_interned_and_a_match_outlives_its_routes() {
        let template = "/interned/{id}/x-{name}";
        let first = Routes::new([template, "/interned"]).unwrap();
        let second = Routes::new(["/interned", template]).unwrap();
        // One copy per distinct text, however many route tables declare it.
        assert!(std::ptr::eq(first.inner.templates[0], second.inner.templates[1]));
        assert!(std::ptr::eq(first.inner.templates[1], second.inner.templates[0]));
        let matched = first.find("/interned/7/x-ab").unwrap();
        drop((first, second));
        assert_eq!(matched.template(), template);
        assert_eq!(
            matched.params().collect::<Vec<_>>(),
            [("id", "7"), ("name", "ab")]
        );
        assert_eq!(matched.clone().param("name"), Some("ab"));
    }
    /// What matchit answers for `path`: the template index and the parameters.
    fn matchit_answer(router: &matchit::Router<usize>, path: &str) -> Option<(usize, Vec<(String, String)>)> {
        let m = router.at(path).ok()?;
        let params = m
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some((*m.value, params))
    }

    fn our_answer(routes: &Routes, path: &str) -> Option<(usize, Vec<(String, String)>)> {
        let m = routes.find(path)?;
        assert_eq!(routes.endpoint(path), m.template());
        let params = m.params().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Some((m.index(), params))
    }

    /// Every path of up to `depth` segments drawn from `pieces`.
    fn paths(pieces: &[&str], depth: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..depth {
            level = level
                .iter()
                .flat_map(|p| pieces.iter().map(move |s| format!("{p}/{s}")))
                .collect();
            all.extend(level.iter().cloned());
        }
        all
    }

    /// The matcher gives matchit's answer (the matcher this one replaced on the request path)
    /// on every path built from the templates' own pieces and their near misses.
    #[test]
    fn the_match_is_the_one_matchit_gives() {
        let sets: [&[&str]; 3] = [
            &[
                "/api/products",
                "/api/products/{id}",
                "/api/products/featured",
                "/api/products/{id}/restock",
                "/api/categories",
                "/static/{*file}",
                "/",
            ],
            &[
                "/users/me",
                "/users/{id}",
                "/users/{id}/orders/{order}",
                "/files/{*path}",
                "/a/x-{name}.json",
                "/a/{other}",
                "/a/{{lit}}/{id}",
                "/src{*rest}",
                "/trail/",
                "/trail",
                "/cart/{user_id}/items/{product_id}",
            ],
            &["/{a}/{b}/{c}/{d}", "/{a}/{b}/x", "/x/{b}/{c}", "/x/y/{*z}"],
        ];
        let pieces = [
            "",
            "api",
            "products",
            "42",
            "featured",
            "restock",
            "categories",
            "static",
            "users",
            "me",
            "orders",
            "x-1.json",
            "x-.json",
            "{lit}",
            "a",
            "x",
            "y",
            "%2F",
            "trail",
            "src",
            "srcx",
            "files",
            "cart",
            "items",
            "é",
        ];
        for templates in sets {
            let routes = Routes::new(templates.iter().copied()).unwrap();
            let mut router = matchit::Router::new();
            for (i, t) in templates.iter().enumerate() {
                router.insert(*t, i).unwrap();
            }
            let mut matched = 0;
            for path in paths(&pieces, 3)
                .iter()
                .map(|p| p.as_str())
                .chain(["", "*", "//", "/a/x-1.json/"])
            {
                let ours = our_answer(&routes, path);
                assert_eq!(ours, matchit_answer(&router, path), "{templates:?} {path:?}");
                matched += usize::from(ours.is_some());
            }
            assert!(
                matched > 20,
                "the paths exercise the templates: {matched} matched"
            );
        }
    }

    #[test]
    fn parameters_are_the_raw_segments() {
        let routes = Routes::new([
            "/api/products/{id}",
            "/api/products/{id}/restock",
            "/static/{*file}",
            "/a/x-{name}.json",
        ])
        .unwrap();
        let id = |path: &str| routes.find(path).and_then(|m| m.param("id").map(String::from));
        // Percent-encoding is kept as sent: an encoded slash stays inside the segment.
        assert_eq!(id("/api/products/a%2Fb").as_deref(), Some("a%2Fb"));
        assert_eq!(id("/api/products/%E2%82%AC").as_deref(), Some("%E2%82%AC"));
        assert_eq!(id("/api/products/€").as_deref(), Some("€"));
        // An empty segment is no parameter, and a trailing slash is another path.
        assert!(routes.find("/api/products/").is_none());
        assert!(routes.find("/api/products//restock").is_none());
        assert!(routes.find("/api/products/1/restock/").is_none());
        assert!(routes.find("/static/").is_none(), "a catch-all is never empty");
        let m = routes.find("/static/css/").unwrap();
        assert_eq!(m.param("file"), Some("css/"));
        assert!(
            routes.find("/a/x-.json").is_none(),
            "the value between prefix and suffix is not empty"
        );
        assert_eq!(routes.find("/a/x-a.b.json").unwrap().param("name"), Some("a.b"));
        // A value right at, and one past, the inline capacity; and a long path.
        for len in [
            INLINE_VALUE_BYTES - 1,
            INLINE_VALUE_BYTES,
            INLINE_VALUE_BYTES + 1,
            20_000,
        ] {
            let value = "v".repeat(len);
            assert_eq!(
                id(&format!("/api/products/{value}")).as_deref(),
                Some(&*value),
                "{len}"
            );
            let file = format!("{}/{value}", "d/".repeat(len / 4));
            let m = routes.find(&format!("/static/{file}")).unwrap();
            assert_eq!(m.param("file"), Some(&*file));
            assert_eq!(m.clone().params().collect::<Vec<_>>(), [("file", &*file)]);
        }
        assert_eq!(
            format!("{:?}", routes.find("/api/products/7/restock").unwrap()),
            r#"MatchedRoute { template: "/api/products/{id}/restock", params: [("id", "7")] }"#
        );
    }

    #[test]
    fn sixteen_parameters_each_get_their_value() {
        let template: String = (0..16).map(|i| format!("/{{p{i}}}")).collect();
        let routes = Routes::new([template.as_str()]).unwrap();
        let path: String = (0..16).map(|i| format!("/value-number-{i}")).collect();
        let m = routes.find(&path).unwrap();
        for i in 0..16 {
            assert_eq!(m.param(&format!("p{i}")), Some(&*format!("value-number-{i}")));
        }
        assert_eq!(m.params().len(), 16);
        assert_eq!(m.param("p16"), None);
    }

    #[test]
    fn standard_methods_keep_their_name_and_others_fold() {
        for label in &METHOD_LABELS[..OTHER_INDEX] {
            let method = Method::from_bytes(label.as_bytes()).unwrap();
            assert_eq!(method_label(&method), *label);
        }
        for other in ["PURGE", "get", "PROPFIND", "X"] {
            let method = Method::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(method_label(&method), OTHER_METHOD, "{other}");
        }
        assert_eq!(METHOD_LABELS[HEAD_INDEX], "HEAD");
    }
}
