//! Which database failures mean "the database is unavailable" (unreachable, shutting down, pool
//! exhausted) rather than "this request went wrong". The API answers the first kind with 503 and
//! `Retry-After`; it must never decide that by matching error text.

/// True when `e` says the database cannot be reached or cannot take more work right now: no
/// connection within the pool's acquire bound, a broken or refused connection, TLS or protocol
/// failures, or PostgreSQL's connection-exception (08xxx), shutdown (57P01–57P03) and
/// too-many-connections (53300) errors.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| unavailable_sqlstate(&c)),
        _ => false,
    }
}

/// SQLSTATE classes of an unavailable server (see PostgreSQL's errcodes appendix).
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Looks for an unavailable `sqlx::Error` anywhere in an error's chain (storage errors arrive
/// boxed through cqrs-es).
pub fn chain_is_unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(sql) = err.downcast_ref::<sqlx::Error>() {
            if is_unavailable(sql) {
                return true;
            }
        }
        if let Some(storage) = err.downcast_ref::<crate::StorageError>() {
            if storage.is_unavailable() {
                return true;
            }
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_class_errors_are_unavailable_and_others_are_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_unavailable(&sqlx::Error::Io(io)));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(is_unavailable(&sqlx::Error::Protocol("unexpected eof".into())));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
        for (code, want) in [
            ("08006", true),
            ("08001", true),
            ("57P01", true),
            ("57P03", true),
            ("53300", true),
            ("23505", false),
            ("57014", false),
            ("42P01", false),
        ] {
            assert_eq!(unavailable_sqlstate(code), want, "SQLSTATE {code}");
        }
    }

    #[test]
    fn the_chain_is_searched_through_boxes() {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(sqlx::Error::PoolTimedOut);
        assert!(chain_is_unavailable(boxed.as_ref()));
        let storage = crate::StorageError::Database(sqlx::Error::PoolClosed);
        assert!(chain_is_unavailable(&storage));
        let other = crate::StorageError::Other("x".into());
        assert!(!chain_is_unavailable(&other));
    }
}
