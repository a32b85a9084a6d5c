//! Route templates (`Routes::new`, matchit syntax) and matching a request path against them:
//! never a panic; a refused template is named; the `endpoint` label is always one of the
//! templates or `unmatched`; a match's parameters are pieces of the path, readable by name;
//! and a template without parameters matches itself (static segments win).
//!
//! Input: lines; the last one is the request path, the others (at most 16) the templates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obskit::http::{Routes, UNMATCHED_ENDPOINT};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or("");
    if lines.len() > 16 {
        return;
    }
    let routes = match Routes::new(&lines) {
        Ok(routes) => routes,
        Err(error) => {
            assert!(lines.contains(&error.template()), "refused a template not given");
            return;
        }
    };
    assert_eq!(routes.len(), lines.len());
    assert!(
        routes.templates().eq(lines.iter().copied()),
        "templates reordered"
    );

    let endpoint = routes.endpoint(path);
    match routes.find(path) {
        None => assert_eq!(endpoint, UNMATCHED_ENDPOINT),
        Some(matched) => {
            assert_eq!(endpoint, matched.template());
            assert_eq!(routes.template(matched.index()), Some(matched.template()));
            for (name, value) in matched.params() {
                // (Not checked: that `name` is spelled so in the template. matchit unescapes
                // `{{`/`}}` inside a parameter name, obskit's names keep them; `find` then
                // falls back to matchit's name, as it should.)
                assert!(
                    path.contains(value),
                    "parameter value {value:?} is not in the path"
                );
                // A template may name a parameter twice (`/{id}/{id}`, matchit accepts it):
                // `param` then answers the first.
                let first = matched.params().find(|(n, _)| *n == name).map(|(_, v)| v);
                assert_eq!(matched.param(name), first);
                assert!(matched.param(name).is_some());
            }
        }
    }

    for (index, template) in lines.iter().enumerate() {
        if !template.contains(['{', '}']) {
            let matched = routes.find(template).expect("a static template matches itself");
            assert_eq!(matched.index(), index, "{template:?} matched another template");
        }
    }
});
