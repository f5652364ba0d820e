//! Real upstream frameworks behind the shipped Envoy config and Portcullis (issues 19 and 31):
//! every trick request and the whole attack corpus go to every framework, and the oracle of
//! `support/upstreams.rs` re-checks what each handler ran for against Portcullis.

use crate::support::attack_corpus::attacks;
use crate::support::now;
use crate::support::upstreams::{Fleet, Trick, tokens, trick};

/// Every trick of issue 19's "Why", plus requests that must reach their handler (controls).
pub fn tricks(now: i64) -> (Vec<Trick>, Vec<(Trick, &'static str)>) {
    let (viewer, admin, commas, forged, dup_sub, plain) = tokens(now);
    let b = |t: &str| format!("Bearer {t}");
    let (viewer_b, admin_b) = (b(&viewer), b(&admin));
    let cookie_twin = format!("session_jwt ={forged}; session_jwt={viewer}");
    let tricks = vec![
        trick("path parameter skips step-up", "GET", "/admin/critical;x/rotate-keys", &[("authorization", &admin_b)]),
        trick(
            "path parameter skips tenant roles",
            "GET",
            "/tenants/acme/admin;x/users",
            &[("authorization", &viewer_b)],
        ),
        trick("anonymous path parameter past a catch-all", "GET", "/admin;x/users", &[]),
        trick("..; dot-segment", "GET", "/public/..;/admin/users", &[]),
        trick(".; dot-segment", "GET", "/public/.;/admin/users", &[]),
        trick("encoded path parameter", "GET", "/admin%3Bx/users", &[]),
        trick("lowercase method over HTTP/2", "delete", "/items", &[("authorization", &viewer_b)]).h2(),
        trick("mixed-case method over HTTP/2", "Delete", "/items", &[("authorization", &viewer_b)]).h2(),
        trick("lowercase method over HTTP/1.1", "delete", "/items", &[("authorization", &viewer_b)]),
        trick("path case", "GET", "/ADMIN/users", &[("authorization", &viewer_b)]),
        trick("path case, anonymous", "GET", "/Admin/users", &[]),
        trick(
            "X-Forwarded-Host switches the tenant",
            "GET",
            "/whoami",
            &[("authorization", &viewer_b), ("x-forwarded-host", "globex.tenants.example.com")],
        )
        .on(&["acme.tenants.example.com"]),
        trick(
            "Forwarded host= switches the tenant",
            "GET",
            "/whoami",
            &[("authorization", &viewer_b), ("forwarded", "host=globex.tenants.example.com")],
        )
        .on(&["acme.tenants.example.com"]),
        trick(
            "X-Forwarded-Host onto the admin vhost",
            "GET",
            "/",
            &[("authorization", &viewer_b), ("x-forwarded-host", "admin.example.com")],
        ),
        trick("_method override", "POST", "/items?_method=DELETE", &[("authorization", &viewer_b)]),
        trick("_METHOD override, encoded", "POST", "/items?%5Fmethod=DELETE", &[("authorization", &viewer_b)]),
        trick("underscore twin on a public route", "GET", "/public/x", &[("x_user_id", "admin")]),
        trick(
            "underscore twin beside the real header",
            "GET",
            "/items",
            &[("authorization", &viewer_b), ("x_user_id", "admin")],
        ),
        trick("padded cookie name", "GET", "/items", &[("cookie", &cookie_twin)]),
        trick("trailing-dot host", "GET", "/", &[("authorization", &viewer_b)]).on(&["admin.example.com."]),
        trick("trailing-dot tenant host", "GET", "/whoami", &[("authorization", &viewer_b)])
            .on(&["globex.tenants.example.com."]),
        trick("non-numeric port", "GET", "/", &[("authorization", &viewer_b)]).on(&["admin.example.com:x"]),
        trick("userinfo", "GET", "/", &[("authorization", &viewer_b)]).on(&["u@admin.example.com"]),
        trick("two Host headers", "GET", "/", &[("authorization", &viewer_b)])
            .on(&["api.example.com", "admin.example.com"]),
        trick("two Host headers, admin first", "GET", "/", &[("authorization", &viewer_b)])
            .on(&["admin.example.com", "api.example.com"]),
        trick("trailing slash on an exact route", "GET", "/me/", &[("authorization", &viewer_b)]),
        trick("comma inside a role", "GET", "/items", &[("authorization", &b(&commas))]),
        trick("tenant map value false", "GET", "/tenants/globex/x", &[("authorization", &viewer_b)]),
        trick("tenant map value null", "GET", "/tenants/initech/x", &[("authorization", &viewer_b)]),
        trick("Basic scheme", "GET", "/items", &[("authorization", "Basic YWRtaW46YWRtaW4=")]),
        trick("duplicate sub", "GET", "/items", &[("authorization", &b(&dup_sub))]),
        trick("HEAD on a GET-only route", "HEAD", "/reports", &[]),
        trick("OPTIONS with a forged token", "OPTIONS", "/items", &[("authorization", &b(&forged))]),
        // From the adversarial review of this change.
        trick(
            "path tenant without a trailing slash",
            "GET",
            "/tenants/globex",
            &[("authorization", &viewer_b), ("x-tenant-id", "acme")],
        ),
        trick(
            "case-folded path tenant",
            "GET",
            "/TENANTS/globex/x",
            &[("authorization", &viewer_b), ("x-tenant-id", "acme")],
        ),
        trick("format suffix", "GET", "/reports.json", &[]),
        trick("format suffix on an exact route", "GET", "/me.json", &[("authorization", &viewer_b)]),
        trick(
            "X-Forwarded-Server onto the admin vhost",
            "GET",
            "/items",
            &[("authorization", &viewer_b), ("x-forwarded-server", "admin.example.com")],
        ),
        trick("encoded ':' and '@'", "GET", "/admin%3Ax/%40users", &[]),
        trick(
            "Basic joined with a forged Bearer",
            "GET",
            "/elsewhere",
            &[("authorization", "Basic eDp5"), ("authorization", &b(&forged))],
        ),
        // Issue 31: the five bypasses of the third review, each through the framework that
        // fell for it (and every other). Unicode digits: Werkzeug's <int:> (Python's \d and
        // int()) refunds order 1.
        trick("fullwidth digit", "POST", "/orders/%EF%BC%91/refund", &[]),
        trick("Arabic-Indic digit", "POST", "/orders/%D9%A1/refund", &[]),
        trick("Devanagari digit", "POST", "/orders/%E0%A5%A7/refund", &[("authorization", &viewer_b)]),
        // Rails: one trailing slash dropped, then any [^/.?]+ extension is the format.
        trick("format suffix after a slash", "GET", "/admin.json/", &[]),
        trick("format suffix with a dash", "GET", "/admin.x-y", &[]),
        trick("long format suffix", "GET", "/admin.verylongext", &[]),
        trick("uppercase format suffix after a slash", "GET", "/reports.JSON/", &[]),
        // qs and Rack read bracketed keys as the bare name: the no-debug guard must see them.
        trick("qs bracketed key", "GET", "/public/x?[debug]=1", &[]),
        trick("qs bracketed key, encoded", "GET", "/public/x?%5Bdebug%5D=1", &[]),
        trick("Rack leading brackets", "GET", "/public/x?]]debug=1", &[]),
        trick("Rack double brackets", "GET", "/public/x?[[debug]]=1", &[]),
        // PHP cuts a decoded key at NUL.
        trick("NUL in _method", "POST", "/items?_method%00=DELETE", &[("authorization", &viewer_b)]),
        trick("NUL in a guarded key", "GET", "/public/x?debug%00x=1", &[]),
        // PHP maps '.' in header names to '_' in $_SERVER.
        trick("dotted identity header", "GET", "/public/x", &[("x.user.id", "admin")]),
        trick("dotted identity header, anonymous", "GET", "/elsewhere", &[("x.user.id", "admin")]),
        trick(
            "dotted method override",
            "POST",
            "/items",
            &[("authorization", &viewer_b), ("x.http.method.override", "DELETE")],
        ),
        trick(
            "dotted forwarded host",
            "GET",
            "/items",
            &[("authorization", &viewer_b), ("x.forwarded.host", "admin.example.com")],
        ),
        trick("dotted guarded header", "GET", "/public/x", &[("x.debug", "1")]),
        trick("plain guarded header", "GET", "/public/x", &[("x-debug", "1")]),
        trick("plain guarded key", "GET", "/public/x?debug=1", &[]),
        // From the adversarial review: php -S (and httptools) skip extra '?'s before the query.
        trick("extra ? before _method", "POST", "/items??_method=DELETE", &[("authorization", &viewer_b)]),
        trick("extra ? before a guarded key", "GET", "/public/x??debug=1", &[]),
        trick("Spring suffix from the first dot", "GET", "/admin.a.b", &[]),
    ];
    let controls = vec![
        (trick("control: items", "GET", "/items", &[("authorization", &viewer_b)]), "items"),
        (trick("control: admin", "GET", "/admin/users", &[("authorization", &admin_b)]), "admin"),
        (trick("control: tenant", "GET", "/tenants/acme/docs", &[("authorization", &viewer_b)]), "tenant"),
        (
            trick("control: tenant admin", "GET", "/tenants/acme/admin/users", &[("authorization", &admin_b)]),
            "tenant-admin",
        ),
        (trick("control: me", "GET", "/me", &[("authorization", &admin_b)]), "me"),
        (trick("control: public", "GET", "/public/x", &[]), "public"),
        (trick("control: anonymous fallback", "GET", "/elsewhere", &[]), "fallback"),
        (trick("control: plain token, HTTP/2", "GET", "/items", &[("authorization", &b(&plain))]).h2(), "items"),
        (
            trick("control: admin vhost", "GET", "/", &[("authorization", &admin_b)]).on(&["admin.example.com"]),
            "fallback",
        ),
        (trick("control: refund", "POST", "/orders/1/refund", &[("authorization", &admin_b)]), "orders-refund"),
        (trick("control: orders", "GET", "/orders/1", &[]), "orders"),
        (trick("control: plain query", "GET", "/public/x?page=2&sort=asc", &[]), "public"),
    ];
    (tricks, controls)
}

#[test]
fn real_frameworks_behind_envoy_never_run_what_portcullis_would_deny() {
    let fleet = Fleet::start("upstreams");
    let now = now();
    let (mut all, controls) = tricks(now);
    all.extend(attacks(now).iter().filter_map(|a| Trick::from_raw(a.name, &a.request)));
    let mut violations = Vec::new();
    let mut ran = 0;
    for (name, envoy) in &fleet.envoys {
        for t in &all {
            violations.extend(fleet.judge(name, envoy, t, &mut ran));
        }
        for (t, handler) in &controls {
            match crate::support::upstreams::send(&fleet.rt, envoy, t) {
                Some((200, body)) if body["handler"] == *handler => {
                    let found = crate::support::upstreams::oracle(&fleet.rt, &fleet.grpc, t, &body);
                    violations.extend(found.into_iter().map(|v| format!("{name}: {}: {v}", t.name)));
                }
                other => violations.push(format!("{name}: {} did not reach {handler}: {other:?}", t.name)),
            }
        }
    }
    for t in all.iter().filter(|t| t.name.contains("underscore")) {
        match crate::support::upstreams::send(&fleet.rt, &fleet.lenient, t) {
            Some((400, body)) if body["reason"] == "invalid_request" => {}
            other => violations.push(format!("envoy allowing underscores: {}: {other:?}", t.name)),
        }
    }
    assert!(ran > 50, "the corpus reached only {ran} handlers: the oracle was barely exercised");
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));

    // Issue 34: the same requests through Envoys deciding with the dynamic module get the same
    // answers and put the same request before every framework.
    let mut differences = Vec::new();
    let mut compared = 0;
    let every: Vec<&Trick> = all.iter().chain(controls.iter().map(|(t, _)| t)).collect();
    for ((name, ext_authz), (module_name, module)) in fleet.envoys.iter().zip(&fleet.modules) {
        assert_eq!(name, module_name);
        for t in &every {
            let a = crate::support::upstreams::send(&fleet.rt, ext_authz, t).map(|(s, b)| (s, comparable(b)));
            let b = crate::support::upstreams::send(&fleet.rt, module, t).map(|(s, b)| (s, comparable(b)));
            compared += 1;
            if a != b {
                differences.push(format!("{name}: {}:\n ext_authz {a:?}\n module    {b:?}", t.name));
            }
        }
    }
    assert!(compared > 500, "only {compared} requests compared");
    assert!(differences.is_empty(), "{} of {compared} differ:\n{}", differences.len(), differences.join("\n"));
}

/// A framework's echo or Portcullis' deny body without what differs between two requests by
/// nature (request ids, Envoy's per-request headers).
fn comparable(mut body: serde_json::Value) -> serde_json::Value {
    match &mut body {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| {
                let k = k.to_ascii_lowercase().replace('_', "-");
                !(k == "request-id" || k.ends_with("x-request-id") || k.contains("x-envoy-"))
            });
            for value in map.values_mut() {
                *value = comparable(value.take());
            }
        }
        serde_json::Value::Array(items) => {
            for item in items.iter_mut() {
                *item = comparable(item.take());
            }
        }
        _ => {}
    }
    body
}
