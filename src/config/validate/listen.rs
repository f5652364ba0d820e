//! `listen`: the unix socket's permissions, reflection and the listeners' limits.

use super::*;
use crate::config::listen::{CallerPolicy, CallerTls, ListenOptions, ListenerLimits, SocketPerms};

impl Validator {
    pub(super) fn listen_options(&mut self, raw: &RawListen, grpc: Option<&ListenAddr>, dev: bool) -> ListenOptions {
        let socket = match &raw.socket {
            None => SocketPerms::default(),
            Some(s) => {
                if grpc.is_some_and(|g| !matches!(g, ListenAddr::Unix(_))) && raw.state_stream.is_none() {
                    self.problems
                        .add("listen.socket", "only applies with listen.grpc: unix:/path or listen.state_stream");
                }
                SocketPerms { mode: self.socket_mode(s.mode.as_deref()), group: self.socket_group(s.group.as_deref()) }
            }
        };
        let state_stream = raw.state_stream.as_deref().and_then(|text| {
            match text.strip_prefix("unix:").map(std::path::PathBuf::from) {
                Some(path) if grpc.is_some_and(|g| matches!(g, ListenAddr::Unix(p) if *p == path)) => {
                    // Binding it would delete the gRPC socket's file: Envoy would reach the stream.
                    self.problems
                        .add("listen.state_stream", "is listen.grpc's socket; give the stream a path of its own");
                    None
                }
                Some(path) if path.is_absolute() => Some(path),
                _ => {
                    self.problems.add("listen.state_stream", "expected unix:/absolute/path (a unix socket only)");
                    None
                }
            }
        });
        ListenOptions {
            socket,
            state_stream,
            reflection: raw.reflection.unwrap_or(dev),
            limits: self.listener_limits(raw.limits.as_ref()),
        }
    }

    pub(super) fn callers(&mut self, raw: Option<&RawCallers>, grpc: Option<&ListenAddr>) -> CallerPolicy {
        let Some(raw) = raw else { return CallerPolicy::default() };
        if grpc.is_some_and(|g| matches!(g, ListenAddr::Unix(_))) {
            self.problems.add(
                "listen.callers",
                "applies to a TCP gRPC listener; a unix socket is guarded by listen.socket (mode and group)",
            );
        }
        for (i, cidr) in raw.cidrs.iter().enumerate() {
            if let Err(e) = parse_cidr(cidr) {
                self.problems.add(format!("listen.callers.cidrs[{i}]"), e);
            }
        }
        let tls = raw.tls.as_ref().and_then(|t| {
            let cert_pem = self.read("listen.callers.tls.cert_file", &t.cert_file)?;
            let key_pem = self.read("listen.callers.tls.key_file", &t.key_file)?;
            let client_ca_pem = self.read("listen.callers.tls.client_ca_file", &t.client_ca_file)?;
            let tls = CallerTls { cert_pem, key_pem, client_ca_pem };
            if let Err(e) = crate::tls::server_config(&tls) {
                self.problems.add("listen.callers.tls", e);
            }
            Some(tls)
        });
        if !raw.spiffe_ids.is_empty() && raw.tls.is_none() {
            self.problems.add(
                "listen.callers.spiffe_ids",
                "needs listen.callers.tls: identities come from verified client certificates",
            );
        }
        for (i, id) in raw.spiffe_ids.iter().enumerate() {
            if let Err(why) = spiffe_pattern(id) {
                self.problems.add(format!("listen.callers.spiffe_ids[{i}]"), format!("\"{id}\" {why}"));
            }
        }
        if raw.tls.is_some() && raw.spiffe_ids.is_empty() {
            self.warnings.push(
                "listen.callers.spiffe_ids: is empty, so every certificate client_ca_file signed may call \
                 Check (in a mesh, usually every workload); list the gateways' and proxies' identities"
                    .to_string(),
            );
        }
        CallerPolicy { cidrs: raw.cidrs.clone(), tls, spiffe_ids: raw.spiffe_ids.clone() }
    }

