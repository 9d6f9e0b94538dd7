//! What handlers read from a request: the bearer token, the query string, the JSON
//! body. The front has already bounded the body (`body_limit`), so reading it here
//! is parsing only.

use serde_json::Value;

use crate::error::Error;
use crate::http::{Head, Request};

/// Largest request body, in bytes (contract §4).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The token of an `Authorization: Bearer …` header, if any.
pub fn bearer_token(head: &Head) -> Option<&str> {
    let value = head.header("Authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Query parameters, percent-decoded; a repeated name keeps its last value.
pub fn query(request: &Request) -> Vec<(String, String)> {
    let Some(query) = request.query() else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// The last value of one query parameter.
pub fn param<'q>(params: &'q [(String, String)], name: &str) -> Option<&'q str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The one array field of a body `{"<name>":[…]}` holding 1 to `max` items (`what`
/// names them in messages); anything else is a 400 naming the field.
pub fn sole_array(
    body: Option<Value>,
    name: &str,
    max: usize,
    what: &str,
) -> Result<Vec<Value>, Error> {
    let body = body.ok_or_else(|| Error::invalid(name, "is required"))?;
    let Value::Object(mut fields) = body else {
        return Err(Error::BadJson("the body must be a JSON object".into()));
    };
    if let Some(unknown) = fields.keys().find(|k| k.as_str() != name) {
        return Err(Error::invalid(
            unknown.clone(),
            format!("unknown field; allowed: {name}"),
        ));
    }
    let Some(Value::Array(items)) = fields.remove(name) else {
        return Err(Error::invalid(
            name,
            format!("is required: an array of 1 to {max} {what}"),
        ));
    };
    if items.is_empty() || items.len() > max {
        return Err(Error::invalid(
            name,
            format!("must hold 1 to {max} {what}, got {}", items.len()),
        ));
    }
    Ok(items)
}

/// Reads a JSON body: 415 without a JSON content type, 400 when it does not parse.
/// `None` for an empty (or all-whitespace) body: `curl -X POST` sends none.
pub fn json_body(request: &Request) -> Result<Option<Value>, Error> {
    if !request.has_body() {
        return Ok(None);
    }
    let is_json = request.header("Content-Type").is_some_and(|value| {
        let mime = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    });
    if !is_json {
        return Err(Error::UnsupportedMediaType);
    }
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&request.body)
        .map(Some)
        .map_err(|e| Error::BadJson(e.to_string()))
}
