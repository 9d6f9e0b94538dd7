//! The REST API (contract §4): one flat route table, token checks, and the single
//! place that turns an `Error` into a response.
//!
//! Runs on the workers of notifd's HTTP front (`http`), which calls `Api::serve`
//! with each whole request. Handlers read through `store` and create through
//! `validate` -> `committer` (store, then publish).

mod cors;
mod health;
pub mod input;
mod internal;
mod notifications;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{Head, Request, Response};

use crate::auth::{AuthError, Identity, Verifier, PUBLISH_SCOPE};
use crate::committer::Committer;
use crate::error::Error;
use crate::face;
use crate::metrics::METRICS;
use crate::publisher::Publisher;
use crate::store::Store;

/// What every handler may use; shared by all worker threads.
pub struct Ctx {
    pub store: Store,
    pub publisher: Publisher,
    pub committer: Committer,
    pub verifier: Verifier,
    /// Browser origins allowed by CORS (`NOTIFD_CORS_ORIGINS`).
    pub cors_origins: Vec<String>,
    /// False when `/metrics` has an address of its own (`NOTIFD_METRICS_ADDR`).
    pub metrics_on_rest: bool,
    /// Serve `TEST_PANIC_PATH` (see `Config::test_faults`).
    pub test_faults: bool,
}

/// Who may call a route, and the handler that serves it.
enum Handler {
    /// Anyone.
    Public(fn(&Ctx) -> Result<Response, Error>),
    /// A verified user token.
    User(fn(&Ctx, &Identity, &Request) -> Result<Response, Error>),
    /// A verified token with the `notifications:publish` scope.
    Service(fn(&Ctx, &Identity, &Request) -> Result<Response, Error>),
}

struct Route {
    method: &'static str,
    path: &'static str,
    handler: Handler,
}

/// A route whose handler panics, served only with `Ctx::test_faults`.
pub const TEST_PANIC_PATH: &str = "/v1/test/panic";

const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: TEST_PANIC_PATH,
        handler: Handler::Public(health::test_panic),
    },
    Route {
        method: "GET",
        path: "/healthz",
        handler: Handler::Public(health::healthz),
    },
    Route {
        method: "GET",
        path: "/readyz",
        handler: Handler::Public(health::readyz),
    },
    Route {
        method: "GET",
        path: "/metrics",
        handler: Handler::Public(health::metrics),
    },
    Route {
        method: "GET",
        path: "/v1/notifications",
        handler: Handler::User(notifications::list),
    },
    Route {
        method: "PATCH",
        path: "/v1/notifications/read",
        handler: Handler::User(notifications::mark_read),
    },
    Route {
        method: "POST",
        path: "/v1/notifications/read-all",
        handler: Handler::User(notifications::read_all),
    },
    Route {
        method: "GET",
        path: "/v1/notifications/unread-count",
        handler: Handler::User(notifications::unread_count),
    },
    Route {
        method: "PATCH",
        path: "/v1/notifications/seen",
        handler: Handler::User(notifications::mark_seen),
    },
    Route {
        method: "PATCH",
        path: "/v1/notifications/unread",
        handler: Handler::User(notifications::mark_unread),
    },
    Route {
        method: "PATCH",
        path: "/v1/notifications/archive",
        handler: Handler::User(notifications::archive),
    },
    Route {
        method: "PATCH",
        path: "/v1/notifications/unarchive",
        handler: Handler::User(notifications::unarchive),
    },
    Route {
        method: "POST",
        path: "/v1/notifications/seen-all",
        handler: Handler::User(notifications::seen_all),
    },
    Route {
        method: "POST",
        path: "/v1/notifications/archive-all",
        handler: Handler::User(notifications::archive_all),
    },
    Route {
        method: "POST",
        path: "/v1/internal/notifications",
        handler: Handler::Service(internal::create),
    },
    Route {
        method: "POST",
        path: BATCH_PATH,
        handler: Handler::Service(internal::create_batch),
    },
    Route {
        method: "GET",
        path: "/v1/openapi.json",
        handler: Handler::Public(face::openapi),
    },
    Route {
        method: "GET",
        path: "/",
        handler: Handler::Public(face::index),
    },
    Route {
        method: "GET",
        path: "/inbox.css",
        handler: Handler::Public(face::inbox_css),
    },
    Route {
        method: "GET",
        path: "/inbox.js",
        handler: Handler::Public(face::inbox_js),
    },
    Route {
        method: "GET",
        path: "/inbox-list.js",
        handler: Handler::Public(face::inbox_list_js),
    },
    Route {
        method: "GET",
        path: "/notifd.js",
        handler: Handler::Public(face::client_js),
    },
];

/// Every (method, path) the API serves, in table order, the test-only route left
/// out: what `tests/openapi.rs` holds the OpenAPI document to.
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES
        .iter()
        .filter(|route| route.path != TEST_PANIC_PATH)
        .map(|route| (route.method, route.path))
}

/// The REST API as the HTTP front serves it.
pub struct Api(pub Arc<Ctx>);

impl crate::http::Service for Api {
    /// Bodies up to 64 KiB; a batch may carry 1 MiB, but only for a token that may
    /// publish: nobody else makes notifd hold a megabyte per connection.
    fn admit(&self, head: &Head) -> Result<usize, Response> {
        if head.path() != BATCH_PATH {
            return Ok(input::MAX_BODY_BYTES);
        }
        match authorize_service(&self.0, head) {
            Ok(_) => Ok(internal::MAX_BATCH_BODY_BYTES),
            Err(err) => Err(standard_headers(error_response(&err), head)),
        }
    }

