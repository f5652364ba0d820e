//! Listeners besides gRPC, the admin token, the state backend, the claims cache and the audit sink.

use super::*;

impl Validator {
    pub(super) fn admin(
        &mut self,
        listen: Option<&str>,
        raw: Option<&RawAdmin>,
    ) -> Option<(AdminSettings, AdminToken)> {
        let token_file = raw.and_then(|a| a.token_file.as_deref());
        let Some(listen) = listen else {
            if raw.is_some() {
                self.problems.add("admin", "needs listen.admin");
            }
            return None;
        };
        let addr =
            listen.parse().map_err(|_| self.problems.add("listen.admin", "expected host:port with an IP address")).ok();
        let Some(file) = token_file else {
            self.problems.add("admin.token_file", "required with listen.admin (the admin API always needs a token)");
            return None;
        };
        let bytes = self.read("admin.token_file", file)?;
        let token = String::from_utf8(bytes).map(|t| t.trim().to_string()).unwrap_or_default();
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problems.add("admin.token_file", "the token must be at least 16 visible characters");
            return None;
        }
        Some((AdminSettings { addr: addr? }, AdminToken::new(token)))
    }

    /// The state backend, and what a replica does while its state may be outdated.
    pub(super) fn state(&mut self, raw: &RawState) -> (StateBackend, OnStale) {
        let redis_only = [
            (raw.url.is_some(), "url"),
            (raw.sentinel.is_some(), "sentinel"),
            (raw.tls.is_some(), "tls"),
            (raw.username.is_some(), "username"),
            (raw.password_file.is_some(), "password_file"),
            (raw.key_prefix.is_some(), "key_prefix"),
            (raw.resync_interval.is_some(), "resync_interval"),
            (raw.on_stale.is_some(), "on_stale"),
            (raw.fail_open_when_stale.is_some(), "fail_open_when_stale"),
        ];
        let memory_only =
            [(raw.dir.is_some(), "dir"), (raw.acknowledge_ephemeral_state.is_some(), "acknowledge_ephemeral_state")];
        match raw.backend.as_str() {
            "memory" => {
                for (present, field) in redis_only {
                    if present {
                        self.problems.add(format!("state.{field}"), "only applies with backend: redis");
                    }
                }
                let dir = raw.dir.as_ref().map(|d| self.base.join(d));
                if raw.dir.as_deref().is_some_and(str::is_empty) {
                    self.problems.add("state.dir", "must name a folder");
                }
                if dir.is_some() && raw.acknowledge_ephemeral_state == Some(true) {
                    self.problems.add("state.acknowledge_ephemeral_state", "contradicts state.dir; keep one");
                }
                (StateBackend::Memory { dir }, OnStale::Deny)
            }
            "redis" => {
                let target = self.redis_target(raw);
                let tls = raw.tls.as_ref().map(|t| self.redis_tls(t));
                if let (Some(_), RedisTarget::Url(url)) = (&tls, &target)
                    && url.starts_with("redis://")
                {
                    self.problems.add("state.tls", "needs a rediss:// url (TLS)");
                }
                let password = raw.password_file.as_ref().and_then(|f| self.secret("state.password_file", f));
                let max_staleness =
                    self.duration("state.max_staleness", raw.max_staleness.as_deref(), Duration::from_secs(30));
                if max_staleness < Duration::from_secs(1) {
                    self.problems.add("state.max_staleness", "must be at least 1s");
                }
                let resync_interval =
                    self.duration("state.resync_interval", raw.resync_interval.as_deref(), Duration::from_secs(300));
                if resync_interval < Duration::from_secs(1) {
                    self.problems.add("state.resync_interval", "must be at least 1s");
                }
                for (present, field) in memory_only {
                    if present {
                        self.problems.add(format!("state.{field}"), "only applies with backend: memory");
                    }
                }
                let key_prefix = raw.key_prefix.clone().unwrap_or_else(|| "portcullis".into());
                // Braces would move keys between hash slots (`{prefix}` is the cluster's tag).
                if key_prefix.is_empty() || key_prefix.contains(['*', '?', '[', ' ', '{', '}']) {
                    self.problems
                        .add("state.key_prefix", "must be non-empty without glob characters, braces or spaces");
                }
                let on_stale = match (raw.on_stale.as_deref(), raw.fail_open_when_stale) {
                    (Some(_), Some(_)) => {
                        self.problems.add("state.fail_open_when_stale", "replaced by state.on_stale; keep only that");
                        OnStale::Deny
                    }
                    (None | Some("deny"), None) => OnStale::Deny,
                    (Some("serve_local"), None) => OnStale::ServeLocal,
                    (Some(other), None) => {
                        self.problems.add("state.on_stale", format!("\"{other}\" is not deny or serve_local"));
                        OnStale::Deny
                    }
                    (None, Some(open)) => {
                        self.warnings.push(format!(
                            "state.fail_open_when_stale: deprecated; write state.on_stale: {}",
                            if open { "serve_local" } else { "deny" }
                        ));
                        if open { OnStale::ServeLocal } else { OnStale::Deny }
                    }
                };
                let settings = RedisSettings {
                    target,
                    tls,
                    username: raw.username.clone(),
                    password,
                    key_prefix,
                    max_staleness,
                    resync_interval,
                };
                (StateBackend::Redis(Box::new(settings)), on_stale)
            }
            other => {
                self.problems.add("state.backend", format!("unknown backend \"{other}\" (memory or redis)"));
                (StateBackend::default(), OnStale::Deny)
            }
        }
    }

    fn secret(&mut self, path: &str, file: &str) -> Option<Secret> {
        let bytes = self.read(path, file)?;
        Some(Secret::new(String::from_utf8_lossy(&bytes).trim_end_matches(['\r', '\n']).to_string()))
    }

    /// `host:port` entries (sentinels, cluster nodes), each checked.
    fn host_ports(&mut self, path: &str, nodes: &[String]) {
        for (i, node) in nodes.iter().enumerate() {
            let port = node.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty()).then_some(())?;
                port.parse::<u16>().ok().filter(|p| *p > 0)
            });
            if port.is_none() {
                self.problems.add(format!("{path}[{i}]"), format!("\"{node}\" is not host:port"));
            }
        }
    }

    fn redis_target(&mut self, raw: &RawState) -> RedisTarget {
        let given = [raw.url.is_some(), raw.sentinel.is_some(), raw.cluster.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            self.problems.add("state.url", "give one of url, sentinel or cluster");
            return RedisTarget::Url(String::new());
        }
        if let Some(cluster) = &raw.cluster {
            if cluster.nodes.is_empty() {
                self.problems.add("state.cluster.nodes", "at least one cluster node host:port");
            }
            self.host_ports("state.cluster.nodes", &cluster.nodes);
            return RedisTarget::Cluster { nodes: cluster.nodes.clone() };
        }
        match (&raw.url, &raw.sentinel) {
            (None, None) => {
                self.problems.add(
                    "state.url",
                    "required with backend: redis (redis://host:port, rediss://host:port, a sentinel or a cluster block)",
                );
                RedisTarget::Url(String::new())
            }
            // (url and sentinel both given was refused above)
            (Some(url), _) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    self.problems.add("state.url", "must be redis://host:port or rediss://host:port (TLS)");
                } else if url
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
                {
                    self.problems.add("state.url", "put credentials in username and password_file, not in the URL");
                } else if url.contains('#') {
                    self.problems.add("state.url", "no #fragment (like #insecure): TLS is always verified");
                }
                RedisTarget::Url(url.clone())
            }
            (None, Some(sentinel)) => {
                if sentinel.master.is_empty() {
                    self.problems.add("state.sentinel.master", "required: the master's name");
                }
                if sentinel.nodes.is_empty() {
                    self.problems.add("state.sentinel.nodes", "at least one sentinel host:port");
                }
                self.host_ports("state.sentinel.nodes", &sentinel.nodes);
                let password =
                    sentinel.password_file.as_ref().and_then(|f| self.secret("state.sentinel.password_file", f));
                RedisTarget::Sentinel {
                    master: sentinel.master.clone(),
                    nodes: sentinel.nodes.clone(),
                    username: sentinel.username.clone(),
                    password,
                }
            }
        }
    }

    fn redis_tls(&mut self, raw: &RawRedisTls) -> RedisTls {
        let ca_pem = raw.ca_file.as_ref().and_then(|f| self.read("state.tls.ca_file", f));
        let cert_pem = raw.cert_file.as_ref().and_then(|f| self.read("state.tls.cert_file", f));
        let key_pem = raw.key_file.as_ref().and_then(|f| self.read("state.tls.key_file", f));
        if raw.cert_file.is_some() != raw.key_file.is_some() {
            self.problems.add("state.tls", "cert_file and key_file go together");
        }
        RedisTls { ca_pem, cert_pem, key_pem }
    }

    pub(super) fn cache(&mut self, raw: Option<&RawCache>) -> CacheSettings {
        let defaults = CacheSettings::default();
        let Some(raw) = raw else { return defaults };
        let ttl = self.duration("cache.ttl", raw.ttl.as_deref(), defaults.ttl);
        if ttl.subsec_nanos() != 0 {
            // Entries expire by the whole-second clock the core uses.
            self.problems.add("cache.ttl", "must be whole seconds (0s turns caching off)");
        }
        let max_entries = raw.max_entries.unwrap_or(defaults.max_entries);
        if max_entries == 0 {
            self.problems.add("cache.max_entries", "must be at least 1 (set ttl: 0s to disable caching)");
        }
        let max_bytes = match raw.max_bytes.as_deref() {
            None => defaults.max_bytes,
            Some(text) => match super::listen::parse_size(text) {
                Some(n) if n >= 64 * 1024 => n as u64,
                _ => {
                    self.problems
                        .add("cache.max_bytes", format!("\"{text}\" is not a size of at least 64KiB (like 48MiB)"));
                    defaults.max_bytes
                }
            },
        };
        CacheSettings { ttl, max_entries, max_bytes }
    }

    pub(super) fn audit(&mut self, raw: Option<&RawAudit>) -> AuditSettings {
        let Some(raw) = raw else {
            return AuditSettings::default();
        };
        let allow_sample_rate = raw.allow_sample_rate.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&allow_sample_rate) {
            self.problems.add("telemetry.audit.allow_sample_rate", "must be between 0.0 and 1.0");
        }
        let file = raw.file.as_ref().map(|f| self.base.join(f));
        if let Some(parent) = file.as_ref().and_then(|f| f.parent())
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            self.problems.add("telemetry.audit.file", format!("folder {} does not exist", parent.display()));
        }
        AuditSettings { file, allow_sample_rate }
    }
}
