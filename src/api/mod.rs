//! The REST API (contract §4): one flat route table, token checks, and the single
//! place that turns an `Error` into a response.
//!
//! Runs on the `tiny_http` worker threads started by `server`. Handlers read through
//! `store` and create through `validate` -> `store` -> `publisher`.

mod cors;
mod health;
pub mod http;
mod internal;
mod notifications;

use std::time::{Duration, Instant};

use tiny_http::{Method, Request};

use crate::auth::{AuthError, Identity, Verifier, PUBLISH_SCOPE};
use crate::committer::Committer;
use crate::error::Error;
use crate::metrics::METRICS;
use crate::publisher::Publisher;
use crate::store::Store;
use http::Reply;

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
}

/// Who may call a route, and the handler that serves it.
enum Handler {
    /// Anyone.
    Public(fn(&Ctx) -> Result<Reply, Error>),
    /// A verified user token.
    User(fn(&Ctx, &Identity, &mut Request) -> Result<Reply, Error>),
    /// A verified token with the `notifications:publish` scope.
    Service(fn(&Ctx, &Identity, &mut Request) -> Result<Reply, Error>),
}

struct Route {
    method: Method,
    path: &'static str,
    handler: Handler,
}

const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/healthz",
        handler: Handler::Public(health::healthz),
    },
    Route {
        method: Method::Get,
        path: "/readyz",
        handler: Handler::Public(health::readyz),
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        handler: Handler::Public(health::metrics),
    },
    Route {
        method: Method::Get,
        path: "/v1/notifications",
        handler: Handler::User(notifications::list),
    },
    Route {
        method: Method::Patch,
        path: "/v1/notifications/read",
        handler: Handler::User(notifications::mark_read),
    },
    Route {
        method: Method::Post,
        path: "/v1/notifications/read-all",
        handler: Handler::User(notifications::read_all),
    },
    Route {
        method: Method::Get,
        path: "/v1/notifications/unread-count",
        handler: Handler::User(notifications::unread_count),
    },
    Route {
        method: Method::Post,
        path: "/v1/internal/notifications",
        handler: Handler::Service(internal::create),
    },
    Route {
        method: Method::Post,
        path: "/v1/internal/notifications/batch",
        handler: Handler::Service(internal::create_batch),
    },
];

/// Serves one request to completion and writes its access log line.
pub fn handle(ctx: &Ctx, mut request: Request) {
    let started = Instant::now();
    crate::net::note_rest_activity();
    let path = http::path(&request).to_string();
    let method = request.method().clone();
    let (route, user, reply) = match dispatch(ctx, &mut request, &path) {
        (route, user, Ok(reply)) => (route, user, reply),
        (route, user, Err(err)) => {
            if err.status() >= 500 {
                log::error!(route = route, error = err.to_string().as_str(); "request failed");
            }
            (route, user, Reply::error(&err))
        }
    };
    let origin = http::header_value(&request, "Origin");
    let reply = cors::decorate(reply, &ctx.cors_origins, origin);
    let status = reply.status;
    METRICS.http_request(route, status, started.elapsed());
    if let Err(e) = request.respond(reply.into_response()) {
        log::debug!(error = e.to_string().as_str(); "client went away before the response");
    }
    log::info!(
        method = method.as_str(),
        route = route,
        status = status,
        duration_us = started.elapsed().as_micros() as u64,
        user = user.as_deref().unwrap_or("-");
        "http request"
    );
}

/// Finds the route, checks the token, runs the handler. Returns the route template
/// (never the raw path) and the user for the access log.
fn dispatch(
    ctx: &Ctx,
    request: &mut Request,
    path: &str,
) -> (&'static str, Option<String>, Result<Reply, Error>) {
    let candidates: Vec<&Route> = ROUTES.iter().filter(|r| r.path == path).collect();
    let Some(route) = candidates.iter().find(|r| &r.method == request.method()) else {
        if candidates.is_empty() {
            return ("unknown", None, Err(Error::NotFound));
        }
        let allowed = candidates
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if request.method() == &Method::Options {
            let origin = http::header_value(request, "Origin");
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
        Handler::User(handler) => authenticate(ctx, request).map(|who| (who, *handler)),
        Handler::Service(handler) => authenticate(ctx, request).and_then(|who| {
            if who.has_scope(PUBLISH_SCOPE) {
                Ok((who, *handler))
            } else {
                Err(Error::Forbidden {
                    code: "insufficient_scope",
                    message: format!("token lacks the {PUBLISH_SCOPE} scope"),
                })
            }
        }),
    };
    match result {
        Ok((who, handler)) => {
            let reply = handler(ctx, &who, request);
            (route.path, Some(who.user_id), reply)
        }
        Err(err) => (route.path, None, Err(err)),
    }
}

fn authenticate(ctx: &Ctx, request: &Request) -> Result<Identity, Error> {
    let token = http::bearer_token(request).ok_or(Error::Unauthorized(
        "missing token: send Authorization: Bearer <token>".into(),
    ))?;
    ctx.verifier.verify(token).map_err(|e| match e {
        AuthError::Expired => Error::TokenExpired,
        other => Error::Unauthorized(other.to_string()),
    })
}

/// How long `/readyz` waits on each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);
