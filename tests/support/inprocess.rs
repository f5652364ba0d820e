//! The one in-process harness: a real [`Server`] bound on loopback in this test's runtime, with
//! its [`AppState`] at hand for direct checks and, when asked, a [`TestClock`] the test moves.

use portcullis::clock::{Clock, ManualClock};
use portcullis::config::{ListenAddr, Settings};
use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::proto::envoy::service::auth::v3::CheckResponse;
use portcullis::server::{AppState, ServeOptions, Server};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The clock tests move instead of sleeping.
pub type TestClock = ManualClock;

/// Unix seconds now (for claims; the server under test may run on a [`TestClock`]).
pub fn now() -> i64 {
    portcullis::clock::SystemClock.now().0
}

pub struct InProcess {
    pub grpc: ListenAddr,
    pub health: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub state: Arc<AppState>,
    /// Set when started with [`InProcess::start_at`].
    pub clock: Option<Arc<TestClock>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcess {
    /// Serves `settings` on the system clock.
    pub async fn start(settings: &Settings) -> InProcess {
        Self::start_with(settings, ServeOptions::default(), None).await
    }

    /// Serves `settings` on a [`TestClock`] set to the system time now.
    pub async fn start_at_now(settings: &Settings) -> InProcess {
        let clock = Arc::new(TestClock::starting_now());
        let options = ServeOptions { clock: clock.clone(), ..ServeOptions::default() };
        Self::start_with(settings, options, Some(clock)).await
    }

    /// A test stops its server at once: no drain delay (the policy's own default is 5 s).
    pub async fn start_with(settings: &Settings, options: ServeOptions, clock: Option<Arc<TestClock>>) -> InProcess {
        let mut settings = settings.clone();
        settings.drain_delay = Duration::ZERO;
        let server = Server::bind_with(&settings, options).await.expect("bind");
        let grpc = server.grpc_addr();
        let health = server.health_addr().expect("health listener");
        let admin = server.admin_addr();
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        InProcess { grpc, health, admin, state, clock, stop: Some(stop), task: Some(task) }
    }

    /// The TCP gRPC address (panics for a unix socket listener).
    pub fn grpc_tcp(&self) -> SocketAddr {
        match &self.grpc {
            ListenAddr::Tcp(addr) => *addr,
            other => panic!("tcp listener expected, got {other:?}"),
        }
    }

    /// The test clock (panics when started on the system clock).
    pub fn clock(&self) -> &TestClock {
        self.clock.as_deref().expect("started with a TestClock")
    }

    /// One check straight into the server's state (no gRPC).
    pub async fn check(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckResponse {
        self.state.check(check_request(method, path, headers, HeaderEncoding::Map)).await
    }

    /// `GET path` with `Bearer token`: the status and reason.
    pub async fn bearer(&self, path: &str, token: &str) -> (u16, String) {
        let bearer = format!("Bearer {token}");
        super::outcome(&self.check("GET", path, &[("authorization", &bearer)]).await)
    }

    /// A GET on the health listener: status and body (`None` when it does not answer).
    pub async fn health_get(&self, path: &str) -> Option<super::HttpResponse> {
        let addr = self.health;
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || super::raw_http(addr, &request)).await.expect("join")
    }

    pub async fn readyz(&self) -> u16 {
        self.health_get("/readyz").await.map(|r| r.status).unwrap_or(0)
    }

    pub async fn metrics(&self) -> String {
        self.health_get("/metrics").await.map(|r| r.body).unwrap_or_default()
    }

    /// Waits (through [`super::eventually`]) until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        super::eventually(within, "ready", || async { super::is(self.readyz().await, 200) }).await;
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
