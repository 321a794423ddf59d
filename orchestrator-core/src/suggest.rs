//! "Did you mean …?" for misspelt keys, step names, stacks and plugins.

/// The closest candidate to `input`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("nedds", ["needs", "inputs", "env"]),
            Some("needs")
        );
        assert_eq!(did_you_mean("xyz", ["needs", "inputs"]), None);
    }
}
