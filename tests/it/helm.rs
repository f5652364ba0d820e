//! The Helm chart and the Istio manifests, checked by Python tools from PyPI (the real Helm
//! engine, Kubernetes and CRD schemas) that scripts/test.sh installs into .venv.

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    if let Ok(path) = std::env::var("PORTCULLIS_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no .venv/bin/python: run scripts/test.sh (it installs helm-python-sdk and kubernetes-validate)"
    );
    venv
}

fn run(script: &str) {
    let out = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(script))
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .output()
        .expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{text}");
    println!("{text}");
}

#[test]
fn helm_chart_lints_renders_validates_and_refuses_bad_values() {
    run("helm/tests/test_chart.py");
}

#[test]
fn istio_manifests_validate_against_the_istio_schemas() {
    run("deploy/tests/test_istio.py");
}
