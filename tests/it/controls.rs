//! Issue 9 through a real Envoy: API keys (revocation, run-time keys, audit, leaks) and the
//! session idle timeout on two replicas sharing Redis. (API-key, CSRF, step-up and peer
//! principal cases without state run in the shared corpus of tests/it/envoy.rs.)

use crate::support::envoy::{Envoy, Upstream, envoy_in_front};
use crate::support::{Portcullis, RedisServer, corpus, eventually_blocking, is, leaked_windows, scratch};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// GET `path` through Envoy with `headers`: (status, reason, upstream's x-user-id).
fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let (status, body) = crate::support::envoy::get(envoy, path, headers);
    let reason = body["reason"].as_str().unwrap_or_default().to_string();
    let user = body["headers"]["x-user-id"].as_str().unwrap_or_default().to_string();
    (status, reason, user)
}

fn hex_sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn api_keys_through_envoy() {
    let dir = scratch("api-keys");
    let upstream = Upstream::start();
    let mut portcullis = Portcullis::start(&dir, "", &[("RUST_LOG", "trace")]);
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let key = |k: &str| get(&envoy, "/api/items", &[("x-api-key", k)]);

    assert_eq!(key(corpus::API_KEY_CI), (200, String::new(), "svc-ci".into()));
    assert_eq!(key(corpus::API_KEY_DOOMED).0, 200);
    let wrong = format!("{}x", &corpus::API_KEY_CI[..corpus::API_KEY_CI.len() - 1]);
    assert_eq!(key(&wrong).0, 401, "one character off");
    assert_eq!(key(corpus::API_KEY_EXPIRED).1, "api_key_invalid");

    // Revocation by name: refused on the very next request; an unknown name is a 404.
    let revoke =
        |name: &str| portcullis.admin_request("POST", "/v1/api-keys/revocations", &format!(r#"{{"name":"{name}"}}"#));
    assert_eq!(revoke("doomed-bot").expect("admin").status, 201);
    assert_eq!(key(corpus::API_KEY_DOOMED).1, "api_key_invalid", "revoked key");
    assert_eq!(revoke("no-such-bot").expect("admin").status, 404);
    let listed = portcullis.admin_request("GET", "/v1/api-keys/revocations", "").expect("admin");
    assert!(listed.body.contains("doomed-bot"), "{}", listed.body);

    // A key added at run time (digest only) works at once and can be revoked too.
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["api-key", "new", "--name", "runtime-bot", "--scope", "read"])
        .output()
        .expect("api-key new");
    let out = String::from_utf8_lossy(&minted.stdout).to_string();
    let runtime_key = out.lines().next().expect("key line").to_string();
    let entry = out.lines().find_map(|l| l.trim().strip_prefix("- ")).expect("entry line");
    let put = portcullis.admin_request("PUT", "/v1/api-keys", entry).expect("admin");
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(key(&runtime_key), (200, String::new(), "runtime-bot".into()));
    let clash = entry.replace("runtime-bot", "ci-bot");
    assert_eq!(portcullis.admin_request("PUT", "/v1/api-keys", &clash).expect("admin").status, 409);
    assert_eq!(revoke("runtime-bot").expect("admin").status, 201);
    assert_eq!(key(&runtime_key).0, 401);

    // The audit names the key, never its value; no output holds any key.
    portcullis.proc.stop();
    let output = portcullis.proc.output();
    let audit: Vec<Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("api_key").is_some())
        .collect();
    assert!(audit.iter().any(|e| e["api_key"] == "ci-bot" && e["decision"] == "allow" && e["subject"] == "svc-ci"));
    assert!(audit.iter().any(|e| e["api_key"] == "doomed-bot" && e["reason"] == "api_key_invalid"));
    let secrets: Vec<String> =
        [corpus::API_KEY_CI, corpus::API_KEY_DOOMED, corpus::API_KEY_EXPIRED, &wrong, &runtime_key]
            .iter()
            .map(|k| k.to_string())
            .collect();
    for (name, text) in [("portcullis", output), ("envoy", envoy.proc.output())] {
        let hits = leaked_windows(&secrets, &text);
        assert!(hits.is_empty(), "{name} output contains API key material: {hits:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn session_idle_timeout_on_two_replicas_sharing_redis() {
    let dir = scratch("sessions");
    let redis = RedisServer::start(&dir);
    let upstream = Upstream::start();
    // timeout 4 s, granularity 1 s: idle > 5 s is refused, activity within 3 s passes.
    let extra = format!(
        "state: {{ backend: redis, url: \"{}\", max_staleness: 30s }}\nsessions: {{ idle_timeout: 4s, granularity: 1s }}",
        redis.url()
    );
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).expect("dir");
    std::fs::create_dir_all(&dir_b).expect("dir");
    let a = Portcullis::start(&dir_a, &extra, &[]);
    let b = Portcullis::start(&dir_b, &extra, &[]);
    let (envoy_a, envoy_b) = (envoy_in_front(&dir_a, &a, &upstream), envoy_in_front(&dir_b, &b, &upstream));

    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let session_token = |sid: &str| {
        let mut c = corpus::claims(corpus::ISSUER, &format!("user-{sid}"), now);
        c["iat"] = serde_json::json!(now);
        c["sid"] = serde_json::json!(sid);
        format!("Bearer {}", corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &c))
    };
    let (active, idle) = (session_token("s-active"), session_token("s-idle"));
    let call = |envoy: &Envoy, token: &str| get(envoy, "/api/items", &[("authorization", token)]);
    assert_eq!(call(&envoy_a, &idle).0, 200);

    // Active: used every ~2 s (< timeout - granularity), alternating replicas, for 8 s — twice
    // the timeout, so it only passes because each replica sees the other's last-seen.
    let started = Instant::now();
    let mut uses = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let envoy = if uses % 2 == 0 { &envoy_a } else { &envoy_b };
        let (status, reason, _) = call(envoy, &active);
        assert_eq!(status, 200, "active session refused after {:?} ({reason})", started.elapsed());
        uses += 1;
        std::thread::sleep(Duration::from_millis(1900));
    }
    assert!(uses >= 4, "only {uses} uses");

    // Idle for 8 s (> timeout + granularity): refused on both replicas.
    for envoy in [&envoy_a, &envoy_b] {
        let (status, reason, _) = call(envoy, &idle);
        assert_eq!((status, reason.as_str()), (401, "session_idle"));
    }
    // The active session is still fine on both.
    assert_eq!(call(&envoy_b, &active).0, 200);
    assert_eq!(call(&envoy_a, &active).0, 200);

    // An API key revoked on A is refused by B (the revocation travels through Redis).
    let key = |envoy: &Envoy| get(envoy, "/api/items", &[("x-api-key", corpus::API_KEY_DOOMED)]).0;
    assert_eq!((key(&envoy_a), key(&envoy_b)), (200, 200));
    let revoked = a.admin_request("POST", "/v1/api-keys/revocations", r#"{"name":"doomed-bot"}"#).expect("admin");
    assert_eq!(revoked.status, 201, "{}", revoked.body);
    eventually_blocking(Duration::from_secs(10), "B never saw the API key revocation", || is(key(&envoy_b), 401));
    assert_eq!(key(&envoy_a), 401);

    // A run-time key added on B (digest only) is accepted by A.
    let fresh = format!("pk_{}", "Q".repeat(43));
    let entry = serde_json::json!({
        "name": "fleet-bot",
        "sha256": hex_sha256(&fresh),
        "scopes": ["read"],
    });
    let put = b.admin_request("PUT", "/v1/api-keys", &entry.to_string()).expect("admin");
    assert_eq!(put.status, 201, "{}", put.body);
    let accepted = || is(get(&envoy_a, "/api/items", &[("x-api-key", &fresh)]).0, 200);
    eventually_blocking(Duration::from_secs(10), "A never saw the run-time key", accepted);
    let _ = std::fs::remove_dir_all(&dir);
}
