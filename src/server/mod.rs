//! The transport edge: gRPC (Check, health, reflection) and the health HTTP listener.
//!
//! Architecture Invariant: protocol types are converted only in [`convert`]; every deny goes
//! through [`convert::check_response`].

mod authz;
pub mod convert;
mod health_http;
pub mod proto;
pub mod request;

pub use authz::{AppState, AuthzService};

use crate::clock::{Clock, SystemClock};
use crate::config::{ListenAddr, Settings};
use crate::jwt::fetch::{self, JwksJob};
use crate::telemetry::metrics as names;
use health_http::{HealthState, Readiness};
use proto::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("health server failed: {0}")]
    Health(std::io::Error),
    #[error("issuer {0}: cannot build the JWKS client: {1}")]
    Jwks(String, String),
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

enum GrpcListener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A server with its ports bound and not yet serving.
pub struct Server {
    grpc: GrpcListener,
    health: TcpListener,
    state: Arc<AppState>,
    ready: Arc<AtomicBool>,
    jwks_jobs: Vec<JwksJob>,
    clock: Arc<dyn Clock>,
}

fn bind_error(addr: impl ToString) -> impl FnOnce(std::io::Error) -> ServeError {
    let addr = addr.to_string();
    move |source| ServeError::Bind { addr, source }
}

impl Server {
    pub async fn bind(settings: &Settings) -> Result<Self, ServeError> {
        Self::bind_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn bind_with_clock(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, ServeError> {
        let grpc = match &settings.grpc {
            ListenAddr::Tcp(addr) => GrpcListener::Tcp(TcpListener::bind(addr).await.map_err(bind_error(addr))?),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path);
                let listener = UnixListener::bind(path).map_err(bind_error(settings.grpc.clone()))?;
                GrpcListener::Unix(listener, path.clone())
            }
        };
        let health = TcpListener::bind(settings.health)
            .await
            .map_err(bind_error(settings.health))?;
        let state = Arc::new(AppState::new(
            settings.snapshot.clone(),
            clock.clone(),
            settings.max_inflight_checks,
        ));
        // Build each JWKS client now so a bad CA bundle fails before serving.
        for job in &settings.jwks_jobs {
            fetch::http_client(&job.remote).map_err(|e| ServeError::Jwks(job.issuer.to_string(), e))?;
        }
        metrics::gauge!(names::DEV_MODE).set(if settings.dev { 1.0 } else { 0.0 });
        Ok(Self {
            grpc,
            health,
            state,
            ready: Arc::new(AtomicBool::new(false)),
            jwks_jobs: settings.jwks_jobs.clone(),
            clock,
        })
    }

    pub fn grpc_addr(&self) -> ListenAddr {
        match &self.grpc {
            GrpcListener::Tcp(l) => l
                .local_addr()
                .map(ListenAddr::Tcp)
                .unwrap_or(ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 0)))),
            GrpcListener::Unix(_, path) => ListenAddr::Unix(path.clone()),
        }
    }

    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.local_addr().ok()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight checks finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter.set_serving::<AuthorizationServer<AuthzService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let router = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(AuthzService::new(self.state.clone())))
            .add_service(health_service)
            .add_service(reflection);

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ready = self.ready.clone();
        tokio::spawn(async move {
            shutdown.await;
            ready.store(false, Ordering::Release);
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let grpc_addr = self.grpc_addr();
        let mut fetchers = Vec::new();
        for job in self.jwks_jobs {
            let client = fetch::http_client(&job.remote).map_err(|e| ServeError::Jwks(job.issuer.to_string(), e))?;
            fetchers.push(tokio::spawn(fetch::run(job, client, self.clock.clone())));
        }
        let serving = self.ready.clone();
        let snapshot = self.state.snapshot.clone();
        let readiness: Readiness =
            Arc::new(move || serving.load(Ordering::Acquire) && snapshot.verifier.required_keys_present());
        let health_state = HealthState {
            ready: readiness,
            metrics: names::install(),
        };
        let health = axum::serve(self.health, health_http::router(health_state))
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        let health = tokio::spawn(async move { health.await.map_err(ServeError::Health) });

        self.ready.store(true, Ordering::Release);
        tracing::info!(grpc = %grpc_addr, "serving");
        let grpc_result = match self.grpc {
            GrpcListener::Tcp(listener) => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped(stop_rx.clone()))
                    .await
            }
            GrpcListener::Unix(listener, path) => {
                let result = router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop_rx.clone()))
                    .await;
                remove_stale_socket(&path);
                result
            }
        };
        for fetcher in fetchers {
            fetcher.abort();
        }
        grpc_result?;
        match health.await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Health(std::io::Error::other(join.to_string()))),
        }
    }
}

/// Removes a socket file left by a previous run; never touches anything that is not a socket.
fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}
