//! Authentication on the REST API (contract §2): which tokens are refused (401) and
//! why, the pinned algorithm with an RS256 key, scopes (403), iss/aud checks, the
//! workspace visibility rule, and key-file configuration errors. Tokens refused on
//! REST for `nbf` or a NUL in `sub` are refused on the WebSocket too (4001): one
//! verifier serves both.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{mint, new_user, user_token, Response, TestServer, SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use notifd::auth::{unix_now, Claims};
use serde::Serialize;
use serde_json::{json, Value};

fn claims(sub: Option<&str>, exp: u64) -> Claims {
    Claims {
        sub: sub.map(String::from),
        exp,
        workspaces: None,
        workspace: None,
        scope: None,
    }
}

/// Asserts a 401 with the contract's error body, the expected code and a message
/// that starts as expected and never repeats the token (or any long part of it).
fn assert_refused(response: &Response, token: &str, code: &str, message_start: &str) {
    assert_eq!(response.status, 401, "{token:?}: {}", response.text());
    let body = response.json();
    let error = body["error"].as_object().expect("error object");
    assert_eq!(error.len(), 2, "error has exactly code and message: {body}");
    assert_eq!(body["error"]["code"], code, "{token:?}: {body}");
    let message = body["error"]["message"].as_str().expect("message string");
    assert!(
        message.starts_with(message_start),
        "{token:?}: message {message:?} should start with {message_start:?}"
    );
    let text = response.text();
    if !token.is_empty() {
        assert!(!text.contains(token), "the body repeats the token: {text}");
    }
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(
            !text.contains(part),
            "the body repeats part of the token: {text}"
        );
    }
}

fn get_with_auth(server: &TestServer, authorization: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| vec![("Authorization", value)])
        .unwrap_or_default();
    server.request("GET", "/v1/notifications", &headers, None)
}

#[test]
fn missing_and_malformed_tokens_are_401_without_echoing_the_token() {
    let server = TestServer::start();

    let none = get_with_auth(&server, None);
    assert_refused(&none, "", "unauthorized", "missing token");
    let empty = get_with_auth(&server, Some("Bearer "));
    assert_refused(&empty, "", "unauthorized", "missing token");
    let basic = get_with_auth(&server, Some("Basic dXNlcjpwYXNz"));
    assert_refused(&basic, "dXNlcjpwYXNz", "unauthorized", "missing token");

    for token in ["abc", "a.b.c"] {
        let response = server.get("/v1/notifications", token);
        assert_refused(
            &response,
            token,
            "unauthorized",
            "invalid token: malformed token",
        );
    }
    // Three base64url parts, but the claims are not JSON.
    let garbage = "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24gYXQgYWxs.c2lnbmF0dXJlLWJ5dGVz";
    let response = server.get("/v1/notifications", garbage);
    assert_refused(&response, garbage, "unauthorized", "invalid token:");
}

#[test]
fn wrong_secret_wrong_algorithm_and_alg_none_are_401() {
    let server = TestServer::start();
    let user = new_user("badsig");
    let good = claims(Some(&user), unix_now() + 600);

    let wrong_secret = notifd::auth::mint(
        Algorithm::HS256,
        b"some-other-secret-0123456789abcdef",
        &good,
    )
    .expect("mint");
    let response = server.get("/v1/notifications", &wrong_secret);
    assert_refused(
        &response,
        &wrong_secret,
        "unauthorized",
        "invalid token: bad signature",
    );

    // The right secret, but not the configured algorithm.
    let hs384 = notifd::auth::mint(Algorithm::HS384, SECRET.as_bytes(), &good).expect("mint");
    let response = server.get("/v1/notifications", &hs384);
    assert_refused(&response, &hs384, "unauthorized", "invalid token:");

    // alg "none": a header, the claims, and an empty signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).expect("claims JSON"));
    let unsigned = format!("{header}.{payload}.");
    let response = server.get("/v1/notifications", &unsigned);
    assert_refused(&response, &unsigned, "unauthorized", "invalid token:");

    // The same claims signed properly are accepted: the refusals above are about the
    // signature and algorithm alone.
    let response = server.get("/v1/notifications", &mint(&good));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["notifications"], json!([]));
}

