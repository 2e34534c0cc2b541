//! Object ids in WorkOS's style: a type prefix and a ULID (time-ordered, so ids sort by creation).

use ulid::Ulid;

/// Creates a new id with the given prefix, e.g. `new_id("user")` → `user_01H...`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Ulid::new())
}

/// True when `id` has the prefix and a well-formed ULID after it.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| Ulid::from_string(rest).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_carry_their_prefix_and_parse_back() {
        let id = new_id("org_domain");
        assert!(id.starts_with("org_domain_"));
        assert!(has_prefix(&id, "org_domain"));
        assert!(!has_prefix(&id, "org"));
        assert!(!has_prefix("user_nope", "user"));
    }
}
