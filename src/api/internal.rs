//! The service endpoints: `POST /v1/internal/notifications` (one) and
//! `POST /v1/internal/notifications/batch` (up to 1,000, all or none). Validate, then
//! hand to the committer (store, then publish), then answer 201.

use std::sync::Arc;

use crate::http::Request;
use serde_json::Value;

use super::input;
use super::Ctx;
use crate::auth::Identity;
use crate::committer::Ready;
use crate::error::Error;
use crate::http::Response;
use crate::validate;

/// Most notifications in one batch.
pub const MAX_BATCH: usize = 1000;
/// Largest batch body: 1,000 notifications of about 1 KiB each.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

pub fn create(ctx: &Ctx, _service: &Identity, request: &Request) -> Result<Response, Error> {
    let body =
        input::json_body(request)?.ok_or_else(|| Error::BadJson("the body is empty".into()))?;
    let ready = prepare(body)?;
    let json = ready.json.clone();
    ctx.committer.commit(vec![ready])?;
    // The committer has usually dropped its share by now: then no copy at all.
    let json = Arc::try_unwrap(json).unwrap_or_else(|shared| String::clone(&shared));
    Ok(Response::json_text(201, json))
}

/// `{"notifications":[…]}`: every item is validated first; one invalid item refuses
/// the whole batch (400 naming each bad item by index) and nothing is stored.
pub fn create_batch(ctx: &Ctx, _service: &Identity, request: &Request) -> Result<Response, Error> {
    let body = input::json_body(request)?;
    let items = input::sole_array(body, "notifications", MAX_BATCH, "notifications")?;
    let mut ready = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match prepare(item) {
            Ok(item) => ready.push(item),
            Err(err) => problems.push((index, err)),
        }
    }
    if let Some((index, first)) = problems.first() {
        return Err(Error::Batch {
            status: first.status(),
            message: format!("notifications[{index}].{first}"),
            items: problems
                .iter()
                .map(|(index, err)| (*index, err.code(), err.to_string()))
                .collect(),
        });
    }
    let json: Vec<Arc<String>> = ready.iter().map(|r| r.json.clone()).collect();
    ctx.committer.commit(ready)?;
    let mut body = String::with_capacity(json.iter().map(|j| j.len() + 1).sum::<usize>() + 20);
    body.push_str("{\"notifications\":[");
    for (i, one) in json.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(one);
    }
    body.push_str("]}");
    Ok(Response::json_text(201, body))
}

fn prepare(body: Value) -> Result<Ready, Error> {
    let (notification, json) = validate::new_notification(body)?;
    Ok(Ready {
        notification,
        json: Arc::new(json),
    })
}
