//! Load generator for Portcullis' `Check` and for Envoy in front of it (bench/README.md).
//! Open loop by default: requests leave at a fixed intended rate whatever the server
//! does, latency is measured from the intended send time (no coordinated omission) into an
//! HdrHistogram. `--closed N` instead keeps N requests in flight back to back, to find a mode's
//! maximum rate. Every answer is checked against the decision it must have.
//!
//!   cargo run --release --example load -- --target 127.0.0.1:9191 --rate 2000 --duration 60 \
//!       --mix 70:20:10 --unique 50000
//!   cargo run --release --example load -- --http --target 127.0.0.1:10000 --closed 32 \
//!       --duration 10 --mix 100:0:0 --path /tenants/acme/items
//!
//! Mix: cached (one token again and again), unique (pre-minted tokens in rotation: cache misses
//! until the cache holds them all), deny (no credential). Direct `Check` calls expect gRPC status
//! OK or UNAUTHENTICATED in the `CheckResponse`; `--http` requests through Envoy expect HTTP 200
//! or 401. Tokens are EdDSA tokens of the test issuer (tests/fixtures/policy.yaml), members of
//! tenant `acme`. Runs on one thread so that pinning it to one CPU (`taskset -c 0`) holds.

#[path = "common.rs"]
mod common;

use common::mint;
use hdrhistogram::Histogram;
use portcullis::server::proto::envoy::service::auth::v3::CheckRequest;
use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

struct Args {
    target: String,
    http: bool,
    path: String,
    rate: u64,
    closed: usize,
    duration: u64,
    mix: [u64; 3],
    unique: usize,
    connections: usize,
}

const USAGE: &str = "usage: load [--target ADDR] [--http] [--path P] [--rate N | --closed N] [--duration SECS] \
                     [--mix C:U:D] [--unique N] [--connections N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: "127.0.0.1:9191".into(),
        http: false,
        path: "/api/items".into(),
        rate: 1000,
        closed: 0,
        duration: 10,
        mix: [70, 20, 10],
        unique: 10_000,
        connections: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => args.target = value()?,
            "--http" => args.http = true,
            "--path" => args.path = value()?,
            "--rate" => args.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--closed" => args.closed = value()?.parse().map_err(|e| format!("--closed: {e}"))?,
            "--duration" => args.duration = value()?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--unique" => args.unique = value()?.parse().map_err(|e| format!("--unique: {e}"))?,
            "--connections" => args.connections = value()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--mix" => {
                let parts: Vec<u64> = value()?.split(':').map(|p| p.parse().unwrap_or(0)).collect();
                let [c, u, d] = <[u64; 3]>::try_from(parts).map_err(|_| "--mix takes cached:unique:deny")?;
                args.mix = [c, u, d];
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if args.rate == 0 || args.mix.iter().sum::<u64>() == 0 || args.unique == 0 || args.connections == 0 {
        return Err("rate, mix, unique and connections must be positive".into());
    }
    Ok(args)
}

#[derive(Clone, Copy)]
enum Kind {
    Cached,
    Unique(usize),
    Deny,
}

impl Kind {
    fn of(n: u64, mix: [u64; 3], unique: usize) -> Self {
        let slot = n % mix.iter().sum::<u64>();
        if slot < mix[0] {
            Kind::Cached
        } else if slot < mix[0] + mix[1] {
            Kind::Unique(1 + (n as usize) % unique)
        } else {
            Kind::Deny
        }
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    expected: AtomicU64,
    unexpected: AtomicU64,
    errors: AtomicU64,
}

/// Where requests go: Portcullis (or the floor) directly, or Envoy over HTTP/1.1.
#[derive(Clone)]
enum Transport {
    Grpc { clients: Vec<AuthorizationClient<Channel>>, requests: Arc<Vec<CheckRequest>>, deny: Arc<CheckRequest> },
    Http { client: reqwest::Client, url: Arc<str>, bearers: Arc<Vec<String>> },
}

/// What came back: the allow/deny verdict, or `None` for a transport or RPC error.
enum Answer {
    Allowed,
    Unauthenticated,
    Other(String),
}

impl Transport {
    async fn connect(args: &Args, tokens: &[String]) -> Result<Self, String> {
        let bearers: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
        if args.http {
            // reqwest is built without a default TLS provider; it wants one even for plain HTTP.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let client = reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(4096)
                .build()
                .map_err(|e| e.to_string())?;
            let url = format!("http://{}{}", args.target, args.path).into();
            return Ok(Transport::Http { client, url, bearers: Arc::new(bearers) });
        }
        let mut clients = Vec::new();
        for _ in 0..args.connections {
            let client =
                AuthorizationClient::connect(format!("http://{}", args.target)).await.map_err(|e| e.to_string())?;
            clients.push(client);
        }
        let request = |bearer: Option<&str>| common::request(&args.path, bearer);
        let requests = bearers.iter().map(|b| request(Some(b))).collect();
        Ok(Transport::Grpc { clients, requests: Arc::new(requests), deny: Arc::new(request(None)) })
    }