#[test]
fn expired_tokens_are_401_token_expired_and_the_leeway_is_honoured() {
    let server = TestServer::start();
    let user = new_user("expired");

    let expired = mint(&claims(Some(&user), unix_now() - 300));
    let response = server.get("/v1/notifications", &expired);
    assert_refused(&response, &expired, "token_expired", "token expired");

    // 5 s past `exp` is inside the default 30 s leeway.
    let within = mint(&claims(Some(&user), unix_now() - 5));
    let response = server.get("/v1/notifications", &within);
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn tokens_without_a_usable_sub_are_401() {
    let server = TestServer::start();
    for sub in [None, Some("")] {
        let token = mint(&claims(sub, unix_now() + 600));
        let response = server.get("/v1/notifications", &token);
        assert_refused(
            &response,
            &token,
            "unauthorized",
            "invalid token: missing sub claim",
        );
    }
}

/// Signs any claims (`nbf`, NUL in strings) with the test secret.
fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("test secret"),
    )
    .expect("sign")
}

/// Opens a WebSocket with `token` and returns the close code the server sends.
fn ws_close_code(server: &TestServer, token: &str) -> u16 {
    let mut ws = server.ws(&format!("token={token}&workspaceSlug=acme"));
    common::expect_close(&mut ws).0
}

#[test]
fn a_token_not_valid_yet_is_refused_on_rest_and_websocket() {
    let server = TestServer::start();
    let user = new_user("nbf");
    let exp = unix_now() + 7200;
    let ahead =
        sign(&json!({"sub": user, "exp": exp, "nbf": unix_now() + 3600, "workspaces": ["acme"]}));
    let response = server.get("/v1/notifications", &ahead);
    assert_refused(
        &response,
        &ahead,
        "unauthorized",
        "invalid token: not valid yet (nbf)",
    );
    assert_eq!(
        ws_close_code(&server, &ahead),
        4001,
        "WebSocket refuses it too"
    );
    // 10 s ahead is inside the default 30 s leeway: clocks differ a little.
    let soon = sign(&json!({"sub": user, "exp": exp, "nbf": unix_now() + 10}));
    let response = server.get("/v1/notifications", &soon);
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn a_sub_holding_nul_is_401_and_4001_and_odd_grants_grant_nothing() {
    let server = TestServer::start();
    let exp = unix_now() + 600;
    let nul = sign(&json!({"sub": "ali\u{0}ce", "exp": exp, "workspaces": ["acme"]}));
    for path in ["/v1/notifications", "/v1/notifications/unread-count"] {
        let response = server.get(path, &nul);
        assert_refused(
            &response,
            &nul,
            "unauthorized",
            "invalid token: sub contains NUL",
        );
    }
    let body = json!({"user_id": "u", "kind": "k", "payload": {}});
    let service = sign(&json!({"sub": "svc\u{0}", "exp": exp, "scope": "notifications:publish"}));
    let response = server.send_json("POST", "/v1/internal/notifications", &service, &body);
    assert_refused(
        &response,
        &service,
        "unauthorized",
        "invalid token: sub contains NUL",
    );
    assert_eq!(
        ws_close_code(&server, &nul),
        4001,
        "WebSocket refuses it too"
    );

    // A grant holding NUL can match no workspace: the token works for the others.
    let user = new_user("oddgrant");
    server.create(&json!({"user_id": user, "workspace": "acme", "kind": "k", "payload": {}}));
    let odd = sign(&json!({"sub": user, "exp": exp, "workspaces": ["acme", "be\u{0}ta"]}));
    let response = server.get("/v1/notifications", &odd);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["notifications"].as_array().map(Vec::len),
        Some(1)
    );
    let response = server.get("/v1/notifications/unread-count", &odd);
    assert_eq!(response.json()["unread"], 1, "{}", response.text());
}

