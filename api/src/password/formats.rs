//! The stored forms of password hashes: argon2 and bcrypt as given, PBKDF2 as a PHC string,
//! salted SHA as `{SSHA…;prefix|suffix}`; turning an imported hash (`password_hash_type`) into
//! one of them after checking its form and its cost, and checking a candidate against one.
//! It never hashes on an async thread: callers run [`Stored::matches`] on the blocking pool.

use argon2::password_hash::PasswordVerifier;
use argon2::{Algorithm, Argon2, Version};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Decodes base64 as other systems write it: padded or not, trailing bits tolerated.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The cost bounds of imported bcrypt and PBKDF2 hashes (argon2's are
/// [`super::ImportBounds`]): one verification at a bound stays within about a second on one
/// core of the 2-core development machine (release build: bcrypt cost 12 0.64 s, 13 0.97 s,
/// 14 2.1 s; PBKDF2 at each digest's bound 0.3 to 0.47 s).
pub struct LegacyBounds;

impl LegacyBounds {
    /// bcrypt cost (log2 of the rounds): 13 is ~1 s; the common defaults are 10 to 12.
    pub const BCRYPT_MAX_COST: u32 = 13;
    /// The smallest cost bcrypt defines.
    pub const BCRYPT_MIN_COST: u32 = 4;
    /// PBKDF2 salt, bytes.
    pub const PBKDF2_SALT_BYTES: std::ops::RangeInclusive<usize> = 1..=128;
    /// PBKDF2 derived key, bytes.
    pub const PBKDF2_OUTPUT_BYTES: std::ops::RangeInclusive<usize> = 16..=128;
    /// Salted SHA salt, bytes (OpenLDAP writes 4, others 8 or 16).
    pub const SSHA_SALT_BYTES: std::ops::RangeInclusive<usize> = 4..=64;
}

/// The hash function of PBKDF2's HMAC or of a salted SHA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl Digest {
    fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// The most PBKDF2 iterations × output blocks one verification may cost: each is about
    /// OWASP's recommendation (1.3M, 600k, 210k) doubled and rounded, and admits Django's
    /// defaults (870k and 1M iterations of sha256).
    pub fn pbkdf2_max_work(self) -> u64 {
        match self {
            Self::Sha1 => 2_600_000,
            Self::Sha256 => 1_200_000,
            Self::Sha512 => 420_000,
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
        match self {
            Self::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, out),
            Self::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, rounds, out),
            Self::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, rounds, out),
        }
    }

    fn digest(self, first: &[u8], second: &[u8]) -> Vec<u8> {
        fn run<D: sha2::Digest>(a: &[u8], b: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(a);
            d.update(b);
            d.finalize().to_vec()
        }
        match self {
            Self::Sha1 => run::<sha1::Sha1>(first, second),
            Self::Sha256 => run::<sha2::Sha256>(first, second),
            Self::Sha512 => run::<sha2::Sha512>(first, second),
        }
    }

    /// The salted SHA scheme name of this digest.
    fn ssha_scheme(self) -> &'static str {
        match self {
            Self::Sha1 => "SSHA",
            Self::Sha256 => "SSHA256",
            Self::Sha512 => "SSHA512",
        }
    }

    fn from_ssha_scheme(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SSHA" => Some(Self::Sha1),
            "SSHA256" => Some(Self::Sha256),
            "SSHA512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// Where the salt sits relative to the password in a salted SHA's hashed input
/// (`password_salt_position`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaltPosition {
    /// `sha(salt + password)`.
    Prefix,
    /// `sha(password + salt)`: the standard `{SSHA}` of OpenLDAP, and WorkOS's documented one.
    Suffix,
}

impl SaltPosition {
    fn name(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Suffix => "suffix",
        }
    }
}

