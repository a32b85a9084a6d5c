//! gRPC responses as the RED layer records them. A gRPC call always answers HTTP 200, with its
//! outcome in `grpc-status`: in the headers of a trailers-only response (how a server answers
//! an error before any message), else in the trailers. The layer reads it from the headers, so
//! that a failed call counts under the HTTP status gRPC's own mapping gives its code (the one
//! gRPC-Web gateways and Envoy's statistics use): `UNAVAILABLE` as 503, `INTERNAL` as 500,
//! `NOT_FOUND` as 404. Dashboards and alerts on 5xx then see gRPC failures without a rule of
//! their own, and the server span carries `rpc.grpc.status_code`.

use http::{HeaderMap, StatusCode};

/// The `grpc-status` of a gRPC response's headers, if it is one and carries it there.
pub(crate) fn status_code(headers: &HeaderMap) -> Option<u8> {
    let is_grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return None;
    }
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<u8>().ok()?;
    (code <= 16).then_some(code)
}

/// The HTTP status a gRPC status code stands for (gRPC's HTTP mapping; OK is 200).
pub(crate) fn http_status(code: u8) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        // CANCELLED: the client went away.
        1 => super::guard::CLIENT_CLOSED_REQUEST,
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        // UNKNOWN, INTERNAL, DATA_LOSS.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether a server span with this code is in error, as OpenTelemetry's RPC conventions say:
/// `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS`
/// (the others are the client's doing).
pub(crate) fn is_server_error(code: u8) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_responses_have_a_grpc_status() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(status_code(&headers), None, "not gRPC without its content type");
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        assert_eq!(status_code(&headers), Some(14));
        assert_eq!(http_status(14), StatusCode::SERVICE_UNAVAILABLE);
        assert!(is_server_error(14));
        assert!(!is_server_error(5), "NOT_FOUND is the client's");
        for bad in ["17", "-1", "x", ""] {
            headers.insert("grpc-status", bad.parse().unwrap());
            assert_eq!(status_code(&headers), None, "{bad}");
        }
        assert_eq!(http_status(0), StatusCode::OK);
        assert_eq!(http_status(13), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(http_status(5), StatusCode::NOT_FOUND);
    }
}
