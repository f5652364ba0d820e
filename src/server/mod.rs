//! The transport edge: gRPC (Check, health, reflection), the health HTTP listener, JWKS
//! fetchers, hot reload and the drain on shutdown.
//!
//! Architecture Invariant: protocol types are converted only in [`convert`]; every deny goes
//! through [`convert::check_response`].

mod admin;
mod admin_api_keys;
mod authz;
mod budget;
mod buffered;
mod callers;
pub mod convert;
mod fetchers;
mod health_http;
mod http;
mod io;
pub mod proto;
mod reload;
mod stream;

pub use authz::{AppState, AuthzService, KEY_REFETCH_WAIT, StateParts};
pub use reload::RELOAD_TOTAL;

use crate::clock::{Clock, SystemClock};
use crate::config::{ListenAddr, Settings};
use crate::state::fleet::{FleetState, StateStore};
use crate::state::journal::{Journal, MemoryPersist};
use crate::state::local::LocalState;
use crate::state::redis_store::RedisState;
use crate::state::{StateBackend, StateHealth};
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics as names;
use fetchers::Fetchers;
use health_http::{HealthState, Readiness, ReadyReport};
use proto::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, UnixListener};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("health server failed: {0}")]
    Health(std::io::Error),
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    #[error("JWKS client: {0}")]
    Jwks(String),
    #[error("state backend: {0}")]
    State(String),
    #[error("cannot open the audit log: {0}")]
    Audit(std::io::Error),
    #[error("listen.callers: {0}")]
    Callers(String),
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// How the server runs, beyond the policy.
#[derive(Clone)]
pub struct ServeOptions {
    pub clock: Arc<dyn Clock>,
    /// Watch this policy file (and the files it names) and reload on change or SIGHUP.
    pub reload_from: Option<PathBuf>,
    /// Continue the caller's `traceparent` in the Check span (when traces are exported).
    pub trace_context: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock), reload_from: None, trace_context: false }
    }
}

enum GrpcListener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A server with its ports bound and not yet serving.
pub struct Server {
    grpc: GrpcListener,
    health: TcpListener,
    admin: Option<TcpListener>,
    state: Arc<AppState>,
    serving: Arc<AtomicBool>,
    fetchers: Arc<Mutex<Fetchers>>,
    /// Follows the Redis change stream into local state (Redis backend only).
    redis_follower: Option<Arc<RedisState>>,
    /// `listen.callers`, when set: who may connect to the TCP gRPC listener.
    gate: Option<Arc<callers::CallerGate>>,
    /// `listen.state_stream`, bound, and the replica state it streams.
    state_stream: Option<UnixListener>,
    local: Arc<crate::state::local::LocalState>,
    settings: Settings,
    options: ServeOptions,
}

fn bind_error(addr: impl ToString) -> impl FnOnce(std::io::Error) -> ServeError {
    let addr = addr.to_string();
    move |source| ServeError::Bind { addr, source }
}

impl Server {
    pub async fn bind(settings: &Settings) -> Result<Self, ServeError> {
        Self::bind_with(settings, ServeOptions::default()).await
    }

