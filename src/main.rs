//! The `portcullis` binary: parse the command line, load and validate the policy, start the
//! servers, run until a signal. Everything else lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis::clock::{Clock, SystemClock};
use portcullis::config::{self, ConfigError, EXIT_CONFIG, ListenAddr, Settings};
use portcullis::dev::request::{HeaderEncoding, check_request, summarize};
use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::server::{ServeOptions, Server};
use portcullis::{dev, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Authorization sidecar for Envoy ext_authz")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the policy in --config.
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a policy file and exit (0 valid, 64 invalid).
    CheckConfig { file: PathBuf },
    /// Run with the embedded development policy and key set; prints a token to try.
    Dev {
        #[arg(long, default_value = "127.0.0.1:9191")]
        grpc: String,
        #[arg(long, default_value = "127.0.0.1:9190")]
        health: String,
        /// Where audit lines go (default: portcullis-dev-audit.log in the temp folder), so they
        /// stay out of the human output.
        #[arg(long)]
        audit_file: Option<PathBuf>,
        /// Print the embedded development policy and exit.
        #[arg(long)]
        print_policy: bool,
    },
    /// Print the policy file's JSON Schema; with --embed-into, write it into a Helm
    /// values.schema.json (under `policy`) instead.
    ConfigSchema {
        #[arg(long)]
        embed_into: Option<PathBuf>,
    },
    /// API keys: mint a new key and its key-file entry.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Decide one request offline under a policy and show every step, the rule that matched
    /// and the headers the upstream would receive (same pipeline as the server).
    Explain(ExplainArgs),
    /// Run policy test files (cases with requests, minted tokens and expected outcomes);
    /// exits 1 when a case fails.
    Test {
        files: Vec<PathBuf>,
        /// Also write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Mint a development token (only the `dev` policy accepts it).
    DevToken {
        #[arg(long, default_value = "alice")]
        sub: String,
        #[arg(long = "scope", default_value = "read")]
        scopes: Vec<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// The policy file.
    #[arg(long, short)]
    config: PathBuf,
    /// A JSON or YAML request file ({method, path, host, headers, peer, token}); flags
    /// override its fields.
    #[arg(long)]
    request: Option<PathBuf>,
    #[arg(long)]
    method: Option<String>,
    #[arg(long)]
    path: Option<String>,
    #[arg(long)]
    host: Option<String>,
    /// A request header, `name: value` (repeat for more).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The connecting peer's address.
    #[arg(long)]
    peer: Option<String>,
    /// A bearer token.
    #[arg(long)]
    token: Option<String>,
    /// A file holding a bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Unix seconds to decide at (default: now).
    #[arg(long)]
    now: Option<i64>,
    /// A JWKS file standing in for every remote issuer's keys (explain never fetches).
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 when the decision is a deny (for scripts and CI).
    #[arg(long)]
    exit_code: bool,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Print a new random key (shown only once) and the entry for the API key file.
    New {
        #[arg(long)]
        name: String,
        /// Subject the key authenticates as (default: the name).
        #[arg(long)]
        subject: Option<String>,
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        /// RFC 3339 expiry, like 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires: Option<String>,
        /// Must match credentials.api_keys.prefix.
        #[arg(long, default_value = "pk_")]
        prefix: String,
    },
}

fn api_key_new(command: ApiKeyCommand) -> ExitCode {
    let ApiKeyCommand::New { name, subject, tenants, scopes, roles, expires, prefix } = command;
    let template = portcullis::config::schema::RawApiKeyEntry {
        name,
        sha256: String::new(),
        subject,
        tenants,
        scopes,
        roles,
        expires,
    };
    let minted = portcullis::state::apikeys::mint(&prefix, template)
        .and_then(|m| serde_json::to_string(&m.entry).map(|entry| (m.key, entry)).map_err(|e| e.to_string()));
    match minted {
        Ok((key, entry)) => {
            println!("{key}");
            println!("# add under `keys:` in the credentials.api_keys file (it holds only the digest):");
            println!("  - {entry}");
            eprintln!("portcullis: the key is shown only now; store it in a secret manager");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(EXIT_CONFIG as u8)
        }
    }
}

fn config_schema(embed_into: Option<PathBuf>) -> ExitCode {
    let result = match &embed_into {
        None => {
            serde_json::to_string_pretty(&config::json_schema::policy_schema()).map_err(|e| e.to_string()).map(|text| {
                println!("{text}");
            })
        }
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display())))
            .and_then(config::json_schema::embed_in_values_schema)
            .and_then(|schema| serde_json::to_string_pretty(&schema).map_err(|e| e.to_string()))
            .and_then(|text| {
                std::fs::write(file, text + "\n").map_err(|e| format!("cannot write {}: {e}", file.display()))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("portcullis: {err}");
    ExitCode::from(EXIT_CONFIG as u8)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match config::load_file(&file) {
            Ok(settings) => {
                for warning in &settings.warnings {
                    // A warning placed in its file names it (file:line:column) already.
                    if warning.starts_with(&file.display().to_string()) {
                        eprintln!("warning: {warning}");
                    } else {
                        eprintln!("warning: {}: {warning}", file.display());
                    }
                }
                println!("{}: valid", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Serve { config: None } => {
            eprintln!("portcullis: serve needs --config FILE (try `portcullis dev` for a demo)");
            ExitCode::from(EXIT_CONFIG as u8)
        }
        Command::Serve { config: Some(file) } => match config::load_file(&file) {
            Ok(settings) => run(settings, Mode::Serve(file)),
            Err(e) => config_failure(&e),
        },
        Command::Dev { print_policy: true, .. } => {
            print!("{}", dev::POLICY);
            ExitCode::SUCCESS
        }
        Command::Dev { grpc, health, audit_file, .. } => {
            let audit = audit_file.unwrap_or_else(|| std::env::temp_dir().join("portcullis-dev-audit.log"));
            println!("portcullis dev: audit lines go to {}", audit.display());
            let settings = dev::settings().map(|mut s| {
                s.grpc = ListenAddr::parse(&grpc, true).unwrap_or(s.grpc);
                s.health = health.parse().unwrap_or(s.health);
                s.audit.file = Some(audit);
                s
            });
            match settings {
                Ok(settings) => run(settings, Mode::Dev),
                Err(e) => config_failure(&e),
            }
        }
        Command::ApiKey { command } => api_key_new(command),
        Command::ConfigSchema { embed_into } => config_schema(embed_into),
        Command::Test { files, junit } => policy_tests(&files, junit.as_deref()),
        Command::Explain(args) => match explain(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("portcullis explain: {e:#}");
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        Command::DevToken { sub, scopes, roles, ttl } => {
            let spec = dev::DevToken { subject: sub, scopes, roles, ttl_secs: ttl };
            match dev::mint(&spec, SystemClock.now().0) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    use portcullis::dev::explain::{ExplainRequest, OneOrMany};
    let settings = config::load_file(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut request: ExplainRequest = match &args.request {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        }
        None => serde_saphyr::from_str("{}").map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    if let Some(method) = args.method {
        request.method = method;
    }
    if let Some(path) = args.path {
        request.path = path;
    }
    if let Some(host) = args.host {
        request.host = host;
    }
    if let Some(peer) = args.peer {
        request.peer = Some(peer);
    }
    for header in &args.headers {
        let (name, value) =
            header.split_once(':').with_context(|| format!("--header {header:?}: expected name: value"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        match request.headers.remove(&name) {
            None => request.headers.insert(name, OneOrMany::One(value)),
            Some(OneOrMany::One(first)) => request.headers.insert(name, OneOrMany::Many(vec![first, value])),
            Some(OneOrMany::Many(mut all)) => {
                all.push(value);
                request.headers.insert(name, OneOrMany::Many(all))
            }
        };
    }
    if let Some(token) = args.token {
        request.token = Some(token);
    }
    if let Some(file) = &args.token_file {
        let token = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        request.token = Some(token.trim().to_string());
    }
    let now = portcullis::decision::UnixTime(args.now.unwrap_or_else(|| SystemClock.now().0));
    if let Some(file) = &args.jwks {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        for issuer in settings.snapshot.verifier.issuers.iter().filter(|i| i.keys.is_remote()) {
            let keys =
                portcullis::jwt::keys_from_jwks(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            issuer.keys.replace(keys, now.0);
        }
    }
    let explanation = portcullis::dev::explain::explain(&settings, &request, now);
    let text = if args.json { serde_json::to_string_pretty(&explanation)? + "\n" } else { explanation.to_string() };
    // A reader that went away (`explain … | head`) is no error worth a panic.
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(if args.exit_code && explanation.decision != "allow" { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn policy_tests(files: &[PathBuf], junit: Option<&std::path::Path>) -> ExitCode {
    let (mut passed, mut failed) = (0, 0);
    let mut report = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    let xml = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    for file in files {
        let outcomes = match portcullis::dev::policytest::run_file(file) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                eprintln!("portcullis test: {e}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        };
        report.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\">\n",
            xml(&file.display().to_string()),
            outcomes.len()
        ));
        for outcome in outcomes {
            report.push_str(&format!("    <testcase name=\"{}\">", xml(&outcome.name)));
            match &outcome.failure {
                None => {
                    passed += 1;
                    println!("ok   {}: {}", file.display(), outcome.name);
                }
                Some(diff) => {
                    failed += 1;
                    println!("FAIL {}: {}\n{diff}", file.display(), outcome.name);
                    report.push_str(&format!("<failure message=\"{}\"/>", xml(diff)));
                }
            }
            report.push_str("</testcase>\n");
        }
        report.push_str("  </testsuite>\n");
    }
    report.push_str("</testsuites>\n");
    println!("{passed} passed, {failed} failed");
    if let Some(path) = junit
        && let Err(e) = std::fs::write(path, report)
    {
        eprintln!("portcullis test: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// How the server was started.
enum Mode {
    /// `serve --config FILE`: reload FILE on change.
    Serve(PathBuf),
    /// `dev`: the embedded policy; prints a banner and self-checks.
    Dev,
}

fn run(settings: Settings, mode: Mode) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings, mode: Mode) -> anyhow::Result<()> {
    let telemetry = telemetry::init(settings.log_format, settings.otlp_endpoint.as_deref())?;
    telemetry::metrics::install();
    let options = ServeOptions {
        reload_from: match &mode {
            Mode::Serve(file) => Some(file.clone()),
            Mode::Dev => None,
        },
        trace_context: telemetry.tracing_enabled(),
        ..ServeOptions::default()
    };
    let server = Server::bind_with(&settings, options).await?;
    if let Mode::Dev = mode {
        let grpc = server.grpc_addr();
        tokio::spawn(async move {
            if let Err(e) = dev_banner(grpc).await {
                eprintln!("portcullis dev: self-check failed: {e:#}");
            }
        });
    }
    let result = server.run(shutdown_signal()).await;
    // Flushing spans blocks on the exporter, which runs on this runtime: do it off the workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result?;
    tracing::info!("drained; exiting");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received; draining");
}

/// Prints a token and asks the running server for one allow and one deny.
async fn dev_banner(grpc: ListenAddr) -> anyhow::Result<()> {
    let spec = dev::DevToken { subject: "alice".into(), scopes: vec!["read".into()], roles: vec![], ttl_secs: 3600 };
    let token = dev::mint(&spec, SystemClock.now().0)?;
    println!("portcullis dev: serving the embedded development policy on {grpc} (never use in production)");
    println!("  token for alice (scope read, 1h):\n    {token}");
    println!("  through Envoy (deploy/envoy/envoy.yaml):");
    println!("    curl -i -H \"authorization: Bearer {token}\" http://127.0.0.1:10000/hello");
    println!("  more tokens: portcullis dev-token --sub bob --scope read --role admin");
    let ListenAddr::Tcp(addr) = grpc else {
        return Ok(());
    };
    let mut client =
        AuthorizationClient::connect(format!("http://{addr}")).await.context("connecting to the gRPC listener")?;
    let bearer = format!("Bearer {token}");
    for (label, headers) in [("with the token", vec![("authorization", bearer.as_str())]), ("without a token", vec![])]
    {
        let response = client
            .check(check_request("GET", "/hello", &headers, HeaderEncoding::Map))
            .await
            .context("Check call")?
            .into_inner();
        println!("  self-check: GET /hello {label} -> {}", summarize(&response));
    }
    Ok(())
}
