//! NUL (`%00`, `\u0000`) in the user endpoints' query parameters, ids and filters is
//! a 400 naming the parameter, never a 500: PostgreSQL text cannot hold NUL, so none
//! may reach a statement. (Create bodies: `create.rs` and `batch.rs`; tokens: `auth.rs`.)

mod common;

use common::{assert_error, new_user, user_token, TestServer};
use serde_json::json;

#[test]
fn nul_in_list_and_count_parameters_is_400() {
    let server = TestServer::start();
    let token = user_token(&new_user("nulq"), &["*"]);
    for (path, field) in [
        ("/v1/notifications?kind=a%00b", "kind:"),
        ("/v1/notifications?workspace=acme%00", "workspace:"),
        ("/v1/notifications?limit=1%00", "limit:"),
        ("/v1/notifications?unread=true%00", "unread:"),
        ("/v1/notifications?cursor=%00", "cursor:"),
        ("/v1/notifications/unread-count?workspace=%00", "workspace:"),
    ] {
        let response = server.get(path, &token);
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        let message = response.json()["error"]["message"].to_string();
        assert!(message.contains(field), "{path}: {message}");
    }
}

#[test]
fn nul_in_ids_and_read_all_filters_is_400() {
    let server = TestServer::start();
    let token = user_token(&new_user("nulids"), &["*"]);
    let response = server.send_json(
        "PATCH",
        "/v1/notifications/read",
        &token,
        &json!({"ids": ["\u{0}"]}),
    );
    assert_error(&response, 400, "invalid_field", "ids[0]:", "NUL id");
    for field in ["kind", "workspace"] {
        let response = server.send_json(
            "POST",
            "/v1/notifications/read-all",
            &token,
            &json!({ field: "a\u{0}" }),
        );
        assert_error(
            &response,
            400,
            "invalid_field",
            &format!("{field}:"),
            "NUL filter",
        );
    }
}
