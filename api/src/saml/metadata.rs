//! Metadata both ways: ours (the SP metadata a customer's IT admin gives their IdP) and theirs (an
//! IdP's EntityDescriptor, pasted or fetched, read into entity id, SSO URL and certificates).

use roxmltree::Node;

use super::{
    escape, normalize_certificate, parse, IdentityProvider, SamlError, ServiceProvider, BINDING_POST, BINDING_REDIRECT,
    NS_DSIG, NS_MD,
};

/// Our SP metadata for one connection.
pub fn sp_metadata(sp: &ServiceProvider) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<md:EntityDescriptor xmlns:md="{md}" entityID="{entity}">"#,
            r#"<md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" "#,
            r#"protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
            r#"<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>"#,
            r#"<md:AssertionConsumerService Binding="{binding}" Location="{acs}" index="0" isDefault="true"/>"#,
            r#"</md:SPSSODescriptor></md:EntityDescriptor>"#
        ),
        md = NS_MD,
        entity = escape(&sp.entity_id),
        binding = BINDING_POST,
        acs = escape(&sp.acs_url),
    )
}

fn is(node: &Node, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

/// Reads an IdP's metadata: the first EntityDescriptor with an IDPSSODescriptor.
pub fn idp_metadata(xml: &str) -> Result<IdentityProvider, SamlError> {
    let doc = parse(xml)?;
    let descriptor = doc
        .descendants()
        .filter(|n| is(n, NS_MD, "EntityDescriptor"))
        .find(|n| n.children().any(|c| is(&c, NS_MD, "IDPSSODescriptor")))
        .ok_or_else(|| SamlError::Metadata("no EntityDescriptor with an IDPSSODescriptor".into()))?;
    let entity_id = descriptor
        .attribute("entityID")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| SamlError::Metadata("the EntityDescriptor has no entityID".into()))?
        .trim()
        .to_string();
    let idp = descriptor
        .children()
        .find(|c| is(c, NS_MD, "IDPSSODescriptor"))
        .ok_or_else(|| SamlError::Metadata("no IDPSSODescriptor".into()))?;
    let sso_url = idp
        .children()
        .filter(|c| is(c, NS_MD, "SingleSignOnService"))
        .find(|c| c.attribute("Binding") == Some(BINDING_REDIRECT))
        .and_then(|c| c.attribute("Location"))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| SamlError::Metadata("no SingleSignOnService for the HTTP-Redirect binding".into()))?;
    // The browser is sent there: a web address, nothing else (`javascript:`, `data:`, …).
    if !url::Url::parse(&sso_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        return Err(SamlError::Metadata(
            "the SingleSignOnService location is not an http(s) URL".into(),
        ));
    }
    let mut certificates = Vec::new();
    for key in idp.children().filter(|c| is(c, NS_MD, "KeyDescriptor")) {
        if key.attribute("use").is_some_and(|u| u != "signing") {
            continue;
        }
        for cert in key.descendants().filter(|n| is(n, NS_DSIG, "X509Certificate")) {
            let text: String = cert
                .descendants()
                .filter(|n| n.is_text())
                .filter_map(|n| n.text())
                .collect();
            let pem = normalize_certificate(&text)?;
            if !certificates.contains(&pem) {
                certificates.push(pem);
            }
        }
    }
    if certificates.is_empty() {
        return Err(SamlError::Metadata("no signing certificate".into()));
    }
    Ok(IdentityProvider {
        entity_id,
        sso_url,
        certificates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/src/saml/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn an_idp_metadata_document_gives_entity_id_sso_url_and_signing_certificates() {
        let idp = idp_metadata(&fixture("idp-metadata.xml")).unwrap();
        assert_eq!(idp.entity_id, "http://127.0.0.1:41893/metadata");
        assert_eq!(idp.sso_url, "http://127.0.0.1:41893/sso");
        assert_eq!(idp.certificates.len(), 1);
        assert!(idp.certificates[0].starts_with("-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn unusable_metadata_says_what_is_missing() {
        for (xml, what) in [
            ("<a/>", "IDPSSODescriptor"),
            (
                r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"><md:IDPSSODescriptor/></md:EntityDescriptor>"#,
                "HTTP-Redirect",
            ),
        ] {
            match idp_metadata(xml) {
                Err(SamlError::Metadata(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("{xml}: {other:?}"),
            }
        }
        assert_eq!(idp_metadata("<!DOCTYPE x><x/>"), Err(SamlError::Doctype));
        let script = fixture("idp-metadata.xml").replace("http://127.0.0.1:41893/sso", "javascript:alert(1)");
        match idp_metadata(&script) {
            Err(SamlError::Metadata(m)) => assert!(m.contains("http(s)"), "{m}"),
            other => panic!("javascript: sign-on URL: {other:?}"),
        }
    }

    #[test]
    fn our_metadata_names_the_entity_and_the_acs() {
        let sp = ServiceProvider {
            entity_id: "https://a.example/sso/saml/metadata/conn_1?x=1&y=2".into(),
            acs_url: "https://a.example/sso/saml/acs/conn_1".into(),
        };
        let xml = sp_metadata(&sp);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().attribute("entityID"), Some(sp.entity_id.as_str()));
        let acs = doc
            .descendants()
            .find(|n| n.tag_name().name() == "AssertionConsumerService")
            .unwrap();
        assert_eq!(acs.attribute("Location"), Some(sp.acs_url.as_str()));
    }
}