/// A stored password hash, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// An argon2 PHC string (ours, or imported within [`super::ImportBounds`]).
    Argon2(String),
    /// A bcrypt hash, `$2a$`, `$2b$` or `$2y$`.
    Bcrypt(String),
    Pbkdf2 {
        digest: Digest,
        rounds: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Ssha {
        digest: Digest,
        position: SaltPosition,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid("password_hash", "invalid_password_hash", message)
}

fn too_costly(message: String) -> ApiError {
    ApiError::invalid("password_hash", "password_hash_cost_too_high", message)
}

fn unsupported(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(field, "unsupported_password_hash_type", message)
}

const SUPPORTED: &str = "argon2, bcrypt, pbkdf2, ssha or ssha256";

/// Checks an imported hash of `hash_type` (the request's `password_hash_type`, with its
/// `password_salt_position`) and returns the form to store.
pub fn import(hash_type: &str, hash: &str, salt_position: Option<&str>) -> Result<String, ApiError> {
    let salted_sha = matches!(hash_type, "ssha" | "ssha256");
    match hash_type {
        "argon2" | "bcrypt" | "pbkdf2" | "ssha" | "ssha256" => {}
        "scrypt" | "firebase-scrypt" => {
            return Err(unsupported(
                "password_hash_type",
                format!("password_hash_type {hash_type} is not supported; use {SUPPORTED}"),
            ))
        }
        _ => {
            return Err(unsupported(
                "password_hash_type",
                format!("password_hash_type must be one of {SUPPORTED}"),
            ))
        }
    }
    if salt_position.is_some() && !salted_sha {
        return Err(unsupported(
            "password_salt_position",
            "password_salt_position applies only to ssha and ssha256 hashes",
        ));
    }
    let stored = match hash_type {
        "argon2" => return super::imported(hash),
        "bcrypt" => bcrypt(hash)?,
        "pbkdf2" => pbkdf2_import(hash)?,
        _ => {
            let position = match salt_position {
                None | Some("suffix") => SaltPosition::Suffix,
                Some("prefix") => SaltPosition::Prefix,
                Some(_) => {
                    return Err(ApiError::invalid(
                        "password_salt_position",
                        "invalid_value",
                        "password_salt_position must be prefix or suffix",
                    ))
                }
            };
            let default = if hash_type == "ssha" {
                Digest::Sha1
            } else {
                Digest::Sha256
            };
            ssha_import(hash, default, hash_type == "ssha256", position)?
        }
    };
    Ok(stored.to_string())
}

impl Stored {
    /// Parses a stored hash, checking its form and cost bounds as an import does.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if s.starts_with("$argon2") {
            return super::imported(s).map(Self::Argon2);
        }
        if s.starts_with("$2") {
            return bcrypt(s);
        }
        if s.starts_with("$pbkdf2") {
            return pbkdf2_dollar(s);
        }
        if s.starts_with("{SSHA") {
            return ssha_stored(s);
        }
        Err(invalid("password_hash is in no known stored form"))
    }

    /// Whether this is argon2id at the current parameters (m=19456, t=2, p=1, version 19):
    /// anything else is replaced at the next successful sign-in.
    pub fn is_current(&self) -> bool {
        let Self::Argon2(s) = self else { return false };
        let Ok(h) = argon2::PasswordHash::new(s) else {
            return false;
        };
        let Ok(p) = argon2::Params::try_from(&h) else {
            return false;
        };
        Algorithm::try_from(h.algorithm) == Ok(Algorithm::Argon2id)
            && h.version == Some(Version::V0x13 as u32)
            && (p.m_cost(), p.t_cost(), p.p_cost()) == (super::M_KIB, super::T, super::P)
    }

    /// Whether `candidate` is the password; every comparison of outputs is constant-time.
    /// CPU-heavy: run it on the blocking pool.
    pub fn matches(&self, candidate: &[u8]) -> Result<bool, ApiError> {
        match self {
            Self::Argon2(s) => {
                let h = argon2::PasswordHash::new(s).map_err(|_| ApiError::internal())?;
                // Algorithm, version and parameters come from the PHC string.
                match Argon2::default().verify_password(candidate, &h) {
                    Ok(()) => Ok(true),
                    Err(argon2::password_hash::Error::Password) => Ok(false),
                    Err(e) => {
                        tracing::error!(error = %e, "verifying a stored argon2 hash");
                        Err(ApiError::internal())
                    }
                }
            }
            Self::Bcrypt(s) => ::bcrypt::verify(candidate, s).map_err(|e| {
                tracing::error!(error = %e, "verifying a stored bcrypt hash");
                ApiError::internal()
            }),
            Self::Pbkdf2 {
                digest,
                rounds,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                digest.pbkdf2(candidate, salt, *rounds, &mut out);
                Ok(out.ct_eq(hash).into())
            }
            Self::Ssha {
                digest,
                position,
                salt,
                hash,
            } => {
                let out = match position {
                    SaltPosition::Suffix => digest.digest(candidate, salt),
                    SaltPosition::Prefix => digest.digest(salt, candidate),
                };
                Ok(out.ct_eq(hash).into())
            }
        }
    }
}

impl std::fmt::Display for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Argon2(s) | Self::Bcrypt(s) => f.write_str(s),
            Self::Pbkdf2 {
                digest,
                rounds,
                salt,
                hash,
            } => write!(
                f,
                "$pbkdf2-{}$i={rounds},l={}${}${}",
                digest.name(),
                hash.len(),
                STANDARD_NO_PAD.encode(salt),
                STANDARD_NO_PAD.encode(hash)
            ),
            Self::Ssha {
                digest,
                position,
                salt,
                hash,
            } => {
                let mut raw = hash.clone();
                raw.extend_from_slice(salt);
                write!(
                    f,
                    "{{{};{}}}{}",
                    digest.ssha_scheme(),
                    position.name(),
                    STANDARD.encode(raw)
                )
            }
        }
    }
}

