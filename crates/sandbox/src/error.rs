//! The sandbox's error responses and the `thiserror` enum behind them.
//!
//! See [`ApiError`] for the `type` names and when each is used.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// A failed request.
///
/// Every failure is answered with the upstream's error body, `{"type": "...", "message": "..."}`
/// (`schemas/error.json`). The upstream does not publish its list of `type` strings (only the
/// example `{"type": "NotFound", "message": "Application was not found"}`), so the sandbox uses
/// these Losant-style names:
///
/// | status | `type`               | when                                                              |
/// |--------|----------------------|-------------------------------------------------------------------|
/// | 400    | `Validation`         | a path, query or body value breaks the action's schema or a rule  |
/// | 400    | `InvalidJson`        | the request body is not JSON                                      |
/// | 400    | `InvalidCredentials` | a password or two-factor code given in a body is wrong            |
/// | 401    | `Unauthorized`       | no bearer token, an unknown token, or an invalidated/expired one  |
/// | 403    | `Forbidden`          | the token lacks every scope the action accepts, or the caller's role is too low |
/// | 404    | `NotFound`           | an unknown path, or an id that does not exist or is not visible to the caller |
/// | 405    | `MethodNotAllowed`   | a known path with a method it does not serve                      |
/// | 410    | `InvitationExpired`  | accepting or rejecting an invitation whose time to live has passed |
/// | 413    | `PayloadTooLarge`    | a request body over [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES) |
/// | 500    | `InternalError`      | a sandbox bug (never expected)                                    |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400 `Validation`: input that breaks the action's schema or a business rule.
    #[error("{0}")]
    Validation(String),
    /// 400 `InvalidJson`: a body that is not parseable JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// 400 `InvalidCredentials`: a wrong password or two-factor code inside a request body.
    #[error("{0}")]
    InvalidCredentials(String),
    /// 401 `Unauthorized`: missing, unknown, invalidated or expired token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `Forbidden`: missing scope or insufficient role.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `NotFound`: unknown path or id (also used for ids the caller may not see).
    #[error("{0}")]
    NotFound(String),
    /// 405 `MethodNotAllowed`: the path exists with other methods, listed in `allow`.
    #[error("{message}")]
    MethodNotAllowed {
        /// Human readable message.
        message: String,
        /// Value of the `Allow` response header, e.g. `GET, PATCH`.
        allow: String,
    },
    /// 410 `InvitationExpired`: the invitation's time to live has passed.
    #[error("{0}")]
    InvitationExpired(String),
    /// 413 `PayloadTooLarge`: the body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 500 `InternalError`: an inconsistency inside the sandbox.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Shorthand for a 400 `Validation` error.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation(message.into())
    }

    /// Shorthand for a 404 `NotFound` error about `what` (e.g. `Organization`) with `id`.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::NotFound(format!("{what} {id} was not found"))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::InvalidJson(_) | Self::InvalidCredentials(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvitationExpired(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` field of the error body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Validation(_) => "Validation",
            Self::InvalidJson(_) => "InvalidJson",
            Self::InvalidCredentials(_) => "InvalidCredentials",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound(_) => "NotFound",
            Self::MethodNotAllowed { .. } => "MethodNotAllowed",
            Self::InvitationExpired(_) => "InvitationExpired",
            Self::PayloadTooLarge(_) => "PayloadTooLarge",
            Self::Internal(_) => "InternalError",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({ "type": self.kind(), "message": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        if let Self::MethodNotAllowed { allow, .. } = &self
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the authentication scheme the server expects.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wnology-sandbox\""),
            );
        }
        response
    }
}
