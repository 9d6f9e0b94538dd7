//! The command line: subcommands and the raw `NOTIFD_*` settings, each a flag and an
//! environment variable. Values stay strings here; `config` parses and validates them
//! so that every error names the variable it came from.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// notifd: a self-hosted real-time notification server.
#[derive(Debug, Parser)]
#[command(name = "notifd", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub settings: Settings,
}

impl Cli {
    /// Parses the command line (exiting with clap's message on an error). The
    /// settings are global flags, so `notifd serve --log debug` works; `notifd token`
    /// accepts them too but its help lists only its own options, which the settings
    /// would otherwise bury.
    pub fn parse_args() -> Cli {
        let mut command = Cli::command();
        // Building copies the global settings into each subcommand; only then can
        // token's copies be hidden.
        command.build();
        let command = command.mut_subcommand("token", |token| {
            token.mut_args(|arg| {
                let global = arg.is_global_set();
                arg.hide(global)
            })
        });
        Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|err| err.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve REST and WebSocket until SIGTERM/SIGINT.
    Serve,
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Print the settings notifd would run with (secrets masked) and check that
    /// PostgreSQL and Redis answer; exit 0 when all is well, 1 when a dependency
    /// does not answer, 2 when a setting is bad.
    CheckConfig,
    /// Mint a token with the configured HS* secret (for curl and wscat).
    #[command(
        after_help = "Signs with NOTIFD_JWT_ALGORITHM and NOTIFD_JWT_SECRET (or NOTIFD_JWT_SECRET_FILE), \
                      from the environment or their flags, as `notifd --help` lists them."
    )]
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// A workspace to grant (`workspaces` claim); repeat for several, `*` for all.
    #[arg(long = "workspace")]
    pub workspaces: Vec<String>,
    /// Space-separated permissions (`scope` claim), e.g. `notifications:publish`.
    #[arg(long)]
    pub scope: Option<String>,
    /// Lifetime of the token (`30s`, `5m`, `1h`, or seconds).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
}

