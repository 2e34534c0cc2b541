//! AuthnRequests for the HTTP-Redirect binding: deflated, base64, in the IdP's SSO URL with the
//! RelayState. Unsigned (WantAuthnRequestsSigned is an IdP option we do not offer yet).

use std::io::Write as _;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use flate2::write::DeflateEncoder;
use flate2::Compression;
use rand::RngCore as _;

use super::{escape, IdentityProvider, SamlError, ServiceProvider, BINDING_POST, NS_SAML, NS_SAMLP};

/// A fresh request id: an NCName (starts with `_`), 160 random bits.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("_{}", hex::encode(bytes))
}

/// The URL that sends the browser to the IdP with our AuthnRequest `request_id`.
pub fn authn_request_url(
    sp: &ServiceProvider,
    idp: &IdentityProvider,
    request_id: &str,
    relay_state: &str,
    now: DateTime<Utc>,
) -> Result<url::Url, SamlError> {
    let xml = format!(
        concat!(
            r#"<samlp:AuthnRequest xmlns:samlp="{samlp}" xmlns:saml="{saml}" ID="{id}" Version="2.0" "#,
            r#"IssueInstant="{at}" Destination="{destination}" AssertionConsumerServiceURL="{acs}" "#,
            r#"ProtocolBinding="{binding}"><saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<samlp:NameIDPolicy AllowCreate="true"/></samlp:AuthnRequest>"#
        ),
        samlp = NS_SAMLP,
        saml = NS_SAML,
        id = escape(request_id),
        at = now.to_rfc3339_opts(SecondsFormat::Secs, true),
        destination = escape(&idp.sso_url),
        acs = escape(&sp.acs_url),
        binding = BINDING_POST,
        issuer = escape(&sp.entity_id),
    );
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(xml.as_bytes())
        .map_err(|e| SamlError::Verifier(format!("deflate: {e}")))?;
    let deflated = encoder
        .finish()
        .map_err(|e| SamlError::Verifier(format!("deflate: {e}")))?;
    let mut url = url::Url::parse(&idp.sso_url).map_err(|_| SamlError::Metadata("the SSO URL is not a URL".into()))?;
    url.query_pairs_mut()
        .append_pair(
            "SAMLRequest",
            &base64::engine::general_purpose::STANDARD.encode(deflated),
        )
        .append_pair("RelayState", relay_state);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::DeflateDecoder;
    use std::io::Read as _;

    #[test]
    fn the_request_travels_deflated_in_the_sso_url_with_the_relay_state() {
        let sp = ServiceProvider {
            entity_id: "https://auth.example.com/sso/saml/metadata/conn_1".into(),
            acs_url: "https://auth.example.com/sso/saml/acs/conn_1".into(),
        };
        let idp = IdentityProvider {
            entity_id: "urn:idp".into(),
            sso_url: "https://idp.example.com/sso?tenant=a&b=<c>".into(),
            certificates: vec![],
        };
        let id = new_request_id();
        assert!(id.starts_with('_') && id.len() == 41);
        let url = authn_request_url(&sp, &idp, &id, "state-1", Utc::now()).unwrap();
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["tenant"], "a", "the IdP's own parameters are kept");
        assert_eq!(pairs["RelayState"], "state-1");
        let deflated = base64::engine::general_purpose::STANDARD
            .decode(&pairs["SAMLRequest"])
            .unwrap();
        let mut xml = String::new();
        DeflateDecoder::new(&deflated[..]).read_to_string(&mut xml).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("ID"), Some(id.as_str()));
        assert_eq!(root.attribute("AssertionConsumerServiceURL"), Some(sp.acs_url.as_str()));
        assert_eq!(
            root.attribute("Destination"),
            Some(idp.sso_url.as_str()),
            "escaped and read back"
        );
        let issuer = root.children().find(|c| c.tag_name().name() == "Issuer").unwrap();
        assert_eq!(issuer.text(), Some(sp.entity_id.as_str()));
    }
}