    fn socket_mode(&mut self, raw: Option<&str>) -> u32 {
        let default = SocketPerms::default().mode;
        let Some(text) = raw else { return default };
        match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
            Ok(mode) if mode & 0o002 != 0 => {
                self.problems.add(
                    "listen.socket.mode",
                    format!("\"{text}\" lets every user connect; give the proxy the socket's group instead"),
                );
                default
            }
            Ok(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => mode,
            _ => {
                self.problems.add(
                    "listen.socket.mode",
                    format!("\"{text}\" is not an octal mode like \"0660\" that lets the owner read and write"),
                );
                default
            }
        }
    }

    fn socket_group(&mut self, raw: Option<&str>) -> Option<u32> {
        let text = raw?;
        if let Ok(gid) = text.parse::<u32>() {
            return Some(gid);
        }
        match nix::unistd::Group::from_name(text) {
            Ok(Some(group)) => Some(group.gid.as_raw()),
            Ok(None) => {
                self.problems.add("listen.socket.group", format!("no group named \"{text}\" (a numeric id works too)"));
                None
            }
            Err(e) => {
                self.problems.add("listen.socket.group", format!("cannot look up group \"{text}\": {e}"));
                None
            }
        }
    }

    fn listener_limits(&mut self, raw: Option<&RawListenLimits>) -> ListenerLimits {
        let d = ListenerLimits::default();
        let Some(raw) = raw else { return d };
        let positive = |v: &mut Validator, path: &str, value: Option<&str>, default: Duration| {
            let got = v.duration(&format!("listen.limits.{path}"), value, default);
            if got.is_zero() {
                v.problems.add(format!("listen.limits.{path}"), "must be more than 0s");
                return default;
            }
            got
        };
        let request_timeout = positive(self, "request_timeout", raw.request_timeout.as_deref(), d.request_timeout);
        let keepalive_interval =
            positive(self, "keepalive_interval", raw.keepalive_interval.as_deref(), d.keepalive_interval);
        let keepalive_timeout =
            positive(self, "keepalive_timeout", raw.keepalive_timeout.as_deref(), d.keepalive_timeout);
        let http_header_read_timeout = positive(
            self,
            "http_header_read_timeout",
            raw.http_header_read_timeout.as_deref(),
            d.http_header_read_timeout,
        );
        let http_connection_timeout = positive(
            self,
            "http_connection_timeout",
            raw.http_connection_timeout.as_deref(),
            d.http_connection_timeout,
        );
        let age = self.duration(
            "listen.limits.max_connection_age",
            raw.max_connection_age.as_deref(),
            d.max_connection_age.unwrap_or_default(),
        );
        let max_concurrent_streams = raw.max_concurrent_streams.unwrap_or(d.max_concurrent_streams);
        if max_concurrent_streams == 0 {
            self.problems.add("listen.limits.max_concurrent_streams", "must be at least 1");
        }
        let mut count = |name: &str, value: Option<u32>, default: usize| -> usize {
            let value = value.map_or(default, |v| usize::try_from(v).unwrap_or(usize::MAX));
            if value == 0 {
                self.problems.add(format!("listen.limits.{name}"), "must be at least 1");
            }
            value.max(1)
        };
        let grpc_max_connections = count("grpc_max_connections", raw.grpc_max_connections, d.grpc_max_connections);
        let grpc_max_connections_per_peer =
            count("grpc_max_connections_per_peer", raw.grpc_max_connections_per_peer, d.grpc_max_connections_per_peer);
        let http_max_connections = count("http_max_connections", raw.http_max_connections, d.http_max_connections);
        let http_max_connections_per_peer =
            count("http_max_connections_per_peer", raw.http_max_connections_per_peer, d.http_max_connections_per_peer);
        let health_watches_per_peer =
            count("health_watches_per_peer", raw.health_watches_per_peer, d.health_watches_per_peer);
        let max_streams_per_peer = count("max_streams_per_peer", raw.max_streams_per_peer, d.max_streams_per_peer);
        let max_streams = count("max_streams", raw.max_streams, d.max_streams);
        let grpc_max_pending_connections =
            count("grpc_max_pending_connections", raw.grpc_max_pending_connections, d.grpc_max_pending_connections);
        let admission_timeout =
            positive(self, "admission_timeout", raw.admission_timeout.as_deref(), d.admission_timeout);
        let max_message_bytes = match raw.max_message_size.as_deref() {
            None => d.max_message_bytes,
            Some(text) => match parse_size(text) {
                Some(n) if (4 * 1024..=16 * 1024 * 1024).contains(&n) => n,
                _ => {
                    self.problems.add(
                        "listen.limits.max_message_size",
                        format!("\"{text}\" is not a size from 4KiB to 16MiB (like 256KiB)"),
                    );
                    d.max_message_bytes
                }
            },
        };
        let mut size = |name: &str, value: Option<&str>, default: usize| -> usize {
            match value {
                None => default,
                Some(text) => match parse_size(text) {
                    Some(n) if n >= 64 * 1024 => n,
                    _ => {
                        self.problems.add(
                            format!("listen.limits.{name}"),
                            format!("\"{text}\" is not a size of at least 64KiB (like 16MiB)"),
                        );
                        default
                    }
                },
            }
        };
        let max_buffered_bytes = size("max_buffered_bytes", raw.max_buffered_bytes.as_deref(), d.max_buffered_bytes);
        let max_buffered_bytes_per_peer = size(
            "max_buffered_bytes_per_peer",
            raw.max_buffered_bytes_per_peer.as_deref(),
            d.max_buffered_bytes_per_peer,
        );
        let max_header_list_bytes = match raw.max_header_list_size.as_deref() {
            None => d.max_header_list_bytes,
            Some(text) => match parse_size(text) {
                Some(n) if (4 * 1024..=1024 * 1024).contains(&n) => n,
                _ => {
                    self.problems.add(
                        "listen.limits.max_header_list_size",
                        format!("\"{text}\" is not a size from 4KiB to 1MiB (like 16KiB)"),
                    );
                    d.max_header_list_bytes
                }
            },
        };
        if max_message_bytes > max_buffered_bytes_per_peer {
            self.problems
                .add("listen.limits.max_buffered_bytes_per_peer", "must hold at least one message of max_message_size");
        }
        if max_buffered_bytes_per_peer > max_buffered_bytes {
            self.problems.add("listen.limits.max_buffered_bytes_per_peer", "must not exceed max_buffered_bytes");
        }
        ListenerLimits {
            max_buffered_bytes,
            max_buffered_bytes_per_peer,
            health_watches_per_peer,
            max_streams_per_peer,
            max_streams,
            grpc_max_pending_connections,
            max_header_list_bytes,
            grpc_max_connections,
            grpc_max_connections_per_peer,
            admission_timeout,
            max_concurrent_streams: max_concurrent_streams.max(1),
            max_message_bytes,
            request_timeout,
            keepalive_interval,
            keepalive_timeout,
            max_connection_age: (!age.is_zero()).then_some(age),
            http_header_read_timeout,
            http_connection_timeout,
            http_max_connections,
            http_max_connections_per_peer,
        }
    }
}

