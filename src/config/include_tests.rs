//! Team fragments: ownership, conflicts naming both files, the merged order, problems placed
//! in the fragment that has them.

use crate::config::{ConfigError, load_file};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A folder with `policy.yaml` (including `teams/*.yaml`) and the given team files.
fn setup(name: &str, main_routes: &str, teams: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-include-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("teams")).expect("dir");
    let main = format!(
        "issuers:\n  - issuer: https://issuer.test/\n    audiences: [api]\n    algorithms: [RS256]\n    jwks: {{ file: {} }}\ninclude: [teams/*.yaml]\nroutes:\n{main_routes}",
        fixtures().join("keys/jwks.json").display()
    );
    std::fs::write(dir.join("policy.yaml"), main).expect("write");
    for (file, text) in teams {
        std::fs::write(dir.join("teams").join(file), text).expect("write");
    }
    dir
}

/// The problems `dir/policy.yaml` is refused for (panics if it loads).
fn problems_of(dir: &Path) -> Vec<String> {
    match load_file(&dir.join("policy.yaml")) {
        Err(ConfigError::Invalid(p)) => p.lines(),
        other => panic!("expected problems, got {other:?}"),
    }
}

const PAYMENTS: &str = "hosts: [payments.example.com]\nroutes:\n  - { match: { host: payments.example.com, path_prefix: /v1 }, require: { scopes: [pay] } }\n  - { name: pay-public, match: { host: Payments.Example.com., path_exact: /status }, public: true }\n";

