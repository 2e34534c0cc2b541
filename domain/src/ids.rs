//! Object ids in WorkOS's style: a type prefix and a ULID (time-ordered, so ids sort by creation).

use std::sync::{Mutex, OnceLock};

use ulid::{Generator, Ulid};

/// Creates a new id with the given prefix, e.g. `new_id("user")` → `user_01H...`. Ids made by one
/// process are strictly increasing (monotonic within a millisecond), so id order is creation order.
pub fn new_id(prefix: &str) -> String {
    static GENERATOR: OnceLock<Mutex<Generator>> = OnceLock::new();
    let ulid = GENERATOR
        .get_or_init(|| Mutex::new(Generator::new()))
        .lock()
        .ok()
        .and_then(|mut g| g.generate().ok())
        .unwrap_or_else(|| Ulid::from_datetime(std::time::SystemTime::now()));
    format!("{prefix}_{ulid}")
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
    fn ids_made_in_a_row_are_strictly_increasing() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("user")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids are monotonic");
    }

    #[test]
    fn new_ids_carry_their_prefix_and_parse_back() {
        let id = new_id("org_domain");
        assert!(id.starts_with("org_domain_"));
        assert!(has_prefix(&id, "org_domain"));
        assert!(!has_prefix(&id, "org"));
        assert!(!has_prefix("user_nope", "user"));
    }
}
