//! The transport floor for benchmarks (issue 12): the same generated proto code and tonic stack
//! as Portcullis, answering every `Check` with a fixed answer and doing nothing else.
//!
//!   cargo run --release --example floor -- 127.0.0.1:9291
//!       an empty OK (the transport alone)
//!   cargo run --release --example floor -- 127.0.0.1:9291 --equivalent POLICY --path /tenants/acme/items
//!       answer-equivalent (issue 25): the very answer Portcullis gives the bench request under
//!       POLICY (identity headers set, removals, security headers, metadata), computed once
//!       through Portcullis' own decision and conversion, then sent for every `Check`

#[path = "common.rs"]
mod common;

use portcullis::decision::{Outcome, Services, UnixTime, decide};
use portcullis::server::convert::{check_input, check_response};
use portcullis::server::proto::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use portcullis::server::proto::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, OkHttpResponse, check_response,
};
use portcullis::server::proto::google::rpc::Status;
use tonic::{Request, Response};

struct Floor(CheckResponse);

#[tonic::async_trait]
impl Authorization for Floor {
    async fn check(&self, _request: Request<CheckRequest>) -> Result<Response<CheckResponse>, tonic::Status> {
        Ok(Response::new(self.0.clone()))
    }
}

/// Portcullis' answer to the bench request (token 0 of [`common::mint`]) under `policy`.
fn equivalent(policy: &str, path: &str) -> Result<CheckResponse, String> {
    let settings = portcullis::config::load_file(std::path::Path::new(policy)).map_err(|e| e.to_string())?;
    let token = common::mint(1)?.remove(0);
    let input = check_input(common::request(path, Some(&format!("Bearer {token}"))));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
    let snapshot = &settings.snapshot;
    let decision =
        decide(&input, &snapshot.policy, &Services::stateless(&snapshot.verifier), UnixTime(now.as_secs() as i64));
    if !matches!(decision.outcome, Outcome::Allow { .. }) {
        return Err(format!("the bench request is not allowed under {policy}: {:?}", decision.outcome));
    }
    Ok(check_response(&decision, &input.request_id, &snapshot.policy.response))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().cloned().unwrap_or_else(|| "127.0.0.1:9291".into());
    let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let answer = match flag("--equivalent") {
        Some(policy) => equivalent(&policy, &flag("--path").unwrap_or_else(|| "/tenants/acme/items".into()))?,
        None => CheckResponse {
            status: Some(Status { code: 0, message: String::new(), details: Vec::new() }),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        },
    };
    let size = prost::Message::encoded_len(&answer);
    eprintln!("floor: answering every Check with the same {size}-byte answer on {addr}");
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Floor(answer)))
        .serve(addr)
        .await
        .map_err(|e| e.to_string())
}