/// `$2a$`, `$2b$` or `$2y$`, a two-digit cost within bounds, a 22-character salt and a
/// 31-character hash in bcrypt's base64. (`$2x$`, crypt_blowfish's bug-compatible variant, and
/// `$2$` hash differently and are refused.)
fn bcrypt(s: &str) -> Result<Stored, ApiError> {
    let form = || invalid("password_hash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost, 53 characters)");
    let parts: Vec<&str> = s.split('$').collect();
    let [empty, version, cost, rest] = parts.as_slice() else {
        return Err(form());
    };
    if !empty.is_empty() || !matches!(*version, "2a" | "2b" | "2y") || rest.len() != 53 {
        return Err(form());
    }
    if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
        return Err(form());
    }
    let cost: u32 = cost.parse().map_err(|_| form())?;
    let (salt, hash) = rest.split_at_checked(22).ok_or_else(form)?;
    let salt_ok = ::bcrypt::BASE_64.decode(salt).is_ok_and(|b| b.len() == 16);
    let hash_ok = ::bcrypt::BASE_64.decode(hash).is_ok_and(|b| b.len() == 23);
    if !salt_ok || !hash_ok {
        return Err(invalid(
            "password_hash has a bcrypt salt or hash that is not valid bcrypt base64",
        ));
    }
    if cost < LegacyBounds::BCRYPT_MIN_COST {
        return Err(invalid(format!(
            "password_hash has bcrypt cost {cost}, below bcrypt's minimum of 4"
        )));
    }
    if cost > LegacyBounds::BCRYPT_MAX_COST {
        return Err(too_costly(format!(
            "password_hash bcrypt cost {cost} is above the maximum of {}",
            LegacyBounds::BCRYPT_MAX_COST
        )));
    }
    Ok(Stored::Bcrypt(s.to_string()))
}

/// The PBKDF2 forms in use: the PHC string (`$pbkdf2-sha256$i=N,l=L$salt$hash`, as Auth0 and
/// RustCrypto write it; `$pbkdf2$` or `$pbkdf2-sha1$` is SHA-1), passlib's
/// (`$pbkdf2-sha256$N$salt$hash` in its `./`-alphabet base64) and Django's
/// (`pbkdf2_sha256$N$salt$base64hash`, whose salt is text used as it is).
fn pbkdf2_import(s: &str) -> Result<Stored, ApiError> {
    if let Some(rest) = s.strip_prefix("pbkdf2_") {
        let form = || invalid("password_hash is not a Django PBKDF2 hash (pbkdf2_sha256$iterations$salt$hash)");
        let parts: Vec<&str> = rest.split('$').collect();
        let [digest, rounds, salt, hash] = parts.as_slice() else {
            return Err(form());
        };
        let digest = match *digest {
            "sha1" => Digest::Sha1,
            "sha256" => Digest::Sha256,
            "sha512" => Digest::Sha512,
            _ => return Err(form()),
        };
        let rounds = iterations(rounds)?;
        let hash = LENIENT
            .decode(hash)
            .map_err(|_| invalid("password_hash has a hash that is not base64"))?;
        return pbkdf2_checked(digest, rounds, salt.as_bytes().to_vec(), hash);
    }
    pbkdf2_dollar(s)
}

/// `$pbkdf2…$` forms: PHC (parameters `i=…[,l=…]`) or passlib (bare iteration count).
fn pbkdf2_dollar(s: &str) -> Result<Stored, ApiError> {
    let form = || invalid("password_hash is not a PBKDF2 PHC string ($pbkdf2-sha256$i=N,l=L$salt$hash)");
    let parts: Vec<&str> = s.split('$').collect();
    let [empty, ident, params, salt, hash] = parts.as_slice() else {
        return Err(form());
    };
    if !empty.is_empty() {
        return Err(form());
    }
    let digest = match *ident {
        "pbkdf2" | "pbkdf2-sha1" => Digest::Sha1,
        "pbkdf2-sha256" => Digest::Sha256,
        "pbkdf2-sha512" => Digest::Sha512,
        _ => return Err(form()),
    };
    let b64 = |what: &str, v: &str, passlib: bool| {
        let v = if passlib { v.replace('.', "+") } else { v.to_string() };
        LENIENT
            .decode(v)
            .map_err(|_| invalid(format!("password_hash has a {what} that is not base64")))
    };
    if params.bytes().all(|b| b.is_ascii_digit()) {
        // passlib: the iteration count alone, "adapted" base64 ('.' for '+').
        let rounds = iterations(params)?;
        return pbkdf2_checked(digest, rounds, b64("salt", salt, true)?, b64("hash", hash, true)?);
    }
    let mut rounds = None;
    let mut length = None;
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("i", v)) if rounds.is_none() => rounds = Some(iterations(v)?),
            Some(("l", v)) if length.is_none() => {
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| invalid("password_hash has an invalid length l"))?,
                )
            }
            _ => {
                return Err(invalid(format!(
                    "password_hash has an unknown or repeated PBKDF2 parameter {kv:?}"
                )))
            }
        }
    }
    let rounds = rounds.ok_or_else(|| invalid("password_hash lacks the PBKDF2 iteration count i"))?;
    let hash = b64("hash", hash, false)?;
    if length.is_some_and(|l| l != hash.len()) {
        return Err(invalid("password_hash has a length l other than its hash's"));
    }
    pbkdf2_checked(digest, rounds, b64("salt", salt, false)?, hash)
}

