//! Open-loop load generator for Portcullis' `Check` (DESIGN "How we test and measure"): requests
//! leave at a fixed intended rate whatever the server does, latency is measured from the
//! intended send time (no coordinated omission) into an HdrHistogram, and every answer is
//! checked against the decision it must have.
//!
//!   cargo run --release --example load -- --target 127.0.0.1:9191 --rate 2000 --duration 60 \
//!       --mix 70:20:10 --unique 50000
//!
//! Mix: cached (one token again and again), unique (pre-minted tokens, each used once per cycle:
//! cache misses until the cache holds them), deny (no credential: 401). Tokens are EdDSA tokens
//! of the test issuer (tests/fixtures/policy.yaml).

use hdrhistogram::Histogram;
use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::server::request::{HeaderEncoding, check_request};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

struct Args {
    target: String,
    rate: u64,
    duration: u64,
    mix: [u64; 3],
    unique: usize,
    connections: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: "127.0.0.1:9191".into(),
        rate: 1000,
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
            "--rate" => args.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--duration" => args.duration = value()?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--unique" => args.unique = value()?.parse().map_err(|e| format!("--unique: {e}"))?,
            "--connections" => args.connections = value()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--mix" => {
                let parts: Vec<u64> = value()?.split(':').map(|p| p.parse().unwrap_or(0)).collect();
                let [c, u, d] = <[u64; 3]>::try_from(parts).map_err(|_| "--mix takes cached:unique:deny")?;
                args.mix = [c, u, d];
            }
            "--help" | "-h" => return Err(
                "usage: load [--target ADDR] [--rate N] [--duration SECS] [--mix C:U:D] [--unique N] [--connections N]"
                    .into(),
            ),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.rate == 0 || args.mix.iter().sum::<u64>() == 0 || args.unique == 0 || args.connections == 0 {
        return Err("rate, mix, unique and connections must be positive".into());
    }
    Ok(args)
}

fn mint(count: usize) -> Result<Vec<String>, String> {
    let pem =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/ed.pem")).map_err(|e| e.to_string())?;
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).map_err(|e| e.to_string())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("ed-1".into());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64;
    (0..count)
        .map(|i| {
            let claims = serde_json::json!({
                "iss": "https://issuer.test/", "sub": format!("load-{i}"), "aud": "api", "iat": now - 5,
                "exp": now + 6 * 3600, "jti": format!("load-{i}"), "token_use": "access", "scope": "read",
            });
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Kind {
    Cached,
    Unique(usize),
    Deny,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    expected: AtomicU64,
    unexpected: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let started_minting = Instant::now();
    let tokens = Arc::new(mint(args.unique + 1)?);
    eprintln!("minted {} tokens in {:?}", tokens.len(), started_minting.elapsed());
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let client =
            AuthorizationClient::connect(format!("http://{}", args.target)).await.map_err(|e| e.to_string())?;
        clients.push(client);
    }
    let histogram =
        Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?));
    let counts = Arc::new(Counts::default());
    let interval = Duration::from_nanos(1_000_000_000 / args.rate);
    let total = args.rate * args.duration;
    let start = Instant::now() + Duration::from_millis(100);
    let [cached, unique, _] = args.mix;
    let cycle = args.mix.iter().sum::<u64>();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let intended = start + interval * n as u32;
        tokio::time::sleep_until(intended.into()).await;
        let slot = n % cycle;
        let kind = if slot < cached {
            Kind::Cached
        } else if slot < cached + unique {
            Kind::Unique(1 + (n as usize) % args.unique)
        } else {
            Kind::Deny
        };
        let mut client = clients[(n as usize) % clients.len()].clone();
        let (tokens, histogram, counts) = (tokens.clone(), histogram.clone(), counts.clone());
        tasks.spawn(async move {
            let bearer = match kind {
                Kind::Cached => Some(format!("Bearer {}", tokens[0])),
                Kind::Unique(i) => Some(format!("Bearer {}", tokens[i])),
                Kind::Deny => None,
            };
            let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
            counts.sent.fetch_add(1, Ordering::Relaxed);
            let answer = client.check(check_request("GET", "/api/items", &headers, HeaderEncoding::Map)).await;
            let latency = intended.elapsed().as_micros() as u64;
            let _ = histogram.lock().await.record(latency.max(1));
            let code = match answer {
                Ok(resp) => resp.into_inner().status.map(|s| s.code),
                Err(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let want = if matches!(kind, Kind::Deny) { Some(16) } else { Some(0) };
            let counter = if code == want { &counts.expected } else { &counts.unexpected };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let h = histogram.lock().await;
    let report = serde_json::json!({
        "target": args.target, "intended_rate": args.rate, "duration_s": args.duration,
        "sent": counts.sent.load(Ordering::Relaxed),
        "achieved_rate": counts.sent.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        "expected": counts.expected.load(Ordering::Relaxed),
        "unexpected": counts.unexpected.load(Ordering::Relaxed),
        "rpc_errors": counts.errors.load(Ordering::Relaxed),
        "latency_us": { "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9), "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max() },
    });
    println!("{report}");
    if counts.unexpected.load(Ordering::Relaxed) > 0 || counts.errors.load(Ordering::Relaxed) > 0 {
        return Err("unexpected answers or RPC errors".into());
    }
    Ok(())
}
