//! Owns how errors look over HTTP: `{"error": {"code", "message"}}` with the status for each
//! `ErrorCode`.
//! Must not decide what an error is; `exec::ExecError` classifies, this only maps.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::exec::{ErrorCode, ExecError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// 1-based number of the failing statement in an array request.
    pub statement: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            statement: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::InvalidSql | ErrorCode::Unsupported => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Constraint => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Internal | ErrorCode::Interceptor => StatusCode::INTERNAL_SERVER_ERROR,
        // Only pg sessions produce these; HTTP batches are whole transactions.
        ErrorCode::Transaction => StatusCode::CONFLICT,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Timeout | ErrorCode::SeqNotReached => StatusCode::GATEWAY_TIMEOUT,
        // The client is gone or asked for it: nobody reads this answer.
        ErrorCode::Cancelled => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::ResultTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> ApiError {
        let code = e.code();
        ApiError {
            status: status_of(code),
            code: code.as_str(),
            message: e.to_string(),
            statement: e.statement_index().map(|i| i + 1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            statement: Option<usize>,
        }
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = serde_json::to_vec(&Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                statement: self.statement,
            },
        })
        .unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