/// Every setting, as given. Defaults live in `config` as named consts.
#[derive(Debug, Args, Clone, Default)]
pub struct Settings {
    /// PostgreSQL URL [default: postgres://postgres@127.0.0.1:5432/notifd]
    #[arg(
        long,
        env = "NOTIFD_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// File holding the PostgreSQL URL, so its password stays out of the environment
    /// (trailing newline ignored) [default: none]
    #[arg(long, env = "NOTIFD_DATABASE_URL_FILE", global = true)]
    pub database_url_file: Option<String>,
    /// Redis URL; redis+cluster://host:port,host:port for a Redis Cluster
    /// [default: redis://127.0.0.1:6379]
    #[arg(long, env = "NOTIFD_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// File holding the Redis URL (trailing newline ignored) [default: none]
    #[arg(long, env = "NOTIFD_REDIS_URL_FILE", global = true)]
    pub redis_url_file: Option<String>,
    /// Prefix of every Redis channel name [default: empty]
    #[arg(long, env = "NOTIFD_REDIS_PREFIX", global = true)]
    pub redis_prefix: Option<String>,
    /// REST listen address; port 0 picks a free port [default: 0.0.0.0:8080]
    #[arg(long, env = "NOTIFD_HTTP_ADDR", global = true)]
    pub http_addr: Option<String>,
    /// WebSocket listen address; port 0 picks a free port [default: 0.0.0.0:8081]
    #[arg(long, env = "NOTIFD_WS_ADDR", global = true)]
    pub ws_addr: Option<String>,
    /// JWT algorithm: HS256/384/512, RS*, PS*, ES256/384, EdDSA [default: HS256]
    #[arg(long, env = "NOTIFD_JWT_ALGORITHM", global = true)]
    pub jwt_algorithm: Option<String>,
    /// Shared secret for HS* algorithms [default: none]
    #[arg(long, env = "NOTIFD_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding the HS* secret (trailing newline ignored) [default: none]
    #[arg(long, env = "NOTIFD_JWT_SECRET_FILE", global = true)]
    pub jwt_secret_file: Option<String>,
    /// PEM public key file for RS*/PS*/ES*/EdDSA [default: none]
    #[arg(long, env = "NOTIFD_JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<String>,
    /// Required `iss` claim [default: not checked]
    #[arg(long, env = "NOTIFD_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim [default: not checked]
    #[arg(long, env = "NOTIFD_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp` [default: 30s]
    #[arg(long, env = "NOTIFD_JWT_LEEWAY", global = true)]
    pub jwt_leeway: Option<String>,
    /// Log level, then optional module=level pairs (info,notifd::store=debug) [default: info]
    #[arg(long, env = "NOTIFD_LOG", global = true)]
    pub log: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "NOTIFD_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// WebSocket ping interval [default: 30s]
    #[arg(long, env = "NOTIFD_PING_INTERVAL", global = true)]
    pub ping_interval: Option<String>,
    /// Close a WebSocket (4000) after this long without a client frame [default: 5m]
    #[arg(long, env = "NOTIFD_IDLE_TIMEOUT", global = true)]
    pub idle_timeout: Option<String>,
    /// Most WebSocket connections held at once [default: what the process's limits
    /// (descriptors, threads, memory maps) allow, less a reserve]
    #[arg(long, env = "NOTIFD_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<String>,
    /// Comma-separated browser origins allowed by CORS [default: empty]
    #[arg(long, env = "NOTIFD_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// Delete notifications older than this many days [default: keep forever]
    #[arg(long, env = "NOTIFD_RETENTION_DAYS", global = true)]
    pub retention_days: Option<String>,
    /// Serve /metrics on this address only, not on the REST port; port 0 picks a free
    /// port [default: none: /metrics on the REST port]
    #[arg(long, env = "NOTIFD_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<String>,
    /// REST worker threads [default: 16]
    #[arg(long, env = "NOTIFD_HTTP_WORKERS", global = true)]
    pub http_workers: Option<String>,
    /// Drop a REST connection that sends nothing for this long (idle keep-alive, slow
    /// clients) [default: 15s]
    #[arg(long, env = "NOTIFD_HTTP_TIMEOUT", global = true)]
    pub http_timeout: Option<String>,
    /// Most REST connections open at once; past it a new one gets 503 with Retry-After
    /// [default: what the descriptor limit leaves after the WebSocket cap]
    #[arg(long, env = "NOTIFD_HTTP_MAX_CONNECTIONS", global = true)]
    pub http_max_connections: Option<String>,
    /// Notifications queued per WebSocket before it is closed as too slow (4006) [default: 256]
    #[arg(long, env = "NOTIFD_WS_QUEUE", global = true)]
    pub ws_queue: Option<String>,
    /// WebSocket connections per user and workspace across all instances; a newer one
    /// beyond it closes the oldest (4005), 1 to 1000 [default: 5]
    #[arg(long, env = "NOTIFD_CONNECTIONS_PER_USER", global = true)]
    pub connections_per_user: Option<String>,
    /// How long a create's Idempotency-Key is honoured (a repeat answers the original)
    /// [default: 24h]
    #[arg(long, env = "NOTIFD_IDEMPOTENCY_WINDOW", global = true)]
    pub idempotency_window: Option<String>,
    /// PostgreSQL connections in the pool [default: 8]
    #[arg(long, env = "NOTIFD_DB_POOL_SIZE", global = true)]
    pub db_pool_size: Option<String>,
}

/// Removes every `NOTIFD_*` variable set to nothing (an env-file line such as
/// `NOTIFD_MAX_CONNECTIONS=`), so that empty means "use the default" for every
/// setting alike. Call before parsing, while the process has one thread.
pub fn unset_blank_environment() {
    let blank: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(name, value)| {
            name.to_str().is_some_and(|n| n.starts_with("NOTIFD_"))
                && value.to_str().is_some_and(|v| v.trim().is_empty())
        })
        .map(|(name, _)| name)
        .collect();
    for name in blank {
        std::env::remove_var(name);
    }
}
