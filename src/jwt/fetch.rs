//! The JWKS fetcher task: one per remote issuer. Fetches at start (falling back to
//! `fallback_file`), refreshes periodically, refetches on demand for an unknown `kid` (at most
//! once per `refetch_interval`), keeps the last good keys through failures until `max_stale`.

use super::keys::{KeySet, keys_from_jwks, keys_from_remote_jwks};
use super::remote::{FETCH_TIMEOUT, MAX_JWKS_BYTES, RemoteJwks, RemoteSource, check_url, next_refresh, parse_max_age};
use super::store::KeyStore;
use crate::clock::Clock;
use std::sync::Arc;
use std::time::Duration;

pub const REFRESH_TOTAL: &str = "portcullis_jwks_refresh_total";
pub const KEYS_AGE_SECONDS: &str = "portcullis_jwks_keys_age_seconds";
/// The configured `refresh` of each remote issuer (alerts compare the keys' age with it).
pub const REFRESH_SECONDS: &str = "portcullis_jwks_refresh_seconds";
/// 1 while a remote issuer has usable keys, 0 while its tokens are refused.
pub const HAS_KEYS: &str = "portcullis_jwks_has_keys";

/// How often the task wakes to update the age gauge and enforce `max_stale`.
const TICK: Duration = Duration::from_secs(1);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Url(String),
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: response larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge { url: String },
    #[error("discovery document: {0}")]
    Discovery(String),
    #[error("JWKS rejected: {0}")]
    Keys(#[from] super::keys::KeyError),
    #[error("JWKS holds no usable signing key")]
    Empty,
}

/// One remote issuer to keep keys for.
#[derive(Debug, Clone)]
pub struct JwksJob {
    pub issuer: Arc<str>,
    pub store: Arc<KeyStore>,
    pub remote: RemoteJwks,
}

pub fn http_client(remote: &RemoteJwks) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        // A redirect could downgrade to http or leave the IdP; JWKS endpoints do not need one.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &remote.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("ca_file: {e}"))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// rustls needs one process-wide provider; aws-lc-rs is the one jsonwebtoken uses too.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

async fn get_limited(client: &reqwest::Client, url: &reqwest::Url) -> Result<(String, Option<Duration>), FetchError> {
    let http = |source| FetchError::Http { url: url.to_string(), source };
    let mut response = client.get(url.clone()).send().await.map_err(http)?;
    if !response.status().is_success() {
        return Err(FetchError::Status { url: url.to_string(), status: response.status().as_u16() });
    }
    if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
        return Err(FetchError::TooLarge { url: url.to_string() });
    }
    let max_age =
        response.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(parse_max_age);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge { url: url.to_string() });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((String::from_utf8_lossy(&body).into_owned(), max_age))
}

/// Resolves the JWKS URL (through discovery if configured) and fetches the key set.
pub async fn fetch_keys(
    client: &reqwest::Client,
    issuer: &str,
    remote: &RemoteJwks,
) -> Result<(KeySet, Arc<String>, Option<Duration>), FetchError> {
    let jwks_url = match &remote.source {
        RemoteSource::Url(url) => check_url(url, remote.insecure_http).map_err(FetchError::Url)?,
        RemoteSource::Discovery(base) => {
            let doc_url = format!("{}/.well-known/openid-configuration", base.trim_end_matches('/'));
            let doc_url = check_url(&doc_url, remote.insecure_http).map_err(FetchError::Url)?;
            let (text, _) = get_limited(client, &doc_url).await?;
            let doc: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| FetchError::Discovery("not JSON".into()))?;
            let found = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or_default();
            if found != issuer {
                return Err(FetchError::Discovery(format!("issuer \"{found}\" is not \"{issuer}\"")));
            }
            let jwks_uri = doc
                .get("jwks_uri")
                .and_then(|v| v.as_str())
                .ok_or_else(|| FetchError::Discovery("no jwks_uri".into()))?;
            check_url(jwks_uri, remote.insecure_http).map_err(FetchError::Url)?
        }
    };
    let (text, max_age) = get_limited(client, &jwks_url).await?;
    let (keys, skipped) = keys_from_remote_jwks(&text)?;
    for why in skipped {
        tracing::warn!(issuer, %why, "JWKS key skipped");
    }
    if keys.keys.is_empty() {
        return Err(FetchError::Empty);
    }
    Ok((keys, compact(&text), max_age))
}