    pub async fn bind_with(settings: &Settings, options: ServeOptions) -> Result<Self, ServeError> {
        let grpc = match &settings.grpc {
            ListenAddr::Tcp(addr) => GrpcListener::Tcp(bind_tcp(*addr).await.map_err(bind_error(addr))?),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path);
                let listener = bind_unix(path, settings.listen.socket).map_err(bind_error(settings.grpc.clone()))?;
                GrpcListener::Unix(listener, path.clone())
            }
        };
        let health = bind_tcp(settings.health).await.map_err(bind_error(settings.health))?;
        let state_stream = match &settings.listen.state_stream {
            Some(path) => {
                remove_stale_socket(path);
                let shown = format!("unix:{}", path.display());
                Some(bind_unix(path, settings.listen.socket).map_err(bind_error(shown))?)
            }
            None => None,
        };
        let admin = match &settings.admin {
            Some(admin) => Some(bind_tcp(admin.addr).await.map_err(bind_error(admin.addr))?),
            None => None,
        };
        // Both gRPC listeners go through the gate (per-peer shares, the admission deadline,
        // the global cap); `listen.callers` applies to TCP only.
        let callers = match &grpc {
            GrpcListener::Tcp(_) => settings.callers.clone(),
            GrpcListener::Unix(..) => crate::config::CallerPolicy::default(),
        };
        let gate = Some(Arc::new(
            callers::CallerGate::new(&callers, &settings.listen.limits, options.clock.clone())
                .map_err(ServeError::Callers)?,
        ));
        let mut settings = settings.clone();
        // Fresh snapshot so the fetchers can rewire key stores before anything shares it.
        settings.snapshot = Arc::new(crate::config::Snapshot {
            policy: settings.snapshot.policy.clone(),
            verifier: settings.snapshot.verifier.clone(),
            generation: settings.snapshot.generation,
            hash: settings.snapshot.hash.clone(),
            admin_token: settings.snapshot.admin_token.clone(),
            revocation_lifetimes: settings.snapshot.revocation_lifetimes.clone(),
            dpop: settings.snapshot.dpop.clone(),
            rule_metrics: settings.snapshot.rule_metrics,
        });
        let mut fetchers = Fetchers::default();
        fetchers.reconcile(&mut settings, &options.clock).map_err(ServeError::Jwks)?;
        let audit = AuditSink::open(&settings.audit).map_err(ServeError::Audit)?;
        if let Some(api_keys) = &settings.snapshot.policy.api_keys {
            crate::telemetry::redact::register_api_key_prefix(&api_keys.prefix);
        }
        let (redis_follower, state_health, store, local): (_, _, Arc<dyn StateStore>, _) = match &settings.state {
            StateBackend::Memory { dir } => {
                let local = Arc::new(LocalState::new());
                local.set_lifetimes(settings.snapshot.revocation_lifetimes.clone());
                let persist = match dir {
                    Some(dir) => {
                        let lifetimes = settings.snapshot.revocation_lifetimes.as_ref();
                        let journal = Journal::open(dir, local.clone(), options.clock.now().0, lifetimes)
                            .map_err(|e| ServeError::State(e.to_string()))?;
                        MemoryPersist::Journal(journal)
                    }
                    None => MemoryPersist::Ephemeral,
                };
                (None, None, Arc::new(FleetState::with(local.clone(), persist, options.clock.clone())), local)
            }
            StateBackend::Redis(redis) => {
                let health = Arc::new(StateHealth::new(redis.max_staleness, options.clock.now_millis()));
                let store =
                    Arc::new(RedisState::new(redis, health.clone(), options.clock.clone()).map_err(ServeError::State)?);
                store.local().set_lifetimes(settings.snapshot.revocation_lifetimes.clone());
                let local = store.local().clone();
                (Some(store.clone()), Some(health), store, local)
            }
        };
        let parts = StateParts {
            snapshot: settings.snapshot.clone(),
            clock: options.clock.clone(),
            max_inflight: settings.max_inflight_checks,
            audit,
            tracing: options.trace_context,
            cache: settings.cache,
            revocations: store.clone(),
            members: store.clone(),
            blocks: store.clone(),
            api_keys: store.clone(),
            sessions: store.clone(),
            store,
            nonces: crate::jwt::dpop::Nonces::new().map_err(ServeError::State)?,
            state_health,
            fleet: crate::state::ratelimit::FleetLimits::new(
                redis_follower.clone(),
                options.clock.clone(),
                settings.fallback_replicas,
            ),
        };
        let state = AppState::new(parts);
        metrics::gauge!(names::DEV_MODE).set(if settings.dev { 1.0 } else { 0.0 });
        Ok(Self {
            grpc,
            health,
            admin,
            state: Arc::new(state),
            serving: Arc::new(AtomicBool::new(false)),
            fetchers: Arc::new(Mutex::new(fetchers)),
            redis_follower,
            gate,
            state_stream,
            local,
            settings,
            options,
        })
    }

    pub fn grpc_addr(&self) -> ListenAddr {
        match &self.grpc {
            GrpcListener::Tcp(l) => {
                l.local_addr().map(ListenAddr::Tcp).unwrap_or(ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))))
            }
            GrpcListener::Unix(_, path) => ListenAddr::Unix(path.clone()),
        }
    }

    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then drains: not ready at once (health and gRPC
    /// health say so), still answering for `drain_delay`, then no new connections and at most
    /// `drain_timeout` for the checks in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let snapshot = self.state.snapshot.load();
        crate::telemetry::metrics::policy_info(None, &snapshot.hash, snapshot.generation);
        // NOT_SERVING until the readiness follower below says otherwise.
        set_grpc_health(&reporter, false).await;
        let limits = self.settings.listen.limits;
        let reflection = if self.settings.listen.reflection {
            Some(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1()?,
            )
        } else {
            None
        };
        let authz = AuthorizationServer::new(AuthzService::new(self.state.clone()))
            .max_decoding_message_size(limits.max_message_bytes);
        let router =
            grpc_builder(&limits).add_service(authz).add_service(health_service).add_optional_service(reflection);

        let reloader = self.options.reload_from.clone().map(|path| {
            tokio::spawn(
                reload::Reloader {
                    path,
                    state: self.state.clone(),
                    fetchers: self.fetchers.clone(),
                    clock: self.options.clock.clone(),
                    gate: self.gate.clone(),
                    started_with: self.settings.clone(),
                }
                .run(),
            )
        });

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let serving = self.serving.clone();
        let (drain_delay, drain_timeout) = (self.settings.drain_delay, self.settings.drain_timeout);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let drain_reporter = reporter.clone();
        tokio::spawn(async move {
            shutdown.await;
            serving.store(false, Ordering::Release);
            set_grpc_health(&drain_reporter, false).await;
            tracing::info!(delay = ?drain_delay, "draining: not ready; still answering checks");
            tokio::time::sleep(drain_delay).await;
            let _ = stop_tx.send(true);
            tokio::time::sleep(drain_timeout).await;
            let _ = drained_tx.send(());
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let grpc_addr = self.grpc_addr();
        let serving = self.serving.clone();
        let state = self.state.clone();
        let readiness: Readiness = Arc::new(move || state.ready_report(serving.load(Ordering::Acquire)));
        // gRPC health (which Envoy's health check reads, on TCP and UDS alike) follows /readyz:
        // a replica without its first state sync or required keys takes no traffic.
        let follow_ready = readiness.clone();
        // Listeners are bound: from here checks are answered (readiness adds keys and state).
        self.serving.store(true, Ordering::Release);
        self.log_startup(&grpc_addr);
        let health_follower = tokio::spawn(async move {
            let mut last = None;
            loop {
                let ready = follow_ready().ready;
                if last != Some(ready) {
                    set_grpc_health(&reporter, ready).await;
                    last = Some(ready);
                }
                tokio::time::sleep(READINESS_POLL).await;
            }
        });
        let health_state = HealthState { ready: readiness, metrics: names::install() };
        let health =
            http::serve(self.health, health_http::router(health_state), limits, "health", stopped(stop_rx.clone()));
        let health = tokio::spawn(async move { health.await.map_err(ServeError::Health) });

        let admin = match self.admin {
            Some(listener) => {
                let state = admin::AdminState { app: self.state.clone() };
                let server = http::serve(listener, admin::router(state), limits, "admin", stopped(stop_rx.clone()));
                Some(tokio::spawn(async move { server.await.map_err(ServeError::Admin) }))
            }
            _ => None,
        };
        if let Some(listener) = self.state_stream {
            tokio::spawn(stream::serve(listener, self.local.clone(), self.state.clone(), stop_rx.clone()));
        }
        let follower = self.redis_follower.clone().map(|store| tokio::spawn(store.follow()));
        if let Some(store) = self.redis_follower.clone() {
            tokio::spawn(async move { store.warm().await });
        }
        let purge_state = self.state.clone();
        let purger = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                purge_state.purge_expired();
            }
        });

        let grpc = async {
            match self.grpc {
                GrpcListener::Tcp(listener) => match self.gate.clone() {
                    Some(gate) => {
                        router.serve_with_incoming_shutdown(gate.incoming(listener), stopped(stop_rx.clone())).await
                    }
                    None => Ok(()),
                },
                GrpcListener::Unix(listener, path) => {
                    let result = match self.gate.clone() {
                        Some(gate) => {
                            let incoming = gate.incoming_unix(listener);
                            router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())).await
                        }
                        None => Ok(()),
                    };
                    remove_stale_socket(&path);
                    result
                }
            }
        };
        let grpc_result = tokio::select! {
            result = grpc => result,
            _ = drained_rx => {
                tracing::warn!("drain_timeout reached with checks still in flight; stopping");
                Ok(())
            }
        };
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        purger.abort();
        health_follower.abort();
        if let Some(follower) = follower {
            follower.abort();
        }
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if let Ok(mut fetchers) = self.fetchers.lock() {
            fetchers.stop();
        }
        grpc_result?;
        match health.await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Health(std::io::Error::other(join.to_string()))),
        }
    }
}

