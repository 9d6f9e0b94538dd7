//! `GET /v1/openapi.json` (contract §4): the document describes exactly the routes
//! the server has (a route missing from either side fails), every reference in it
//! resolves, and schemathesis, run against a live server with real tokens, finds no
//! 5xx and no response that breaks the document.

mod common;
#[path = "browser/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
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

/// Which operations a run covers: the service routes, or all the others.
enum Part {
    Service,
    User,
}

/// Runs schemathesis on one part of the document, sending `token`; returns how many
/// operations it tested. A fixed seed and a bounded number of examples make it the
/// same run every time.
fn run_schemathesis(server: &TestServer, part: Part, token: &str) -> usize {
    let base = format!("http://{}", server.http_addr());
    let scratch = std::env::temp_dir().join(new_user("notifd_st"));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let (filter, what) = match part {
        Part::Service => ("--include-path-regex", "service routes"),
        Part::User => ("--exclude-path-regex", "user and public routes"),
    };
    // The document as served, from a file: loaded from its URL, schemathesis leaves
    // out the operation that serves it.
    let served = scratch.join("openapi.json");
    std::fs::write(&served, document(server).to_string()).expect("write the document");
    let mut command = schemathesis_command(&served, &base, (filter, "^/v1/internal/"), token);
    command.current_dir(&scratch);
    let started = Instant::now();
    let output = support::run_bounded(command, RUN_DEADLINE, "schemathesis");
    let _ = std::fs::remove_dir_all(&scratch);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "schemathesis ({what}) took {:?}:\n{stdout}",
        started.elapsed()
    );
    assert!(
        output.status.success(),
        "schemathesis ({what}) found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: ")?.trim().parse().ok())
        .filter(|&tested: &usize| tested > 0)
        .unwrap_or_else(|| panic!("schemathesis ({what}) tested no operation:\n{stdout}"))
}

/// `st run` on the document file `served` against `base`, with a path filter and the
/// token: the fixed seed, example count and checks every run shares.
fn schemathesis_command(
    served: &std::path::Path,
    base: &str,
    (filter, pattern): (&str, &str),
    token: &str,
) -> Command {
    let mut command = Command::new(schemathesis());
    command
        .arg("run")
        .arg(served)
        .args(["--url", base, filter, pattern])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS, "--phases", "examples,coverage,fuzzing"])
        .args(["--seed", "20261202", "--max-examples", "40"])
        .args(["--workers", "2", "--generation-allow-x00", "false"])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        .args(["--no-color", "--warnings", "off"])
        .env("NO_COLOR", "1");
    command
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
    let tested = run_schemathesis(&server, Part::User, &user_token)
        + run_schemathesis(&server, Part::Service, &service_token());
    let operations: usize = document(&server)["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |methods| methods.len()))
        .sum();
    assert_eq!(
        tested, operations,
        "every operation of the document was tested"
    );
}
