//! CORS for browser dashboards (`NOTIFD_CORS_ORIGINS`): preflight answers, and the
//! `Access-Control-Allow-Origin` header on replies to allowed origins only. A request
//! from any other origin gets no CORS headers at all, so the browser blocks it.

use crate::http::Response;

/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// The origin to echo back, if CORS allows it.
fn allowed<'o>(origins: &[String], origin: Option<&'o str>) -> Option<&'o str> {
    let origin = origin?;
    origins
        .iter()
        .any(|o| o == origin || o == "*")
        .then_some(origin)
}

/// Adds the CORS headers to a reply for an allowed origin.
pub fn decorate(reply: Response, origins: &[String], origin: Option<&str>) -> Response {
    match allowed(origins, origin) {
        Some(origin) => reply
            .with_header("Access-Control-Allow-Origin", origin)
            .with_header("Vary", "Origin"),
        None => reply,
    }
}

/// The answer to `OPTIONS` on a known path: 204, with the preflight headers when the
/// origin is allowed (`decorate` adds the allow-origin header).
pub fn preflight(origins: &[String], origin: Option<&str>, methods: &str) -> Response {
    let methods = format!("{methods}, OPTIONS");
    let reply = Response::json_text(204, String::new()).with_header("Allow", methods.clone());
    if allowed(origins, origin).is_none() {
        return reply;
    }
    reply
        .with_header("Access-Control-Allow-Methods", methods)
        .with_header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type",
        )
        .with_header("Access-Control-Max-Age", MAX_AGE)
}