#[test]
fn fragments_merge_after_the_platform_guards_and_before_its_defaults() {
    let main = "  - { name: no-debug, match: { path_prefix: /, query: { debug: { present: true } } }, deny: true }\n  - { match: { path_prefix: / }, require: { scopes: [read] } }\n";
    let search = "hosts: [search.example.com]\nroutes:\n  - { match: { host: search.example.com, path_prefix: / }, optional: true }\n";
    let dir = setup("merge", main, &[("payments.yaml", PAYMENTS), ("search.yaml", search)]);
    let settings = load_file(&dir.join("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = settings.snapshot.policy.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["no-debug", "teams/payments/routes[0]", "pay-public", "teams/search/routes[0]", "routes[1]"]);
    // The pattern is watched (a new team file is a change), and so is each file.
    assert!(settings.sources.iter().any(|f| f.path.ends_with("teams/*.yaml")));
    assert!(settings.sources.iter().any(|f| f.path.ends_with("teams/search.yaml")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn conflicts_name_both_files_and_problems_sit_in_their_own_file() {
    let main = "  - { match: { host: payments.example.com, path_prefix: /admin }, require: { roles: [admin] } }\n  - { match: { path_prefix: / }, require: { scopes: [read] } }\n";
    let rogue = "hosts: [payments.example.com, rogue.example.com]\nroutes:\n  - { match: { host: rogue.example.com, path_prefix: / }, public: true }\n  - { match: { path_prefix: /x }, public: true }\n  - { match: { host: other.example.com, path_prefix: / }, public: true }\n  - { match: { host: rogue.example.com, path_regex: \"/(\" }, public: true }\n";
    let dir = setup("conflict", main, &[("payments.yaml", PAYMENTS), ("rogue.yaml", rogue)]);
    let found = problems_of(&dir);
    let teams = dir.join("teams");
    let (payments, rogue) =
        (teams.join("payments.yaml").display().to_string(), teams.join("rogue.yaml").display().to_string());
    let policy = dir.join("policy.yaml").display().to_string();
    let want = [
        format!("{rogue}:1:9: hosts[0]: host \"payments.example.com\" is already owned by {payments}"),
        format!("{rogue}:4:7: routes[1].match: a fragment's route names one of the fragment's hosts"),
        format!("{rogue}:5:16: routes[2].match.host: \"other.example.com\" is not one of this fragment's hosts"),
        format!("{rogue}:6:41: routes[3].match.path_regex: invalid regex \"/(\""),
        format!(
            "{policy}:8:16: routes[0].match.host: host \"payments.example.com\" is already owned by {payments}; route it there"
        ),
    ];
    for w in &want {
        assert!(found.iter().any(|p| p.starts_with(w.as_str())), "missing {w:?} in {found:#?}");
    }
    assert_eq!(found.len(), want.len(), "{found:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pattern_matching_nothing_is_a_warning_and_a_fragment_key_typo_is_placed() {
    let dir = setup("typo", "  - { match: { path_prefix: / }, public: true }\n", &[]);
    let settings = load_file(&dir.join("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        settings.warnings.iter().any(|w| w.contains("include[0]: \"teams/*.yaml\" matches no file")),
        "{:?}",
        settings.warnings
    );
    std::fs::write(
        dir.join("teams/a.yaml"),
        "hosts: [a.example.com]\nroute:\n  - { match: { host: a.example.com, path_prefix: / } }\n",
    )
    .expect("write");
    let found = problems_of(&dir);
    let a = dir.join("teams/a.yaml").display().to_string();
    assert_eq!(found, [format!("{a}:2:1: route: unknown key \"route\": did you mean \"routes\"?")]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review of issue 24: a wildcard overlapping another owner's host is a conflict (in either
/// direction, fragment or main file); two routes may not share a name (the dry-run flag once
/// went by name); a dry-run deny keeps its place instead of moving ahead of everything.
#[test]
fn wildcards_overlap_names_are_unique_and_dry_run_denies_stay_put() {
    let main = "  - { name: trial, match: { path_prefix: / }, deny: true, mode: dry_run }\n  - { match: { host: \"*.example.com\", path_prefix: /x }, public: true }\n";
    let greedy = "hosts: [\"*.example.com\"]\nroutes:\n  - { match: { host: \"*.example.com\", path_prefix: / }, public: true }\n";
    let dir = setup("overlap", main, &[("payments.yaml", PAYMENTS), ("zz-greedy.yaml", greedy)]);
    let found = problems_of(&dir);
    let teams = dir.join("teams");
    let payments = teams.join("payments.yaml").display().to_string();
    let greedy_file = teams.join("zz-greedy.yaml").display().to_string();
    let want = [
        format!(
            "{greedy_file}:1:9: hosts[0]: host \"*.example.com\" overlaps \"payments.example.com\", owned by {payments}"
        ),
        format!(
            "routes[1].match.host: host \"*.example.com\" overlaps \"payments.example.com\", owned by {payments}; route it there"
        ),
    ];
    for w in &want {
        assert!(found.iter().any(|p| p.contains(w.as_str())), "missing {w:?} in {found:#?}");
    }
    let _ = std::fs::remove_dir_all(&dir);

    let main = "  - { match: { path_prefix: /admin }, require: { roles: [admin] } }\n  - { name: trial, match: { path_prefix: / }, deny: true, mode: dry_run }\n";
    let named = "hosts: [a.example.com]\nroutes:\n  - { name: \"routes[0]\", match: { host: a.example.com, path_prefix: / }, public: true, mode: dry_run }\n";
    let dir = setup("names", main, &[("a.yaml", named)]);
    let found = problems_of(&dir);
    assert!(
        found.iter().any(|p| p.contains(": routes[0].name: \"routes[0]\" names an earlier route too")),
        "{found:#?}"
    );
    std::fs::write(dir.join("teams/a.yaml"), named.replace("name: \"routes[0]\", ", "")).expect("write");
    let settings = load_file(&dir.join("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = settings.snapshot.policy.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["teams/a/routes[0]", "routes[0]", "trial"], "the dry-run deny stays last");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 31: host patterns are validated wherever they are written (a port, a scheme, a stray
/// `*`, a public suffix would silently never match, or match far too much); an include entry
/// can scope the hosts its files claim; a problem found after merging sits in the fragment's
/// own file with its own index; a header/query guard shadows nothing.
#[test]
fn hosts_are_validated_scoped_and_fragment_problems_keep_their_place() {
    let main = "  - { name: no-debug, match: { path_prefix: /, query: { debug: { present: true } } }, deny: true }\n  - { match: { path_prefix: /x }, require: { scopes: [read] } }\n  - { match: { path_prefix: / }, require: { scopes: [read] } }\n";
    let dir = setup("hosts-ok", main, &[("payments.yaml", PAYMENTS)]);
    let settings = load_file(&dir.join("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!settings.warnings.iter().any(|w| w.contains("never reached")), "{:?}", settings.warnings);
    let _ = std::fs::remove_dir_all(&dir);

    let bad_hosts = [
        "admin.example.com:443",
        "https://admin.example.com",
        "\"*admin.example.com\"",
        "admin.example.com/",
        "\"admin.example.com \"",
        "caf\u{e9}.example.com",
        "\"*\"",
        "\"*.com\"",
        "\"*.co.uk\"",
    ];
    let main: String =
        bad_hosts.iter().map(|h| format!("  - {{ match: {{ host: {h}, path_prefix: / }}, public: true }}\n")).collect();
    let greedy = "hosts: [\"*.com\", \"pay.example.com:8443\"]\nroutes:\n  - { match: { host: \"*.com\", path_prefix: / }, require: { tenant: true } }\n";
    let dir = setup("hosts-bad", &main, &[("greedy.yaml", greedy)]);
    let found = problems_of(&dir);
    let policy = dir.join("policy.yaml").display().to_string();
    let greedy_file = dir.join("teams/greedy.yaml").display().to_string();
    for (i, _) in bad_hosts.iter().enumerate() {
        let want = format!("{policy}:{}:", 8 + i);
        let at = format!("routes[{i}].match.host: ");
        assert!(found.iter().any(|p| p.starts_with(&want) && p.contains(&at)), "missing {want}… {at} in {found:#?}");
    }
    for want in [
        format!("{greedy_file}:1:9: hosts[0]: \"*.com\" covers every name under the public suffix"),
        format!("{greedy_file}:1:18: hosts[1]: \"pay.example.com:8443\" has a port"),
        format!("{greedy_file}:3:16: routes[0].match.host: \"*.com\" covers every name"),
        format!("{greedy_file}:3:60: routes[0].require.tenant: require.tenant needs a tenants section"),
    ] {
        assert!(found.iter().any(|p| p.starts_with(&want)), "missing {want:?} in {found:#?}");
    }
    let _ = std::fs::remove_dir_all(&dir);

    let dir =
        setup("hosts-scoped", "  - { match: { path_prefix: / }, public: true }\n", &[("payments.yaml", PAYMENTS)]);
    let text = std::fs::read_to_string(dir.join("policy.yaml")).expect("read");
    let scoped = text.replace(
        "include: [teams/*.yaml]",
        "include: [ { files: teams/*.yaml, hosts: [\"*.payments.example.com\"] } ]",
    );
    std::fs::write(dir.join("policy.yaml"), &scoped).expect("write");
    let found = problems_of(&dir);
    let payments = dir.join("teams/payments.yaml").display().to_string();
    assert_eq!(
        found,
        [format!(
            "{payments}:1:9: hosts[0]: \"payments.example.com\" is outside the hosts include[0] lets these files claim (*.payments.example.com)"
        )]
    );
    std::fs::write(dir.join("policy.yaml"), scoped.replace("\"*.payments.example.com\"", "payments.example.com"))
        .expect("write");
    load_file(&dir.join("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    // A file two entries name is held to both scopes, whatever their order.
    for include in [
        "include: [teams/*.yaml, { files: teams/payments.yaml, hosts: [other.example.com] }]",
        "include: [ { files: \"teams/*.yaml\", hosts: [\"*.example.com\"] }, { files: teams/payments.yaml, hosts: [other.example.com] } ]",
    ] {
        std::fs::write(dir.join("policy.yaml"), text.replace("include: [teams/*.yaml]", include)).expect("write");
        let found = problems_of(&dir);
        assert!(
            found.iter().any(|p| p.starts_with(&payments) && p.contains("is outside the hosts include[1]")),
            "{include}: {found:#?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
