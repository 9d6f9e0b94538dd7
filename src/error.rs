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
    /// An `Idempotency-Key` (header or `idempotency_key`) that is empty, too long or
    /// not printable ASCII, or a header and a body key that differ (400).
    InvalidIdempotencyKey(String),
    /// An idempotency key this service already used, within the window, for a
    /// different request (409).
    IdempotencyConflict(String),
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
    /// PostgreSQL or Redis does not answer, or is going away (503); names the
    /// dependency. `detail` (for the log) names the server and its own message.
    Unavailable {
        dependency: &'static str,
        detail: String,
    },
    /// A bug or an unexpected failure (500); the detail goes to the log only.
    Internal(String),
    /// notifd cannot start: a listener cannot bind, a thread cannot start. Never a
    /// response; the message names the setting to change.
    Startup(String),
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
            Error::Invalid { .. }
            | Error::BadJson(_)
            | Error::InvalidCursor
            | Error::InvalidIdempotencyKey(_) => 400,
            Error::IdempotencyConflict(_) => 409,
            Error::Batch { status, .. } => *status,
            Error::Unauthorized(_) | Error::TokenExpired => 401,
            Error::Forbidden { .. } => 403,
            Error::NotFound => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::TooLarge(_) => 413,
            Error::UnsupportedMediaType => 415,
            Error::Internal(_) | Error::Startup(_) => 500,
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
            Error::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            Error::IdempotencyConflict(_) => "idempotency_conflict",
            Error::Unauthorized(_) => "unauthorized",
            Error::TokenExpired => "token_expired",
            Error::Forbidden { code, .. } => code,
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::TooLarge(_) => "payload_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::Unavailable { .. } => "service_unavailable",
            Error::Internal(_) | Error::Startup(_) => "internal_error",
        }
    }

    /// The human text of the error body: safe to show to the client.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) | Error::Startup(_) => "internal server error".to_string(),
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
            Error::InvalidIdempotencyKey(message) => write!(f, "Idempotency-Key: {message}"),
            Error::IdempotencyConflict(message) => f.write_str(message),
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
            Error::Startup(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<postgres::Error> for Error {
    fn from(err: postgres::Error) -> Error {
        let detail = postgres_cause(&err);
        if postgres_unavailable(&err) {
            Error::Unavailable {
                dependency: "postgresql",
                detail,
            }
        } else {
            Error::Internal(format!("postgresql: {detail}"))
        }
    }
}

/// True when a PostgreSQL error means "not now" rather than "never": the client may
/// retry (503). The one place that decides it, by SQLSTATE class.
pub fn postgres_unavailable(err: &postgres::Error) -> bool {
    // No error from the server itself: the connection closed or broke (I/O,
    // timeout) under the statement.
    let Some(db) = err.as_db_error() else {
        return true;
    };
    retryable_sqlstate(db.code().code())
}

/// SQLSTATEs a going-away or overloaded server sends: class 08 connection exception,
/// 53 insufficient resources (53300 too_many_connections), 57 operator intervention
/// (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now), 58 system
/// error (I/O), 40001 serialization_failure, 40P01 deadlock_detected, 40003
/// statement_completion_unknown, and 25006 read_only_sql_transaction (a standby that
/// is not promoted yet).
pub fn retryable_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "53" | "57" | "58"))
        || matches!(code, "40001" | "40P01" | "40003" | "25006")
}

/// A PostgreSQL error with what the server or the OS said beneath it, on one line:
/// the driver's own text ("db error", "error connecting to server") says nothing alone.
pub fn postgres_cause(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            text
        }
        None => with_causes(err),
    }
}

/// `err` and each of its sources, joined with ": ", skipping a source whose text the
/// line already holds (some errors repeat their source in their own text).
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    // Bounded: a chain of causes is short, but nothing guarantees it ends.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl From<r2d2::Error> for Error {
    fn from(err: r2d2::Error) -> Error {
        Error::Unavailable {
            dependency: "postgresql",
            detail: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_going_away_is_retryable_and_a_bug_is_not() {
        for code in [
            "57P01", "57P02", "57P03", "08006", "08001", "53300", "40001", "40P01",
        ] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        // unique_violation, undefined_table, character_not_in_repertoire, syntax error
        for code in ["23505", "42P01", "22021", "42601", ""] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
    }
}
