//! Connections to Redis: one URL, or the master a set of sentinels names (asked on every
//! connect, so a failover is followed at the next reconnect); TLS with a CA and a client
//! certificate.

use super::{RedisSettings, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use std::time::Duration;

pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT))
}

/// How connections to the Redis master are made: one URL, or whatever master the sentinels
/// name now (asked on every connect, so a failover is followed at the next reconnect).
pub(super) enum Connector {
    Direct(Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Connector {
    pub(super) fn new(settings: &RedisSettings) -> Result<Self, String> {
        crate::jwt::fetch::install_crypto_provider();
        let certificates = settings.tls.as_ref().map(|tls| redis::TlsCertificates {
            client_tls: match (&tls.cert_pem, &tls.key_pem) {
                (Some(cert), Some(key)) => {
                    Some(redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() })
                }
                _ => None,
            },
            root_cert: tls.ca_pem.clone(),
        });
        match &settings.target {
            RedisTarget::Url(url) => {
                let mut info = url.as_str().into_connection_info().map_err(|e| format!("state.url: {e}"))?;
                let mut redis = info.redis_settings().clone();
                if let Some(user) = &settings.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &settings.password {
                    redis = redis.set_password(password.expose());
                }
                info = info.set_redis_settings(redis);
                let client = match certificates {
                    Some(certs) => Client::build_with_tls(info, certs),
                    None => Client::open(info),
                };
                client.map(Self::Direct).map_err(|e| format!("state.url: {e}"))
            }
            RedisTarget::Sentinel { master, nodes, username, password } => {
                use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
                let addrs = nodes.iter().filter_map(|node| {
                    let (host, port) = node.rsplit_once(':')?;
                    Some(redis::ConnectionAddr::Tcp(host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
                });
                let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
                    .map_err(|e| format!("state.sentinel: {e}"))?;
                if let Some(user) = &settings.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(pw) = &settings.password {
                    builder = builder.set_client_to_redis_password(pw.expose());
                }
                if let Some(user) = username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(pw) = password {
                    builder = builder.set_client_to_sentinel_password(pw.expose());
                }
                if let Some(certs) = certificates {
                    builder = builder
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs);
                }
                let client = builder.build().map_err(|e| format!("state.sentinel: {e}"))?;
                Ok(Self::Sentinel(tokio::sync::Mutex::new(client)))
            }
        }
    }

    pub(super) async fn connect(&self, config: &AsyncConnectionConfig) -> redis::RedisResult<MultiplexedConnection> {
        match self {
            Self::Direct(client) => client.get_multiplexed_async_connection_with_config(config).await,
            Self::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                client.get_multiplexed_async_connection_with_config(config).await
            }
        }
    }
}

/// The value of `name` in an `XINFO STREAM` reply (a flat list or a map, by protocol version).
pub(super) fn info_field(info: &redis::Value, name: &str) -> Option<String> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    match info {
        redis::Value::Array(items) => {
            items.chunks(2).find(|kv| text(&kv[0]).as_deref() == Some(name)).and_then(|kv| kv.get(1)).and_then(text)
        }
        redis::Value::Map(pairs) => {
            pairs.iter().find(|(k, _)| text(k).as_deref() == Some(name)).and_then(|(_, v)| text(v))
        }
        _ => None,
    }
}
