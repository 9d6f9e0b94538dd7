//! The user endpoints: list (keyset pages), marks by ids (read, seen, unread,
//! archive, unarchive), bulks (read-all, seen-all, archive-all), counts. Each acts
//! only on what the caller's token can see; `store` enforces that in SQL. A mark or
//! bulk that changed anything then publishes its state message (`publisher::state`)
//! for the user's other devices.

use crate::http::Request;
use serde_json::{json, Value};
use uuid::Uuid;

use super::input;
use super::Ctx;
use crate::auth::Identity;
use crate::error::Error;
use crate::events::Field;
use crate::http::Response;
use crate::store::{Archived, Cursor, Filter, Mark, StateResult, MAX_PAGE};
use crate::validate::{is_kind, is_workspace, KIND_RULE, WORKSPACE_RULE};

const DEFAULT_PAGE: i64 = 50;
const MAX_IDS: usize = 100;

/// `GET /v1/notifications`: newest first, `limit`, `cursor`, `kind`, `unread`,
/// `workspace`, `archived`.
pub fn list(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    let params = input::query(request);
    let limit = match input::param(&params, "limit") {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                Error::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let after = match input::param(&params, "cursor") {
        None | Some("") => None,
        Some(text) => Some(Cursor::decode(text)?),
    };
    let unread_only = match input::param(&params, "unread") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(Error::invalid("unread", "must be true or false")),
    };
    let archived = match input::param(&params, "archived") {
        None | Some("false") | Some("0") => Archived::Hide,
        Some("true") | Some("1") => Archived::Only,
        Some("any") => Archived::Any,
        Some(_) => return Err(Error::invalid("archived", "must be false, true or any")),
    };
    let filter = Filter {
        kind: kind_filter(input::param(&params, "kind"))?,
        workspace: workspace_filter(who, input::param(&params, "workspace"))?,
        unread_only,
        archived,
    };
    let page = ctx.store.list(who, &filter, limit, after)?;
    // Serialized straight from the rows: no intermediate `Value` tree per page.
    #[derive(serde::Serialize)]
    struct Body<'a> {
        notifications: &'a [crate::notification::Notification],
        cursor: Option<String>,
    }
    let body = Body {
        notifications: &page.notifications,
        cursor: page.next.map(|c| c.encode()),
    };
    let text = serde_json::to_string(&body)
        .map_err(|e| Error::Internal(format!("page serialization: {e}")))?;
    Ok(Response::json_text(200, text))
}

/// `PATCH /v1/notifications/read`: `{"ids":[…]}`, 1 to 100 UUIDs.
pub fn mark_read(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    mark(ctx, who, request, Mark::Read)
}

/// `PATCH /v1/notifications/seen`.
pub fn mark_seen(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    mark(ctx, who, request, Mark::Seen)
}

/// `PATCH /v1/notifications/unread`: `read_at` back to null.
pub fn mark_unread(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    mark(ctx, who, request, Mark::Unread)
}

/// `PATCH /v1/notifications/archive`.
pub fn archive(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    mark(ctx, who, request, Mark::Archive)
}

/// `PATCH /v1/notifications/unarchive`.
pub fn unarchive(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    mark(ctx, who, request, Mark::Unarchive)
}

/// `POST /v1/notifications/read-all`: optional `{"workspace":…, "kind":…}`.
pub fn read_all(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    bulk(ctx, who, request, Field::Read)
}

/// `POST /v1/notifications/seen-all`, filters as read-all.
pub fn seen_all(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    bulk(ctx, who, request, Field::Seen)
}

/// `POST /v1/notifications/archive-all`, filters as read-all.
pub fn archive_all(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    bulk(ctx, who, request, Field::Archived)
}

/// Every mark by ids: `{"ids":[…]}`, 1 to 100 UUIDs; ids the caller cannot see are
/// ignored; `updated` counts rows actually changed.
fn mark(ctx: &Ctx, who: &Identity, request: &Request, mark: Mark) -> Result<Response, Error> {
    let items = input::sole_array(input::json_body(request)?, "ids", MAX_IDS, "ids")?;
    let ids = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| Error::invalid(format!("ids[{i}]"), "is not a UUID"))
        })
        .collect::<Result<Vec<Uuid>, Error>>()?;
    let result = ctx.store.mark(who, mark, &ids)?;
    Ok(published(ctx, result))
}

/// Every bulk: optional `{"workspace":…, "kind":…}` (null = any).
fn bulk(ctx: &Ctx, who: &Identity, request: &Request, field: Field) -> Result<Response, Error> {
    let mut filter = Filter::default();
    if let Some(body) = input::json_body(request)? {
        let Value::Object(fields) = body else {
            return Err(Error::BadJson("the body must be a JSON object".into()));
        };
        for (name, value) in fields {
            let text = match (&value, name.as_str()) {
                (Value::Null, _) => None,
                (Value::String(text), "kind" | "workspace") => Some(text.as_str()),
                (_, "kind" | "workspace") => return Err(Error::invalid(name, "must be a string")),
                _ => {
                    return Err(Error::invalid(
                        name,
                        "unknown field; allowed: workspace, kind",
                    ))
                }
            };
            match name.as_str() {
                "kind" => filter.kind = kind_filter(text)?,
                _ => filter.workspace = workspace_filter(who, text)?,
            }
        }
    }
    let result = ctx.store.mark_all(who, field, &filter)?;
    Ok(published(ctx, result))
}

/// Publishes what a committed mark or bulk changed (best-effort: Redis never fails
/// the request), then answers `{"updated":N}`.
fn published(ctx: &Ctx, result: StateResult) -> Response {
    if let Some(message) = &result.message {
        ctx.publisher.publish_state(message);
    }
    Response::ok(&json!({"updated": result.updated}))
}

/// `GET /v1/notifications/unread-count`: `{"unread":N,"unseen":M}`, optional
/// `workspace`; read from the counters, never counted.
pub fn unread_count(ctx: &Ctx, who: &Identity, request: &Request) -> Result<Response, Error> {
    let params = input::query(request);
    let workspace = workspace_filter(who, input::param(&params, "workspace"))?;
    let counts = ctx.store.counts(who, workspace.as_deref())?;
    Ok(Response::ok(
        &json!({"unread": counts.unread, "unseen": counts.unseen}),
    ))
}

fn kind_filter(text: Option<&str>) -> Result<Option<String>, Error> {
    match text {
        None | Some("") => Ok(None),
        Some(kind) if is_kind(kind) => Ok(Some(kind.to_string())),
        Some(_) => Err(Error::invalid("kind", KIND_RULE)),
    }
}

/// A workspace filter must name a workspace the token grants (403 otherwise).
fn workspace_filter(who: &Identity, text: Option<&str>) -> Result<Option<String>, Error> {
    match text {
        None | Some("") => Ok(None),
        Some(slug) if !is_workspace(slug) => Err(Error::invalid("workspace", WORKSPACE_RULE)),
        Some(slug) if !who.grants_workspace(slug) => Err(Error::Forbidden {
            code: "workspace_forbidden",
            message: format!("workspace: the token does not grant workspace {slug:?}"),
        }),
        Some(slug) => Ok(Some(slug.to_string())),
    }
}
