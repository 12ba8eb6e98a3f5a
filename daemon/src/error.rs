//! The API's error answer, and the one function that maps an error kind to
//! an HTTP status.

use berth_plugin_api::{DriverError, ErrorKind};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// The HTTP status for an error of `kind`. Every error the API answers goes
/// through here (405 for a wrong method is the one status no kind maps to).
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer: `{"message": "...", "kind": "not_found"}` with the
/// status of its kind. Docker clients read `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error kind.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
    /// For 405: the methods the path allows.
    pub allow: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    kind: ErrorKind,
}

impl ApiError {
    /// An error of `kind`, with its status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { status: status_for(kind), kind, message: message.into(), allow: None }
    }

    /// A path that exists, asked with a method it does not serve.
    pub fn method_not_allowed(method: &str, path: &str, allow: &[&str]) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: ErrorKind::Unsupported,
            message: format!("method {method} is not allowed on {path} (allowed: {})", allow.join(", ")),
            allow: Some(allow.join(", ")),
        }
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(&ErrorBody { message: &self.message, kind: self.kind })
            .unwrap_or_else(|_| br#"{"message":"error","kind":"internal"}"#.to_vec());
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            resp.headers_mut().insert(ALLOW, allow);
        }
        resp
    }
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> Self {
        ApiError::new(e.kind, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_documented_status() {
        let want = [
            (ErrorKind::NotFound, 404),
            (ErrorKind::AlreadyExists, 409),
            (ErrorKind::InvalidArgument, 400),
            (ErrorKind::Conflict, 409),
            (ErrorKind::FailedPrecondition, 412),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Timeout, 504),
            (ErrorKind::Unsupported, 501),
            (ErrorKind::PermissionDenied, 403),
            (ErrorKind::ResourceExhausted, 507),
            (ErrorKind::Internal, 500),
        ];
        assert_eq!(want.len(), ErrorKind::ALL.len(), "a kind was added: map it");
        for (kind, code) in want {
            assert_eq!(status_for(kind).as_u16(), code, "{kind}");
        }
    }

    #[test]
    fn the_body_carries_message_and_kind() {
        let resp = ApiError::from(DriverError::not_found("no such volume: x")).into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = resp.into_body();
        let bytes = futures_free_collect(body);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, serde_json::json!({"message": "no such volume: x", "kind": "not_found"}));
    }

    #[test]
    fn method_not_allowed_is_405_with_allow() {
        let resp = ApiError::method_not_allowed("POST", "/version", &["GET"]).into_response();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[ALLOW], "GET");
    }

    fn futures_free_collect(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes()
    }
}
