//! notifd-bench: the load generator of `scripts/bench`.
//!
//! `scripts/bench` starts one notifd per scenario and runs `notifd-bench run` against
//! it; this program opens the WebSocket clients (tokio tasks, no thread per client),
//! mints its own HS256 tokens, creates notifications through the REST internal API
//! with their send time in the payload, measures create-sent -> frame-received, and
//! reads notifd's CPU, RSS and threads from /proc. `notifd-bench report` then merges
//! the per-scenario JSON files into one report and prints the table.
//!
//! Traffic goes to 127.0.0.1 only, and every loop is bounded in count and time.

mod events;
mod http;
mod proc;
mod report;
mod scenarios;
mod sockets;
mod stats;
mod tap;
mod token;
mod ws;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "notifd-bench",
    about = "Load generator for notifd (run by scripts/bench)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print N free TCP ports on 127.0.0.1, one per line.
    FreePorts {
        #[arg(default_value_t = 2)]
        count: usize,
        /// Ports below Linux's ephemeral range (20000-31999), for servers whose port
        /// must not be handed to an outgoing connection meanwhile (a Redis Cluster's
        /// client and bus ports).
        #[arg(long)]
        below_ephemeral: bool,
    },
    /// Run one scenario against a running notifd and write its JSON result.
    Run(Box<RunArgs>),
    /// Merge the per-scenario results into one report and print the table.
    Report(ReportArgs),
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// connections, latency, throughput, history, idle-rest, state-fanout, broadcast,
    /// broadcast-history or instances.
    #[arg(long)]
    pub scenario: String,
    /// The event protocol's options (BENCH_PROTOCOL, state-fanout's).
    #[command(flatten)]
    pub events: events::EventArgs,
    /// notifd's process id (for /proc readings).
    #[arg(long)]
    pub pid: u32,
    /// notifd's REST address (loopback only).
    #[arg(long)]
    pub http: SocketAddr,
    /// notifd's WebSocket address (loopback only).
    #[arg(long)]
    pub ws: SocketAddr,
    /// The instances scenario: another notifd on the same database and Redis prefix,
    /// as `PID,HTTP,WS` (given once per instance).
    #[arg(long = "instance")]
    pub instances: Vec<scenarios::Instance>,
    /// notifd's Redis (the instances scenario taps it with a pattern subscription).
    #[arg(long, env = "NOTIFD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// notifd's Redis channel prefix.
    #[arg(long, env = "NOTIFD_REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,
    /// The HS256 secret notifd verifies with.
    #[arg(long, env = "NOTIFD_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// notifd's database (the history scenario seeds it directly).
    #[arg(long, env = "NOTIFD_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Length of each timed phase (hold, latency run, each throughput step), seconds.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 30)]
    pub seconds: u64,
    /// Connections of the connections scenario.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 15_000)]
    pub connections: usize,
    /// Connected users of the latency and throughput scenarios (1,000 unless given;
    /// `RunArgs::users`), of the broadcast scenario (10,000 unless given) and of the
    /// instances scenario (3,000 unless given).
    #[arg(long, env = "BENCH_USERS")]
    pub users: Option<usize>,
    /// Creates per second of the latency scenario (1,000 unless given;
    /// `RunArgs::rate`) and of the instances scenario (3,000 unless given).
    #[arg(long, env = "BENCH_RATE")]
    pub rate: Option<u64>,
    /// Keep-alive REST connections of the latency scenario.
    #[arg(long, env = "BENCH_LATENCY_CLIENTS", default_value_t = 4)]
    pub latency_clients: usize,
    /// Keep-alive REST clients of each throughput step, comma-separated.
    #[arg(long, env = "BENCH_THROUGHPUT_CLIENTS", default_value = "8,16,32")]
    pub throughput_clients: String,
    /// Notifications per throughput request: 1 posts single creates; N > 1 posts N at a
    /// time through `POST /v1/internal/notifications/batch` (at most 1,000).
    #[arg(long, env = "BENCH_BATCH", default_value_t = 1)]
    pub batch: usize,
    /// 1: every created notification carries an idempotency key of its own
    /// (`idempotency_key`, unique per run), to measure what keyed creates cost.
    #[arg(long, env = "BENCH_IDEMPOTENCY", default_value_t = 0)]
    pub idempotency: u8,
    /// Rows seeded for the history scenario's 10,000 users.
    #[arg(long, env = "BENCH_HISTORY_ROWS", default_value_t = 1_000_000)]
    pub history_rows: u64,
    /// Rows of the history scenario's heavy user.
    #[arg(long, env = "BENCH_HEAVY_ROWS", default_value_t = 20_000)]
    pub heavy_rows: u64,
    /// Timed requests per history measurement.
    #[arg(long, env = "BENCH_HISTORY_REQUESTS", default_value_t = 1_000)]
    pub history_requests: usize,
    /// Record `perf record -g` of notifd during one throughput step (the one with this
    /// many clients, else the first) into the output directory. 0 = off.
    #[arg(long, env = "BENCH_PERF_CLIENTS", default_value_t = 0)]
    pub perf_clients: usize,
    /// Timed broadcasts of the broadcast scenario, sent one at a time (1 to 60).
    #[arg(long, env = "BENCH_BROADCASTS", default_value_t = 20)]
    pub broadcasts: usize,
    /// Workspace-audience rows seeded for the broadcast-history scenario.
    #[arg(long, env = "BENCH_BROADCAST_ROWS", default_value_t = 100_000)]
    pub broadcast_rows: u64,
    /// Idle keep-alive REST connections of the idle-rest scenario.
    #[arg(long, env = "BENCH_IDLE_REST", default_value_t = 10_000)]
    pub idle_rest: usize,
    /// Where to write the scenario's JSON result.
    #[arg(long)]
    pub out: PathBuf,
}

