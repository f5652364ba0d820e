//! `ip` (lists, trusted proxies, auto-block) and `rate_limits` tiers.

use super::*;

impl Validator {
    /// Behind a gateway or a mesh proxy the peer is that proxy unless `ip.trusted_cidrs` names
    /// it: per-IP blocks and limits would then block or throttle everyone behind it at once.
    pub(super) fn trap_warnings(&mut self, ip: &IpPolicy, tiers: &HashMap<String, RateTier>) {
        if !ip.trusted.is_empty() {
            return;
        }
        let why = "is empty, so the client IP is the connecting peer: behind a gateway or proxy that is \
                   the proxy, and one client's failures block everyone behind it. List the proxies' \
                   addresses (pod CIDRs, the gateway's) so x-forwarded-for is believed from them";
        if ip.auto_block.is_some() {
            self.warnings.push(format!("ip.trusted_cidrs: {why} (used by ip.auto_block)"));
        }
        let mut ip_tiers: Vec<&str> =
            tiers.values().filter(|t| t.key == RateKey::Ip).map(|t| t.name.as_str()).collect();
        ip_tiers.sort_unstable();
        for name in ip_tiers {
            self.warnings.push(format!("ip.trusted_cidrs: {why} (used by rate_limits.tiers.{name}, keyed by ip)"));
        }
    }

    pub(super) fn cidrs(&mut self, path: &str, inline: &[String], files: &[String]) -> CidrSet {
        let mut set = CidrSet::default();
        for (i, text) in inline.iter().enumerate() {
            match parse_cidr(text) {
                Ok(net) => set.insert(net),
                Err(e) => self.problems.add(format!("{path}[{i}]"), e),
            }
        }
        for (i, file) in files.iter().enumerate() {
            let p = format!("{path}_files[{i}]");
            let Some(bytes) = self.read(&p, file) else { continue };
            if let Err(e) = set.extend_from_lines(&String::from_utf8_lossy(&bytes)) {
                self.problems.add(&p, e);
            }
        }
        set
    }

    pub(super) fn ip(&mut self, raw: &RawIp) -> IpPolicy {
        let allow = self.cidrs("ip.allow", &raw.allow, &raw.allow_files);
        let deny = self.cidrs("ip.deny", &raw.deny, &raw.deny_files);
        let trusted = self.cidrs("ip.trusted_cidrs", &raw.trusted_cidrs, &[]);
        let auto_block = raw.auto_block.as_ref().map(|a| {
            let window = self.duration("ip.auto_block.window", Some(&a.window), Duration::from_secs(900));
            let block_for = self.duration("ip.auto_block.block_for", Some(&a.block_for), Duration::from_secs(1800));
            if a.failures == 0 {
                self.problems.add("ip.auto_block.failures", "must be at least 1");
            }
            for (name, d) in [("window", window), ("block_for", block_for)] {
                if d < Duration::from_secs(1) {
                    self.problems.add(format!("ip.auto_block.{name}"), "must be at least 1s");
                }
            }
            AutoBlock {
                failures: a.failures,
                window_secs: window.as_secs() as i64,
                block_for_secs: block_for.as_secs() as i64,
            }
        });
        let allow_trusted_proxies = raw.allow_trusted_proxies.unwrap_or(false);
        if !allow.is_empty() && !trusted.is_empty() {
            self.warnings.push(if allow_trusted_proxies {
                "ip.allow_trusted_proxies: a peer in ip.trusted_cidrs that sends no x-forwarded-for (or only trusted hops) passes ip.allow itself; with the pod CIDR trusted, that is every pod".to_string()
            } else {
                "ip.allow: holds for the client a trusted proxy forwards, and for the proxy itself when it forwards none; list such proxies in ip.allow, or set ip.allow_trusted_proxies".to_string()
            });
        }
        IpPolicy { allow, deny, trusted, allow_trusted_proxies, auto_block }
    }

    /// Fleet tiers need a shared store; the fallback divisor is sane.
    pub(super) fn fleet_checks(
        &mut self,
        raw: Option<&RawRateLimits>,
        tiers: &HashMap<String, RateTier>,
        redis: bool,
    ) -> u32 {
        let mut fleet: Vec<&str> = tiers.values().filter(|t| t.scope.is_fleet()).map(|t| t.name.as_str()).collect();
        fleet.sort_unstable();
        if !redis {
            for name in fleet {
                self.problems.add(format!("rate_limits.tiers.{name}.scope"), "fleet needs state.backend: redis");
            }
        }
        let replicas = raw.and_then(|r| r.fallback_replicas).unwrap_or(1);
        if replicas == 0 {
            self.problems.add("rate_limits.fallback_replicas", "must be at least 1");
        }
        replicas.max(1)
    }

    pub(super) fn tiers(&mut self, raw: Option<&RawRateLimits>) -> HashMap<String, RateTier> {
        let mut tiers = HashMap::new();
        let Some(raw) = raw else { return tiers };
        for (name, t) in &raw.tiers {
            let p = format!("rate_limits.tiers.{name}");
            let key = match t.key.as_str() {
                "ip" => RateKey::Ip,
                "subject" => RateKey::Subject,
                "tenant" => RateKey::Tenant,
                other => {
                    self.problems.add(format!("{p}.key"), format!("\"{other}\" is not ip, subject or tenant"));
                    continue;
                }
            };
            let whole = |v: f64| (v >= 1.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32);
            let (amount, period_secs) = match (t.rps, t.per_minute) {
                (Some(rps), None) => (whole(rps), 1),
                (None, Some(pm)) => (whole(pm), 60),
                _ => {
                    self.problems.add(&p, "exactly one of rps or per_minute is required");
                    continue;
                }
            };
            let Some(amount) = amount else {
                self.problems.add(&p, "the rate must be a whole number of at least 1");
                continue;
            };
            let burst = t.burst.unwrap_or(amount);
            if burst == 0 {
                self.problems.add(format!("{p}.burst"), "must be at least 1");
            }
            let scope = match t.scope.as_deref() {
                None | Some("local") => RateScope::Local,
                Some("fleet") => RateScope::Fleet,
                Some("fleet_exact") => RateScope::FleetExact,
                Some(other) => {
                    self.problems.add(format!("{p}.scope"), format!("\"{other}\" is not local, fleet or fleet_exact"));
                    RateScope::Local
                }
            };
            tiers.insert(name.clone(), RateTier { name: name.clone(), key, amount, period_secs, burst, scope });
        }
        tiers
    }
}
