//! SAML 2.0 service provider: AuthnRequests (HTTP-Redirect binding), our SP metadata, reading an
//! IdP's metadata, and the validation of a posted `Response`. This module decides *what* must be
//! signed and checks every condition of the assertion; the signature arithmetic is done by Debian's
//! `xmlsec1` (as pysaml2 does) with the connection's certificate as the only key. It never trusts a
//! key, a URI or a DTD found in the document, and never reads an assertion other than the one signed.

mod metadata;
mod request;
mod response;
mod xmlsec;

pub use metadata::{idp_metadata, sp_metadata};
pub use request::{authn_request_url, new_request_id};
pub use response::{check, Assertion, Checked, Expectations};
pub use xmlsec::{normalize_certificate, Verifier};

/// The largest `SAMLResponse` we decode (base64 text), well above what IdPs send.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

pub(crate) const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub(crate) const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(crate) const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
pub(crate) const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub(crate) const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub(crate) const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// keyledger as a service provider for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProvider {
    /// Our entity id: the SP metadata URL of the connection.
    pub entity_id: String,
    /// Where the IdP posts its response: the ACS URL of the connection.
    pub acs_url: String,
}

/// What we know of a connection's identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProvider {
    pub entity_id: String,
    /// Its single sign-on endpoint for the HTTP-Redirect binding.
    pub sso_url: String,
    /// Its signing certificates, PEM (several during a rotation).
    pub certificates: Vec<String>,
}

/// Why a SAML message was refused. The codes are stable (they reach error pages and logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    #[error("the SAML response is not valid base64")]
    Encoding,
    #[error("the SAML message is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("the SAML message is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the SAML message has a document type declaration")]
    Doctype,
    #[error("the document is not a SAML 2.0 Response")]
    NotAResponse,
    #[error("the identity provider did not sign the user in (status {0})")]
    Status(String),
    #[error("the SAML response must carry exactly one assertion, as a child of the response")]
    AssertionCount,
    #[error("encrypted assertions are not supported")]
    Encrypted,
    #[error("the SAML response is not signed")]
    Unsigned,
    #[error("the signature does not cover exactly the assertion (or response) it sits in")]
    SignatureScope,
    #[error("the signature algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the signature is not valid for this connection's certificates")]
    BadSignature,
    #[error("the issuer is not this connection's identity provider")]
    Issuer,
    #[error("the assertion is not addressed to this connection (audience)")]
    Audience,
    #[error("the response is not addressed to this connection's ACS URL (recipient or destination)")]
    Recipient,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion is not valid yet")]
    NotYetValid,
    #[error("the response does not answer our request (InResponseTo)")]
    InResponseTo,
    #[error("the assertion has no subject (NameID) with a bearer confirmation")]
    Subject,
    #[error("the metadata is not usable: {0}")]
    Metadata(String),
    #[error("the certificate is not a PEM or base64 DER X.509 certificate")]
    Certificate,
    #[error("the signature could not be checked: {0}")]
    Verifier(String),
}

impl SamlError {
    /// A stable machine code for error pages, logs and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Encoding => "saml_encoding",
            Self::TooLarge => "saml_too_large",
            Self::Malformed(_) => "saml_malformed",
            Self::Doctype => "saml_doctype",
            Self::NotAResponse => "saml_not_a_response",
            Self::Status(_) => "saml_status",
            Self::AssertionCount => "saml_assertion_count",
            Self::Encrypted => "saml_encrypted_assertion",
            Self::Unsigned => "saml_unsigned",
            Self::SignatureScope => "saml_signature_scope",
            Self::Algorithm(_) => "saml_signature_algorithm",
            Self::BadSignature => "saml_bad_signature",
            Self::Issuer => "saml_issuer",
            Self::Audience => "saml_audience",
            Self::Recipient => "saml_recipient",
            Self::Expired => "saml_expired",
            Self::NotYetValid => "saml_not_yet_valid",
            Self::InResponseTo => "saml_in_response_to",
            Self::Subject => "saml_subject",
            Self::Metadata(_) => "saml_metadata",
            Self::Certificate => "saml_certificate",
            Self::Verifier(_) => "saml_verifier",
        }
    }

    /// True when the fault is ours (the verifier could not run), not the message's.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Self::Verifier(_))
    }
}

/// Decodes a posted `SAMLResponse` (base64, line breaks allowed) into its XML text.
pub fn decode_response(encoded: &str) -> Result<String, SamlError> {
    use base64::Engine as _;
    if encoded.len() > MAX_RESPONSE_BYTES {
        return Err(SamlError::TooLarge);
    }
    let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| SamlError::Encoding)?;
    String::from_utf8(bytes).map_err(|_| SamlError::Encoding)
}

/// Parses untrusted XML: no DTD, bounded size and node count.
pub(crate) fn parse(xml: &str) -> Result<roxmltree::Document<'_>, SamlError> {
    if xml.len() > MAX_RESPONSE_BYTES {
        return Err(SamlError::TooLarge);
    }
    if xml.to_ascii_lowercase().contains("<!doctype") {
        return Err(SamlError::Doctype);
    }
    // The text is UTF-8 here; a declaration naming another encoding would make xmlsec1 (libxml2)
    // read different bytes than this parser, or stop.
    if let Some(encoding) = declared_encoding(xml) {
        if !encoding.eq_ignore_ascii_case("utf-8") && !encoding.eq_ignore_ascii_case("utf8") {
            return Err(SamlError::Malformed(format!(
                "the XML declaration names the encoding {encoding:?}; only UTF-8 is accepted"
            )));
        }
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 20_000,
    };
    roxmltree::Document::parse_with_options(xml, options).map_err(|e| SamlError::Malformed(e.to_string()))
}

/// The `encoding` of the document's XML declaration, if it has one.
fn declared_encoding(xml: &str) -> Option<&str> {
    let rest = xml.trim_start_matches('\u{feff}').strip_prefix("<?xml")?;
    let declaration = &rest[..rest.find("?>")?];
    let after = &declaration[declaration.find("encoding")? + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(&value[..value.find(quote)?])
}

/// Escapes text for an XML attribute value or element content.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_decoded_from_base64_with_line_breaks() {
        assert_eq!(decode_response("PGE+\r\nPC9hPg==").as_deref(), Ok("<a></a>"));
        assert_eq!(decode_response("not base64!"), Err(SamlError::Encoding));
        assert_eq!(
            decode_response(&"A".repeat(MAX_RESPONSE_BYTES + 1)),
            Err(SamlError::TooLarge)
        );
    }

    #[test]
    fn documents_with_a_dtd_are_refused_before_parsing() {
        let xml = r#"<!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>"#;
        assert_eq!(parse(xml).err(), Some(SamlError::Doctype));
        assert!(matches!(parse("<r>").err(), Some(SamlError::Malformed(_))));
    }

    #[test]
    fn only_utf8_may_be_declared() {
        assert!(parse(r#"<?xml version="1.0" encoding="UTF-8"?><r/>"#).is_ok());
        assert!(parse(r#"<?xml version='1.0' encoding = 'utf8'?><r/>"#).is_ok());
        assert!(parse(r#"<?xml version="1.0"?><r/>"#).is_ok());
        for declared in ["x-bogus", "ISO-8859-1", "UTF-16"] {
            let xml = format!(r#"<?xml version="1.0" encoding="{declared}"?><r/>"#);
            assert!(matches!(parse(&xml).err(), Some(SamlError::Malformed(_))), "{declared}");
        }
    }
}
