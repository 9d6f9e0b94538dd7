//! `GET /v1/openapi.json` (contract §4): the document describes exactly the routes
//! the server has (a route missing from either side fails), every reference in it
//! resolves, and schemathesis, run against a live server with real tokens, finds no
//! 5xx and no response that breaks the document.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use notifd::auth::{self, Claims};
use serde_json::Value;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document(server: &TestServer) -> Value {
    let response = server.request("GET", "/v1/openapi.json", &[], None);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

#[test]
fn the_document_lists_exactly_the_route_table() {
    let server = TestServer::start();
    let doc = document(&server);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents its responses"
            );
            assert!(operation["operationId"].is_string(), "{method} {path}");
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = notifd::api::routes()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes missing from the document: {undocumented:?}; documented but not served: {unserved:?}"
    );
}

#[test]
fn every_reference_resolves() {
    let server = TestServer::start();
    let doc = document(&server);
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(
        refs.len() > 20,
        "the document uses its components: {refs:?}"
    );
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference}: only local references"));
        assert!(doc.pointer(pointer).is_some(), "{reference} resolves");
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (name, inner) in fields {
                match (name.as_str(), inner) {
                    ("$ref", Value::String(target)) => refs.push(target.clone()),
                    _ => collect_refs(inner, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

/// schemathesis, from the venv `scripts/test` installs (pinned there); its absence
/// fails the test with the fix.
fn schemathesis() -> PathBuf {
    let st = std::env::var_os("NOTIFD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis/bin/st")
        });
    assert!(
        st.is_file(),
        "{} is missing: scripts/test installs schemathesis there (or set NOTIFD_SCHEMATHESIS)",
        st.display()
    );
    st
}

/// The most one schemathesis run may take before it is killed and the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// Runs schemathesis on the operations tagged `tags`, sending `token`. A fixed seed
/// and a bounded number of examples make it the same run every time.
fn run_schemathesis(server: &TestServer, tags: &[&str], token: &str) {
    let base = format!("http://{}", server.http_addr());
    let scratch = std::env::temp_dir().join(new_user("notifd_st"));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let mut command = Command::new(schemathesis());
    command
        .arg("run")
        .arg(format!("{base}/v1/openapi.json"))
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--seed",
            "20261202",
            "--max-examples",
            "40",
            "--workers",
            "2",
        ])
        .args([
            "--generation-allow-x00",
            "false",
            "--generation-database",
            "none",
        ])
        .args(["--request-timeout", "10", "--no-color", "--warnings", "off"]);
    for tag in tags {
        command.args(["--include-tag", tag]);
    }
    let started = Instant::now();
    let mut child = command
        .current_dir(&scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .spawn()
        .expect("schemathesis runs");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            panic!("schemathesis did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("schemathesis output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("schemathesis {tags:?} took {:?}", started.elapsed());
    assert!(
        status.success(),
        "schemathesis {tags:?} found problems ({status}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("passed"),
        "schemathesis {tags:?} ran no test:\n{stdout}"
    );
}

/// No 5xx, and every status, content type, header and body as the document says;
/// invalid input is refused (4xx), and a route that needs a token refuses none.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_headers_conformance,response_schema_conformance,negative_data_rejection,\
    unsupported_method,ignored_auth";

#[test]
fn schemathesis_finds_no_5xx_and_no_response_off_the_document() {
    let server = TestServer::start();
    let user = new_user("st");
    let user_token = mint(&Claims {
        sub: Some(user),
        exp: auth::unix_now() + 3600,
        workspaces: Some(vec!["*".into()]),
        workspace: None,
        scope: None,
    });
    run_schemathesis(
        &server,
        &["notifications", "operations", "face"],
        &user_token,
    );
    run_schemathesis(&server, &["internal"], &service_token());
}
