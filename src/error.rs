//! The service error: every way a request can fail, mapped to an HTTP status and a
//! stable snake_case code in exactly one place.
//!
//! Handlers return `Result<_, Error>`; `api::error_response` is the only code that
//! turns an `Error` into a response body. Unexpected failures (`Internal`) answer a generic 500
//! while their details go to the log, so nothing internal leaks to a client.

use std::fmt;

/// Everything that can go wrong while serving a request.
#[derive(Debug)]
pub enum Error {
    /// A request field is missing, has the wrong type or is out of range (400).
    /// `field` names the offending field; `message` says what is wrong with it.
    Invalid { field: String, message: String },
    /// The body is not valid JSON, or not the JSON shape the endpoint takes (400).
    BadJson(String),
    /// Items of a batch that failed validation (400 or 413): `message` describes the
    /// first; `items` lists each as (index, code, message).
    Batch {
        status: u16,
        message: String,
        items: Vec<(usize, &'static str, String)>,
    },
    /// A pagination cursor that this server did not issue, or that was altered (400).
    InvalidCursor,
    /// No token, or a token that fails verification (401). The message never holds
    /// the token itself.
    Unauthorized(String),
    /// A token whose `exp` (plus leeway) has passed (401).
    TokenExpired,
    /// A valid token without the scope or workspace grant the request needs (403).
    Forbidden { code: &'static str, message: String },
    /// No route has this path (404).
    NotFound,
    /// The path exists but not for this method (405); holds the allowed methods.
    MethodNotAllowed(String),
    /// A body or a notification over the size limit (413).
    TooLarge(String),
    /// A POST/PATCH whose `Content-Type` is not JSON (415).
    UnsupportedMediaType,
    /// PostgreSQL or Redis does not answer (503); names the dependency.
    Unavailable {
        dependency: &'static str,
        detail: String,
    },
    /// A bug or an unexpected failure (500); the detail goes to the log only.
    Internal(String),
}

impl Error {
    /// Shorthand for a validation failure of one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. } | Error::BadJson(_) | Error::InvalidCursor => 400,
            Error::Batch { status, .. } => *status,
            Error::Unauthorized(_) | Error::TokenExpired => 401,
            Error::Forbidden { .. } => 403,
            Error::NotFound => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::TooLarge(_) => 413,
            Error::UnsupportedMediaType => 415,
            Error::Internal(_) => 500,
            Error::Unavailable { .. } => 503,
        }
    }

    /// The machine-readable code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid_field",
            Error::Batch { .. } => "invalid_batch",
            Error::BadJson(_) => "invalid_json",
            Error::InvalidCursor => "invalid_cursor",
            Error::Unauthorized(_) => "unauthorized",
            Error::TokenExpired => "token_expired",
            Error::Forbidden { code, .. } => code,
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::TooLarge(_) => "payload_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::Unavailable { .. } => "service_unavailable",
            Error::Internal(_) => "internal_error",
        }
    }

    /// The human text of the error body: safe to show to the client.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal server error".to_string(),
            Error::Unavailable { dependency, .. } => format!("{dependency} is unavailable"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { field, message } => write!(f, "{field}: {message}"),
            Error::Batch { message, .. } => f.write_str(message),
            Error::BadJson(message) => write!(f, "body is not valid JSON: {message}"),
            Error::InvalidCursor => f.write_str("cursor: malformed or altered cursor"),
            Error::Unauthorized(message) => f.write_str(message),
            Error::TokenExpired => f.write_str("token expired"),
            Error::Forbidden { message, .. } => f.write_str(message),
            Error::NotFound => f.write_str("no such endpoint"),
            Error::MethodNotAllowed(allowed) => write!(f, "method not allowed; allowed: {allowed}"),
            Error::TooLarge(message) => f.write_str(message),
            Error::UnsupportedMediaType => f.write_str("Content-Type must be application/json"),
            Error::Unavailable { dependency, detail } => {
                write!(f, "{dependency} unavailable: {detail}")
            }
            Error::Internal(detail) => write!(f, "internal error: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<postgres::Error> for Error {
    fn from(err: postgres::Error) -> Error {
        // A closed connection or an I/O failure means PostgreSQL went away: that is a
        // 503 the client may retry, not a bug.
        if err.is_closed() || err.as_db_error().is_none() {
            Error::Unavailable {
                dependency: "postgresql",
                detail: err.to_string(),
            }
        } else {
            Error::Internal(format!("postgresql: {err}"))
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(err: r2d2::Error) -> Error {
        Error::Unavailable {
            dependency: "postgresql",
            detail: err.to_string(),
        }
    }
}
