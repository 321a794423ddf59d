//! Kubernetes names and labels: checks with the API server's rules, and the run-unique,
//! deterministic object names ferry creates.
//!
//! Names are derived from the run id with a hash, not drawn at random: a create retried after
//! a lost reply asks for the same name again and meets its own object (409), instead of
//! starting a second Job. The seed's names (prefix + pipeline) collided between runs.

/// Longest Job name: the Job controller copies it into the `job-name` label of its pods.
pub const MAX_JOB_NAME: usize = 63;

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err(format!("must be 1 to 63 characters, not {}", bytes.len()));
    }
    if !bytes.iter().all(|b| is_alnum(*b) || *b == b'-')
        || !is_alnum(bytes[0])
        || !is_alnum(bytes[bytes.len() - 1])
    {
        return Err("must consist of lower case letters, digits and '-', and start and end with a letter or digit".into());
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels, ≤ 253.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!(
            "must be at most 253 characters, not {}",
            name.len()
        ));
    }
    name.split('.').try_for_each(check_dns_label)
}

/// A name prefix: lowercase alphanumerics and '-', starting with a letter or digit.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let bytes = prefix.as_bytes();
    if bytes.len() > 30 {
        return Err(format!(
            "`{prefix}` is longer than 30 characters, leaving too little of the 63 a Job name may have"
        ));
    }
    if bytes.is_empty() || !is_alnum(bytes[0]) || !bytes.iter().all(|b| is_alnum(*b) || *b == b'-')
    {
        return Err(format!(
            "`{prefix}` must start with a lower case letter or digit and contain only those and '-'"
        ));
    }
    Ok(())
}

fn check_label_part(part: &str, what: &str) -> Result<(), String> {
    let bytes = part.as_bytes();
    let ok_inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if bytes.len() > 63 {
        return Err(format!("{what} `{part}` is longer than 63 characters"));
    }
    if !bytes.is_empty()
        && (!bytes[0].is_ascii_alphanumeric()
            || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
            || !bytes.iter().all(ok_inner))
    {
        return Err(format!(
            "{what} `{part}` must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
        ));
    }
    Ok(())
}

/// A qualified name (label and annotation keys): an optional DNS subdomain prefix and `/`,
/// then a name of at most 63 characters.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|why| format!("prefix `{prefix}` {why}"))?;
    }
    if name.is_empty() {
        return Err(format!("key `{key}` has an empty name"));
    }
    check_label_part(name, "key")
}

pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    check_qualified_name(key)?;
    check_label_part(value, "value")
}

/// Environment variable names the API server accepts.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'-' | b'.' | b'_'));
    if !first_ok
        || !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(
            "must consist of letters, digits, '_', '-' or '.', and not start with a digit".into(),
        );
    }
    Ok(())
}

/// Turns any text into something a DNS label may contain: lowercase, other characters as
/// '-', runs of '-' collapsed, at most `max` characters, no '-' at either end.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    out.trim_matches('-').to_string()
}

/// A short, stable hash of `parts`, hex.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex()[..10].to_string()
}

/// Longest CronJob name: the CronJob controller appends `-<minutes since the epoch>` (11
/// characters) to name its Jobs.
pub const MAX_CRON_JOB_NAME: usize = 52;

/// A schedule's CronJob (and its ConfigMap and Secret): `<prefix><schedule>`, or, when that is
/// too long, a shortened form with a hash of the whole.
pub fn schedule_name(prefix: &str, schedule: &str) -> String {
    let whole = format!("{prefix}{schedule}");
    if whole.len() <= MAX_CRON_JOB_NAME {
        return whole;
    }
    let hash = short_hash(&[prefix, schedule]);
    let room = MAX_CRON_JOB_NAME - prefix.len() - hash.len() - 1;
    let name = format!("{prefix}{}-{hash}", sanitize(schedule, room));
    debug_assert!(check_dns_label(&name).is_ok(), "{name}");
    name
}

/// The Job of a run (mode `pipeline`) or of one step (mode `steps`):
/// `<prefix><pipeline>[-<step>]-<hash of run id and step>`, ≤ 63 characters.
pub fn job_name(prefix: &str, pipeline: &str, step: Option<&str>, run_id: &str) -> String {
    let hash = short_hash(&[run_id, step.unwrap_or_default()]);
    let room = MAX_JOB_NAME - prefix.len() - hash.len() - 1;
    let readable = match step {
        Some(step) => {
            let pipeline_part = sanitize(pipeline, room / 2);
            let step_part = sanitize(step, room.saturating_sub(pipeline_part.len() + 1));
            [pipeline_part, step_part]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("-")
        }
        None => sanitize(pipeline, room),
    };
    let name = if readable.is_empty() {
        format!("{prefix}{hash}")
    } else {
        format!("{prefix}{readable}-{hash}")
    };
    debug_assert!(check_dns_label(&name).is_ok(), "{name}");
    name
}

/// A label value for any text: the text itself when it is a valid value, else a sanitized
/// form with a hash (the exact text goes into an annotation).
pub fn label_value(text: &str) -> String {
    if check_label_part(text, "value").is_ok() {
        return text.to_string();
    }
    let hash = short_hash(&[text]);
    let readable = sanitize(text, 63 - hash.len() - 1);
    if readable.is_empty() {
        hash
    } else {
        format!("{readable}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_valid_unique_per_run_and_stable_per_run() {
        let a = job_name("ferry-", "Train Model!", None, "20261127-101010-000-aaaaaa");
        let b = job_name("ferry-", "Train Model!", None, "20261127-101010-000-aaaaab");
        assert_ne!(a, b);
        assert_eq!(
            a,
            job_name("ferry-", "Train Model!", None, "20261127-101010-000-aaaaaa")
        );
        assert!(a.starts_with("ferry-train-model-"), "{a}");
        check_dns_label(&a).unwrap();

        let long = "x".repeat(200);
        let step = job_name("a-very-long-prefix-", &long, Some(&long), "r");
        assert!(step.len() <= 63, "{}", step.len());
        check_dns_label(&step).unwrap();
        let unicode = job_name("ferry-", "données", Some("été"), "r");
        check_dns_label(&unicode).unwrap();
        let empty = job_name("ferry-", "日本", None, "r");
        check_dns_label(&empty).unwrap();
    }

    #[test]
    fn label_rules_match_the_api_server() {
        assert!(check_label("app.kubernetes.io/name", "ferry").is_ok());
        assert!(check_label("team", "").is_ok());
        assert!(check_label("bad key", "x").is_err());
        assert!(check_label("Example.com/x", "y").is_err());
        assert!(check_label("x", &"v".repeat(64)).is_err());
        assert!(check_label("x", "-v").is_err());
        assert_eq!(label_value("train"), "train");
        let odd = label_value("../étape 1");
        check_label_part(&odd, "value").unwrap();
        assert_ne!(label_value("a b"), label_value("a_b"));
        assert!(check_env_name("LOG_LEVEL").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_prefix("ferry-").is_ok());
        assert!(check_prefix("Ferry").is_err());
    }
}