/// The document as one line of compact JSON (it parsed as JSON already).
fn compact(text: &str) -> Arc<String> {
    Arc::new(
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_string(&v).ok())
            .unwrap_or_default(),
    )
}

fn load_fallback(job: &JwksJob, now: i64) -> bool {
    let Some(path) = &job.remote.fallback_file else {
        return false;
    };
    match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| keys_from_jwks(&t).map(|keys| (keys, compact(&t))).map_err(|e| e.to_string()))
    {
        Ok((keys, source)) => {
            tracing::warn!(issuer = %job.issuer, file = %path.display(), "identity provider unreachable; using fallback_file keys");
            job.store.replace_from(keys, source, now);
            true
        }
        Err(e) => {
            tracing::error!(issuer = %job.issuer, file = %path.display(), error = %e, "fallback_file unusable");
            false
        }
    }
}

/// Runs until the task is aborted. Schedules by the injected clock (checked every [`TICK`] and
/// whenever a refetch is asked for), so a test moves the clock instead of waiting out a refresh.
pub async fn run(job: JwksJob, client: reqwest::Client, clock: Arc<dyn Clock>) {
    let issuer_label = job.issuer.to_string();
    let refetch_ms = millis(job.remote.refetch_interval);
    let mut last_attempt: Option<i64> = None;
    let mut failures: u32 = 0;
    let mut next = clock.now_millis();
    let mut asked = false;
    loop {
        let now_ms = clock.now_millis();
        let cooled = last_attempt.is_none_or(|t| now_ms.saturating_sub(t) >= refetch_ms);
        if now_ms >= next || (asked && cooled) {
            last_attempt = Some(now_ms);
            job.store.set_refetch_not_before(now_ms + refetch_ms);
            let now = clock.now().0;
            match fetch_keys(&client, &job.issuer, &job.remote).await {
                Ok((keys, source, max_age)) => {
                    failures = 0;
                    job.store.replace_from(keys, source, clock.now().0);
                    metrics::counter!(REFRESH_TOTAL, "issuer" => issuer_label.clone(), "result" => "ok").increment(1);
                    next = clock.now_millis() + millis(next_refresh(job.remote.refresh, max_age));
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!(REFRESH_TOTAL, "issuer" => issuer_label.clone(), "result" => "error")
                        .increment(1);
                    let error = crate::telemetry::error_chain(&e);
                    if job.store.has_keys() {
                        tracing::warn!(issuer = %job.issuer, %error, "JWKS fetch failed; keeping the last good keys");
                    } else {
                        tracing::warn!(issuer = %job.issuer, %error, "JWKS fetch failed; no keys for this issuer yet: its tokens answer 503 keys_unavailable");
                    }
                    if !job.store.has_keys() && job.store.confirmed_at() == 0 {
                        load_fallback(&job, now);
                    }
                    let backoff = RETRY_MIN.saturating_mul(1 << failures.min(6)).min(RETRY_MAX);
                    next = clock.now_millis() + millis(backoff.min(job.remote.refresh));
                }
            }
        }
        metrics::gauge!(REFRESH_SECONDS, "issuer" => issuer_label.clone()).set(job.remote.refresh.as_secs_f64());
        metrics::gauge!(HAS_KEYS, "issuer" => issuer_label.clone()).set(f64::from(u8::from(job.store.has_keys())));
        let confirmed = job.store.confirmed_at();
        if confirmed > 0 {
            let age = clock.now().0.saturating_sub(confirmed);
            metrics::gauge!(KEYS_AGE_SECONDS, "issuer" => issuer_label.clone()).set(age as f64);
            if age > job.remote.max_stale.as_secs() as i64 && job.store.has_keys() {
                tracing::error!(issuer = %job.issuer, age_secs = age, "keys older than max_stale; refusing this issuer's tokens");
                job.store.expire();
            }
        }
        // Never longer than TICK, so a moved (test) clock is noticed within it.
        let until_due = u64::try_from(next.saturating_sub(clock.now_millis())).unwrap_or(0);
        let wait = Duration::from_millis(until_due).min(TICK);
        asked = tokio::select! {
            _ = job.store.refetch_requested() => true,
            _ = tokio::time::sleep(wait) => false,
        };
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