fn iterations(v: &str) -> Result<u32, ApiError> {
    let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<u32>() {
        Ok(n) if n >= 1 && digits => Ok(n),
        // Digits, but beyond u32: certainly beyond the bound.
        Err(_) if digits => Err(too_costly(format!(
            "password_hash PBKDF2 iterations i={v} is above the maximum"
        ))),
        _ => Err(invalid(
            "password_hash has an invalid PBKDF2 iteration count (a number from 1)",
        )),
    }
}

fn pbkdf2_checked(digest: Digest, rounds: u32, salt: Vec<u8>, hash: Vec<u8>) -> Result<Stored, ApiError> {
    if !LegacyBounds::PBKDF2_SALT_BYTES.contains(&salt.len()) {
        return Err(invalid("password_hash must have a PBKDF2 salt of 1 to 128 bytes"));
    }
    if !LegacyBounds::PBKDF2_OUTPUT_BYTES.contains(&hash.len()) {
        return Err(invalid("password_hash must have a PBKDF2 hash of 16 to 128 bytes"));
    }
    // Each output block of the hash's length costs the full iteration count.
    let blocks = hash.len().div_ceil(digest.output_len()) as u64;
    let work = u64::from(rounds) * blocks;
    if work > digest.pbkdf2_max_work() {
        return Err(too_costly(format!(
            "password_hash PBKDF2 iterations i={rounds} (× {blocks} output block(s) of {}) is above the maximum of {} for pbkdf2-{}",
            digest.name(),
            digest.pbkdf2_max_work(),
            digest.name()
        )));
    }
    Ok(Stored::Pbkdf2 {
        digest,
        rounds,
        salt,
        hash,
    })
}

/// `{SSHA}base64(sha1(…) + salt)` (or `{SSHA256}`, `{SSHA512}`; the scheme name in any case),
/// or the bare base64 with the digest of `password_hash_type`.
fn ssha_import(s: &str, default: Digest, sha256_only: bool, position: SaltPosition) -> Result<Stored, ApiError> {
    let (digest, b64) = match s.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((scheme, rest)) => {
            let d = Digest::from_ssha_scheme(scheme)
                .ok_or_else(|| invalid("password_hash must start with {SSHA}, {SSHA256} or {SSHA512}"))?;
            (d, rest)
        }
        None => (default, s),
    };
    if sha256_only && digest != Digest::Sha256 {
        return Err(invalid("an ssha256 password_hash must be {SSHA256} (SHA-256)"));
    }
    ssha_checked(digest, position, b64)
}

/// Our stored `{SSHA;prefix}…` form (see [`Stored`]'s `Display`).
fn ssha_stored(s: &str) -> Result<Stored, ApiError> {
    let form = || invalid("password_hash is not a stored salted SHA ({SSHA;suffix}…)");
    let (head, b64) = s.strip_prefix('{').and_then(|r| r.split_once('}')).ok_or_else(form)?;
    let (scheme, position) = head.split_once(';').ok_or_else(form)?;
    let digest = Digest::from_ssha_scheme(scheme).ok_or_else(form)?;
    let position = match position {
        "prefix" => SaltPosition::Prefix,
        "suffix" => SaltPosition::Suffix,
        _ => return Err(form()),
    };
    ssha_checked(digest, position, b64)
}