#[test]
fn a_user_token_cannot_publish() {
    let server = TestServer::start();
    let user = new_user("noscope");
    let body = json!({"user_id": user, "kind": "k", "payload": {}});
    let mut other_scope = claims(Some(&user), unix_now() + 600);
    other_scope.scope = Some("notifications:read notifications:publisher".into());
    for token in [user_token(&user, &["*"]), mint(&other_scope)] {
        let response = server.send_json("POST", "/v1/internal/notifications", &token, &body);
        assert_eq!(response.status, 403, "{}", response.text());
        assert_eq!(response.error_code(), "insufficient_scope");
        assert_eq!(
            response.json()["error"]["message"],
            "token lacks the notifications:publish scope"
        );
    }
    // Nothing was stored.
    let list = server.get("/v1/notifications", &user_token(&user, &["*"]));
    assert_eq!(list.json()["notifications"], json!([]));
    // Without any token the same request is a 401, not a 403.
    let anonymous = server.request(
        "POST",
        "/v1/internal/notifications",
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    assert_refused(&anonymous, "", "unauthorized", "missing token");
}

fn listed_kinds(response: &Response) -> Vec<String> {
    assert_eq!(response.status, 200, "{}", response.text());
    let mut kinds: Vec<String> = response.json()["notifications"]
        .as_array()
        .expect("notifications array")
        .iter()
        .map(|n| n["kind"].as_str().expect("kind").to_string())
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn a_token_sees_only_its_user_and_granted_workspaces() {
    let server = TestServer::start();
    let user = new_user("iso");
    let (ws_a, ws_b) = ("acme-a", "acme-b");
    server.create(&json!({"user_id": user, "workspace": ws_a, "kind": "in_a", "payload": {}}));
    server.create(&json!({"user_id": user, "workspace": ws_b, "kind": "in_b", "payload": {}}));
    server.create(&json!({"user_id": user, "kind": "user_level", "payload": {}}));

    let only_a = user_token(&user, &[ws_a]);
    assert_eq!(
        listed_kinds(&server.get("/v1/notifications", &only_a)),
        ["in_a", "user_level"]
    );
    assert_eq!(
        listed_kinds(&server.get(&format!("/v1/notifications?workspace={ws_a}"), &only_a)),
        ["in_a", "user_level"]
    );
    let count = server.get("/v1/notifications/unread-count", &only_a);
    assert_eq!(count.json(), json!({"unread": 2, "unseen": 2}));

    for path in [
        format!("/v1/notifications?workspace={ws_b}"),
        format!("/v1/notifications/unread-count?workspace={ws_b}"),
    ] {
        let response = server.get(&path, &only_a);
        assert_eq!(response.status, 403, "{path}: {}", response.text());
        assert_eq!(response.error_code(), "workspace_forbidden");
        assert_eq!(
            response.json()["error"]["message"],
            format!("workspace: the token does not grant workspace \"{ws_b}\"")
        );
    }

    let all = user_token(&user, &["*"]);
    assert_eq!(
        listed_kinds(&server.get("/v1/notifications", &all)),
        ["in_a", "in_b", "user_level"]
    );
    assert_eq!(
        listed_kinds(&server.get(&format!("/v1/notifications?workspace={ws_b}"), &all)),
        ["in_b", "user_level"]
    );

    // The single `workspace` claim grants like a one-element `workspaces`.
    let mut single = claims(Some(&user), unix_now() + 600);
    single.workspace = Some(ws_b.into());
    let single = mint(&single);
    assert_eq!(
        listed_kinds(&server.get("/v1/notifications", &single)),
        ["in_b", "user_level"]
    );
    let response = server.get(&format!("/v1/notifications?workspace={ws_a}"), &single);
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.error_code(), "workspace_forbidden");

    // No workspace grant: user-level notifications only.
    let none = user_token(&user, &[]);
    assert_eq!(
        listed_kinds(&server.get("/v1/notifications", &none)),
        ["user_level"]
    );

    // Another user, even with every workspace, sees none of them and changes none.
    let stranger = user_token(&new_user("stranger"), &["*"]);
    assert_eq!(
        listed_kinds(&server.get("/v1/notifications", &stranger)),
        Vec::<String>::new()
    );
    let read_all = server.send_json("POST", "/v1/notifications/read-all", &stranger, &json!({}));
    assert_eq!(read_all.json(), json!({"updated": 0}));
    let count = server.get("/v1/notifications/unread-count", &all);
    assert_eq!(count.json(), json!({"unread": 3, "unseen": 3}));

    // Marking read through a token limited to A leaves B alone.
    let read_all = server.send_json("POST", "/v1/notifications/read-all", &only_a, &json!({}));
    assert_eq!(read_all.json(), json!({"updated": 2}));
    let unread_b = server.get("/v1/notifications?unread=true", &all);
    assert_eq!(listed_kinds(&unread_b), ["in_b"]);
}

#[derive(Serialize)]
struct IssAudClaims {
    sub: String,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

fn iss_aud_token(iss: Option<&str>, aud: Option<&str>) -> String {
    let claims = IssAudClaims {
        sub: "iss-aud-user".into(),
        exp: unix_now() + 600,
        iss: iss.map(String::from),
        aud: aud.map(String::from),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("test secret"),
    )
    .expect("encode")
}

#[test]
fn issuer_and_audience_are_enforced_when_configured() {
    let mut settings = common::settings();
    settings.jwt_issuer = Some("https://auth.example.test".into());
    settings.jwt_audience = Some("notifd".into());
    let server = TestServer::with(settings);

    let iss = Some("https://auth.example.test");
    let aud = Some("notifd");
    let cases = [
        (None, aud, "invalid token: missing iss claim"),
        (
            Some("https://evil.example.test"),
            aud,
            "invalid token: wrong issuer",
        ),
        (iss, None, "invalid token: missing aud claim"),
        (iss, Some("other-service"), "invalid token: wrong audience"),
        (None, None, "invalid token: missing"),
    ];
    for (iss, aud, message) in cases {
        let token = iss_aud_token(iss, aud);
        let response = server.get("/v1/notifications", &token);
        assert_refused(&response, &token, "unauthorized", message);
    }
    let response = server.get("/v1/notifications", &iss_aud_token(iss, aud));
    assert_eq!(response.status, 200, "{}", response.text());

    // Without the settings, neither claim is required nor checked.
    let plain = TestServer::start();
    for token in [
        iss_aud_token(None, None),
        iss_aud_token(Some("anyone"), Some("anything")),
    ] {
        let response = plain.get("/v1/notifications", &token);
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("notifd-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Generates an RSA key pair; returns (private PEM path, public PEM path).
fn rsa_key_pair(dir: &TempDir) -> (PathBuf, PathBuf) {
    let private = dir.path("private.pem");
    let public = dir.path("public.pem");
    let private_str = private.to_str().expect("UTF-8 path");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private_str,
    ]);
    openssl(&[
        "pkey",
        "-in",
        private_str,
        "-pubout",
        "-out",
        public.to_str().expect("UTF-8 path"),
    ]);
    (private, public)
}

fn rs256_settings(public_key: &Path) -> notifd::cli::Settings {
    let mut settings = common::settings();
    settings.jwt_algorithm = Some("RS256".into());
    settings.jwt_public_key_file = Some(public_key.to_str().expect("UTF-8 path").into());
    settings.jwt_secret = None;
    settings
}

#[test]
fn rs256_tokens_are_verified_with_the_public_key() {
    let dir = TempDir::new("rsa");
    let (private, public) = rsa_key_pair(&dir);
    let server = TestServer::with(rs256_settings(&public));
    let user = new_user("rsa");
    let claims = claims(Some(&user), unix_now() + 600);

    let private_pem = std::fs::read(&private).expect("private key");
    let signing_key = EncodingKey::from_rsa_pem(&private_pem).expect("RSA private key");
    let rs256 =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &signing_key).expect("sign");
    let response = server.get("/v1/notifications", &rs256);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["notifications"], json!([]));

    // One flipped signature byte: the backend really checks the signature.
    let (signed, signature) = rs256.rsplit_once('.').expect("three parts");
    let mut raw = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    raw[10] ^= 0x01;
    let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw));
    let response = server.get("/v1/notifications", &tampered);
    assert_refused(&response, &tampered, "unauthorized", "invalid token:");

    // A different key pair's signature is refused.
    let other_dir = TempDir::new("rsa-other");
    let (other_private, _) = rsa_key_pair(&other_dir);
    let other_key =
        EncodingKey::from_rsa_pem(&std::fs::read(other_private).expect("key")).expect("RSA key");
    let foreign =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &other_key).expect("sign");
    let response = server.get("/v1/notifications", &foreign);
    assert_refused(&response, &foreign, "unauthorized", "invalid token:");

    // HS256 is not the pinned algorithm, whatever the secret.
    let hs256 = mint(&claims);
    let response = server.get("/v1/notifications", &hs256);
    assert_refused(&response, &hs256, "unauthorized", "invalid token:");

    // The key-confusion attack: HMAC with the public key's PEM bytes as the secret.
    let public_pem = std::fs::read(&public).expect("public key");
    let confused = notifd::auth::mint(Algorithm::HS256, &public_pem, &claims).expect("mint");
    let response = server.get("/v1/notifications", &confused);
    assert_refused(&response, &confused, "unauthorized", "invalid token:");
}

