//! JSON in and out: the contract's error body, JSON responses, and request bodies read with a
//! size cap.

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::StoreError;

/// The response body every service answers with.
pub type Body = Full<Bytes>;

/// Default cap on request bodies: the contract's bodies are a few hundred bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// An error answer: `{"error": code, "message": ...}` with its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A machine-readable code (`not_found`, `invalid_field`, ...).
    pub code: &'static str,
    /// A sentence for humans.
    pub message: String,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422 `invalid_field`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }

    /// 500 `internal_error`. The details go to the log, not to the client.
    pub fn internal(detail: impl fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to answer; try again later",
        )
    }

    /// The JSON response.
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        json_response(self.status, &body)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    /// The generic mapping; handlers that know better (which thing was not found) map first.
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found("no such resource"),
            StoreError::Conflict(what) => ApiError::conflict(what),
            e @ StoreError::InsufficientStock { .. } => {
                ApiError::new(StatusCode::CONFLICT, "insufficient_stock", e.to_string())
            }
            e @ StoreError::Stale { .. } => ApiError::conflict(e.to_string()),
            StoreError::Backend(e) => {
                tracing::warn!(error = %e, "storage failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the store is not answering; try again later",
                )
            }
        }
    }
}

/// A JSON response with `status`.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    // Serialising the contract's own types cannot fail (no maps with non-string keys).
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 204 with no body.
pub fn no_content() -> Response<Body> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Reads the whole body, at most `limit` bytes, and parses it as JSON into `T`.
///
/// Answers 413 `payload_too_large` past the limit (from `Content-Length` before reading, else
/// while reading), 400 `malformed_json` when the bytes are not JSON, and 422 `invalid_field`
/// when they are JSON of the wrong shape (a missing field, a string for a number).
pub async fn read_json<T, B>(request: http::Request<B>, limit: usize) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(ApiError::bad_request(format!("could not read the body: {e}"))),
    };
    parse_json(&bytes)
}

/// Parses `bytes` as JSON into `T`: 400 when not JSON, 422 when the shape is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        ),
    })
}

/// The first value of `key` in the request's query string, percent-decoded (`+` as space).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Default page size of the shop's listings (products, a user's orders).
pub const DEFAULT_PAGE_LIMIT: u32 = 20;
/// Largest page size of the shop's listings.
pub const MAX_PAGE_LIMIT: u32 = 100;
/// Largest page number accepted: far past any listing, small enough that the offset
/// (`(page - 1) × limit`) cannot overflow.
pub const MAX_PAGE: u32 = 1_000_000;

/// Which page of a listing a client asks for: `page` from 1 (default 1) and `limit` from 1 to
/// [`MAX_PAGE_LIMIT`] (default [`DEFAULT_PAGE_LIMIT`]), the query parameters of every listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// The page number, from 1.
    pub page: u32,
    /// Most entries on the page.
    pub limit: u32,
}

impl Page {
    /// The page in a query string; 422 naming the parameter when one is not a whole number in
    /// its range (an empty value counts as absent).
    ///
    /// ```
    /// use shop_common::http::Page;
    /// assert_eq!(Page::from_query(Some("page=3&limit=5")).unwrap(), Page { page: 3, limit: 5 });
    /// assert_eq!(Page::from_query(None).unwrap(), Page { page: 1, limit: 20 });
    /// assert_eq!(Page::from_query(Some("limit=101")).unwrap_err().status, 422);
    /// ```
    pub fn from_query(query: Option<&str>) -> Result<Page, ApiError> {
        Ok(Page {
            page: bounded_param(query, "page", 1, MAX_PAGE)?,
            limit: bounded_param(query, "limit", DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
        })
    }

    /// How many entries come before this page.
    pub fn offset(&self) -> u64 {
        u64::from(self.page.saturating_sub(1)) * u64::from(self.limit)
    }
}

/// An optional positive whole-number query parameter within `1..=max`, `default` when absent.
fn bounded_param(query: Option<&str>, key: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match query_param(query, key).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=max).contains(v))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "`{key}` must be a whole number from 1 to {max}, not {raw:?}"
                ))
            }),
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes stay as they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Item {
        #[allow(dead_code)]
        quantity: i64,
    }

    fn request(body: &'static [u8]) -> http::Request<Full<Bytes>> {
        http::Request::new(Full::new(Bytes::from_static(body)))
    }

    #[tokio::test]
    async fn bodies_are_told_apart_by_what_is_wrong() {
        assert!(read_json::<Item, _>(request(br#"{"quantity": 2}"#), 100)
            .await
            .is_ok());
        let e = read_json::<Item, _>(request(b"{\"quantity\": "), 100)
            .await
            .unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "malformed_json"));
        let e = read_json::<Item, _>(request(b"not json"), 100).await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = read_json::<Item, _>(request(br#"{"quantity": "two"}"#), 100)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
        );
        let e = read_json::<Item, _>(request(br#"{}"#), 100).await.unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        // No Content-Length on a `Full` built by hand: the cap applies while reading.
        let e = read_json::<Item, _>(request(&[b' '; 200]), 100)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
    }

    #[test]
    fn errors_serialise_as_the_contract_says() {
        let response = ApiError::not_found("no product 7").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn pages_are_bounded_and_bad_values_refused() {
        let page = |q| Page::from_query(Some(q));
        assert_eq!(
            page("").unwrap(),
            Page {
                page: 1,
                limit: DEFAULT_PAGE_LIMIT
            }
        );
        assert_eq!(
            page("page=&limit=").unwrap(),
            Page {
                page: 1,
                limit: DEFAULT_PAGE_LIMIT
            }
        );
        assert_eq!(page("page=2&limit=100").unwrap().offset(), 100);
        assert_eq!(page("page=1000000&limit=100").unwrap().offset(), 99_999_900);
        for bad in [
            "page=0",
            "page=-1",
            "page=x",
            "page=1000001",
            "limit=0",
            "limit=101",
            "limit=2.5",
        ] {
            let e = page(bad).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("category=Home%20%26%20Garden&page=2"), "category").as_deref(),
            Some("Home & Garden")
        );
        assert_eq!(query_param(Some("a=1&page=2"), "page").as_deref(), Some("2"));
        assert_eq!(query_param(Some("flag"), "flag").as_deref(), Some(""));
        assert_eq!(query_param(None, "page"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a+b%zz%4"), "a b%zz%4");
    }
}