fn ssha_checked(digest: Digest, position: SaltPosition, b64: &str) -> Result<Stored, ApiError> {
    let raw = LENIENT
        .decode(b64.trim())
        .map_err(|_| invalid("password_hash is not base64 after its {SSHA} scheme"))?;
    let n = digest.output_len();
    let salt_len = raw.len().saturating_sub(n);
    if raw.len() <= n || !LegacyBounds::SSHA_SALT_BYTES.contains(&salt_len) {
        return Err(invalid(format!(
            "password_hash must hold a {n}-byte {} digest followed by a salt of 4 to 64 bytes",
            digest.name()
        )));
    }
    let (hash, salt) = raw.split_at(n);
    Ok(Stored::Ssha {
        digest,
        position,
        salt: salt.to_vec(),
        hash: hash.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &[u8] = b"correct horse battery staple";

    /// The field error code of a refusal (`None` when accepted), and its message.
    fn refusal<T: std::fmt::Debug>(r: Result<T, ApiError>) -> Option<(String, String)> {
        let e = r.err()?;
        let dbg = format!("{e:?}");
        let code = [
            "password_hash_cost_too_high",
            "invalid_password_hash",
            "unsupported_password_hash_type",
            "invalid_value",
        ]
        .into_iter()
        .find(|c| dbg.contains(&format!("\"{c}\"")))
        .unwrap_or("?");
        Some((code.to_string(), dbg))
    }

    /// Imports `hash` as `kind`, re-reads the stored form, and checks it matches `PW` only.
    fn imports_and_verifies(kind: &str, hash: &str, position: Option<&str>) -> String {
        let stored = import(kind, hash, position).unwrap_or_else(|e| panic!("{kind} {hash}: {e:?}"));
        let parsed = Stored::parse(&stored).unwrap_or_else(|e| panic!("stored {stored}: {e:?}"));
        assert_eq!(parsed.to_string(), stored, "the stored form reads back as itself");
        assert_eq!(
            parsed.matches(PW).ok(),
            Some(true),
            "{kind} {hash}: the password matches"
        );
        for wrong in [
            &b"correct horse battery stapler"[..],
            b"",
            b"Correct horse battery staple",
        ] {
            assert_eq!(
                parsed.matches(wrong).ok(),
                Some(false),
                "{kind} {hash}: {wrong:?} is refused"
            );
        }
        assert!(!parsed.is_current(), "an imported {kind} hash is to be rehashed");
        stored
    }

    #[test]
    fn bcrypt_hashes_from_other_implementations_verify() {
        // (hash, password): vectors published with rust-bcrypt (online tool, Python, Node) and
        // PHP's password_verify documentation.
        for (hash, pw) in [
            (
                "$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96",
                "password",
            ),
            (
                "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
                "correctbatteryhorsestapler",
            ),
            (
                "$2a$04$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi",
                "correctbatteryhorsestapler",
            ),
            (
                "$2y$07$BCryptRequires22Chrcte/VlQH0piJtjXl.0t1XkA8pw9dMXTpOq",
                "rasmuslerdorf",
            ),
            (
                "$2y$12$......................21jzCB1r6pN6rp5O2Ev0ejjTAboskKm",
                "hunter2",
            ),
        ] {
            let stored = import("bcrypt", hash, None).unwrap_or_else(|e| panic!("{hash}: {e:?}"));
            assert_eq!(stored, hash, "bcrypt is stored as given");
            let parsed = Stored::parse(&stored).expect("reads back");
            assert_eq!(parsed.matches(pw.as_bytes()).ok(), Some(true), "{hash}");
            assert_eq!(parsed.matches(b"wrong password").ok(), Some(false), "{hash}");
            assert!(!parsed.is_current());
        }
        // bcrypt reads the first 72 bytes only: 100 × "x" was hashed (Python's bcrypt).
        let long = Stored::parse("$2a$05$......................YgIDy4hFBdVlc/6LHnD9mX488r9cLd2").expect("parses");
        assert_eq!(long.matches(&[b'x'; 100]).ok(), Some(true));
        assert_eq!(long.matches(&[b'x'; 72]).ok(), Some(true));
        assert_eq!(long.matches(&[b'x'; 71]).ok(), Some(false));
    }

    #[test]
    fn malformed_or_too_costly_bcrypt_hashes_are_refused_with_the_reason() {
        let tail = "UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";
        for (hash, code, names) in [
            (format!("$2b$14${tail}"), "password_hash_cost_too_high", "cost 14"),
            (format!("$2b$31${tail}"), "password_hash_cost_too_high", "cost 31"),
            (format!("$2b$03${tail}"), "invalid_password_hash", "cost 3"),
            (format!("$2x$04${tail}"), "invalid_password_hash", "bcrypt hash"),
            (format!("$2$04${tail}"), "invalid_password_hash", "bcrypt hash"),
            (format!("$2b$4${tail}"), "invalid_password_hash", "bcrypt hash"),
            (format!("$2b$+4${tail}"), "invalid_password_hash", "bcrypt hash"),
            (format!("$2b$04${}", &tail[1..]), "invalid_password_hash", "bcrypt hash"),
            (format!("$2b$04${tail}x"), "invalid_password_hash", "bcrypt hash"),
            (
                format!("$2b$04${}", tail.replace('U', "!")),
                "invalid_password_hash",
                "base64",
            ),
            (
                format!("$2b$04$UuTkLRZZ6QofpDOlMz32Mv{}", &tail[22..]),
                "invalid_password_hash",
                "base64",
            ),
            (format!("2b$04${tail}"), "invalid_password_hash", "bcrypt hash"),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw"
                    .into(),
                "invalid_password_hash",
                "bcrypt hash",
            ),
        ] {
            let (c, msg) = refusal(import("bcrypt", &hash, None)).unwrap_or_else(|| panic!("{hash} accepted"));
            assert_eq!(c, code, "{hash}: {msg}");
            assert!(msg.contains(names), "{hash}: names {names}: {msg}");
        }
        assert!(
            import("bcrypt", &format!("$2b$13${tail}"), None).is_ok(),
            "13 is the bound"
        );
    }

    #[test]
    fn pbkdf2_hashes_in_phc_passlib_and_django_forms_verify() {
        // Computed with Python's hashlib.pbkdf2_hmac, an independent implementation.
        let phc = [
            "$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZg$yqSq2SygY1sB4EcH9f2FG0JTMES+wqLsOT5YmiRBplI",
            "$pbkdf2-sha512$i=1000,l=64$MDEyMzQ1Njc4OWFiY2RlZg$5bTW2oeyDJyGJPcmEr+mRDE11ghpozWrDGnSNhRXo2ZCu0KHRDiUMAVEGzLJC+oDhRoeIja9J1iLIv9ptDJMfQ",
            "$pbkdf2-sha1$i=1000,l=20$MDEyMzQ1Njc4OWFiY2RlZg$wmIXv0mv7iouqkc9CKjRvCX21po",
            // Auth0's example shape: sha1 with a 64-byte key (four output blocks).
            "$pbkdf2-sha1$i=1000,l=64$MDEyMzQ1Njc4OWFiY2RlZg$wmIXv0mv7iouqkc9CKjRvCX21ppxie1kqc0WMgmDj0o+97VK8UW9s9Quxr8AjR3iqH5sGSrNnbDLUPu+/v6crg",
        ];
        for h in phc {
            assert_eq!(
                imports_and_verifies("pbkdf2", h, None),
                h,
                "canonical PHC is stored as given"
            );
        }
        // The same without `l`, and with padding: stored canonically.
        let bare = "$pbkdf2-sha256$i=1000$MDEyMzQ1Njc4OWFiY2RlZg==$yqSq2SygY1sB4EcH9f2FG0JTMES+wqLsOT5YmiRBplI=";
        assert_eq!(imports_and_verifies("pbkdf2", bare, None), phc[0]);
        // RustCrypto's `$pbkdf2$` (SHA-1) ident.
        let rc = imports_and_verifies(
            "pbkdf2",
            "$pbkdf2$i=1000,l=20$MDEyMzQ1Njc4OWFiY2RlZg$wmIXv0mv7iouqkc9CKjRvCX21po",
            None,
        );
        assert_eq!(rc, phc[2]);
        // passlib (its `.` for `+`).
        imports_and_verifies(
            "pbkdf2",
            "$pbkdf2-sha256$29000$MDEyMzQ1Njc4OWFiY2RlZg$vajIaozrb7q4x.G3R5Y.FIe07ZH3QEjPYV1bs8kEikU",
            None,
        );
        imports_and_verifies(
            "pbkdf2",
            "$pbkdf2-sha512$25000$.vv8/f7/AAECAwQFBgcICQ$vB5cMR3F8LO3FpzkefFKi1MtlZEvtMCoAJ3zR2lz5rvtn3T9e59L7H9cKmO7gbppOZvRusWC6Ij63O47LEMHPQ",
            None,
        );
        // Django (its salt is text, used as it is).
        let django = imports_and_verifies(
            "pbkdf2",
            "pbkdf2_sha256$1000$seasalt2024abcdefghij$3rHJvKAQ2uSme9LnbfOS383G11IllH4wOfAm7ZpBf34=",
            None,
        );
        assert!(django.starts_with("$pbkdf2-sha256$i=1000,l=32$"), "{django}");
        imports_and_verifies("pbkdf2", "pbkdf2_sha1$1000$oldsalt$4/IMr8mboPeNrZUBRXtYAG7vMg8=", None);
    }

    #[test]
    fn pbkdf2_matches_rfc_6070() {
        // RFC 6070: P = "password", S = "salt", c = 4096, dkLen = 20.
        let s = Stored::parse("$pbkdf2-sha1$i=4096,l=20$c2FsdA$SwB5AbdlSJq+rUnZJvch0GWkKcE").expect("parses");
        assert_eq!(s.matches(b"password").ok(), Some(true));
        assert_eq!(s.matches(b"passwore").ok(), Some(false));
    }

    #[test]
    fn malformed_or_too_costly_pbkdf2_hashes_are_refused_with_the_parameter_named() {
        let salt = "MDEyMzQ1Njc4OWFiY2RlZg";
        let h32 = "yqSq2SygY1sB4EcH9f2FG0JTMES+wqLsOT5YmiRBplI";
        let h64 = "5bTW2oeyDJyGJPcmEr+mRDE11ghpozWrDGnSNhRXo2ZCu0KHRDiUMAVEGzLJC+oDhRoeIja9J1iLIv9ptDJMfQ";
        for (hash, code, names) in [
            (
                format!("$pbkdf2-sha256$i=1200001,l=32${salt}${h32}"),
                "password_hash_cost_too_high",
                "i=1200001",
            ),
            (
                format!("$pbkdf2-sha256$i=99999999999${salt}${h32}"),
                "password_hash_cost_too_high",
                "i=99999999999",
            ),
            (
                format!("$pbkdf2-sha512$i=420001${salt}${h64}"),
                "password_hash_cost_too_high",
                "i=420001",
            ),
            // sha256 with a 64-byte key costs two blocks: 600001 × 2 is beyond.
            (
                format!("$pbkdf2-sha256$i=600001${salt}${h64}"),
                "password_hash_cost_too_high",
                "× 2 output block",
            ),
            (
                format!("$pbkdf2-sha1$i=2600001${salt}$wmIXv0mv7iouqkc9CKjRvCX21po"),
                "password_hash_cost_too_high",
                "i=2600001",
            ),
            (
                format!("pbkdf2_sha256$1200001$seasalt${h32}"),
                "password_hash_cost_too_high",
                "i=1200001",
            ),
            (
                format!("$pbkdf2-sha256$1200001${salt}${h32}"),
                "password_hash_cost_too_high",
                "i=1200001",
            ),
            (
                format!("$pbkdf2-sha256$i=0${salt}${h32}"),
                "invalid_password_hash",
                "iteration count",
            ),
            (
                format!("$pbkdf2-sha256$i=-1${salt}${h32}"),
                "invalid_password_hash",
                "iteration count",
            ),
            (
                format!("$pbkdf2-sha256$l=32${salt}${h32}"),
                "invalid_password_hash",
                "lacks",
            ),
            (
                format!("$pbkdf2-sha256$i=1000,l=31${salt}${h32}"),
                "invalid_password_hash",
                "length l",
            ),
            (
                format!("$pbkdf2-sha256$i=1000,i=2${salt}${h32}"),
                "invalid_password_hash",
                "repeated",
            ),
            (
                format!("$pbkdf2-sha256$i=1000,x=1${salt}${h32}"),
                "invalid_password_hash",
                "unknown",
            ),
            (
                format!("$pbkdf2-md5$i=1000${salt}${h32}"),
                "invalid_password_hash",
                "PHC",
            ),
            (format!("$pbkdf2-sha256$i=1000${salt}"), "invalid_password_hash", "PHC"),
            (format!("$pbkdf2-sha256$i=1000$${h32}"), "invalid_password_hash", "salt"),
            (
                format!("$pbkdf2-sha256$i=1000${salt}$AAAA"),
                "invalid_password_hash",
                "16 to 128",
            ),
            (
                format!("$pbkdf2-sha256$i=1000${salt}$not*base64"),
                "invalid_password_hash",
                "base64",
            ),
            (format!("pbkdf2_md5$1000$salt${h32}"), "invalid_password_hash", "Django"),
            ("pbkdf2_sha256$1000$salt".to_string(), "invalid_password_hash", "Django"),
            (
                "{SSHA}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==".to_string(),
                "invalid_password_hash",
                "PHC",
            ),
        ] {
            let (c, msg) = refusal(import("pbkdf2", &hash, None)).unwrap_or_else(|| panic!("{hash} accepted"));
            assert_eq!(c, code, "{hash}: {msg}");
            assert!(msg.contains(names), "{hash}: names {names}: {msg}");
        }
        for at_bound in [
            format!("$pbkdf2-sha256$i=1200000${salt}${h32}"),
            format!("$pbkdf2-sha256$i=600000${salt}${h64}"),
            format!("pbkdf2_sha256$1000000$seasalt${h32}"), // Django 5.2's default
        ] {
            assert!(import("pbkdf2", &at_bound, None).is_ok(), "{at_bound}");
        }
    }

    /// `{SCHEME}base64(digest + salt)` of `PW` with an 8-byte salt, computed here.
    fn ssha(scheme: &str, digest: Digest, position: SaltPosition) -> String {
        let salt = [9u8, 8, 7, 6, 5, 4, 3, 2];
        let mut raw = match position {
            SaltPosition::Suffix => digest.digest(PW, &salt),
            SaltPosition::Prefix => digest.digest(&salt, PW),
        };
        raw.extend_from_slice(&salt);
        format!("{scheme}{}", STANDARD.encode(raw))
    }

    #[test]
    fn salted_sha_hashes_verify_with_their_salt_position() {
        // Computed with Python's hashlib (salt 01..08).
        let s = imports_and_verifies("ssha", "{SSHA}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==", None);
        assert_eq!(s, "{SSHA;suffix}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==");
        let s = imports_and_verifies("ssha", "{SSHA}05j6bHossbgwSkKAVF3fy8pm7RIBAgMEBQYHCA==", Some("prefix"));
        assert_eq!(s, "{SSHA;prefix}05j6bHossbgwSkKAVF3fy8pm7RIBAgMEBQYHCA==");
        imports_and_verifies(
            "ssha256",
            "{SSHA256}4RCdQtRBvAvQSR9Gtkm3fc5bhSO2sZxjW2Uv2CPwYi0BAgMEBQYHCA==",
            Some("suffix"),
        );
        imports_and_verifies(
            "ssha",
            "{SSHA512}e3wp3F5LWPG/IPGMUWKkETeu/7ufuBhgQ/fBkls+n9O7eh6Y4QSe2kmXCwXvo5brYRwGmwFu0Mu2gTOVMmYopQECAwQFBgcI",
            Some("prefix"),
        );
        // Computed here, every digest and position, with and without the scheme name.
        for (kind, scheme, digest) in [
            ("ssha", "{SSHA}", Digest::Sha1),
            ("ssha", "{ssha}", Digest::Sha1),
            ("ssha", "", Digest::Sha1),
            ("ssha", "{SSHA256}", Digest::Sha256),
            ("ssha", "{SSHA512}", Digest::Sha512),
            ("ssha256", "{SSHA256}", Digest::Sha256),
            ("ssha256", "", Digest::Sha256),
        ] {
            for (position, name) in [(SaltPosition::Suffix, "suffix"), (SaltPosition::Prefix, "prefix")] {
                imports_and_verifies(kind, &ssha(scheme, digest, position), Some(name));
            }
        }
        // The salt position matters: a prefix hash read as suffix does not match.
        let prefix = ssha("{SSHA}", Digest::Sha1, SaltPosition::Prefix);
        let as_suffix = Stored::parse(&import("ssha", &prefix, None).expect("valid")).expect("parses");
        assert_eq!(as_suffix.matches(PW).ok(), Some(false));
    }

    #[test]
    fn malformed_salted_sha_hashes_and_positions_are_refused() {
        let good = ssha("{SSHA}", Digest::Sha1, SaltPosition::Suffix);
        let short_salt = format!("{{SSHA}}{}", STANDARD.encode([7u8; 23]));
        let no_salt = format!("{{SSHA}}{}", STANDARD.encode([7u8; 20]));
        for (kind, hash, position, field_code, names) in [
            (
                "ssha",
                good.as_str(),
                Some("middle"),
                "invalid_value",
                "prefix or suffix",
            ),
            (
                "ssha",
                good.as_str(),
                Some("PREFIX"),
                "invalid_value",
                "prefix or suffix",
            ),
            (
                "ssha",
                "{SMD5}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==",
                None,
                "invalid_password_hash",
                "{SSHA}",
            ),
            ("ssha", "{SSHA}not base64!", None, "invalid_password_hash", "base64"),
            ("ssha", short_salt.as_str(), None, "invalid_password_hash", "4 to 64"),
            ("ssha", no_salt.as_str(), None, "invalid_password_hash", "4 to 64"),
            ("ssha", "{SSHA}", None, "invalid_password_hash", "4 to 64"),
            ("ssha256", good.as_str(), None, "invalid_password_hash", "SHA-256"),
            (
                "bcrypt",
                good.as_str(),
                Some("prefix"),
                "unsupported_password_hash_type",
                "ssha",
            ),
            (
                "argon2",
                good.as_str(),
                Some("suffix"),
                "unsupported_password_hash_type",
                "ssha",
            ),
            (
                "scrypt",
                good.as_str(),
                None,
                "unsupported_password_hash_type",
                "scrypt",
            ),
            (
                "firebase-scrypt",
                good.as_str(),
                None,
                "unsupported_password_hash_type",
                "firebase-scrypt",
            ),
            ("md5", good.as_str(), None, "unsupported_password_hash_type", "one of"),
            ("SSHA", good.as_str(), None, "unsupported_password_hash_type", "one of"),
        ] {
            let (c, msg) = refusal(import(kind, hash, position)).unwrap_or_else(|| panic!("{kind} {hash} accepted"));
            assert_eq!(c, field_code, "{kind} {hash} {position:?}: {msg}");
            assert!(msg.contains(names), "{kind} {hash}: names {names}: {msg}");
        }
    }

    #[test]
    fn stored_forms_that_are_not_ours_do_not_parse() {
        for s in [
            "",
            "plaintext",
            "{SSHA}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==", // imported forms gain a position
            "{SSHA;middle}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==",
            "pbkdf2_sha256$1000$seasalt$3rHJvKAQ2uSme9LnbfOS383G11IllH4wOfAm7ZpBf34=",
            "$scrypt$ln=15,r=8,p=1$c2FsdA$c2FsdA",
        ] {
            assert!(Stored::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn an_argon2id_hash_from_the_reference_implementation_verifies_and_is_current() {
        // `echo -n password | argon2 somesalt16bytes! -id -t 2 -k 19456 -p 1 -l 32 -e`
        let h = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQxNmJ5dGVzIQ$tPXA8KRaMxUDqoVFOkz5qceiysamiMSLxBrcC5sAtmo";
        let s = Stored::parse(h).expect("parses");
        assert_eq!(s.matches(b"password").ok(), Some(true));
        assert_eq!(s.matches(b"passwore").ok(), Some(false));
        assert!(s.is_current());
    }

    #[test]
    fn only_argon2id_at_the_current_parameters_is_current() {
        let out = "c2FsdHNhbHRzYWx0c2FsdA$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw";
        let current = |s: &str| Stored::parse(s).map(|s| s.is_current()).ok();
        assert_eq!(current(&format!("$argon2id$v=19$m=19456,t=2,p=1${out}")), Some(true));
        for other in [
            format!("$argon2id$v=19$m=19456,t=3,p=1${out}"),
            format!("$argon2id$v=19$m=65536,t=2,p=1${out}"),
            format!("$argon2id$v=19$m=19456,t=2,p=2${out}"),
            format!("$argon2id$v=16$m=19456,t=2,p=1${out}"),
            format!("$argon2i$v=19$m=19456,t=2,p=1${out}"),
        ] {
            assert_eq!(current(&other), Some(false), "{other}");
        }
    }
}