/// A SPIFFE id (`spiffe://trust-domain/path`) or a prefix of whole segments
/// (`spiffe://trust-domain/ns/istio-system/*`): a `*` anywhere but after a `/` would let
/// `…/istio-system*` match `…/istio-system-evil`.
fn spiffe_pattern(id: &str) -> Result<(), &'static str> {
    let rest = id.strip_prefix("spiffe://").ok_or("is not a SPIFFE id (spiffe://trust-domain/path)")?;
    let (domain, path) = rest.split_once('/').ok_or("has no path after the trust domain")?;
    if domain.is_empty() || !domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err("has an invalid trust domain (lowercase letters, digits, - . _)");
    }
    let path = match path.strip_suffix('*') {
        Some(prefix) if prefix.is_empty() || prefix.ends_with('/') => prefix.trim_end_matches('/'),
        Some(_) => return Err("may end in * only right after a / (a prefix of whole segments)"),
        None => path,
    };
    if path.contains('*') {
        return Err("may hold * only at its end");
    }
    if path.split('/').any(|seg| (seg.is_empty() && !path.is_empty()) || seg == "." || seg == "..")
        || path.contains('%')
    {
        return Err("has an empty, '.', '..' or percent-encoded segment");
    }
    Ok(())
}

/// `262144`, `256KiB`, `1MiB` (binary units; `KB`/`MB` read the same, as most tools do).
pub(super) fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(factor)
}
