//! Connections to Redis: one URL, the master a set of sentinels names (asked on every
//! connect, so a failover is followed at the next reconnect), or a Redis Cluster (slots learnt
//! from the nodes; MOVED, ASK and failovers followed by the client); TLS with a CA and a client
//! certificate.

use super::{RedisSettings, RedisTarget};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use std::time::Duration;

pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// How connections to Redis are made: one URL, whatever master the sentinels name now (asked
/// on every connect, so a failover is followed at the next reconnect), or a cluster.
pub(super) enum Connector {
    Direct(Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

/// One connection to whichever Redis the settings name (commands are routed by key in a
/// cluster, so every multi-key command and script names keys of one hash slot).
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
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
            RedisTarget::Cluster { nodes } => {
                let scheme = if certificates.is_some() { "rediss" } else { "redis" };
                let urls: Vec<String> = nodes.iter().map(|node| format!("{scheme}://{node}")).collect();
                // Few retries: a failover is followed by refreshing the slots, and a request
                // waits at most its caller's budget anyway.
                let mut builder = redis::cluster::ClusterClientBuilder::new(urls).retries(3);
                if let Some(user) = &settings.username {
                    builder = builder.username(user);
                }
                if let Some(pw) = &settings.password {
                    builder = builder.password(pw.expose());
                }
                if let Some(certs) = certificates {
                    builder = builder.tls(redis::TlsMode::Secure).certs(certs);
                }
                builder.build().map(Self::Cluster).map_err(|e| format!("state.cluster: {e}"))
            }
        }
    }

    /// A new connection whose replies may take up to `response_timeout` (longer than
    /// [`TIMEOUT`] for a blocking read).
    pub(super) async fn connect(&self, response_timeout: Duration) -> redis::RedisResult<Conn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        match self {
            Self::Direct(client) => {
                client.get_multiplexed_async_connection_with_config(&config).await.map(Conn::Single)
            }
            Self::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                client.get_multiplexed_async_connection_with_config(&config).await.map(Conn::Single)
            }
            Self::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(TIMEOUT)
                    .set_response_timeout(response_timeout);
                client.get_async_connection_with_config(config).await.map(Conn::Cluster)
            }
        }
    }

    /// Keys this deployment shares as one unit (the change streams, the state hashes, the
    /// migration marker) start with this: in a cluster the prefix is a hash tag, so they are
    /// in one slot and a script may touch several; per-client keys (rate limits, failures,
    /// proofs) use the bare prefix and spread over the slots.
    pub(super) fn shared_prefix(&self, prefix: &str) -> String {
        match self {
            Self::Cluster(_) => format!("{{{prefix}}}"),
            Self::Direct(_) | Self::Sentinel(_) => prefix.to_string(),
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
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
