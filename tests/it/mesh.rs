//! Ready for a real mesh (issue 22): the sidecar socket between processes of different users,
//! listener limits against slow and greedy peers, and rollouts without failed requests.

use crate::support::envoy::{Upstream, get, start_envoy_as, wait_ready};
use crate::support::{Launch, Portcullis, RunAs, corpus, now, scratch};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// The chart's users: Envoy as 101, Portcullis as 65532, sharing only the socket's group.
const SOCKET_GROUP: u32 = 4242;

#[test]
fn the_sidecar_socket_admits_the_proxy_user_through_its_group_only() {
    let dir = scratch("uds-uids");
    // Both users create files here (the socket; Envoy's nothing), as in a shared emptyDir.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = dir.join("authz.sock");
    let grpc = format!("unix:{}", socket.display());
    let portcullis = Portcullis::launch(
        &dir,
        Launch {
            grpc: Some(&grpc),
            listen_extra: &format!(", socket: {{ group: \"{SOCKET_GROUP}\" }}"),
            run_as: Some(RunAs { uid: 65532, gid: 65532, groups: vec![SOCKET_GROUP] }),
            ..Launch::default()
        },
    );
    let meta = std::fs::metadata(&socket).expect("socket exists");
    assert_eq!(meta.mode() & 0o777, 0o660, "owner and group only");
    assert_eq!((meta.uid(), meta.gid()), (65532, SOCKET_GROUP));

    let upstream = Upstream::start();
    let token = corpus::sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        &corpus::claims(corpus::ISSUER, "uds-user", now()),
    );
    let bearer = format!("Bearer {token}");
    let envoy_as = |name: &str, groups: Vec<u32>| {
        start_envoy_as(
            &dir,
            name,
            "sidecar-uds.yaml",
            upstream.addr,
            vec![("path: /var/run/portcullis/authz.sock", format!("path: {}", socket.display()))],
            Some(&RunAs { uid: 101, gid: 101, groups }),
        )
    };
    // Envoy in the socket's group: allow and deny as usual.
    let envoy = envoy_as("envoy-in-group", vec![SOCKET_GROUP]);
    wait_ready(&envoy);
    let (status, body) = get(&envoy, "/api/items", &[("authorization", &bearer)]);
    assert_eq!((status, body["headers"]["x-user-id"].as_str()), (200, Some("uds-user")), "{}", envoy.proc.output());
    let (status, body) = get(&envoy, "/api/items", &[]);
    assert_eq!((status, body["reason"].as_str()), (401, Some("credential_missing")));
    drop(envoy);

    // Another user outside the group cannot connect: Envoy fails closed (403/503), never allows.
    let outsider = envoy_as("envoy-outsider", vec![]);
    let (status, _) = crate::support::eventually_blocking(
        std::time::Duration::from_secs(20),
        "the outsider Envoy never answered",
        || crate::support::raw_http(outsider.listener, "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .map(|r| r.status)
            .ok_or(()),
    );
    assert_ne!(status, 200, "a public route through an unreachable authz service must not pass");
    let (status, _) = get(&outsider, "/api/items", &[("authorization", &bearer)]);
    assert!(matches!(status, 403 | 503), "denied without the socket: {status}\n{}", outsider.proc.output());
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}
