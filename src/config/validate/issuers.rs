//! `issuers`: algorithms, key sources (JWKS file, inline, URL, discovery; PEM; HMAC) and time rules.

use super::*;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// Tenant ids a template may take: no character that changes the URL it lands in.
fn valid_tenant(t: &str) -> bool {
    (1..=128).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Validator {
    /// One issuer, or one per tenant of an issuer template (`{tenant}` in `issuer`, `tenants`
    /// listed): each with its own `iss` and key source.
    pub(super) fn concrete_issuers(&mut self, i: usize, issuer: &RawIssuer) -> Vec<RawIssuer> {
        let p = format!("issuers[{i}]");
        let name = issuer.issuer.as_deref().unwrap_or_default();
        let templated = name.contains("{tenant}");
        match (&issuer.tenants, templated) {
            (None, false) => return vec![issuer.clone()],
            (Some(_), false) => {
                self.problems.add(format!("{p}.tenants"), "only applies to an issuer with {tenant} in it");
                return vec![issuer.clone()];
            }
            (None, true) | (Some(_), true) if issuer.tenants.as_ref().is_none_or(|t| t.is_empty()) => {
                self.problems.add(format!("{p}.tenants"), "an issuer template needs the tenants it accepts");
                return Vec::new();
            }
            _ => {}
        }
        if name.matches("{tenant}").count() != 1 || name.contains("{tenant}{") {
            self.problems.add(format!("{p}.issuer"), "an issuer template holds {tenant} once");
            return Vec::new();
        }
        let mut out = Vec::new();
        for (j, tenant) in issuer.tenants.iter().flatten().enumerate() {
            if !valid_tenant(tenant) {
                self.problems.add(format!("{p}.tenants[{j}]"), "1 to 128 characters of A-Z a-z 0-9 - _ .");
                continue;
            }
            let fill = |text: &Option<String>| text.as_ref().map(|t| t.replace("{tenant}", tenant));
            let mut concrete = issuer.clone();
            concrete.issuer = fill(&issuer.issuer);
            concrete.tenants = None;
            if let Some(jwks) = concrete.jwks.as_mut() {
                jwks.url = fill(&jwks.url);
                jwks.discovery = fill(&jwks.discovery);
                jwks.file = fill(&jwks.file);
                jwks.fallback_file = fill(&jwks.fallback_file);
            }
            out.push(concrete);
        }
        out
    }

    pub(super) fn issuers(&mut self, raw: &[RawIssuer], dev: bool) -> (Verifier, Vec<IssuerRules>, Vec<JwksJob>) {
        let mut verifier = Verifier::default();
        let mut jobs = Vec::new();
        let mut rules = Vec::new();
        if raw.is_empty() {
            self.problems.add("issuers", "at least one issuer is required");
        }
        let expanded: Vec<(usize, RawIssuer)> = raw
            .iter()
            .enumerate()
            .flat_map(|(i, issuer)| self.concrete_issuers(i, issuer).into_iter().map(move |c| (i, c)))
            .collect();
        for (n, (i, issuer)) in expanded.iter().enumerate() {
            let (i, issuer) = (*i, issuer);
            let p = format!("issuers[{i}]");
            let name = issuer.issuer.clone().unwrap_or_default();
            if name.is_empty() {
                self.problems.add(format!("{p}.issuer"), "required");
            } else if name == DEV_ISSUER && !dev {
                self.problems.add(
                    format!("{p}.issuer"),
                    format!("the development issuer {DEV_ISSUER} is only allowed with `dev: true`"),
                );
            }
            if expanded[..n].iter().any(|(_, other)| other.issuer == issuer.issuer) {
                self.problems.add(format!("{p}.issuer"), format!("duplicate issuer \"{name}\""));
            }
            if issuer.audiences.is_empty() {
                self.problems.add(format!("{p}.audiences"), "at least one audience is required");
            }
            let algorithms = self.algorithms(&p, &issuer.algorithms);
            let store = match self.keys(&p, issuer, &algorithms) {
                Some(KeySource::Fixed(set)) => Arc::new(KeyStore::fixed(set)),
                Some(KeySource::Remote(remote)) => {
                    let store = Arc::new(KeyStore::remote());
                    jobs.push(JwksJob { issuer: Arc::from(name.as_str()), store: store.clone(), remote });
                    store
                }
                None => Arc::new(KeyStore::fixed(KeySet::default())),
            };
            let leeway = self.duration(&format!("{p}.leeway"), issuer.leeway.as_deref(), Duration::from_secs(30));
            if leeway > MAX_LEEWAY {
                self.problems.add(format!("{p}.leeway"), "must be at most 5m");
            }
            let max_token_age = issuer
                .max_token_age
                .as_deref()
                .map(|s| self.duration(&format!("{p}.max_token_age"), Some(s), Duration::ZERO).as_secs() as i64);
            let token_type = issuer.token_type.as_ref().map(|tt| {
                if tt.claim.is_empty() || tt.allowed.is_empty() {
                    self.problems.add(format!("{p}.token_type"), "needs a claim and at least one allowed value");
                }
                TokenType { claim: tt.claim.clone(), allowed: tt.allowed.clone() }
            });
            let roles_pointer = issuer.roles_claim.clone().unwrap_or_else(|| "/roles".into());
            if !roles_pointer.starts_with('/') {
                self.problems.add(format!("{p}.roles_claim"), "must be a JSON Pointer starting with '/'");
            }
            let header_typ: Vec<String> = issuer.header_typ.iter().map(|t| crate::jwt::normalize_typ(t)).collect();
            let required = issuer.required.unwrap_or(true);
            let jwt_authn_payload = issuer.envoy_jwt_authn.as_ref().map(|j| {
                let (payload, header) = (j.payload_in_metadata.trim(), j.header_in_metadata.trim());
                for (field, key) in [("payload_in_metadata", payload), ("header_in_metadata", header)] {
                    if key.is_empty() {
                        self.problems.add(format!("{p}.envoy_jwt_authn.{field}"), "must name the provider's key");
                    }
                }
                if payload == header {
                    self.problems
                        .add(format!("{p}.envoy_jwt_authn"), "the payload and the header need keys of their own");
                }
                crate::jwt::JwtAuthnKeys { payload: payload.to_string(), header: header.to_string() }
            });
            // The keys are not in it: the store's generation covers them (a static set's follows
            // from its keys; a changed remote source gets a new store, a new generation).
            let mut h = DefaultHasher::new();
            (&name, &issuer.audiences, format!("{algorithms:?}"), required, &issuer.required_claims).hash(&mut h);
            (format!("{token_type:?}"), &header_typ, &jwt_authn_payload).hash(&mut h);
            verifier.issuers.push(IssuerVerifier {
                issuer: Arc::from(name.as_str()),
                audiences: issuer.audiences.clone(),
                algorithms,
                keys: store,
                required,
                required_claims: issuer.required_claims.clone(),
                token_type,
                header_typ,
                jwt_authn_payload,
                fingerprint: h.finish(),
            });
            rules.push(IssuerRules {
                time: TimePolicy { leeway: leeway.as_secs() as i64, max_token_age },
                roles_pointer,
                trusted_claims: issuer.trusted_claims.iter().map(|c| c.trim_start_matches('/').to_string()).collect(),
                sender_constraint: self.sender_constraint(&p, issuer.sender_constraint.as_ref()),
            });
        }
        (verifier, rules, jobs)
    }

    pub(super) fn algorithms(&mut self, p: &str, raw: &[String]) -> Vec<Alg> {
        if raw.is_empty() {
            self.problems.add(format!("{p}.algorithms"), "at least one algorithm is required");
        }
        let mut algs = Vec::new();
        for (j, name) in raw.iter().enumerate() {
            match name.parse::<Alg>() {
                Ok(alg) => algs.push(alg),
                Err(()) if name.eq_ignore_ascii_case("none") => {
                    self.problems.add(format!("{p}.algorithms[{j}]"), "\"none\" is never allowed");
                }
                Err(()) => {
                    let supported: Vec<&str> = Alg::ALL.iter().map(|a| a.name()).collect();
                    // Within the family only: `ES512` is not `HS512`, and `rs256` is `RS256`.
                    let family = supported
                        .iter()
                        .copied()
                        .filter(|a| a.get(..2).zip(name.get(..2)).is_some_and(|(a, n)| a.eq_ignore_ascii_case(n)));
                    let hint = crate::config::suggest::closest(name, family)
                        .map(|best| format!(": did you mean \"{best}\"?"))
                        .unwrap_or_default();
                    self.problems.add(
                        format!("{p}.algorithms[{j}]"),
                        format!("unknown algorithm \"{name}\"{hint} (supported: {})", supported.join(", ")),
                    )
                }
            }
        }
        let hmac = algs.iter().any(|a| a.family() == AlgFamily::Hmac);
        if hmac && algs.iter().any(|a| a.family() != AlgFamily::Hmac) {
            self.problems.add(format!("{p}.algorithms"), "an issuer never mixes HS* with asymmetric algorithms");
        }
        algs
    }

    pub(super) fn keys(&mut self, p: &str, issuer: &RawIssuer, algs: &[Alg]) -> Option<KeySource> {
        let sources = [issuer.jwks.is_some(), issuer.pem_files.is_some(), issuer.hmac_secret_file.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.problems.add(p, "exactly one of jwks, pem_files or hmac_secret_file is required");
            return None;
        }
        let hmac = algs.iter().any(|a| a.family() == AlgFamily::Hmac);
        if let Some(file) = &issuer.hmac_secret_file {
            if algs.iter().any(|a| a.family() != AlgFamily::Hmac) {
                self.problems.add(format!("{p}.hmac_secret_file"), "an HMAC secret only verifies HS* algorithms");
            }
            let bytes = self.read(&format!("{p}.hmac_secret_file"), file)?;
            return keys_from_hmac_secret(&bytes, algs)
                .map_err(|e| self.problems.add(format!("{p}.hmac_secret_file"), e))
                .ok()
                .map(KeySource::Fixed);
        }
        if hmac {
            self.problems
                .add(format!("{p}.algorithms"), "HS* algorithms need hmac_secret_file (never a JWKS or PEM key)");
        }
        if let Some(files) = &issuer.pem_files {
            if files.is_empty() {
                self.problems.add(format!("{p}.pem_files"), "at least one file is required");
            }
            let mut set = KeySet::default();
            for (j, file) in files.iter().enumerate() {
                let path = format!("{p}.pem_files[{j}]");
                let Some(bytes) = self.read(&path, file) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&bytes);
                match keys_from_pem(&text, None) {
                    Ok(key) => set.keys.push(key),
                    Err(e) => self.problems.add(&path, e),
                }
            }
            if set.keys.len() == files.len() {
                for why in set.unusable_algs(algs) {
                    self.problems.add(format!("{p}.pem_files"), why);
                }
            }
            return Some(KeySource::Fixed(set));
        }
        let jwks = issuer.jwks.as_ref()?;
        let jp = format!("{p}.jwks");
        let sources = [jwks.file.is_some(), jwks.inline.is_some(), jwks.url.is_some(), jwks.discovery.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.problems.add(&jp, "exactly one of file, inline, url or discovery is required");
            return None;
        }
        if jwks.url.is_some() || jwks.discovery.is_some() {
            return self.remote_jwks(&jp, jwks).map(KeySource::Remote);
        }
        for (present, field) in [
            (jwks.refresh.is_some(), "refresh"),
            (jwks.fallback_file.is_some(), "fallback_file"),
            (jwks.max_stale.is_some(), "max_stale"),
            (jwks.refetch_interval.is_some(), "refetch_interval"),
            (jwks.insecure_http.is_some(), "insecure_http"),
            (jwks.ca_file.is_some(), "ca_file"),
        ] {
            if present {
                self.problems.add(format!("{jp}.{field}"), "only applies with url or discovery");
            }
        }
        let text = match (&jwks.file, &jwks.inline) {
            (Some(file), _) => String::from_utf8_lossy(&self.read(&format!("{jp}.file"), file)?).into_owned(),
            (None, Some(serde_json::Value::String(s))) => s.clone(),
            (None, Some(value)) => value.to_string(),
            (None, None) => return None,
        };
        let set = keys_from_jwks(&text).map_err(|e| self.problems.add(&jp, e)).ok()?;
        if set.keys.is_empty() {
            self.problems.add(&jp, "no usable signing key");
        }
        for why in set.unusable_algs(algs) {
            self.problems.add(&jp, why);
        }
        Some(KeySource::Fixed(set))
    }

    pub(super) fn remote_jwks(&mut self, jp: &str, jwks: &RawJwks) -> Option<RemoteJwks> {
        let insecure_http = jwks.insecure_http.unwrap_or(false);
        let source = match (&jwks.url, &jwks.discovery) {
            (Some(url), _) => {
                check_url(url, insecure_http).map_err(|e| self.problems.add(format!("{jp}.url"), e)).ok()?;
                RemoteSource::Url(url.clone())
            }
            (None, Some(base)) => {
                check_url(base, insecure_http).map_err(|e| self.problems.add(format!("{jp}.discovery"), e)).ok()?;
                RemoteSource::Discovery(base.clone())
            }
            (None, None) => return None,
        };
        let refresh = self.duration(&format!("{jp}.refresh"), jwks.refresh.as_deref(), Duration::from_secs(3600));
        let refetch_interval =
            self.duration(&format!("{jp}.refetch_interval"), jwks.refetch_interval.as_deref(), Duration::from_secs(30));
        let max_stale =
            self.duration(&format!("{jp}.max_stale"), jwks.max_stale.as_deref(), Duration::from_secs(86_400));
        for (name, value) in [("refresh", refresh), ("refetch_interval", refetch_interval), ("max_stale", max_stale)] {
            if value < Duration::from_secs(1) {
                self.problems.add(format!("{jp}.{name}"), "must be at least 1s");
            }
        }
        if max_stale < refresh {
            self.problems.add(format!("{jp}.max_stale"), "must not be shorter than refresh");
        }
        let fallback_file = jwks.fallback_file.as_ref().and_then(|file| {
            let path = self.base.join(file);
            let bytes = self.read(&format!("{jp}.fallback_file"), file)?;
            keys_from_jwks(&String::from_utf8_lossy(&bytes))
                .map_err(|e| self.problems.add(format!("{jp}.fallback_file"), e))
                .ok()?;
            Some(path)
        });
        let ca_pem = jwks.ca_file.as_ref().and_then(|file| {
            let bytes = self.read(&format!("{jp}.ca_file"), file)?;
            match reqwest::Certificate::from_pem_bundle(&bytes) {
                Ok(certs) if !certs.is_empty() => Some(bytes),
                _ => {
                    self.problems.add(format!("{jp}.ca_file"), "no PEM certificate in the file");
                    None
                }
            }
        });
        Some(RemoteJwks { source, refresh, refetch_interval, max_stale, fallback_file, ca_pem, insecure_http })
    }
}