impl Server {
    /// One line that says what this process is: enough to tell from the log alone which build
    /// runs which policy where, and a loud warning when anyone can mint tokens.
    fn log_startup(&self, grpc: &ListenAddr) {
        let settings = &self.settings;
        let snapshot = self.state.snapshot.load();
        let issuers: Vec<String> = snapshot
            .verifier
            .issuers
            .iter()
            .map(|i| {
                let source = settings.jwks_jobs.iter().find(|j| j.issuer == i.issuer).map_or_else(
                    || "static keys".to_string(),
                    |j| match &j.remote.source {
                        crate::jwt::remote::RemoteSource::Url(url) => format!("jwks {url}"),
                        crate::jwt::remote::RemoteSource::Discovery(url) => format!("discovery {url}"),
                    },
                );
                format!("{} ({source}{})", i.issuer, if i.required { "" } else { ", optional" })
            })
            .collect();
        let state = match &settings.state {
            crate::state::StateBackend::Memory { dir: None } => "memory".to_string(),
            crate::state::StateBackend::Memory { dir: Some(dir) } => format!("memory, journaled in {}", dir.display()),
            crate::state::StateBackend::Redis(r) => match &r.target {
                crate::state::RedisTarget::Url(url) => format!("redis {url}"),
                crate::state::RedisTarget::Sentinel { master, nodes, .. } => {
                    format!("redis sentinel {master} via {}", nodes.join(","))
                }
                crate::state::RedisTarget::Cluster { nodes } => format!("redis cluster via {}", nodes.join(",")),
            },
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %self.options.reload_from.as_ref().map_or_else(|| "(embedded)".to_string(), |p| p.display().to_string()),
            grpc = %grpc,
            health = %settings.health,
            admin = %settings.admin.as_ref().map_or_else(|| "off".to_string(), |a| a.addr.to_string()),
            issuers = %issuers.join("; "),
            routes = snapshot.policy.routes.len(),
            state = %state,
            reflection = settings.listen.reflection,
            dev = settings.dev,
            "serving"
        );
        for warning in &settings.warnings {
            tracing::warn!(warning = %warning, "policy warning");
        }
        if settings.dev {
            tracing::warn!(
                "DEV MODE: `dev: true` accepts tokens from the development issuer, whose signing key ships \
                 inside this binary: anyone can mint them. Never run this in production \
                 (portcullis_dev_mode is 1)"
            );
        }
    }
}

