//! The answers the front gives by itself, before or instead of a handler: each
//! protocol error of contract §4 with its status, code and message. A refusal always
//! closes the connection, since what follows it in the stream cannot be trusted.

use super::response::Response;

/// Seconds a client refused at the connection cap is told to wait.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The service's own answer, when it refused the request from its head.
    answer: Option<Response>,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            answer: None,
        }
    }

    /// The service refused a request from its head (`Service::admit`) with `answer`.
    pub fn answer(answer: Response) -> Refusal {
        Refusal {
            status: answer.status,
            code: "refused_by_service",
            message: "refused before its body was read".into(),
            answer: Some(answer),
        }
    }

    /// A malformed head or an ambiguous body framing (400).
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(400, "bad_request", message)
    }

    /// A head not complete within the request deadline (408).
    pub fn timeout() -> Refusal {
        Refusal::new(408, "request_timeout", "the request did not arrive in time")
    }

    /// A body over the route's limit (413).
    pub fn body_too_large(limit: usize) -> Refusal {
        Refusal::new(
            413,
            "payload_too_large",
            format!("body: larger than {limit} bytes"),
        )
    }

    /// An expectation other than `100-continue` (417).
    pub fn expectation_failed() -> Refusal {
        Refusal::new(
            417,
            "expectation_failed",
            "only Expect: 100-continue is supported",
        )
    }

    /// A head over `MAX_HEAD_BYTES`, or too many header fields (431).
    pub fn head_too_large() -> Refusal {
        Refusal::new(
            431,
            "request_header_fields_too_large",
            format!(
                "the request head is larger than {} bytes",
                super::request::MAX_HEAD_BYTES
            ),
        )
    }

    /// A transfer coding the front does not implement (501).
    pub fn not_implemented(message: impl Into<String>) -> Refusal {
        Refusal::new(501, "not_implemented", message)
    }

    /// The connection cap is reached (503, with `Retry-After`).
    pub fn busy() -> Refusal {
        Refusal::new(
            503,
            "service_unavailable",
            "too many open connections; retry shortly",
        )
    }

    /// Any HTTP version but 1.0 and 1.1 (505).
    pub fn version() -> Refusal {
        Refusal::new(
            505,
            "http_version_not_supported",
            "only HTTP/1.0 and HTTP/1.1 are served",
        )
    }

    pub fn into_response(self) -> Response {
        if let Some(answer) = self.answer {
            return answer;
        }
        let response = Response::error(self.status, self.code, &self.message);
        if self.status == 503 {
            response.with_header("Retry-After", RETRY_AFTER_SECONDS)
        } else {
            response
        }
    }
}
