//! `credentials` (bearer, cookies, API keys, CSRF) and `sessions`.

use super::*;

impl Validator {
    pub(super) fn sessions(&mut self, raw: &RawSessions) -> SessionPolicy {
        let Some(idle) = raw.idle_timeout.as_deref() else {
            self.problems.add("sessions.idle_timeout", "required");
            return SessionPolicy { claim: String::new(), idle_timeout_secs: 0, granularity_secs: 0, required: false };
        };
        let idle_timeout = self.duration("sessions.idle_timeout", Some(idle), Duration::from_secs(1800));
        let granularity = self.duration("sessions.granularity", raw.granularity.as_deref(), Duration::from_secs(60));
        if idle_timeout < Duration::from_secs(2) {
            self.problems.add("sessions.idle_timeout", "must be at least 2s");
        }
        if granularity < Duration::from_secs(1) || granularity * 2 > idle_timeout {
            self.problems.add("sessions.granularity", "must be at least 1s and at most half of idle_timeout");
        }
        let claim = raw.claim.clone().unwrap_or_else(|| "/sid".into());
        if !claim.starts_with('/') {
            self.problems.add("sessions.claim", "must be a JSON Pointer starting with '/'");
        }
        SessionPolicy {
            claim,
            idle_timeout_secs: idle_timeout.as_secs() as i64,
            granularity_secs: granularity.as_secs() as i64,
            required: raw.required.unwrap_or(false),
        }
    }

    pub(super) fn api_keys(&mut self, raw: &RawApiKeys) -> ApiKeyPolicy {
        let header = raw.header.clone().unwrap_or_else(|| "x-api-key".into());
        if !is_header_name(&header) || matches!(header.as_str(), "authorization" | "cookie") {
            self.problems
                .add("credentials.api_keys.header", "a lowercase header name other than authorization or cookie");
        }
        let prefix = raw.prefix.clone().unwrap_or_else(|| "pk_".into());
        if !(2..=16).contains(&prefix.len())
            || !prefix.ends_with('_')
            || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            self.problems
                .add("credentials.api_keys.prefix", "2-16 lowercase letters or digits ending in '_' (like pk_)");
        }
        let mut file_keys = HashMap::new();
        let Some(file) = &raw.file else {
            return ApiKeyPolicy { header, prefix, file_keys };
        };
        let p = "credentials.api_keys.file";
        let Some(bytes) = self.read(p, file) else { return ApiKeyPolicy { header, prefix, file_keys } };
        let parsed: RawApiKeyFile = match serde_saphyr::from_str(&String::from_utf8_lossy(&bytes)) {
            Ok(f) => f,
            Err(e) => {
                self.problems.add(p, format!("invalid API key file: {e}"));
                return ApiKeyPolicy { header, prefix, file_keys };
            }
        };
        let mut names = std::collections::HashSet::new();
        for (i, entry) in parsed.keys.iter().enumerate() {
            match crate::state::apikeys::key_from_entry(entry) {
                Ok((digest, key)) => {
                    if !names.insert(key.name.clone()) {
                        self.problems.add(format!("{p}: keys[{i}].name"), format!("duplicate name \"{}\"", key.name));
                    }
                    if file_keys.insert(digest, Arc::new(key)).is_some() {
                        self.problems.add(format!("{p}: keys[{i}].sha256"), "the same key is listed twice");
                    }
                }
                Err(problems) => {
                    for (field, why) in problems {
                        self.problems.add(format!("{p}: keys[{i}].{field}"), why);
                    }
                }
            }
        }
        ApiKeyPolicy { header, prefix, file_keys }
    }

    pub(super) fn csrf(&mut self, raw: &RawCsrf) -> CsrfPolicy {
        let mut allowed_origins = Vec::new();
        for (i, origin) in raw.allowed_origins.iter().enumerate() {
            let lower = origin.to_ascii_lowercase();
            let shaped = lower.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains(['/', '?', '#', '*', ' '])
            });
            if !shaped {
                self.problems.add(
                    format!("credentials.csrf.allowed_origins[{i}]"),
                    "an origin like https://app.example.com (no path, no wildcard)",
                );
            }
            allowed_origins.push(lower);
        }
        let double_submit = raw.double_submit.as_ref().map(|ds| {
            if ds.cookie.is_empty()
                || !ds.cookie.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                self.problems.add("credentials.csrf.double_submit.cookie", "not a cookie name");
            }
            if !is_header_name(&ds.header) {
                self.problems.add("credentials.csrf.double_submit.header", "a lowercase header name");
            }
            DoubleSubmit { cookie: ds.cookie.clone(), header: ds.header.clone() }
        });
        if allowed_origins.is_empty() && double_submit.is_none() {
            self.problems.add("credentials.csrf", "name allowed_origins or double_submit (or both)");
        }
        CsrfPolicy { allowed_origins, double_submit }
    }

    pub(super) fn credentials(
        &mut self,
        raw: &RawCredentials,
    ) -> (CredentialPolicy, Option<ApiKeyPolicy>, Option<CsrfPolicy>) {
        let api_keys = raw.api_keys.as_ref().map(|a| self.api_keys(a));
        let csrf = raw.csrf.as_ref().map(|c| self.csrf(c));
        if csrf.is_some() && raw.cookies.is_empty() {
            self.problems.add("credentials.csrf", "only applies with cookies");
        }
        if !raw.bearer && raw.cookies.is_empty() && api_keys.is_none() {
            self.problems.add("credentials", "enable bearer, name at least one cookie or configure api_keys");
        }
        for (i, name) in raw.cookies.iter().enumerate() {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                self.problems.add(format!("credentials.cookies[{i}]"), format!("\"{name}\" is not a cookie name"));
            }
        }
        let api_key_header = api_keys.as_ref().map(|a| a.header.clone());
        (
            CredentialPolicy {
                bearer: raw.bearer,
                cookies: raw.cookies.clone(),
                api_key_header,
                dpop: false,
                dpop_authorities: Vec::new(),
            },
            api_keys,
            csrf,
        )
    }
}
