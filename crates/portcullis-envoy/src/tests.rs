//! The module's safe half without Envoy: a fake stream stands in for the ABI.

use crate::engine::Engine;
use crate::filter::{Filter, HeaderKind, StreamView, attribute, check_input};
use std::cell::RefCell;

/// A local reply: status, headers, body, details.
type Sent = (u16, Vec<(String, String)>, String, String);

#[derive(Default)]
struct FakeStream {
    request: Vec<(String, String)>,
    direct: Option<String>,
    attributes: Vec<(i32, String)>,
    set: RefCell<Vec<(HeaderKind, String, Option<String>)>>,
    sent: RefCell<Option<Sent>>,
    metadata: RefCell<Vec<(String, String)>>,
    /// Envoy refuses header changes (a limit hit, say).
    refuse_headers: bool,
}

impl StreamView for FakeStream {
    fn headers(&self, kind: HeaderKind) -> Vec<(String, String)> {
        if kind == HeaderKind::Request { self.request.clone() } else { Vec::new() }
    }
    fn direct_remote_address(&self) -> Option<String> {
        self.direct.clone()
    }
    fn attribute(&self, id: i32) -> Option<String> {
        self.attributes.iter().find(|(i, _)| *i == id).map(|(_, v)| v.clone())
    }
    fn set_header(&self, kind: HeaderKind, name: &str, value: Option<&str>) -> bool {
        self.set.borrow_mut().push((kind, name.into(), value.map(String::from)));
        !self.refuse_headers
    }
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &str, details: &str) {
        *self.sent.borrow_mut() = Some((status, headers.to_vec(), body.into(), details.into()));
    }
    fn set_metadata(&self, _namespace: &str, key: &str, value: &str) {
        self.metadata.borrow_mut().push((key.into(), value.into()));
    }
}

fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> FakeStream {
    let mut headers = vec![
        (":method".to_string(), method.to_string()),
        (":path".into(), path.into()),
        (":authority".into(), "api.example.com".into()),
        (":scheme".into(), "http".into()),
        ("x-request-id".into(), "req-1".into()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    FakeStream { request: headers, direct: Some("10.1.2.3:4444".into()), ..Default::default() }
}

/// The development policy with security headers, indented as an inline `policy: |` block.
fn indented_dev_policy() -> String {
    let policy =
        include_str!("../../../src/dev/policy.yaml").replace("response:\n", "response:\n  security_headers: true\n");
    policy.lines().map(|l| format!("  {l}\n")).collect()
}

fn engine() -> std::sync::Arc<Engine> {
    let indented = indented_dev_policy();
    let settings = crate::settings::parse(&format!("policy: |\n{indented}")).expect("dev policy");
    Engine::new(settings).expect("engine")
}

#[test]
fn the_input_is_read_as_the_ext_authz_adapter_reads_it() {
    let mut stream = request("GET", "/api/x?q=1", &[("X-Mixed-Case", "v")]);
    stream.direct = Some("[2001:db8::1]:443".into());
    stream.attributes = vec![
        (attribute::CONNECTION_DNS_SAN_PEER_CERTIFICATE, "client.example".into()),
        (attribute::CONNECTION_SUBJECT_PEER_CERTIFICATE, "CN=client".into()),
        (attribute::CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST, "00".repeat(32)),
    ];
    let input = check_input(&stream);
    assert_eq!(
        (input.method.as_str(), input.path.as_str(), input.host.as_str()),
        ("GET", "/api/x?q=1", "api.example.com")
    );
    assert_eq!(input.request_id, "req-1");
    assert_eq!(input.peer_ip, "2001:db8::1".parse().ok());
    assert_eq!(input.peer_principal, "client.example", "URI SAN, else DNS SAN, else subject");
    assert_eq!(input.peer_certificate.as_deref(), Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    assert!(input.headers.iter().any(|(k, v)| k == "x-mixed-case" && v == "v"), "names lowercased");
    assert!(input.headers.iter().any(|(k, _)| k == ":path"), "pseudo-headers stay, as ext_authz sends them");
    // Unreadable attributes leave nothing to trust.
    stream.direct = Some("not an address".into());
    stream.attributes = vec![(attribute::CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST, "zz".into())];
    let input = check_input(&stream);
    assert_eq!((input.peer_ip, input.peer_certificate), (None, None));
}

#[test]
fn a_deny_is_answered_here_and_an_allow_forwards_with_the_policy_headers() {
    let engine = engine();
    let denied = request("GET", "/api/x", &[]);
    assert!(!Filter::new(engine.clone()).on_request_headers(&denied));
    let (status, headers, body, details) = denied.sent.borrow().clone().expect("answered");
    assert_eq!((status, details.as_str()), (401, "portcullis_credential_missing"));
    assert!(headers.contains(&("www-authenticate".into(), r#"Bearer realm="portcullis""#.into())), "{headers:?}");
    assert!(body.contains(r#""reason":"credential_missing""#) && body.contains("req-1"), "{body}");
    assert!(denied.metadata.borrow().contains(&("decision".into(), "deny".into())));

    // A public route: forwarded, and a client's identity header is removed before it goes on.
    let public = request("GET", "/public/x", &[("x-user-id", "root")]);
    let mut filter = Filter::new(engine);
    assert!(filter.on_request_headers(&public));
    assert!(public.sent.borrow().is_none());
    assert!(
        public.set.borrow().contains(&(HeaderKind::Request, "x-user-id".into(), None)),
        "{:?}",
        public.set.borrow()
    );
    filter.on_response_headers(&public);
    assert!(
        public.set.borrow().iter().any(|(kind, name, _)| *kind == HeaderKind::Response && name == "x-frame-options")
    );
}

#[test]
fn what_the_module_cannot_do_is_refused_when_envoy_loads_the_configuration() {
    let refused = |extra: &str| {
        let policy = format!(
            "policy: |\n  issuers:\n    - {{ issuer: https://i.test/, audiences: [a], algorithms: [RS256], jwks: {{ url: https://i.test/jwks }} }}\n  routes: [ {{ name: all, match: {{ path_prefix: / }}, require: {{ scopes: [read] }} }} ]\n{extra}"
        );
        crate::settings::parse(&policy).map(|_| ()).unwrap_err().0
    };
    let err = refused("");
    assert!(err.contains("issuer https://i.test/") && err.contains("jwks.url"), "{err}");
    assert!(crate::settings::parse("policy_file: /nonexistent/policy.yaml").unwrap_err().0.contains("/nonexistent"));
    // A stale_after the sidecar's one-a-second heartbeat cannot keep fresh under load.
    let dev = crate::settings::parse(&format!("stale_after: 1s\npolicy: |\n{}", indented_dev_policy()));
    assert!(dev.map(|_| ()).unwrap_err().0.contains("stale_after: at least 2s"));
}

#[test]
fn a_header_change_envoy_refuses_stops_the_request() {
    let mut public = request("GET", "/public/x", &[("x-user-id", "root")]);
    public.refuse_headers = true;
    assert!(!Filter::new(engine()).on_request_headers(&public), "never forwarded with the client's x-user-id");
    let (status, _, _, details) = public.sent.borrow().clone().expect("answered");
    assert_eq!((status, details.as_str()), (503, "portcullis_header_refused"));
}
