//! notifd.js, the browser client (contract §8), under Node: the reconnect policy's
//! unit tests (every close code's decision, the backoff bounds, the README's table
//! agreeing with the module), the client against a scripted WebSocket peer (the
//! notifd.v1 events, de-duplication by id, `since` on reconnect, backoff that an
//! accept-then-drop server does not reset, 1013, 4005, the text ping keeping a live
//! connection and dropping a silent one), and against a live server
//! (each refusal stops it, a 4003 is refreshed through `getToken`, the protocol
//! fallback, live delivery, the REST helpers). The JS files are in `tests/browser/`.

mod common;
#[path = "browser/support.rs"]
mod support;

use std::time::Duration;

use common::*;

#[test]
fn the_reconnect_policy_passes_its_unit_tests() {
    let output = support::node(&["--test", "policy.test.mjs"], &[], Duration::from_secs(60));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("# fail 0"), "{out}");
    assert!(!out.contains("# pass 0"), "the node tests ran: {out}");
}

#[test]
fn the_client_handles_each_frame_and_close_of_a_scripted_peer() {
    support::ensure_packages();
    let output = support::node(
        &["--test", "protocol.test.mjs"],
        &[],
        Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("# fail 0") && out.contains("# pass 8"),
        "{out}"
    );
}

#[test]
fn the_client_against_a_live_server() {
    support::ensure_packages();
    let server = TestServer::start();
    let user = new_user("js_client");
    let workspace = "acme";
    let expired = support::expired_token(&user, workspace);
    let envs = [
        ("NOTIFD_WS", format!("ws://{}/", server.ws_addr())),
        ("NOTIFD_HTTP", format!("http://{}", server.http_addr())),
        ("NOTIFD_WORKSPACE", workspace.to_string()),
        ("NOTIFD_USER", user.clone()),
        ("NOTIFD_TOKEN", user_token(&user, &[workspace])),
        ("NOTIFD_EXPIRED_TOKEN", expired),
        ("NOTIFD_SERVICE_TOKEN", service_token()),
    ];
    let output = support::node(
        &["--test", "--test-concurrency=1", "client.test.mjs"],
        &envs,
        Duration::from_secs(90),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("# fail 0") && out.contains("# pass 6"),
        "{out}"
    );
}