/// Connected users of the latency and throughput scenarios unless BENCH_USERS says.
const DEFAULT_USERS: usize = 1_000;
/// Creates per second of the latency scenario unless BENCH_RATE says.
const DEFAULT_RATE: u64 = 1_000;

impl RunArgs {
    /// BENCH_USERS, or the latency and throughput scenarios' default.
    pub fn users(&self) -> usize {
        self.users.unwrap_or(DEFAULT_USERS)
    }

    /// BENCH_RATE, or the latency scenario's default.
    pub fn rate(&self) -> u64 {
        self.rate.unwrap_or(DEFAULT_RATE)
    }
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Directory holding the per-scenario results (`<scenario>.json`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Scenarios to include, in order, comma-separated.
    #[arg(long)]
    pub scenarios: String,
    /// Where to write the merged report.
    #[arg(long)]
    pub out: PathBuf,
    /// The command line that produced the run (recorded in the report).
    #[arg(long, default_value = "scripts/bench")]
    pub command: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::FreePorts {
            count,
            below_ephemeral,
        } => free_ports(count, below_ephemeral),
        Command::Run(args) => run(*args),
        // Targets missed are a result, not a failure of the tool: exit 0 either way.
        Command::Report(args) => match report::write(&args) {
            Ok(_all_met) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("notifd-bench report: {err}");
                ExitCode::from(2)
            }
        },
    }
}

fn free_ports(count: usize, below_ephemeral: bool) -> ExitCode {
    // Bind them all at once so they differ, then let them go for notifd to take.
    let mut listeners = Vec::new();
    // Below the ephemeral range: candidates from a start of this process's own, so
    // two runs at once try different ports first.
    let mut low = (0..2_000u32).map(|i| 20_000 + (std::process::id() + i * 7_919) % 12_000);
    while listeners.len() < count.min(16) {
        let bound = if below_ephemeral {
            match low.next() {
                Some(port) => TcpListener::bind(("127.0.0.1", port as u16)),
                None => Err(std::io::Error::other("no free port in 20000-31999")),
            }
        } else {
            TcpListener::bind("127.0.0.1:0")
        };
        match bound {
            Ok(l) => listeners.push(l),
            Err(_) if below_ephemeral && low.len() > 0 => {}
            Err(err) => {
                eprintln!("notifd-bench: cannot bind a free port: {err}");
                return ExitCode::from(2);
            }
        }
    }
    for l in &listeners {
        if let Ok(addr) = l.local_addr() {
            println!("{}", addr.port());
        }
    }
    ExitCode::SUCCESS
}

fn run(args: RunArgs) -> ExitCode {
    if !args.http.ip().is_loopback() || !args.ws.ip().is_loopback() {
        eprintln!("notifd-bench: refusing a non-loopback address; traffic stays on 127.0.0.1");
        return ExitCode::from(2);
    }
    if args.secret.len() < 16 {
        eprintln!("notifd-bench: NOTIFD_JWT_SECRET is missing or shorter than 16 bytes");
        return ExitCode::from(2);
    }
    let raised = proc::raise_fd_limit();
    eprintln!("notifd-bench: file-descriptor limit {raised}");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("notifd-bench: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(scenarios::run(args.clone()));
    // Client tasks may still hold sockets: do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(value) => {
            let text = serde_json::to_string_pretty(&value).unwrap_or_default();
            if let Err(err) = std::fs::write(&args.out, text + "\n") {
                eprintln!("notifd-bench: cannot write {}: {err}", args.out.display());
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("notifd-bench: scenario {} failed: {err}", args.scenario);
            let value = serde_json::json!({"scenario": args.scenario, "error": err});
            let _ = std::fs::write(
                &args.out,
                serde_json::to_string_pretty(&value).unwrap_or_default() + "\n",
            );
            ExitCode::FAILURE
        }
    }
}
