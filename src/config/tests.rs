//! `Config::from_settings`: defaults, each variable's parsing and its errors.

use super::*;

#[test]
fn durations_take_units_and_plain_seconds() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_duration("5 minutes").is_err());
    assert!(
        parse_duration("99999999999999h").is_err(),
        "would overflow a deadline"
    );
    assert!(parse_duration("").is_err());
}

fn settings() -> Settings {
    Settings {
        jwt_secret: Some("0123456789abcdef0123".into()),
        ..Settings::default()
    }
}

#[test]
fn defaults_apply() {
    let config = Config::from_settings(&settings()).expect("defaults are valid");
    assert_eq!(config.http_addr.port(), 8080);
    assert_eq!(config.ws_addr.port(), 8081);
    assert_eq!(config.ping_interval, DEFAULT_PING_INTERVAL);
    assert_eq!(config.retention_days, None);
    assert_eq!(config.idempotency_window, Duration::from_secs(86_400));
}

#[test]
fn errors_name_the_variable() {
    let mut s = settings();
    s.http_addr = Some("not-an-address".into());
    let err = Config::from_settings(&s).unwrap_err();
    assert_eq!(err.variable, "NOTIFD_HTTP_ADDR");

    let mut s = settings();
    s.jwt_secret = None;
    assert_eq!(
        Config::from_settings(&s).unwrap_err().variable,
        "NOTIFD_JWT_SECRET"
    );

    let mut s = settings();
    s.jwt_algorithm = Some("RS256".into());
    s.jwt_public_key_file = Some("/nonexistent/key.pem".into());
    let err = Config::from_settings(&s).unwrap_err();
    assert_eq!(err.variable, "NOTIFD_JWT_PUBLIC_KEY_FILE");
    assert!(err.to_string().contains("cannot read"), "{err}");

    let mut s = settings();
    s.idle_timeout = Some("5 minutes".into());
    assert_eq!(
        Config::from_settings(&s).unwrap_err().variable,
        "NOTIFD_IDLE_TIMEOUT"
    );

    let mut s = settings();
    s.retention_days = Some("4294967295".into());
    let err = Config::from_settings(&s).unwrap_err();
    assert_eq!(err.variable, "NOTIFD_RETENTION_DAYS");
    assert!(err.to_string().contains("at most 36500"), "{err}");

    let mut s = settings();
    s.idempotency_window = Some("0".into());
    assert_eq!(
        Config::from_settings(&s).unwrap_err().variable,
        "NOTIFD_IDEMPOTENCY_WINDOW"
    );

    let mut s = settings();
    s.metrics_addr = Some("private:metrics".into());
    assert_eq!(
        Config::from_settings(&s).unwrap_err().variable,
        "NOTIFD_METRICS_ADDR"
    );
}

#[test]
fn a_connection_cap_over_the_limits_is_lowered_and_says_which() {
    let allowed = crate::websocket::capacity::allowed(&crate::process::limits());
    let config = Config::from_settings(&settings()).expect("valid");
    assert!(
        config.max_connections <= allowed.connections + 64,
        "{config:?}"
    );
    assert_eq!(config.max_connections_lowered, None);
    let mut s = settings();
    s.max_connections = Some("100000000".into());
    let config = Config::from_settings(&s).expect("valid");
    assert!(config.max_connections < 100_000_000);
    let lowered = config.max_connections_lowered.expect("lowered");
    assert_eq!(lowered.asked, 100_000_000);
    assert!(!lowered.limit.is_empty());
    s.max_connections = Some("7".into());
    let config = Config::from_settings(&s).expect("valid");
    assert_eq!(config.max_connections, 7);
    assert_eq!(config.max_connections_lowered, None);
}

#[test]
fn connections_per_user_defaults_to_5_and_takes_1_to_1000() {
    let mut s = settings();
    let config = Config::from_settings(&s).expect("valid");
    assert_eq!(config.connections_per_user, DEFAULT_CONNECTIONS_PER_USER);
    assert_eq!(DEFAULT_CONNECTIONS_PER_USER, 5);
    for (text, n) in [("1", 1), (" 7 ", 7), ("1000", 1000)] {
        s.connections_per_user = Some(text.into());
        let config = Config::from_settings(&s).expect(text);
        assert_eq!(config.connections_per_user, n, "{text:?}");
    }
    for (text, problem) in [
        ("0", "must be at least 1"),
        ("1001", "at most 1000"),
        ("five", "not a whole number"),
        ("-1", "not a whole number"),
    ] {
        s.connections_per_user = Some(text.into());
        let err = Config::from_settings(&s).unwrap_err();
        assert_eq!(err.variable, "NOTIFD_CONNECTIONS_PER_USER", "{text:?}");
        assert!(err.problem.contains(problem), "{text:?}: {err}");
    }
}

#[test]
fn a_metrics_address_is_optional() {
    let mut s = settings();
    assert_eq!(Config::from_settings(&s).expect("valid").metrics_addr, None);
    s.metrics_addr = Some(" ".into());
    assert_eq!(Config::from_settings(&s).expect("valid").metrics_addr, None);
    s.metrics_addr = Some("127.0.0.1:9100".into());
    let addr = Config::from_settings(&s).expect("valid").metrics_addr;
    assert_eq!(addr.map(|a| a.port()), Some(9100));
}
