//! The face (contract §8): the built-in inbox page (`GET /`, with its `inbox.css`,
//! `inbox.js` and `inbox-list.js`), the browser client (`GET /notifd.js`) and the OpenAPI document
//! (`GET /v1/openapi.json`).
//!
//! Every asset is a file beside this one, compiled into the binary with
//! `include_str!`: nothing is read from disk or fetched from a CDN at run time, and
//! there is no build step. `api` routes the paths here; these handlers only pick the
//! bytes and the headers. The page talks to the REST API on the same origin and to
//! the WebSocket port through `notifd.js`.

use crate::api::Ctx;
use crate::error::Error;
use crate::http::Response;

const INDEX_HTML: &str = include_str!("index.html");
const INBOX_CSS: &str = include_str!("inbox.css");
const INBOX_JS: &str = include_str!("inbox.js");
const INBOX_LIST_JS: &str = include_str!("inbox-list.js");
const CLIENT_JS: &str = include_str!("notifd.js");
const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The page's policy: its own scripts and styles only (no inline ones, no CDN), no
/// frames, no forms posted anywhere. `connect-src` names `ws:`/`wss:` because the
/// WebSocket listens on another port than the page (8081 by default), which
/// `'self'` does not cover.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the inbox page.
pub fn index(_ctx: &Ctx) -> Result<Response, Error> {
    Ok(asset("text/html; charset=utf-8", INDEX_HTML)
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer"))
}

/// `GET /inbox.css`.
pub fn inbox_css(_ctx: &Ctx) -> Result<Response, Error> {
    Ok(asset("text/css; charset=utf-8", INBOX_CSS))
}

/// `GET /inbox.js`: the page's script, an ES module importing `/notifd.js`.
pub fn inbox_js(_ctx: &Ctx) -> Result<Response, Error> {
    Ok(asset("text/javascript; charset=utf-8", INBOX_JS))
}

/// `GET /inbox-list.js`: the page's list, a module `inbox.js` imports.
pub fn inbox_list_js(_ctx: &Ctx) -> Result<Response, Error> {
    Ok(asset("text/javascript; charset=utf-8", INBOX_LIST_JS))
}

/// `GET /notifd.js`: the client, for pages of your own (`import … from`).
pub fn client_js(_ctx: &Ctx) -> Result<Response, Error> {
    Ok(asset("text/javascript; charset=utf-8", CLIENT_JS))
}

/// `GET /v1/openapi.json`: the OpenAPI 3.1 description of every route.
pub fn openapi(_ctx: &Ctx) -> Result<Response, Error> {
    Ok(Response::json_text(200, OPENAPI_JSON.to_string()))
}

/// A static asset: `no-cache` so a browser revalidates after an upgrade of the
/// binary (the assets change with it), and `nosniff` so it is only ever what its
/// type says.
fn asset(content_type: &'static str, text: &str) -> Response {
    let mut response = Response::json_text(200, text.to_string());
    response.content_type = content_type;
    response
        .with_header("Cache-Control", "no-cache")
        .with_header("X-Content-Type-Options", "nosniff")
}
