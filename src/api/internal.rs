//! The service endpoints: `POST /v1/internal/notifications` (one) and
//! `POST /v1/internal/notifications/batch` (up to 1,000, all or none). Validate, then
//! hand to the committer (store, then publish), then answer 201; a create whose
//! idempotency key (`key`) was used before answers the original instead.

mod key;

use std::sync::Arc;

use crate::http::Request;
use serde_json::Value;

use super::input;
use super::Ctx;
use crate::auth::Identity;
use crate::committer::{Outcome, Ready};
use crate::error::Error;
use crate::http::Response;
use crate::validate;

/// Most notifications in one batch.
pub const MAX_BATCH: usize = 1000;
/// Largest batch body: 1,000 notifications of about 1 KiB each.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

pub fn create(ctx: &Ctx, service: &Identity, request: &Request) -> Result<Response, Error> {
    let header = key::from_header(request)?;
    let mut body =
        input::json_body(request)?.ok_or_else(|| Error::BadJson("the body is empty".into()))?;
    let idempotency_key = key::either(header, key::take_from_body(&mut body)?)?;
    let ready = prepare(ctx, service, body, idempotency_key)?;
    let json = ready.json.clone();
    let outcome = ctx.committer.commit(vec![ready])?.pop();
    if let Some(Outcome::Replayed(original)) = outcome {
        drop(json);
        return Ok(Response::json_text(201, owned(original)).with_header(key::REPLAYED, "true"));
    }
    Ok(Response::json_text(201, owned(json)))
}

/// `{"notifications":[…]}`: every item is validated first; one invalid item refuses
/// the whole batch (400 naming each bad item by index) and nothing is stored. Keys
/// go per item (`idempotency_key`); a repeated one answers its original in place.
pub fn create_batch(ctx: &Ctx, service: &Identity, request: &Request) -> Result<Response, Error> {
    if key::from_header(request)?.is_some() {
        return Err(Error::InvalidIdempotencyKey(format!(
            "a batch takes no {} header: give {} in each item",
            key::HEADER,
            key::FIELD
        )));
    }
    let body = input::json_body(request)?;
    let items = input::sole_array(body, "notifications", MAX_BATCH, "notifications")?;
    let mut ready = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, mut item) in items.into_iter().enumerate() {
        let prepared = key::take_from_body(&mut item)
            .and_then(|idempotency_key| prepare(ctx, service, item, idempotency_key));
        match prepared {
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
    let outcomes = ctx.committer.commit(ready)?;
    let answers: Vec<&Arc<String>> = json
        .iter()
        .zip(&outcomes)
        .map(|(own, outcome)| match outcome {
            Outcome::Stored => own,
            Outcome::Replayed(original) => original,
        })
        .collect();
    let body = batch_body(&answers);
    let response = Response::json_text(201, body);
    // Only when nothing at all was stored: the whole batch was a retry.
    if outcomes.iter().all(|o| matches!(o, Outcome::Replayed(_))) {
        return Ok(response.with_header(key::REPLAYED, "true"));
    }
    Ok(response)
}

/// `{"notifications":[…]}` from the items' JSON, copied once.
fn batch_body(answers: &[&Arc<String>]) -> String {
    let mut body = String::with_capacity(answers.iter().map(|j| j.len() + 1).sum::<usize>() + 20);
    body.push_str("{\"notifications\":[");
    for (i, one) in answers.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(one);
    }
    body.push_str("]}");
    body
}

fn prepare(
    ctx: &Ctx,
    service: &Identity,
    body: Value,
    idempotency_key: Option<String>,
) -> Result<Ready, Error> {
    let (notification, json) = validate::new_notification(body, ctx.committer.policy().retention)?;
    let key = idempotency_key.map(|k| key::scoped(service, k, &notification));
    Ok(Ready {
        notification,
        json: Arc::new(json),
        key,
    })
}

/// The text of a shared answer; the committer has usually dropped its share by now,
/// and then nothing is copied.
fn owned(json: Arc<String>) -> String {
    Arc::try_unwrap(json).unwrap_or_else(|shared| String::clone(&shared))
}
