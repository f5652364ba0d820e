//! "Did you mean": the closest of a set of names to a misspelling.

/// The candidate closest to `wrong`, when one is close: the same letters in another case, or
/// within two edits (one for short names).
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = wrong.to_ascii_lowercase();
    let budget = if wrong.len() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(distance, _)| *distance <= budget)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggestions() {
        let keys = ["algorithms", "audiences", "issuer", "jwks"];
        assert_eq!(super::closest("algoritms", keys), Some("algorithms"));
        assert_eq!(super::closest("Issuer", keys), Some("issuer"));
        assert_eq!(super::closest("jwk", keys), Some("jwks"));
        assert_eq!(super::closest("surprise", keys), None);
        assert_eq!(super::closest("rs256", ["RS256", "ES256"]), Some("RS256"));
    }
}
