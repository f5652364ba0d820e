//! `response`: identity and strip headers, the challenge realm, security headers.

use super::*;

impl Validator {
    pub(super) fn response(&mut self, raw: &RawResponse, realm: Option<&str>, tenants: bool) -> ResponsePolicy {
        let security_headers = match &raw.security_headers {
            RawSecurityHeaders::Enabled(false) => Vec::new(),
            RawSecurityHeaders::Enabled(true) => {
                DEFAULT_SECURITY_HEADERS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
            }
            RawSecurityHeaders::Custom(map) => {
                let mut headers = Vec::new();
                for (name, value) in map {
                    if !DEFAULT_SECURITY_HEADERS.iter().any(|(known, _)| known == name) {
                        let known: Vec<&str> = DEFAULT_SECURITY_HEADERS.iter().map(|(k, _)| *k).collect();
                        self.problems.add(
                            format!("response.security_headers.{name}"),
                            format!("not one of {}", known.join(", ")),
                        );
                    }
                    if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                        self.problems
                            .add(format!("response.security_headers.{name}"), "a non-empty printable ASCII value");
                    }
                    headers.push((name.clone(), value.clone()));
                }
                headers
            }
        };
        let mut identity_headers = Vec::new();
        for (name, source) in &raw.identity_headers {
            let p = format!("response.identity_headers.{name}");
            if !is_header_name(name) {
                self.problems.add(&p, "header names must be lowercase token characters");
            }
            if matches!(name.as_str(), "authorization" | "host" | "cookie" | "content-length" | "te" | "connection") {
                self.problems.add(&p, "this header cannot carry identity");
            }
            let source = if source == "tenant" {
                if !tenants {
                    self.problems.add(&p, "`tenant` needs a tenants section");
                }
                IdentitySource::Tenant
            } else if source.starts_with('/') {
                IdentitySource::Claim(source.clone())
            } else {
                self.problems.add(&p, "must be a JSON Pointer (like /sub) or `tenant`");
                continue;
            };
            identity_headers.push(IdentityHeader { name: name.clone(), source });
        }
        for (i, name) in raw.strip_headers.iter().enumerate() {
            if !is_header_name(name) {
                self.problems
                    .add(format!("response.strip_headers[{i}]"), "header names must be lowercase token characters");
            }
        }
        let realm = realm.unwrap_or("portcullis");
        if realm.contains(['"', '\\']) || !realm.is_ascii() {
            self.problems.add("credentials.realm", "must be ASCII without quotes or backslashes");
        }
        ResponsePolicy {
            identity_headers: identity_headers.into(),
            strip_headers: raw.strip_headers.clone(),
            remove_authorization: raw.remove_authorization,
            realm: realm.to_string(),
            security_headers,
        }
    }
}
