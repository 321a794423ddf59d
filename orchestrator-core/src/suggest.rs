//! "Did you mean …?" for misspelt keys, step names, stacks and plugins: one rule everywhere.

/// The closest candidate to `input`, if one is close enough to be a likely typo: at most two
/// edits away (and not mostly rewritten), or very similar by Jaro-Winkler. Case is ignored, so
/// `Needs` suggests `needs`.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let input = input.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|c| {
            let lower = c.to_lowercase();
            let distance = strsim::osa_distance(&input, &lower);
            let score = strsim::jaro_winkler(&input, &lower);
            let close =
                (distance <= 2 && distance * 2 <= input.len().max(c.len())) || score >= 0.88;
            close.then_some((c, distance, score))
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(c, _, _)| c)
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
        assert_eq!(did_you_mean("rn", ["run", "needs"]), Some("run"));
        assert_eq!(did_you_mean("STACK", ["stack", "stacks"]), Some("stack"));
        assert_eq!(did_you_mean("xyz", ["needs", "inputs"]), None);
    }
}
