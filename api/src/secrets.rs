//! The master secret key: it seals secrets kept at rest (signing keys' private halves, and
//! whatever else must be stored recoverably) and keys the HMACs of stored secret hashes. It owns
//! loading that key (flag, environment, or a file generated once under the data dir) and the
//! primitives built on it. It never logs, prints or stores the key, and never returns plaintext
//! that failed authentication.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::PgPool;

/// Length of the master key in bytes.
pub const KEY_LEN: usize = 32;

/// The first byte of every sealed value: the format (AES-256-GCM, 96-bit random nonce).
const SEALED_V1: u8 = 1;

/// File name of the generated key under the data dir.
pub const KEY_FILE: &str = "secret.key";

/// Why sealing, opening or drawing randomness failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The value does not authenticate under this key and context: the secret key changed
    /// since it was sealed (or the stored bytes were altered).
    #[error(
        "a stored secret does not open with the configured secret key: the secret key \
         (KEYLEDGER_SECRET_KEY, --secret-key or <data dir>/secret.key) changed since it was \
         sealed, or the stored value was altered"
    )]
    KeyChanged,
    /// The stored value is not in a format this version seals.
    #[error("a stored secret is not in a known sealed format")]
    Format,
    #[error("the system's random number generator failed")]
    Random,
}

struct Inner {
    aead: LessSafeKey,
    /// Keys the per-label HMAC keys (never used on messages directly).
    derive: hmac::Key,
    rng: SystemRandom,
}

/// The master key. Cheap to clone; never printed (`Debug` shows no material).
#[derive(Clone)]
pub struct MasterKey(Arc<Inner>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let aead = match UnboundKey::new(&AES_256_GCM, &bytes) {
            Ok(k) => LessSafeKey::new(k),
            // AES-256 takes exactly 32 bytes, which the type guarantees.
            Err(_) => unreachable_key_length(),
        };
        Self(Arc::new(Inner {
            aead,
            derive: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            rng: SystemRandom::new(),
        }))
    }

    /// A new random key.
    pub fn generate() -> Result<Self, SecretError> {
        Ok(Self::from_bytes(random_bytes::<KEY_LEN>()?))
    }

    /// Parses the text form: 32 bytes as 64 hex digits or as base64url (with or without padding).
    pub fn parse(text: &str) -> Result<Self, InvalidKey> {
        parse_key_bytes(text.trim()).map(Self::from_bytes)
    }

    /// Encrypts and authenticates `plaintext`, bound to `aad` (the context it belongs to, e.g. a
    /// key id): `[version][nonce][ciphertext][tag]`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SecretError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        self.0
            .aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut body)
            .map_err(|_| SecretError::Format)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plaintext of a value [`seal`](Self::seal)ed with this key and `aad`; any other key,
    /// context or altered byte is [`SecretError::KeyChanged`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        let (version, rest) = sealed.split_first().ok_or(SecretError::Format)?;
        if *version != SEALED_V1 || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SecretError::Format);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Format)?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| SecretError::KeyChanged)?;
        Ok(plain.to_vec())
    }

    /// HMAC-SHA256 of `msg` under a key derived from the master key for `label` (one purpose,
    /// one label: an HMAC for one purpose is never valid for another).
    pub fn hmac(&self, label: &[u8], msg: &[u8]) -> [u8; 32] {
        let derived = hmac::sign(&self.0.derive, &[b"keyledger hmac key\0", label].concat());
        let key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&key, msg).as_ref());
        out
    }

    /// Fills `buf` from the system's generator.
    pub fn fill_random(&self, buf: &mut [u8]) -> Result<(), SecretError> {
        self.0.rng.fill(buf).map_err(|_| SecretError::Random)
    }
}

#[allow(clippy::panic, reason = "unreachable: AES_256_GCM's key length is the array length")]
fn unreachable_key_length() -> LessSafeKey {
    panic!("AES-256-GCM refused a 32-byte key")
}

/// The text of an unusable `KEYLEDGER_SECRET_KEY` / `--secret-key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the secret key must be 32 random bytes written as 64 hex digits or as base64url \
     (43 characters without padding); generate one with `openssl rand -hex 32`"
)]
pub struct InvalidKey;

fn parse_key_bytes(text: &str) -> Result<[u8; KEY_LEN], InvalidKey> {
    let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| InvalidKey)?
    } else {
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| InvalidKey)?
    };
    bytes.try_into().map_err(|_| InvalidKey)
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| SecretError::Random)?;
    Ok(b)
}

