//! HTTP plumbing for the handlers: the bearer token, the query string, the JSON body
//! (size-limited while reading, chunked bodies included) and JSON replies.

use std::io::Read;

use serde_json::Value;
use tiny_http::{Header, Request, Response};

use crate::error::Error;

/// Largest request body, in bytes (contract §4).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A handler's answer: status, body and headers (JSON unless said otherwise).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A reply whose body is already JSON text.
    pub fn json_text(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::json_text(status, value.to_string())
    }

    pub fn ok(value: &Value) -> Reply {
        Reply::json(200, value)
    }

    /// The error body of the contract: `{"error":{"code":…,"message":…}}`.
    pub fn error(err: &Error) -> Reply {
        let mut body =
            serde_json::json!({"error": {"code": err.code(), "message": err.public_message()}});
        // A refused batch also lists every bad item.
        if let Error::Batch { items, .. } = err {
            body["error"]["items"] = items
                .iter()
                .map(|(index, code, message)| serde_json::json!({"index": index, "code": code, "message": message}))
                .collect();
        }
        let mut reply = Reply::json(err.status(), &body);
        if let Error::MethodNotAllowed(allowed) = err {
            reply.headers.push(("Allow", allowed.clone()));
        }
        reply
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_response(self) -> Response<std::io::Cursor<Vec<u8>>> {
        let mut response = Response::from_data(self.body.into_bytes())
            .with_status_code(self.status)
            .with_header(header("Content-Type", self.content_type));
        for (name, value) in &self.headers {
            response.add_header(header(name, value));
        }
        response
    }
}

/// A header from static parts; both are valid ASCII, so this cannot fail.
pub fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|_| {
        Header::from_bytes(&b"X-Invalid-Header"[..], &b"1"[..]).expect("static header is valid")
    })
}

/// The value of a request header, if present.
pub fn header_value<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// The token of an `Authorization: Bearer …` header, if any.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = header_value(request, "Authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The path without the query string.
pub fn path(request: &Request) -> &str {
    let url = request.url();
    url.split_once('?').map_or(url, |(path, _)| path)
}

/// Query parameters, percent-decoded; a repeated name keeps its last value.
pub fn query(request: &Request) -> Vec<(String, String)> {
    let url = request.url();
    let Some((_, query)) = url.split_once('?') else {
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

/// Reads a JSON body: 415 without a JSON content type, 413 over `MAX_BODY_BYTES`
/// (checked against the declared length first, then while reading, since a chunked
/// body declares none), 400 when it does not parse. `None` for an empty body.
pub fn json_body(request: &mut Request) -> Result<Option<Value>, Error> {
    json_body_limited(request, MAX_BODY_BYTES)
}

/// `json_body` with another size limit (the batch endpoint takes more).
pub fn json_body_limited(request: &mut Request, limit: usize) -> Result<Option<Value>, Error> {
    // No length and no chunking means no body (HTTP/1.1): `curl -X POST` sends that.
    let chunked = header_value(request, "Transfer-Encoding").is_some();
    if request.body_length() == Some(0) || (request.body_length().is_none() && !chunked) {
        return Ok(None);
    }
    let is_json = header_value(request, "Content-Type").is_some_and(|value| {
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
    let too_large = || Error::TooLarge(format!("body: larger than {limit} bytes"));
    if request.body_length().is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(1024).min(limit));
    request
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::BadJson(format!("cannot read body: {e}")))?;
    if body.len() > limit {
        return Err(too_large());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::BadJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_code_and_message() {
        let reply = Reply::error(&Error::invalid("limit", "must be 1 to 100"));
        assert_eq!(reply.status, 400);
        let body: Value = serde_json::from_str(&reply.body).expect("JSON");
        assert_eq!(body["error"]["code"], "invalid_field");
        assert_eq!(body["error"]["message"], "limit: must be 1 to 100");
    }
}
