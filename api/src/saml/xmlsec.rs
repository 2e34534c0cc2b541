//! The signature arithmetic, by Debian's `xmlsec1`: the checked document on stdin, the connection's
//! certificate as the only key, same-document references only, each signature picked by its place.
//! A signature counts only when xmlsec1 exits 0 and says `OK` for it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::response::Checked;
use super::SamlError;

/// How long one verification may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `xmlsec1`; certificates are written once to files named by their digest.
#[derive(Debug, Clone)]
pub struct Verifier {
    program: PathBuf,
    cert_dir: PathBuf,
}

impl Verifier {
    /// `program`: the `xmlsec1` binary (found on PATH when a bare name); `cert_dir`: where
    /// certificate files are kept (public data).
    pub fn new(program: impl Into<PathBuf>, cert_dir: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            cert_dir: cert_dir.into(),
        }
    }

    /// Verifies every signature the check asked for against one of `certificates` (PEM).
    pub async fn verify(&self, checked: &Checked, certificates: &[String]) -> Result<(), SamlError> {
        if certificates.is_empty() {
            return Err(SamlError::BadSignature);
        }
        for xpath in &checked.signatures {
            let mut verified = false;
            for certificate in certificates {
                let file = self.certificate_file(certificate).await?;
                if self.run(&checked.document, &file, xpath).await? {
                    verified = true;
                    break;
                }
            }
            if !verified {
                return Err(SamlError::BadSignature);
            }
        }
        Ok(())
    }

    async fn certificate_file(&self, pem: &str) -> Result<PathBuf, SamlError> {
        let pem = normalize_certificate(pem)?;
        let name = hex::encode(Sha256::digest(pem.as_bytes()));
        let path = self.cert_dir.join(format!("{name}.pem"));
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let io = |e: std::io::Error| SamlError::Verifier(format!("certificate file: {e}"));
        tokio::fs::create_dir_all(&self.cert_dir).await.map_err(io)?;
        let partial = self.cert_dir.join(format!("{name}.{}.tmp", ulid::Ulid::new()));
        tokio::fs::write(&partial, pem.as_bytes()).await.map_err(io)?;
        tokio::fs::rename(&partial, &path).await.map_err(io)?;
        Ok(path)
    }

    /// Ok(true): the signature at `xpath` verifies with the key of `certificate`.
    async fn run(&self, document: &str, certificate: &Path, xpath: &str) -> Result<bool, SamlError> {
        let mut child = Command::new(&self.program)
            .arg("--verify")
            .args(["--enabled-reference-uris", "same-doc"])
            // Keys come from the certificate we pass, never from a KeyValue in the message (xmlsec1
            // would otherwise take one: tested).
            .args(["--enabled-key-data", "x509"])
            .arg("--pubkey-cert-pem")
            .arg(certificate)
            .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"])
            .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response"])
            .args(["--node-xpath", xpath])
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SamlError::Verifier(format!("cannot run {}: {e} (install xmlsec1)", self.program.display()))
            })?;
        // xmlsec1 stops reading a document it cannot parse (a broken pipe here): a refused
        // message, not a fault of the verifier.
        let mut written = false;
        if let Some(mut stdin) = child.stdin.take() {
            match stdin.write_all(document.as_bytes()).await {
                Ok(()) => written = true,
                Err(e) => tracing::debug!(error = %e, "xmlsec1 stopped reading the document"),
            }
        }
        let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| SamlError::Verifier("xmlsec1 timed out".into()))?
            .map_err(|e| SamlError::Verifier(format!("xmlsec1: {e}")))?;
        let said = String::from_utf8_lossy(&output.stderr);
        let ok = written && output.status.success() && said.lines().any(|l| l.trim() == "OK");
        if !ok {
            tracing::debug!(stderr = %said.lines().rev().take(4).collect::<Vec<_>>().join(" | "), "xmlsec1 refused a signature");
        }
        Ok(ok)
    }
}