/// How a random token (API key, session, code, state, link secret) is stored and looked up: its
/// SHA-256. Tokens carry enough randomness that no salt or slow hash is needed.
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// `n_bytes` random bytes as base64url without padding (for codes and tokens handed out).
pub fn random_token(n_bytes: usize) -> Result<String, SecretError> {
    let mut b = vec![0u8; n_bytes];
    SystemRandom::new().fill(&mut b).map_err(|_| SecretError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// `n` uniformly random decimal digits (`n` ≤ 19), without modulo bias: draws above the
/// largest multiple of 10^n that fits are thrown away.
pub fn random_digits(n: u32) -> Result<String, SecretError> {
    let n = n.min(19);
    let modulus = 10u64.pow(n);
    let limit = u64::MAX - (u64::MAX % modulus);
    loop {
        let v = u64::from_le_bytes(random_bytes::<8>()?);
        if v < limit {
            return Ok(format!("{:0width$}", v % modulus, width = n as usize));
        }
    }
}

/// Compares two byte strings in time independent of where they differ (their lengths are not
/// secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the master key of this process came from (said in the start-up log, never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--secret-key` or `KEYLEDGER_SECRET_KEY`.
    Configured,
    /// Read from this file.
    File(PathBuf),
    /// Generated now into this file.
    Generated(PathBuf),
}

/// The master key: `configured` (flag, else environment) when given, else `<data_dir>/secret.key`,
/// generated there once (mode 0600) when absent. Two processes generating at once agree: the file
/// appears atomically and the loser reads the winner's.
pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<(MasterKey, KeySource)> {
    if let Some(text) = configured {
        let key = MasterKey::parse(text).context("KEYLEDGER_SECRET_KEY / --secret-key")?;
        return Ok((key, KeySource::Configured));
    }
    let path = data_dir.join(KEY_FILE);
    if let Some(key) = read_key_file(&path)? {
        return Ok((key, KeySource::File(path)));
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let text = URL_SAFE_NO_PAD.encode(random_bytes::<KEY_LEN>()?);
    let tmp = data_dir.join(format!("{KEY_FILE}.{}.tmp", random_token(8)?));
    write_private(&tmp, format!("{text}\n").as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    // A hard link never replaces an existing file: of two racing processes, one link wins.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    let generated = match linked {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    match read_key_file(&path)? {
        Some(key) if generated => Ok((key, KeySource::Generated(path))),
        Some(key) => Ok((key, KeySource::File(path))),
        None => bail!("{} vanished while it was being created", path.display()),
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<Option<MasterKey>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            MasterKey::parse(&text)
                .map(Some)
                .with_context(|| format!("reading the secret key in {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the secret key file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// The `setting` row holding a value sealed with the master key, to tell at start-up whether
/// the configured key is the one this database's secrets were sealed with.
const KEY_CHECK_SETTING: &str = "master_key_check";
const KEY_CHECK_AAD: &[u8] = b"keyledger.master_key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"keyledger master key check v1";

/// Refuses a key other than the one this database's secrets were sealed with, with a message
/// that says so; records a check value the first time (concurrent first starts agree).
pub async fn check_against_database(pool: &PgPool, key: &MasterKey) -> anyhow::Result<()> {
    let sealed = URL_SAFE_NO_PAD.encode(key.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?);
    sqlx::query("insert into setting (name, value) values ($1, $2) on conflict (name) do nothing")
        .bind(KEY_CHECK_SETTING)
        .bind(&sealed)
        .execute(pool)
        .await
        .context("recording the secret key check")?;
    let (stored,): (String,) = sqlx::query_as("select value from setting where name = $1")
        .bind(KEY_CHECK_SETTING)
        .fetch_one(pool)
        .await
        .context("reading the secret key check")?;
    let opened = URL_SAFE_NO_PAD
        .decode(stored)
        .map_err(|_| SecretError::Format)
        .and_then(|b| key.open(KEY_CHECK_AAD, &b));
    match opened {
        Ok(p) if constant_time_eq(&p, KEY_CHECK_PLAINTEXT) => Ok(()),
        _ => bail!(
            "the secret key changed: this database's secrets (signing keys) were sealed with \
             another key than the configured one (KEYLEDGER_SECRET_KEY, --secret-key or \
             <data dir>/secret.key). Restore the original key (docs/OPERATIONS.md, \"The master key\")"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::generate().unwrap()
    }

    #[test]
    fn sealed_values_open_with_the_same_key_and_context_only() {
        let k = key();
        let sealed = k.seal(b"kid_1", b"private material").unwrap();
        assert_eq!(k.open(b"kid_1", &sealed).unwrap(), b"private material");
        assert!(
            !sealed.windows(16).any(|w| w == b"private material"),
            "plaintext leaked"
        );
        assert_eq!(k.open(b"kid_2", &sealed), Err(SecretError::KeyChanged), "wrong aad");
        assert_eq!(key().open(b"kid_1", &sealed), Err(SecretError::KeyChanged), "other key");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(k.open(b"kid_1", &t).is_err(), "tampered byte {i} opened");
        }
        assert_eq!(k.open(b"kid_1", &sealed[..10]), Err(SecretError::Format), "truncated");
        assert_eq!(k.open(b"kid_1", &[]), Err(SecretError::Format), "empty");
        assert_ne!(
            k.seal(b"a", b"x").unwrap(),
            k.seal(b"a", b"x").unwrap(),
            "nonces repeat"
        );
    }

    #[test]
    fn hmacs_depend_on_key_label_and_message() {
        let k = key();
        let a = k.hmac(b"refresh_token", b"msg");
        assert_eq!(a, k.hmac(b"refresh_token", b"msg"));
        assert_ne!(a, k.hmac(b"magic_code", b"msg"));
        assert_ne!(a, k.hmac(b"refresh_token", b"msh"));
        assert_ne!(a, key().hmac(b"refresh_token", b"msg"));
        // Known-answer: HMAC(HMAC(master, "keyledger hmac key\0" || label), msg).
        let m = MasterKey::from_bytes([7; 32]);
        let d = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]), b"keyledger hmac key\0L");
        let want = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, d.as_ref()), b"m");
        assert_eq!(&m.hmac(b"L", b"m")[..], want.as_ref());
    }

    #[test]
    fn random_tokens_are_base64url_of_the_asked_length_and_differ() {
        let t = random_token(32).unwrap();
        assert_eq!(t.len(), 43);
        assert!(
            t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{t}"
        );
        assert_ne!(t, random_token(32).unwrap());
        assert_eq!(random_token(0).unwrap(), "");
    }

    #[test]
    fn random_digits_are_n_digits_and_roughly_uniform() {
        let mut counts = [0u32; 10];
        for _ in 0..2000 {
            let d = random_digits(6).unwrap();
            assert_eq!(d.len(), 6, "{d}");
            for b in d.bytes() {
                assert!(b.is_ascii_digit(), "{d}");
                counts[(b - b'0') as usize] += 1;
            }
        }
        // 12,000 digits: each of the ten expected 1,200 times; 900 is > 8 sigma below.
        assert!(counts.iter().all(|&c| c > 900), "skewed: {counts:?}");
        assert_eq!(random_digits(1).unwrap().len(), 1);
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"xbc", b"abc"));
    }

    #[test]
    fn keys_parse_from_hex_or_base64url_and_nothing_else() {
        let bytes: [u8; 32] = core::array::from_fn(|i| i as u8 * 7);
        let hexed = hex::encode(bytes);
        let b64 = URL_SAFE_NO_PAD.encode(bytes);
        let sealed = MasterKey::from_bytes(bytes).seal(b"", b"x").unwrap();
        for text in [
            hexed.clone(),
            hexed.to_uppercase(),
            b64.clone(),
            format!("{b64}="),
            format!(" {b64}\n"),
        ] {
            let k = MasterKey::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(k.open(b"", &sealed).unwrap(), b"x", "{text} is another key");
        }
        for bad in [
            "",
            "short",
            &hexed[..62],
            &format!("{hexed}00"),
            &b64[..40],
            &URL_SAFE_NO_PAD.encode([1u8; 31]),
            &URL_SAFE_NO_PAD.encode([1u8; 33]),
            &base64::engine::general_purpose::STANDARD.encode([0xfbu8; 32]),
            "correct horse battery staple correct horse battery staple 12345",
        ] {
            assert_eq!(MasterKey::parse(bad).err(), Some(InvalidKey), "{bad:?} accepted");
        }
        assert_eq!(format!("{:?}", MasterKey::from_bytes(bytes)), "MasterKey(..)");
    }

    #[test]
    fn the_key_file_is_generated_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("kl-secret-{}", random_token(8).unwrap()));
        let (k1, s1) = load(None, &dir).unwrap();
        assert_eq!(s1, KeySource::Generated(dir.join(KEY_FILE)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (k2, s2) = load(None, &dir).unwrap();
        assert_eq!(s2, KeySource::File(dir.join(KEY_FILE)));
        let sealed = k1.seal(b"a", b"b").unwrap();
        assert_eq!(k2.open(b"a", &sealed).unwrap(), b"b", "read back another key");
        // Configured wins over the file; a bad configured key is refused, not replaced.
        let (k3, s3) = load(Some(&hex::encode([9u8; 32])), &dir).unwrap();
        assert_eq!(s3, KeySource::Configured);
        assert!(k3.open(b"a", &sealed).is_err());
        let err = load(Some("nope"), &dir).unwrap_err();
        assert!(format!("{err:#}").contains("64 hex digits"), "{err:#}");
        // A corrupt file is an error, never silently regenerated.
        std::fs::write(dir.join(KEY_FILE), "garbage").unwrap();
        assert!(load(None, &dir).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(KEY_FILE)], "temp files left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn racing_first_starts_end_with_one_key() {
        let dir = std::env::temp_dir().join(format!("kl-secret-race-{}", random_token(8).unwrap()));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || load(None, &dir).unwrap().0)
            })
            .collect();
        let keys: Vec<MasterKey> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let sealed = keys[0].seal(b"", b"same").unwrap();
        for k in &keys {
            assert_eq!(k.open(b"", &sealed).unwrap(), b"same");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
