//! The transport floor for benchmarks (issue 12): the same generated proto code and tonic stack
//! as Portcullis, answering every `Check` with an OK `CheckResponse` and doing nothing else.
//!
//!   cargo run --release --example floor -- 127.0.0.1:9291

use portcullis::server::proto::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use portcullis::server::proto::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, OkHttpResponse, check_response,
};
use portcullis::server::proto::google::rpc::Status;
use tonic::{Request, Response};

struct Floor;

#[tonic::async_trait]
impl Authorization for Floor {
    async fn check(&self, _request: Request<CheckRequest>) -> Result<Response<CheckResponse>, tonic::Status> {
        Ok(Response::new(CheckResponse {
            status: Some(Status { code: 0, message: String::new(), details: Vec::new() }),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9291".into());
    let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    eprintln!("floor: answering every Check with OK on {addr}");
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Floor))
        .serve(addr)
        .await
        .map_err(|e| e.to_string())
}
