//! The service endpoint `POST /v1/internal/notifications`: validate, store, publish,
//! then answer 201 with the notification.

use tiny_http::Request;

use super::http::{self, Reply};
use super::Ctx;
use crate::auth::Identity;
use crate::error::Error;
use crate::metrics::{self, METRICS};
use crate::validate;

pub fn create(ctx: &Ctx, _service: &Identity, request: &mut Request) -> Result<Reply, Error> {
    let body =
        http::json_body(request)?.ok_or_else(|| Error::BadJson("the body is empty".into()))?;
    let notification = validate::new_notification(body)?;
    ctx.store.insert(&notification)?;
    let json = notification.to_json();
    // Stored is what counts: a Redis failure is logged and the client still gets its
    // 201; connected clients catch up from PostgreSQL once Redis is back.
    metrics::inc(&METRICS.notifications_created);
    if let Err(err) = ctx.publisher.publish(&notification.user_id, &json) {
        metrics::inc(&METRICS.redis_publish_failures);
        log::warn!(id = notification.id.to_string().as_str(), error = err.to_string().as_str(); "publish failed; notification is stored");
    }
    Ok(Reply::json_text(201, json))
}
