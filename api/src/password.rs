//! Passwords: argon2id at OWASP's parameters (m=19 MiB, t=2, p=1) for new ones; imported
//! argon2, bcrypt, PBKDF2 and salted SHA hashes (`formats`), whose costs are bounded so that
//! verifying one at sign-in cannot be made into a denial of service; verification that upgrades
//! them to argon2id. Every hash and verification runs on the blocking pool behind [`Hashing`]'s
//! bounded concurrency and bounded queue, never on an async thread.

mod formats;
mod limit;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub use formats::{import, Digest, LegacyBounds, SaltPosition, Stored};
pub use limit::{default_concurrency, Hashing, BUSY_RETRY_AFTER_SECS, QUEUE_PER_PERMIT};

use crate::error::ApiError;
use crate::state::AppState;

/// The current argon2id parameters: memory in KiB, passes, lanes (OWASP's first choice).
pub const M_KIB: u32 = 19 * 1024;
/// Passes.
pub const T: u32 = 2;
/// Lanes.
pub const P: u32 = 1;

fn argon2() -> Result<Argon2<'static>, ApiError> {
    let params = Params::new(M_KIB, T, P, None).map_err(|_| ApiError::internal())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks the password policy: 8 to 1024 characters.
pub fn validate(field: &str, password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(ApiError::invalid(
            field,
            "password_strength_error",
            "password must be between 8 and 1024 characters",
        ));
    }
    Ok(())
}

/// Runs `f` on the blocking pool once `hashing` grants a turn; the turn is held by the
/// blocking task itself, so it is released when the work ends even if the request is dropped.
async fn blocking<T: Send + 'static>(
    hashing: &Hashing,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let turn = hashing.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(turn);
        out
    })
    .await
    .map_err(|_| ApiError::internal())?
}

fn hash_now(password: &[u8]) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| ApiError::internal())?;
    let h = argon2()?
        .hash_password(password, &salt)
        .map_err(|_| ApiError::internal())?;
    Ok(h.to_string())
}

/// Returns the PHC string of the password's argon2id hash.
pub async fn hash(state: &AppState, password: String) -> Result<String, ApiError> {
    hash_with(&state.hashing, password).await
}

/// [`hash`] with an explicit limiter.
pub async fn hash_with(hashing: &Hashing, password: String) -> Result<String, ApiError> {
    blocking(hashing, move || hash_now(password.as_bytes())).await
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matches.
    pub ok: bool,
    /// The stored hash is not argon2id at the current parameters: after a successful sign-in,
    /// replace it ([`rehash`]).
    pub needs_rehash: bool,
}

/// Checks `candidate` against a stored hash (any form [`Stored::parse`] reads), in constant
/// time, on the blocking pool under the same bounded concurrency as [`hash`]. A stored value
/// that is no known hash is an internal error (logged), never a match. Under a sign-in storm
/// this may answer 503 `server_busy` (see [`Hashing`]).
pub async fn verify(state: &AppState, stored: &str, candidate: String) -> Result<Verified, ApiError> {
    verify_with(&state.hashing, stored, candidate).await
}

/// [`verify`] with an explicit limiter.
pub async fn verify_with(hashing: &Hashing, stored: &str, candidate: String) -> Result<Verified, ApiError> {
    let stored = Stored::parse(stored).map_err(|_| {
        tracing::error!("a stored password hash is in no known form");
        ApiError::internal()
    })?;
    blocking(hashing, move || {
        let ok = stored.matches(candidate.as_bytes())?;
        Ok(Verified {
            ok,
            needs_rehash: !stored.is_current(),
        })
    })
    .await
}

/// A current-parameter argon2id hash that no password matches (its output is not a hash of
/// anything known): [`verify_unknown`] checks candidates against it.
const NOBODY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw";

/// For a sign-in whose email has no password: spends what a real verification of a current
/// argon2id hash spends (the same work, the same queue), and answers "no match", so that the
/// timing does not tell which emails exist.
pub async fn verify_unknown(state: &AppState, candidate: String) -> Result<Verified, ApiError> {
    verify_unknown_with(&state.hashing, candidate).await
}

/// [`verify_unknown`] with an explicit limiter.
pub async fn verify_unknown_with(hashing: &Hashing, candidate: String) -> Result<Verified, ApiError> {
    let v = verify_with(hashing, NOBODY, candidate).await?;
    Ok(Verified {
        ok: false,
        needs_rehash: v.needs_rehash,
    })
}