/// How often gRPC health is brought in line with readiness.
const READINESS_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Both names Envoy may ask for: the Authorization service and the server as a whole (`""`).
async fn set_grpc_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    if serving {
        reporter.set_serving::<AuthorizationServer<AuthzService>>().await;
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    } else {
        reporter.set_not_serving::<AuthorizationServer<AuthzService>>().await;
        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    }
}

/// The gRPC server with the listener limits: streams per connection, a deadline per Check,
/// HTTP/2 keepalive, a bounded header list and a maximum connection age.
fn grpc_builder(
    limits: &crate::config::ListenerLimits,
) -> tonic::transport::Server<tower_layer::Stack<buffered::BufferBudgetLayer, tower_layer::Identity>> {
    let bytes = buffered::ByteBudget::new(limits.max_buffered_bytes, limits.max_buffered_bytes_per_peer);
    let watches = budget::PeerSlots::new(limits.health_watches_per_peer);
    let streams = budget::PeerSlots::with_total(limits.max_streams_per_peer, limits.max_streams);
    let builder = tonic::transport::Server::builder()
        .layer(buffered::BufferBudgetLayer { bytes, watches, streams })
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        // Envoy's own headers travel inside the Check message; the HTTP/2 header list of the
        // call itself is small, and every byte of it is also charged to the byte budget.
        .http2_max_header_list_size(u32::try_from(limits.max_header_list_bytes).unwrap_or(u32::MAX));
    match limits.max_connection_age {
        // The grace ends a connection whose streams never finish (an answer stalled behind a
        // zero window), so what it holds is given back.
        Some(age) => builder.max_connection_age(age).max_connection_age_grace(limits.request_timeout),
        None => builder,
    }
}

/// Binds the unix socket with its mode and group already set when it appears at `path`: it is
/// created in a fresh 0700 folder beside `path` (nobody else can connect, and nothing there can
/// be a planted symlink), given its mode and group, then renamed into place. A proxy running as
/// another user connects through the group (default 0660).
fn bind_unix(path: &std::path::Path, perms: crate::config::SocketPerms) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = path.parent().ok_or_else(|| std::io::Error::other("the socket path has no folder"))?;
    let private = parent.join(format!(".portcullis-bind-{}", std::process::id()));
    if std::fs::symlink_metadata(&private).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(&private)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("authz.sock");
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        if let Some(gid) = perms.group {
            std::os::unix::fs::chown(&staged, None, Some(gid))?;
        }
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(perms.mode))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Binds `addr`; `[::]` on a host without IPv6 (no address family, no address) binds
/// `0.0.0.0` instead, so one setting (the chart's default) serves IPv6-only, dual-stack and
/// IPv4-only pods. On a dual-stack host `[::]` takes IPv4 too (Linux `bindv6only` is 0).
async fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(e)
            if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                && (e.kind() == std::io::ErrorKind::AddrNotAvailable
                    || e.raw_os_error() == Some(nix::errno::Errno::EAFNOSUPPORT as i32)) =>
        {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::info!(%addr, fallback = %v4, error = %e, "no IPv6 here; listening on IPv4 only");
            TcpListener::bind(v4).await
        }
        result => result,
    }
}

/// Removes a socket file left by a previous run; never touches anything that is not a socket.
fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests;