/// A certificate as PEM, from PEM or from the bare base64 DER that metadata carries.
pub fn normalize_certificate(text: &str) -> Result<String, SamlError> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if text.contains("-----BEGIN") && !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(SamlError::Certificate);
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| SamlError::Certificate)?;
    // An X.509 certificate is a DER SEQUENCE of some length.
    if der.len() < 64 || der[0] != 0x30 {
        return Err(SamlError::Certificate);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::super::response::{check, Expectations};
    use super::super::ServiceProvider;
    use super::*;
    use chrono::{DateTime, Duration as Span, Utc};

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!("{}/src/saml/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn verifier() -> Verifier {
        let dir = std::env::temp_dir().join(format!("kl-saml-test-{}", ulid::Ulid::new()));
        Verifier::new(
            std::env::var("KEYLEDGER_XMLSEC1").unwrap_or_else(|_| "xmlsec1".into()),
            dir,
        )
    }

    fn checked(name: &str) -> Checked {
        let sp = ServiceProvider {
            entity_id: "https://auth.example.com/sso/saml/metadata/conn_01TEST".into(),
            acs_url: "https://auth.example.com/sso/saml/acs/conn_01TEST".into(),
        };
        let now = DateTime::parse_from_rfc3339("2026-12-01T18:44:28Z")
            .unwrap()
            .with_timezone(&Utc);
        let expect = Expectations {
            sp: &sp,
            idp_entity_id: "http://127.0.0.1:41893/metadata",
            request_id: Some("_req1"),
            now,
            skew: Span::seconds(60),
        };
        check(&read(&format!("{name}.xml")), &expect).unwrap()
    }

    #[tokio::test]
    async fn the_signature_of_a_good_response_verifies_with_the_idps_certificate_only() {
        let v = verifier();
        let good = checked("normal");
        assert_eq!(v.verify(&good, &[read("idp.pem")]).await, Ok(()));
        assert_eq!(
            v.verify(&good, &[read("attacker.pem")]).await,
            Err(SamlError::BadSignature)
        );
        // Rotation: any one of several certificates will do.
        assert_eq!(v.verify(&good, &[read("attacker.pem"), read("idp.pem")]).await, Ok(()));
        assert_eq!(v.verify(&good, &[]).await, Err(SamlError::BadSignature));
    }

    #[tokio::test]
    async fn a_re_signed_or_tampered_response_does_not_verify() {
        let v = verifier();
        for name in ["resigned", "tampered"] {
            assert_eq!(
                v.verify(&checked(name), &[read("idp.pem")]).await,
                Err(SamlError::BadSignature),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_key_carried_in_the_message_is_never_used() {
        // keyvalue.xml: signed with the attacker's key, whose public half travels as an
        // RSAKeyValue. Plain `xmlsec1 --verify --pubkey-cert-pem idp.pem` accepts it; we don't,
        // twice over: the check cuts every KeyInfo, and xmlsec1 runs with x509 key data only.
        let forged = checked("keyvalue");
        assert!(!forged.document.contains("KeyInfo"));
        let v = verifier();
        assert_eq!(
            v.verify(&forged, &[read("idp.pem")]).await,
            Err(SamlError::BadSignature)
        );
        let uncut = read("keyvalue.xml");
        let file = v.certificate_file(&read("idp.pem")).await.unwrap();
        assert!(!v
            .run(&uncut, &file, super::super::response::ASSERTION_SIGNATURE)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_document_xmlsec1_stops_reading_is_a_bad_signature_not_a_server_fault() {
        // A declared encoding libxml2 does not know, and more than a pipe buffer after it: xmlsec1
        // exits before reading it all. (check() refuses such declarations first; this is the
        // verifier's own answer should anything else make xmlsec1 stop early.)
        let mut bogus = checked("normal");
        bogus.document = format!(
            "<?xml version=\"1.0\" encoding=\"x-bogus\"?><!--{}-->{}",
            "x".repeat(300_000),
            bogus.document
        );
        let v = verifier();
        assert_eq!(v.verify(&bogus, &[read("idp.pem")]).await, Err(SamlError::BadSignature));
    }

    #[tokio::test]
    async fn a_missing_verifier_is_a_server_fault_not_a_bad_signature() {
        let v = Verifier::new("/nonexistent/xmlsec1", std::env::temp_dir().join("kl-saml-none"));
        let err = v.verify(&checked("normal"), &[read("idp.pem")]).await.unwrap_err();
        assert!(err.is_server_fault(), "{err:?}");
    }

    #[test]
    fn certificates_are_accepted_as_pem_or_bare_base64_and_nothing_else() {
        let pem = read("idp.pem");
        let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(
            normalize_certificate(&bare).unwrap(),
            normalize_certificate(&pem).unwrap()
        );
        assert_eq!(normalize_certificate("not a certificate"), Err(SamlError::Certificate));
        assert_eq!(
            normalize_certificate("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"),
            Err(SamlError::Certificate)
        );
    }
}
