//! CORS for browser dashboards: preflight answers and allow-origin headers for the
//! configured origins only; nothing CORS at all for other origins or when unset.

mod common;

use common::{new_user, settings, user_token, TestServer};

const APP: &str = "https://app.example";

fn cors_server() -> TestServer {
    let mut settings = settings();
    settings.cors_origins = Some(format!("{APP}, https://other.example"));
    TestServer::with(settings)
}

#[test]
fn preflight_for_an_allowed_origin() {
    let server = cors_server();
    let response = server.request(
        "OPTIONS",
        "/v1/notifications/read",
        &[("Origin", APP), ("Access-Control-Request-Method", "PATCH")],
        None,
    );
    assert_eq!(response.status, 204);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert!(response
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("PATCH")));
    let headers = response
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_string();
    assert!(
        headers.contains("Authorization") && headers.contains("Content-Type"),
        "{headers}"
    );
}

#[test]
fn replies_to_an_allowed_origin_carry_the_header_and_others_get_none() {
    let server = cors_server();
    let user = new_user("cors");
    let auth = format!("Bearer {}", user_token(&user, &[]));
    let allowed = server.request(
        "GET",
        "/v1/notifications",
        &[("Authorization", &auth), ("Origin", APP)],
        None,
    );
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));

    let evil = [
        ("Authorization", auth.as_str()),
        ("Origin", "https://evil.example"),
    ];
    let refused = server.request("GET", "/v1/notifications", &evil, None);
    // Served (CORS is the browser's check), only without the headers.
    assert_eq!(refused.status, 200);
    assert!(refused
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("access-control-")));
    let preflight = server.request(
        "OPTIONS",
        "/v1/notifications",
        &[("Origin", "https://evil.example")],
        None,
    );
    assert!(preflight
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("access-control-")));
    assert_eq!(
        server
            .request("OPTIONS", "/no/such/path", &[("Origin", APP)], None)
            .status,
        404
    );
}

#[test]
fn without_configured_origins_there_are_no_cors_headers() {
    let server = TestServer::start();
    let response = server.request("OPTIONS", "/v1/notifications", &[("Origin", APP)], None);
    assert_eq!(response.status, 204);
    assert!(response
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("access-control-")));
}
