//! The binary's commands: check-config, serve's refusal of bad config, dev and dev-token.

use crate::support::{Proc, free_port, scratch, wait_http_ok};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn write_in_fixtures_copy(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let keys = crate::support::corpus::fixtures().join("keys");
    let path = dir.join(name);
    std::fs::write(&path, text.replace("keys/", &format!("{}/", keys.display()))).expect("write");
    path
}

#[test]
fn check_config_reports_every_mistake_and_exits_64() {
    let dir = scratch("cli");
    let bad = crate::support::corpus::fixtures().join("three-mistakes.yaml");
    let out = portcullis().arg("check-config").arg(&bad).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for want in [
        r#"issuers[0].algorithms[1]: unknown algorithm "RS999""#,
        "issuers[0].leeway: must be at most 5m",
        "routes[0].match.path_regex: invalid regex",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }

    // serve refuses the same file with the same report, before binding anything.
    let out = portcullis().arg("serve").arg("--config").arg(&bad).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown algorithm \"RS999\""));

    let good = crate::support::corpus::fixtures().join("policy.yaml");
    let out = portcullis().arg("check-config").arg(&good).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let out = portcullis().arg("check-config").arg(dir.join("missing.yaml")).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_needs_a_config_and_dev_issuer_needs_dev_true() {
    let out = portcullis().arg("serve").output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));

    let dir = scratch("cli-dev");
    let dev_policy = portcullis::dev::POLICY.replace("dev: true", "dev: false");
    let path = write_in_fixtures_copy(&dir, "dev.yaml", &dev_policy);
    let out = portcullis().arg("check-config").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("urn:portcullis:dev"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dev_mode_shows_an_allow_and_a_deny() {
    let dir = scratch("dev");
    let grpc = free_port();
    let health = free_port();
    let audit = dir.join("audit.log");
    let mut cmd = portcullis();
    cmd.args(["dev", "--grpc", &format!("127.0.0.1:{grpc}"), "--health", &format!("127.0.0.1:{health}")])
        .arg("--audit-file")
        .arg(&audit);
    let mut proc = Proc::spawn(&mut cmd, &dir, "dev");
    let health_addr = SocketAddr::from(([127, 0, 0, 1], health));
    assert!(wait_http_ok(health_addr, "/readyz", Duration::from_secs(20)), "{}", proc.output());
    let self_check = || {
        let out = std::fs::read_to_string(&proc.stdout).unwrap_or_default();
        if out.contains("without a token") { Ok(out) } else { Err(out) }
    };
    let (out, _) = crate::support::eventually_blocking(Duration::from_secs(20), "no self-check printed", self_check);
    assert!(out.contains("with the token -> allow (200), sets [x-user-id: alice"), "{out}");
    assert!(out.contains("without a token -> deny (401) credential_missing"), "{out}");
    assert!(out.contains("curl -i -H \"authorization: Bearer "), "{out}");
    // Audit lines go to their file, not into the human output (issue 35).
    assert!(!out.contains("\"decision\""), "{out}");
    let audited = || std::fs::read_to_string(&audit).ok().filter(|t| t.contains("\"decision\":\"deny\"")).ok_or(());
    assert!(crate::support::within(Duration::from_secs(5), audited).is_ok(), "no audit line in {}", audit.display());
    let metrics =
        crate::support::raw_http(health_addr, "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .expect("metrics");
    assert!(metrics.body.contains("portcullis_dev_mode 1"), "{}", metrics.body);
    proc.stop();
    assert_eq!(proc.child.try_wait().ok().flatten().and_then(|s| s.code()), Some(0), "SIGTERM drains and exits 0");
    // The embedded policy can be printed.
    let printed = portcullis().args(["dev", "--print-policy"]).output().expect("run");
    assert_eq!(printed.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&printed.stdout), portcullis::dev::POLICY);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dev_token_mints_tokens_only_the_dev_policy_accepts() {
    let out = portcullis().args(["dev-token", "--sub", "bob", "--role", "admin"]).output().expect("run");
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    use portcullis::decision::TokenVerifier;
    let dev = portcullis::dev::settings().expect("dev policy");
    let verified = dev.snapshot.verifier.verify(&token).expect("dev policy accepts it");
    assert_eq!(verified.subject(), "bob");
    assert_eq!(verified.claims().get("roles"), Some(&serde_json::json!(["admin"])));
    let test_policy =
        portcullis::config::load_file(&crate::support::corpus::fixtures().join("policy.yaml")).expect("policy");
    assert!(test_policy.snapshot.verifier.verify(&token).is_err(), "no other policy accepts dev tokens");
}

#[test]
fn api_key_new_prints_a_key_and_an_entry_that_the_policy_accepts() {
    let dir = scratch("cli-api-key");
    let out = portcullis()
        .args(["api-key", "new", "--name", "ci-bot", "--subject", "svc-ci", "--tenant", "acme", "--scope", "read"])
        .args(["--expires", "2027-01-01T00:00:00Z"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let key = stdout.lines().next().expect("key");
    assert!(key.starts_with("pk_") && key.len() == 46, "{key}");
    let entry = stdout.lines().find(|l| l.trim_start().starts_with("- ")).expect("entry");
    assert!(!entry.contains(key), "the entry must not hold the key");
    // The printed entry, pasted into a key file, is valid.
    std::fs::write(dir.join("api-keys.yaml"), format!("keys:\n{entry}\n")).expect("write");
    let policy = std::fs::read_to_string(crate::support::corpus::fixtures().join("policy.yaml")).expect("policy");
    std::fs::write(dir.join("members.yaml"), "members: {}\n").expect("members");
    write_in_fixtures_copy(&dir, "policy.yaml", &policy);
    let check = portcullis().arg("check-config").arg(dir.join("policy.yaml")).output().expect("run");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let bad = portcullis().args(["api-key", "new", "--name", "x", "--expires", "soon"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--expires"));
    assert!(bad.stdout.is_empty(), "no key printed for a refused entry");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `auto_block` or an ip-keyed tier without `ip.trusted_cidrs` validates, with a warning that
/// names the setting: behind a gateway the gateway would be "the client".
#[test]
fn check_config_warns_about_per_ip_controls_without_trusted_proxies() {
    let dir = scratch("cli-warn");
    let policy = r#"
issuers:
  - { issuer: "https://issuer.test/", audiences: [api], algorithms: [RS256], jwks: { file: keys/jwks-rsa1.json } }
routes:
  - { match: { path_prefix: /login }, public: true, rate_limit: auth }
  - { match: { path_prefix: / }, require: { scopes: [read] } }
rate_limits: { tiers: { auth: { key: ip, per_minute: 5 } } }
ip: { auto_block: { failures: 5, window: 15m, block_for: 30m } }
state: { backend: memory, acknowledge_ephemeral_state: true }
"#;
    let path = write_in_fixtures_copy(&dir, "warn.yaml", policy);
    let out = portcullis().arg("check-config").arg(&path).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("ip.trusted_cidrs") && stderr.contains("ip.auto_block"),
        "{stderr}"
    );
    assert!(stderr.contains("rate_limits.tiers.auth"), "{stderr}");
    // With the proxies listed, no such warning.
    let trusted = policy.replace("ip: { auto_block", "ip: { trusted_cidrs: [10.0.0.0/8], auto_block");
    let path = write_in_fixtures_copy(&dir, "trusted.yaml", &trusted);
    let out = portcullis().arg("check-config").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ip.trusted_cidrs"), "{stderr}");
    // Issue 32: without a journal or the acknowledgment, a restart would forget auto-blocks:
    // refused, saying what to do.
    let forgetful = trusted.replace("state: { backend: memory, acknowledge_ephemeral_state: true }\n", "");
    let path = write_in_fixtures_copy(&dir, "forgetful.yaml", &forgetful);
    let out = portcullis().arg("check-config").arg(&path).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("the memory backend keeps auto-blocks in this process only"), "{stderr}");
    assert!(stderr.contains("set state.dir"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// At start the log says what runs: version, config, listeners, issuers and key sources, route
/// count, state backend; `dev: true` under `serve` is a loud warning and a metric.
#[test]
fn serve_logs_a_startup_summary_and_warns_loudly_in_dev_mode() {
    let dir = scratch("cli-summary");
    let (grpc, health) = (free_port(), free_port());
    let policy = portcullis::dev::POLICY.replace(
        r#"listen: { grpc: "127.0.0.1:9191", health: "127.0.0.1:9190" }"#,
        &format!(r#"listen: {{ grpc: "127.0.0.1:{grpc}", health: "127.0.0.1:{health}" }}"#),
    );
    let path = write_in_fixtures_copy(&dir, "dev.yaml", &policy);
    let mut cmd = portcullis();
    cmd.arg("serve").arg("--config").arg(&path);
    let proc = Proc::spawn(&mut cmd, &dir, "serve-dev");
    let health_addr = SocketAddr::from(([127, 0, 0, 1], health));
    assert!(wait_http_ok(health_addr, "/readyz", Duration::from_secs(20)), "{}", proc.output());
    let out = proc.output();
    let summary = out.lines().find(|l| l.contains("serving")).unwrap_or_default();
    for want in [
        env!("CARGO_PKG_VERSION"),
        &path.display().to_string(),
        &format!("127.0.0.1:{grpc}"),
        "urn:portcullis:dev (static keys)",
        "routes=4",
        "state=memory",
        "dev=true",
    ] {
        assert!(summary.contains(want), "summary lacks {want:?}: {summary}");
    }
    assert!(out.contains("DEV MODE") && out.contains("anyone can mint"), "{out}");
    let metrics =
        crate::support::raw_http(health_addr, "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .expect("metrics")
            .body;
    for want in [
        "portcullis_dev_mode 1",
        &format!(
            "portcullis_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("PORTCULLIS_COMMIT")
        ),
        "portcullis_config_reload_total{result=\"error\"} 0",
        "portcullis_ready 1",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(want), "metrics lack {want:?}");
    }
    let ready = crate::support::raw_http(health_addr, "GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("readyz");
    let mut report: serde_json::Value = serde_json::from_str(&ready.body).expect("readyz JSON");
    // The policy in force: its text's hash (12 hex) and the first load.
    let policy = report.as_object_mut().and_then(|r| r.remove("policy")).expect("policy in /readyz");
    assert!(policy["hash"].as_str().is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit())));
    assert_eq!(policy["generation"], 1);
    let hash = policy["hash"].as_str().unwrap_or_default();
    assert!(metrics.contains(&format!("portcullis_policy_info{{hash=\"{hash}\",generation=\"1\"}} 1")), "{metrics}");
    assert_eq!(
        report,
        serde_json::json!({"ready": true, "draining": false, "issuers_without_keys": [], "issuers_past_max_stale": [], "state": "memory"})
    );
    drop(proc);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `portcullis explain`: a request decided offline through the same pipeline as the server,
/// with each step, the rule, and the headers the upstream would receive; `--json` for machines.
#[test]
fn explain_shows_the_steps_the_rule_and_the_upstream_headers() {
    let dir = scratch("cli-explain");
    let policy = write_in_fixtures_copy(&dir, "dev.yaml", portcullis::dev::POLICY);
    let token = portcullis::dev::mint(
        &portcullis::dev::DevToken { subject: "bob".into(), scopes: vec!["read".into()], roles: vec![], ttl_secs: 600 },
        crate::support::now(),
    )
    .expect("token");
    let out = portcullis()
        .args(["explain", "--config"])
        .arg(&policy)
        .args(["--path", "/admin/users", "--token", &token])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("deny 403 role_required (rule admin)"), "{text}");
    assert!(text.contains("DENY requirements: role_required"), "{text}");
    assert!(text.contains("step-up (not reached)"), "{text}");

    // A request file, a forged identity header and JSON out: allowed, the forged header
    // overwritten, the rest removed.
    let request = dir.join("request.yaml");
    std::fs::write(&request, format!("method: GET\npath: /hello\nheaders: {{ x-user-id: forged }}\ntoken: {token}\n"))
        .expect("request");
    let out = portcullis()
        .args(["explain", "--json", "--config"])
        .arg(&policy)
        .arg("--request")
        .arg(&request)
        .output()
        .expect("run");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!((json["decision"].as_str(), json["rule"].as_str()), (Some("allow"), Some("api")), "{json}");
    assert_eq!(json["upstream_set"][0], serde_json::json!(["x-user-id", "bob"]), "{json}");
    assert!(json["steps"].as_array().is_some_and(|s| s.iter().all(|s| s["outcome"] == "passed")), "{json}");

    // Without a token: the credential step denies, later steps are not reached.
    let out = portcullis()
        .args(["explain", "--json", "--config"])
        .arg(&policy)
        .args(["--path", "/hello"])
        .output()
        .expect("run");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["reason"], "credential_missing");
    let outcome = |name: &str| {
        json["steps"].as_array().and_then(|s| s.iter().find(|s| s["step"] == name)).map(|s| s["outcome"].clone())
    };
    assert_eq!(outcome("credential"), Some(serde_json::json!("denied")));
    assert_eq!(outcome("verification"), Some(serde_json::json!("not reached")));
    // The client's headers on a deny: the Bearer challenge.
    let challenge = json["deny_headers"].as_array().and_then(|h| h.iter().find(|h| h[0] == "www-authenticate"));
    assert!(challenge.is_some_and(|h| h[1].as_str().is_some_and(|v| v.starts_with("Bearer"))), "{json}");

    // --exit-code: 1 on a deny, 0 on an allow; a reader that goes away is no panic.
    let code = |args: &[&str]| {
        portcullis()
            .args(["explain", "--exit-code", "--config"])
            .arg(&policy)
            .args(args)
            .output()
            .expect("run")
            .status
            .code()
    };
    assert_eq!(code(&["--path", "/hello"]), Some(1));
    assert_eq!(code(&["--path", "/hello", "--token", &token]), Some(0));
    let mut child = portcullis()
        .args(["explain", "--config"])
        .arg(&policy)
        .args(["--path", "/hello"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `portcullis test`: the repository's policy tests pass (tokens minted with generated keys,
/// an RSA key here), a deliberately broken expectation fails with a readable diff, exit 1, and
/// `--junit` writes a report.
#[test]
fn policy_test_files_pass_and_a_broken_one_fails_with_a_diff() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = portcullis().arg("test").arg(root.join("tests/policies/fixture.test.yaml")).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("8 passed, 0 failed"), "{text}");
    // Issue 37: DPoP cases — bound tokens with proofs minted per case, and each forgery.
    let out = portcullis()
        .arg("test")
        .arg(root.join("tests/policies/dpop.test.yaml"))
        .arg(root.join("tests/policies/dpop-api-keys.test.yaml"))
        .arg(root.join("tests/policies/issuer-template.test.yaml"))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("17 passed, 0 failed"), "{text}");

    let dir = scratch("cli-policy-test");
    let junit = dir.join("junit.xml");
    let out = portcullis()
        .arg("test")
        .arg(root.join("tests/policies/broken.test.yaml"))
        .arg("--junit")
        .arg(&junit)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("decision: want allow, got deny"), "{text}");
    assert!(text.contains("0 passed, 1 failed"), "{text}");
    let report = std::fs::read_to_string(&junit).expect("junit");
    assert!(report.contains("<testcase name=\"wrongly expects readers to reach the admin API\"><failure"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's tenant, step-up and API-key examples are whole policies under `examples/`, each
/// with policy test files that pass; a README block that starts `# from examples/…` is the
/// example file's text, so the README cannot drift from what is tested.
#[test]
fn readme_examples_are_the_example_files_and_their_tests_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut checked = Vec::new();
    for block in readme.split("```yaml\n").skip(1).filter_map(|b| b.split("```").next()) {
        let Some((first, body)) = block.split_once('\n') else { continue };
        let Some(path) = first.strip_prefix("# from ").and_then(|r| r.split_whitespace().next()) else { continue };
        let file = std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(file.contains(body), "the README's block for {path} differs from the file");
        checked.push(path.to_string());
    }
    assert_eq!(checked, ["examples/controls/policy.yaml", "tests/policies/dpop.yaml", "examples/tenants/policy.yaml"]);
    let mut tests: Vec<_> = ["examples/controls", "examples/tenants"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect("examples"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    tests.sort();
    assert_eq!(tests.len(), 3, "{tests:?}");
    let out = portcullis().arg("test").args(&tests).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("21 passed, 0 failed"), "{text}");
    for check in ["examples/controls/policy.yaml", "examples/tenants/policy.yaml"] {
        let out = portcullis().arg("check-config").arg(root.join(check)).output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{check} warns");
    }
}

/// The known traps validate but are flagged by name: a route no request reaches and a
/// membership claim no issuer is trusted for (every member would be denied).
#[test]
fn check_config_flags_shadowed_routes_and_an_untrusted_membership_claim() {
    let dir = scratch("cli-traps");
    let policy = r#"
issuers:
  - { issuer: "https://issuer.test/", audiences: [api], algorithms: [RS256], jwks: { file: keys/jwks-rsa1.json } }
tenants:
  from: [ { header: x-tenant-id } ]
  membership: { claim: /tenants }
routes:
  - { name: api, match: { path_prefix: /api }, require: { scopes: [read] } }
  - { name: api-admin, match: { path_prefix: /api/admin }, require: { roles: [admin] } }
  - { name: orders, match: { path_exact: /orders, methods: [GET] }, require: { scopes: [read] } }
  - { name: orders-post, match: { path_exact: /orders, methods: [POST] }, require: { scopes: [write] } }
"#;
    let path = write_in_fixtures_copy(&dir, "traps.yaml", policy);
    let out = portcullis().arg("check-config").arg(&path).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(r#""api-admin" is never reached: the earlier route "api""#), "{stderr}");
    // Issue 35: placed in the file like a problem (file:line:column, then the path).
    let placed = format!("{}:", path.display());
    let line = stderr.lines().find(|l| l.contains("is never reached")).unwrap_or_default();
    let rest = line.split_once(&placed).map(|(_, r)| r).unwrap_or_default();
    let mut parts = rest.splitn(3, ':');
    let (row, column) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    assert!(row.parse::<u32>().is_ok() && column.parse::<u32>().is_ok(), "no line:column: {line}");
    assert!(rest.contains(" routes[1]: "), "{line}");
    assert!(!stderr.contains("orders-post\" is never reached"), "another method is not shadowed: {stderr}");
    assert!(stderr.contains("tenants.membership.claim") && stderr.contains("trusted by no issuer"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