#[test]
fn a_key_file_that_is_not_a_pem_public_key_stops_start_up() {
    let dir = TempDir::new("badkey");
    let text = dir.path("not-a-key.pem");
    std::fs::write(&text, "this is not a PEM key\n").expect("write");
    let garbage_pem = dir.path("garbage.pem");
    std::fs::write(
        &garbage_pem,
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");

    // A private key where the public key belongs: refused at start-up rather than
    // failing every token later.
    let (private, _) = rsa_key_pair(&dir);
    // An EC public key is a PEM public key, but not an RSA one.
    let ec_private = dir.path("ec-private.pem");
    let ec_public = dir.path("ec-public.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        ec_private.to_str().expect("UTF-8 path"),
    ]);
    openssl(&[
        "pkey",
        "-in",
        ec_private.to_str().expect("UTF-8 path"),
        "-pubout",
        "-out",
        ec_public.to_str().expect("UTF-8 path"),
    ]);

    for path in [&text, &garbage_pem, &private, &ec_public] {
        let settings = rs256_settings(path);
        let Err(err) = notifd::Config::from_settings(&settings) else {
            panic!("{} must not be accepted as a public key", path.display());
        };
        assert_eq!(err.variable, "NOTIFD_JWT_PUBLIC_KEY_FILE", "{err}");
        let line = err.to_string();
        assert!(
            line.starts_with("NOTIFD_JWT_PUBLIC_KEY_FILE: "),
            "the error line names the variable: {line}"
        );
    }

    // A missing file is named too, and so is a missing setting.
    let err = notifd::Config::from_settings(&rs256_settings(&dir.path("absent.pem")))
        .expect_err("missing file");
    assert_eq!(err.variable, "NOTIFD_JWT_PUBLIC_KEY_FILE");
    let mut settings = rs256_settings(&text);
    settings.jwt_public_key_file = None;
    let err = notifd::Config::from_settings(&settings).expect_err("no key file");
    assert_eq!(err.variable, "NOTIFD_JWT_PUBLIC_KEY_FILE");
    assert!(err.to_string().contains("required for RS256"), "{err}");
}

#[test]
fn the_error_body_of_a_refused_token_is_json_with_a_json_content_type() {
    let server = TestServer::start();
    let response = server.get("/v1/notifications", "abc");
    assert_eq!(response.status, 401);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: Value = response.json();
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// A validly signed token that names a critical header extension notifd does not
/// understand (RFC 7515 §4.1.11) must be refused, not verified as if it were plain.
#[test]
fn a_token_with_an_unknown_critical_header_is_refused() {
    let server = TestServer::start();
    let user = new_user("crit");
    let header = URL_SAFE_NO_PAD.encode(
        json!({"alg": "HS256", "typ": "JWT", "crit": ["notifd-test-ext"], "notifd-test-ext": 1})
            .to_string(),
    );
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"sub": user, "exp": unix_now() + 3600, "workspaces": ["acme"]}).to_string());
    let signing_input = format!("{header}.{claims}");
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("test secret"),
        Algorithm::HS256,
    )
    .expect("sign");
    let token = format!("{signing_input}.{signature}");
    let response = server.get("/v1/notifications", &token);
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(ws_close_code(&server, &token), 4001);
}