/// After a successful sign-in whose [`Verified::needs_rehash`] was set: replaces the user's
/// stored hash `old` by an argon2id one of `candidate` at the current parameters, unless the
/// credential changed meanwhile (compare-and-set on `old`: a concurrent password change wins).
/// Returns whether it replaced it. No event is appended: the password itself did not change.
/// A failure here (e.g. 503 `server_busy`) should not fail the sign-in: log it, and the next
/// sign-in tries again.
pub async fn rehash(state: &AppState, user_id: &str, old: &str, candidate: String) -> Result<bool, ApiError> {
    rehash_with(&state.pool, &state.hashing, user_id, old, candidate).await
}

/// [`rehash`] with an explicit pool and limiter.
pub async fn rehash_with(
    pool: &sqlx::PgPool,
    hashing: &Hashing,
    user_id: &str,
    old: &str,
    candidate: String,
) -> Result<bool, ApiError> {
    let new = hash_with(hashing, candidate).await?;
    let done = sqlx::query(
        "update credential set password_hash = $3, updated_at = now() \
         where user_id = $1 and password_hash = $2",
    )
    .bind(user_id)
    .bind(old)
    .bind(new)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The bounds on an imported argon2 hash's parameters (docs/API.md). They admit every common
/// recommendation (OWASP's m=19..46 MiB, RFC 9106's 64 MiB with t=3 and p=4, libsodium's
/// "sensitive" 1 GiB is refused) while one verification stays within about a second.
pub struct ImportBounds;

impl ImportBounds {
    /// Memory, in KiB (256 MiB).
    pub const MAX_M_KIB: u32 = 256 * 1024;
    /// Passes.
    pub const MAX_T: u32 = 10;
    /// Lanes.
    pub const MAX_P: u32 = 8;
    /// Memory times passes, in KiB (1 GiB: e.g. 256 MiB × 4, 64 MiB × 10 is under it too).
    pub const MAX_M_TIMES_T_KIB: u64 = 1024 * 1024;
    /// Salt, decoded bytes.
    pub const SALT_BYTES: std::ops::RangeInclusive<usize> = 8..=64;
    /// Hash output, bytes.
    pub const OUTPUT_BYTES: std::ops::RangeInclusive<usize> = 16..=64;
}

fn invalid_hash(message: impl Into<String>) -> ApiError {
    ApiError::invalid("password_hash", "invalid_password_hash", message)
}

fn too_costly(message: String) -> ApiError {
    ApiError::invalid("password_hash", "password_hash_cost_too_high", message)
}

/// Accepts an imported argon2 PHC hash (`password_hash_type: argon2`) after checking its form
/// and that its cost parameters lie within [`ImportBounds`].
pub fn imported(hash: &str) -> Result<String, ApiError> {
    let not_phc = || invalid_hash("password_hash is not a valid argon2 PHC string");
    let h = argon2::PasswordHash::new(hash).map_err(|_| not_phc())?;
    if Algorithm::try_from(h.algorithm).is_err() {
        return Err(not_phc());
    }
    if h.version.is_some_and(|v| Version::try_from(v).is_err()) {
        return Err(invalid_hash("password_hash has an argon2 version other than 16 or 19"));
    }
    let (Some(salt), Some(output)) = (h.salt, h.hash) else {
        return Err(invalid_hash("password_hash must carry a salt and a hash"));
    };
    let mut buf = [0u8; 64];
    let salt_len = salt.decode_b64(&mut buf).map(<[u8]>::len).unwrap_or(usize::MAX);
    if !ImportBounds::SALT_BYTES.contains(&salt_len) {
        return Err(invalid_hash("password_hash must have a salt of 8 to 64 bytes"));
    }
    if !ImportBounds::OUTPUT_BYTES.contains(&output.len()) {
        return Err(invalid_hash("password_hash must have a hash of 16 to 64 bytes"));
    }
    // Also checks that m, t and p are present as numbers and consistent (m >= 8p).
    let params =
        Params::try_from(&h).map_err(|_| invalid_hash("password_hash has invalid argon2 parameters m, t, p"))?;
    check_cost(params.m_cost(), params.t_cost(), params.p_cost())?;
    Ok(hash.to_string())
}

/// The cost bounds of [`ImportBounds`], with the offending parameter named.
fn check_cost(m: u32, t: u32, p: u32) -> Result<(), ApiError> {
    if m > ImportBounds::MAX_M_KIB {
        return Err(too_costly(format!(
            "password_hash memory cost m={m} KiB is above the maximum of {} KiB (256 MiB)",
            ImportBounds::MAX_M_KIB
        )));
    }
    if t > ImportBounds::MAX_T {
        return Err(too_costly(format!(
            "password_hash time cost t={t} is above the maximum of {}",
            ImportBounds::MAX_T
        )));
    }
    if p > ImportBounds::MAX_P {
        return Err(too_costly(format!(
            "password_hash parallelism p={p} is above the maximum of {}",
            ImportBounds::MAX_P
        )));
    }
    if u64::from(m) * u64::from(t) > ImportBounds::MAX_M_TIMES_T_KIB {
        return Err(too_costly(format!(
            "password_hash memory times time cost (m={m} KiB × t={t}) is above the maximum of {} KiB (1 GiB)",
            ImportBounds::MAX_M_TIMES_T_KIB
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PHC string with the given parameters, a 16-byte salt and a 32-byte hash (their bytes do
    /// not matter to the checks).
    fn phc(alg: &str, params: &str) -> String {
        format!("${alg}$v=19${params}$c2FsdHNhbHRzYWx0c2FsdA$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw")
    }

    /// The field error code of a refusal (`None` when accepted).
    fn code(r: Result<String, ApiError>) -> Option<String> {
        let dbg = format!("{:?}", r.err()?);
        ["password_hash_cost_too_high", "invalid_password_hash"]
            .into_iter()
            .find(|c| dbg.contains(&format!("\"{c}\"")))
            .map(str::to_string)
    }

    #[test]
    fn imported_hashes_within_the_bounds_are_accepted() {
        for params in [
            "m=19456,t=2,p=1",  // OWASP
            "m=47104,t=1,p=1",  // OWASP, 46 MiB
            "m=65536,t=3,p=4",  // RFC 9106, second recommendation
            "m=262144,t=4,p=8", // every bound at its maximum, m·t = 1 GiB
            "m=65536,t=10,p=1", // t at its maximum
            "m=8,t=1,p=1",      // weak, but valid argon2
        ] {
            for alg in ["argon2id", "argon2i", "argon2d"] {
                let h = phc(alg, params);
                assert_eq!(imported(&h).ok(), Some(h.clone()), "{h}");
            }
        }
        let v16 = "$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw";
        assert!(imported(v16).is_ok());
    }

    #[test]
    fn imported_hashes_beyond_a_cost_bound_are_refused_with_the_parameter_named() {
        // (parameters, what the message names)
        for (params, names) in [
            ("m=262145,t=1,p=1", "m=262145"),
            ("m=4194304,t=1,p=1", "m=4194304"),
            ("m=19456,t=11,p=1", "t=11"),
            ("m=19456,t=4294967295,p=1", "t=4294967295"),
            ("m=19456,t=2,p=9", "p=9"),
            ("m=262144,t=5,p=1", "m=262144 KiB × t=5"),
            ("m=131072,t=10,p=1", "m=131072 KiB × t=10"),
        ] {
            let r = imported(&phc("argon2id", params));
            let msg = r.as_ref().err().map(|e| format!("{e:?}")).unwrap_or_default();
            assert_eq!(code(r), Some("password_hash_cost_too_high".into()), "{params}");
            assert!(msg.contains(names), "{params}: {msg}");
        }
    }

    #[test]
    fn malformed_imported_hashes_are_refused_as_invalid() {
        let salt16 = "c2FsdHNhbHRzYWx0c2FsdA";
        let out32 = "0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw";
        for h in [
            "not a hash".to_string(),
            format!("$scrypt$ln=15,r=8,p=1${salt16}${out32}"),
            format!("$argon2id$v=18$m=19456,t=2,p=1${salt16}${out32}"),
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt16}"),
            format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${out32}"), // 4-byte salt
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt16}$AAAAAAAAAAA"), // 8-byte hash
            format!("$argon2id$v=19$m=19456,t=two,p=1${salt16}${out32}"),
            format!("$argon2id$v=19$m=8,t=1,p=2${salt16}${out32}"), // m < 8p
            format!("$argon2id$v=19$m=19456,t=2,p=1,x=1${salt16}${out32}"),
        ] {
            assert_eq!(code(imported(&h)), Some("invalid_password_hash".into()), "{h}");
        }
    }
}
