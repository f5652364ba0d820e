//! The container image (issue 22): built without a daemon by buildah, run, and asked for
//! readiness and one allowed and one denied Check. This machine reaches no container registry,
//! so the test builds the Dockerfile's runtime layout from local parts (`scripts/image.sh
//! --local`: this binary, the glibc it links, the CA bundle, uid 65532, the OCI labels); the
//! Dockerfile itself builds with `scripts/image.sh` where its base images can be pulled.

use std::path::Path;
use std::process::Command;

#[test]
fn the_image_builds_without_a_daemon_runs_as_nonroot_and_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/image.sh"))
        .args(["--local", "--binary", env!("CARGO_BIN_EXE_portcullis")])
        .output()
        .expect("run scripts/image.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/image.sh --local failed:\n{text}");
    assert!(text.contains("with the token -> allow (200)") && text.contains("image ok"), "{text}");
}
