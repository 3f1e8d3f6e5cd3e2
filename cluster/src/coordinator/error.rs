//! API errors: every failure leaves as `{"error", "code"}` with a fitting 4xx/5xx status.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::model::ApiError;

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub body: ApiError,
}

impl AppError {
    pub fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        AppError {
            status,
            body: ApiError {
                error: error.into(),
                code: code.into(),
            },
        }
    }

    pub fn bad_request(code: &str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, error)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown credential (x-api-key or Authorization: Bearer)",
        )
    }

    /// A valid credential of a role the route does not admit, or a worker speaking for another.
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", error)
    }

    pub fn not_leader(detail: impl Into<String>) -> Self {
        // 421 Misdirected Request: the seed's status for "no leader to serve this write".
        Self::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", detail)
    }

    /// A leader took the write but could not commit it in time (likely lost its quorum).
    pub fn write_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "write_timeout", detail)
    }

    /// A decision taken under a term that has since ended: not applied; decide again.
    pub fn stale_decision(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "stale_decision", detail)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match &rejection {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "payload_too_large"
            }
            _ => "invalid_json",
        };
        // axum answers 422 for well-formed JSON of the wrong shape; we use 400 for all bad bodies.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        AppError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::bad_request("invalid_query", rejection.body_text())
    }
}

/// `Json` whose rejections are [`AppError`]s.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose rejections are [`AppError`]s.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);