    fn serve(&self, request: &Request) -> Response {
        handle(&self.0, request)
    }
}

const BATCH_PATH: &str = "/v1/internal/notifications/batch";

/// Serves one request to completion and writes its access log line.
fn handle(ctx: &Ctx, request: &Request) -> Response {
    let started = Instant::now();
    let (route, user, response) = match dispatch(ctx, request) {
        (route, user, Ok(response)) => (route, user, response),
        (route, user, Err(err)) => {
            if err.status() >= 500 {
                log::error!(route = route, error = err.to_string().as_str(); "request failed");
            }
            (route, user, error_response(&err))
        }
    };
    let response = standard_headers(response, &request.head);
    let response = cors::decorate(response, &ctx.cors_origins, request.header("Origin"));
    let status = response.status;
    METRICS.http_request(route, status, started.elapsed());
    log::info!(
        method = request.method(),
        route = route,
        status = status,
        duration_us = started.elapsed().as_micros() as u64,
        user = user.as_deref().unwrap_or("-");
        "http request"
    );
    response
}

/// Seconds a client is told to wait after a 503 of an unreachable dependency.
const DEPENDENCY_RETRY_AFTER: &str = "5";

/// Headers every answer of a kind carries: `Cache-Control: no-store` on the API (it
/// is per user and changes at once), `WWW-Authenticate` on a 401 (RFC 6750 §3), and
/// `Retry-After` on a 503.
fn standard_headers(response: Response, head: &Head) -> Response {
    let response = match response.status {
        401 if input::bearer_token(head).is_some() => response.with_header(
            "WWW-Authenticate",
            r#"Bearer realm="notifd", error="invalid_token""#,
        ),
        401 => response.with_header("WWW-Authenticate", r#"Bearer realm="notifd""#),
        503 => response.with_header("Retry-After", DEPENDENCY_RETRY_AFTER),
        _ => response,
    };
    if head.path().starts_with("/v1/") {
        response.with_header("Cache-Control", "no-store")
    } else {
        response
    }
}

/// The error body of the contract, `{"error":{"code":…,"message":…}}`, with the
/// status of the error: the one place an `Error` becomes a response.
pub fn error_response(err: &Error) -> Response {
    let mut body =
        serde_json::json!({"error": {"code": err.code(), "message": err.public_message()}});
    // A refused batch also lists every bad item.
    if let Error::Batch { items, .. } = err {
        body["error"]["items"] = items
            .iter()
            .map(|(index, code, message)| serde_json::json!({"index": index, "code": code, "message": message}))
            .collect();
    }
    let response = Response::json(err.status(), &body);
    match err {
        Error::MethodNotAllowed(allowed) => response.with_header("Allow", allowed.clone()),
        _ => response,
    }
}

/// Finds the route, checks the token, runs the handler. Returns the route template
/// (never the raw path) and the user for the access log. HEAD is served as GET (the
/// front leaves the body out).
fn dispatch(
    ctx: &Ctx,
    request: &Request,
) -> (&'static str, Option<String>, Result<Response, Error>) {
    let path = request.path();
    let method = match request.method() {
        "HEAD" => "GET",
        other => other,
    };
    let candidates: Vec<&Route> = ROUTES.iter().filter(|r| r.path == path).collect();
    let Some(route) = candidates.iter().find(|r| r.method == method) else {
        if candidates.is_empty() {
            return ("unknown", None, Err(Error::NotFound));
        }
        let allowed = candidates
            .iter()
            .map(|r| r.method)
            .collect::<Vec<_>>()
            .join(", ");
        if method == "OPTIONS" {
            let origin = request.header("Origin");
            return (
                candidates[0].path,
                None,
                Ok(cors::preflight(&ctx.cors_origins, origin, &allowed)),
            );
        }
        return (
            candidates[0].path,
            None,
            Err(Error::MethodNotAllowed(allowed)),
        );
    };
    let result = match &route.handler {
        Handler::Public(handler) => return (route.path, None, handler(ctx)),
        Handler::User(handler) => authenticate(ctx, &request.head).map(|who| (who, *handler)),
        Handler::Service(handler) => {
            authorize_service(ctx, &request.head).map(|who| (who, *handler))
        }
    };
    match result {
        Ok((who, handler)) => {
            let response = handler(ctx, &who, request);
            (route.path, Some(who.user_id), response)
        }
        Err(err) => (route.path, None, Err(err)),
    }
}

/// A verified token with the `notifications:publish` scope (403 without it).
fn authorize_service(ctx: &Ctx, head: &Head) -> Result<Identity, Error> {
    let who = authenticate(ctx, head)?;
    if !who.has_scope(PUBLISH_SCOPE) {
        return Err(Error::Forbidden {
            code: "insufficient_scope",
            message: format!("token lacks the {PUBLISH_SCOPE} scope"),
        });
    }
    Ok(who)
}

fn authenticate(ctx: &Ctx, head: &Head) -> Result<Identity, Error> {
    let token = input::bearer_token(head).ok_or(Error::Unauthorized(
        "missing token: send Authorization: Bearer <token>".into(),
    ))?;
    ctx.verifier.verify(token).map_err(|e| match e {
        AuthError::Expired => Error::TokenExpired,
        other => Error::Unauthorized(other.to_string()),
    })
}

/// How long `/readyz` waits on each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);
