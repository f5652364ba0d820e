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
    let mut cmd = portcullis();
    cmd.args(["dev", "--grpc", &format!("127.0.0.1:{grpc}"), "--health", &format!("127.0.0.1:{health}")]);
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
    let metrics =
        crate::support::raw_http(health_addr, "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .expect("metrics");
    assert!(metrics.body.contains("portcullis_dev_mode 1"), "{}", metrics.body);
    proc.stop();
    assert_eq!(proc.child.try_wait().ok().flatten().and_then(|s| s.code()), Some(0), "SIGTERM drains and exits 0");
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
    assert_eq!(&*verified.subject.0, "bob");
    assert_eq!(verified.claims.get("roles"), Some(&serde_json::json!(["admin"])));
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
