//! Run ids: unique, and sorting by time when compared as strings.

use chrono::Utc;

/// A new run id such as `20261127-104512-123-3fa9c1`: UTC time to the millisecond, then 24
/// random bits so that runs started in the same millisecond on different machines differ.
pub fn new_run_id() -> String {
    let now = Utc::now();
    let mut random = [0u8; 3];
    // Falling back to the clock's nanoseconds only weakens uniqueness, never correctness
    // of a single run; getrandom does not fail on supported Linux systems.
    if getrandom::fill(&mut random).is_err() {
        let nanos = now.timestamp_subsec_nanos().to_le_bytes();
        random.copy_from_slice(&nanos[..3]);
    }
    format!(
        "{}-{:02x}{:02x}{:02x}",
        now.format("%Y%m%d-%H%M%S-%3f"),
        random[0],
        random[1],
        random[2]
    )
}

/// Whether `id` has the shape [`new_run_id`] produces; keeps user input out of store keys.
pub fn is_valid_run_id(id: &str) -> bool {
    id.len() <= 64
        && !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_valid_and_sort_by_time() {
        let a = new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_run_id();
        assert!(a < b, "{a} !< {b}");
        assert!(is_valid_run_id(&a));
        let many: std::collections::HashSet<_> = (0..1000).map(|_| new_run_id()).collect();
        assert_eq!(many.len(), 1000);
        assert!(!is_valid_run_id("../etc"));
        assert!(!is_valid_run_id(""));
    }
}