    async fn send(&self, n: u64, kind: Kind) -> Answer {
        match self {
            Transport::Grpc { clients, requests, deny } => {
                let request = match kind {
                    Kind::Cached => requests[0].clone(),
                    Kind::Unique(i) => requests[i].clone(),
                    Kind::Deny => (**deny).clone(),
                };
                let mut client = clients[(n as usize) % clients.len()].clone();
                match client.check(request).await.map(|r| r.into_inner().status.map(|s| s.code)) {
                    Ok(Some(0)) => Answer::Allowed,
                    Ok(Some(16)) => Answer::Unauthenticated,
                    Ok(other) => Answer::Other(format!("gRPC status in CheckResponse {other:?}")),
                    Err(e) => Answer::Other(format!("RPC error {e}")),
                }
            }
            Transport::Http { client, url, bearers } => {
                let mut request = client.get(&**url);
                match kind {
                    Kind::Cached => request = request.header("authorization", &bearers[0]),
                    Kind::Unique(i) => request = request.header("authorization", &bearers[i]),
                    Kind::Deny => {}
                }
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // Read the body so the connection goes back to the pool.
                        let _ = response.bytes().await;
                        match status {
                            200 => Answer::Allowed,
                            401 => Answer::Unauthenticated,
                            other => Answer::Other(format!("HTTP {other}")),
                        }
                    }
                    Err(e) => Answer::Other(format!("HTTP error {e}")),
                }
            }
        }
    }
}

struct Run {
    transport: Transport,
    histogram: Mutex<Histogram<u64>>,
    counts: Counts,
    first_error: Mutex<Option<String>>,
}

impl Run {
    async fn one(&self, n: u64, kind: Kind, since: Instant) {
        self.counts.sent.fetch_add(1, Ordering::Relaxed);
        let answer = self.transport.send(n, kind).await;
        let latency = since.elapsed().as_micros() as u64;
        if let Ok(mut h) = self.histogram.lock() {
            let _ = h.record(latency.max(1));
        }
        let counter = match (answer, kind) {
            (Answer::Allowed, Kind::Cached | Kind::Unique(_)) | (Answer::Unauthenticated, Kind::Deny) => {
                &self.counts.expected
            }
            (Answer::Allowed | Answer::Unauthenticated, _) => &self.counts.unexpected,
            (Answer::Other(what), _) => {
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert(what);
                }
                &self.counts.errors
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits for `intended` to within microseconds: the timer wheel's 1 ms ticks would release
/// requests in bursts and charge the server for the generator's lateness. Sleeps until shortly
/// before, then yields (answers keep being read) until the instant comes; the generator is
/// meant to have a CPU of its own.
async fn pace_until(intended: Instant) {
    const TIMER_SLACK: Duration = Duration::from_millis(2);
    if let Some(early) = intended.checked_sub(TIMER_SLACK)
        && early > Instant::now()
    {
        tokio::time::sleep_until(early.into()).await;
    }
    while Instant::now() < intended {
        tokio::task::yield_now().await;
    }
}

/// Sends at the intended rate; latency counts from each request's intended send time.
async fn open_loop(run: Arc<Run>, args: &Args) -> Instant {
    let interval = Duration::from_nanos(1_000_000_000 / args.rate);
    let total = args.rate * args.duration;
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let intended = start + interval * n as u32;
        pace_until(intended).await;
        let kind = Kind::of(n, args.mix, args.unique);
        let run = run.clone();
        tasks.spawn(async move { run.one(n, kind, intended).await });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    start
}

/// Keeps `args.closed` requests in flight until the duration is over.
async fn closed_loop(run: Arc<Run>, args: &Args) -> Instant {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.closed {
        let (run, next, mix, unique) = (run.clone(), next.clone(), args.mix, args.unique);
        workers.spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                run.one(n, Kind::of(n, mix, unique), Instant::now()).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    start
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let started_minting = Instant::now();
    let tokens = mint(args.unique + 1)?;
    eprintln!("minted {} tokens in {:?}", tokens.len(), started_minting.elapsed());
    let run = Arc::new(Run {
        transport: Transport::connect(&args, &tokens).await?,
        histogram: Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
        counts: Counts::default(),
        first_error: Mutex::new(None),
    });
    let started =
        if args.closed > 0 { closed_loop(run.clone(), &args).await } else { open_loop(run.clone(), &args).await };
    let elapsed = started.elapsed();
    let counts = &run.counts;
    let h = run.histogram.lock().map_err(|_| "histogram lock poisoned")?;
    let sent = counts.sent.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "target": args.target, "http": args.http, "path": args.path,
        "mode": if args.closed > 0 { format!("closed {}", args.closed) } else { format!("open {}/s", args.rate) },
        "mix": args.mix, "unique": args.unique, "duration_s": args.duration,
        "sent": sent,
        "achieved_rate": sent as f64 / elapsed.as_secs_f64(),
        "expected": counts.expected.load(Ordering::Relaxed),
        "unexpected": counts.unexpected.load(Ordering::Relaxed),
        "rpc_errors": counts.errors.load(Ordering::Relaxed),
        "first_error": *run.first_error.lock().map_err(|_| "error lock poisoned")?,
        "latency_us": { "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9), "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max() },
    });
    println!("{report}");
    if counts.unexpected.load(Ordering::Relaxed) > 0 || counts.errors.load(Ordering::Relaxed) > 0 {
        return Err("unexpected answers or RPC errors".into());
    }
    Ok(())
}
