//! `tenants`: sources, id pattern, membership claim, personal tenants and the member file.

use super::*;

impl Validator {
    pub(super) fn tenants(&mut self, raw: &RawTenants, issuers: &[&str]) -> Option<TenantPolicy> {
        let mut sources = Vec::new();
        if raw.from.is_empty() {
            self.problems.add("tenants.from", "at least one tenant source is required");
        }
        for (i, s) in raw.from.iter().enumerate() {
            let p = format!("tenants.from[{i}]");
            let given = [s.header.is_some(), s.path.is_some(), s.host_suffix.is_some(), s.context_extension.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                self.problems.add(&p, "exactly one of header, path, host_suffix or context_extension");
                continue;
            }
            if let Some(h) = &s.header {
                if !is_header_name(h) {
                    self.problems.add(format!("{p}.header"), "header names must be lowercase token characters");
                }
                sources.push(TenantSource::Header(h.clone()));
            } else if let Some(re) = &s.path {
                match regex::Regex::new(re) {
                    Ok(r) if r.capture_names().any(|n| n == Some("tenant")) => sources.push(TenantSource::Path(r)),
                    Ok(_) => self.problems.add(format!("{p}.path"), "needs a named group (?P<tenant>...)"),
                    Err(e) => self.problems.add(format!("{p}.path"), format!("invalid regex: {e}")),
                }
            } else if let Some(suffix) = &s.host_suffix {
                if !suffix.starts_with('.') {
                    self.problems.add(format!("{p}.host_suffix"), "must start with '.' (like .tenants.example.com)");
                }
                sources.push(TenantSource::HostSuffix(suffix.to_ascii_lowercase()));
            } else if let Some(key) = &s.context_extension {
                sources.push(TenantSource::ContextExtension(key.clone()));
            }
        }
        let pattern = raw.id_pattern.as_deref().unwrap_or("^[a-z0-9][a-z0-9:_-]{0,62}$");
        let id_pattern =
            match regex::Regex::new(&format!("^(?:{})$", pattern.trim_start_matches('^').trim_end_matches('$'))) {
                Ok(r) => r,
                Err(e) => {
                    self.problems.add("tenants.id_pattern", format!("invalid regex: {e}"));
                    return None;
                }
            };
        let membership = raw.membership.as_ref();
        let claim = membership.and_then(|m| m.claim.clone());
        if let Some(c) = &claim
            && !c.starts_with('/')
        {
            self.problems.add("tenants.membership.claim", "must be a JSON Pointer starting with '/'");
        }
        let personal = membership.and_then(|m| m.personal.as_ref()).and_then(|template| {
            let Some((prefix, suffix)) = template.split_once("{sub}") else {
                self.problems.add("tenants.membership.personal", "must contain {sub}, like user:{sub}");
                return None;
            };
            let issuer = match (membership.and_then(|m| m.personal_issuer.clone()), issuers) {
                (Some(iss), _) if issuers.contains(&iss.as_str()) => iss,
                (Some(iss), _) => {
                    self.problems
                        .add("tenants.membership.personal_issuer", format!("\"{iss}\" is not a configured issuer"));
                    return None;
                }
                (None, [only]) => only.to_string(),
                (None, _) => {
                    self.problems.add(
                        "tenants.membership.personal_issuer",
                        "required with several issuers: personal tenants belong to the subjects of one issuer",
                    );
                    return None;
                }
            };
            Some(PersonalTenant { prefix: prefix.to_string(), suffix: suffix.to_string(), issuer })
        });
        let file_members =
            membership.and_then(|m| m.file.as_ref()).map(|f| self.member_file(f, issuers)).unwrap_or_default();
        Some(TenantPolicy { sources, id_pattern, claim, personal, file_members })
    }

    pub(super) fn member_file(&mut self, file: &str, issuers: &[&str]) -> MemberTable {
        let p = "tenants.membership.file";
        let mut table = MemberTable::default();
        let Some(bytes) = self.read(p, file) else { return table };
        let parsed: RawMemberFile = match serde_saphyr::from_str(&String::from_utf8_lossy(&bytes)) {
            Ok(f) => f,
            Err(e) => {
                self.problems.add(p, format!("invalid membership file: {e}"));
                return table;
            }
        };
        for (tenant, members) in parsed.members {
            for (i, m) in members.unwrap_or_default().into_iter().enumerate() {
                let iss = match (m.iss, issuers) {
                    (Some(iss), _) if issuers.contains(&iss.as_str()) => iss,
                    (None, [only]) => only.to_string(),
                    (iss, _) => {
                        self.problems.add(
                            format!("{p}: members.{tenant}[{i}].iss"),
                            format!("{iss:?} is not a configured issuer"),
                        );
                        continue;
                    }
                };
                table.insert(tenant.clone(), iss, m.sub, m.roles);
            }
        }
        table
    }
}
