//! Checking a SAML `Response` before and around its signature: one assertion, where the signatures
//! sit and what they reference, issuer, audience, recipient, time window and `InResponseTo`. What
//! comes out is the one assertion that a verified signature covers, and the document to verify with
//! every `KeyInfo` removed (the key comes from the connection, never from the message).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use roxmltree::Node;

use super::{parse, SamlError, ServiceProvider, NS_DSIG, NS_SAML, NS_SAMLP};

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const TRANSFORM_ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const TRANSFORM_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const TRANSFORM_EXC_C14N_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";
const SIGNATURE_METHODS: [&str; 4] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
const DIGEST_METHODS: [&str; 2] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];

/// What the response must match.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    pub sp: &'a ServiceProvider,
    pub idp_entity_id: &'a str,
    /// The id of our AuthnRequest; `None` accepts only unsolicited responses (none carry
    /// `InResponseTo`).
    pub request_id: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// Clock skew tolerated on each time bound.
    pub skew: Duration,
}

/// The assertion a valid response carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The assertion's `ID`: single use (the caller keeps it until `not_on_or_after`).
    pub id: String,
    pub issuer: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    /// The earliest end of validity among the conditions and the bearer confirmation.
    pub not_on_or_after: DateTime<Utc>,
    /// Attribute name → values (also under the `FriendlyName`, when one is given).
    pub attributes: BTreeMap<String, Vec<String>>,
}

const EMAIL_ATTRIBUTES: [&str; 5] = [
    "email",
    "mail",
    "emailaddress",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
];
const FIRST_NAME_ATTRIBUTES: [&str; 5] = [
    "firstname",
    "first_name",
    "givenname",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    "urn:oid:2.5.4.42",
];
const LAST_NAME_ATTRIBUTES: [&str; 6] = [
    "lastname",
    "last_name",
    "surname",
    "sn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
    "urn:oid:2.5.4.4",
];

impl Assertion {
    fn first_of(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|wanted| {
            self.attributes
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                .and_then(|(_, values)| values.iter().find(|v| !v.trim().is_empty()))
                .map(|v| v.trim())
        })
    }

    /// The user's email: an email attribute, else a NameID that looks like one.
    pub fn email(&self) -> Option<&str> {
        self.first_of(&EMAIL_ATTRIBUTES)
            .or_else(|| Some(self.name_id.as_str()).filter(|n| n.contains('@')))
    }

    pub fn first_name(&self) -> Option<&str> {
        self.first_of(&FIRST_NAME_ATTRIBUTES)
    }

    pub fn last_name(&self) -> Option<&str> {
        self.first_of(&LAST_NAME_ATTRIBUTES)
    }

    /// The user's id at the IdP: an `id`/`uid` attribute, else the NameID.
    pub fn idp_id(&self) -> &str {
        self.first_of(&["id", "uid", "user_id"]).unwrap_or(&self.name_id)
    }
}

/// A response whose structure and conditions hold; its signatures remain to be verified.
#[derive(Debug, Clone)]
pub struct Checked {
    pub assertion: Assertion,
    /// The document with every `KeyInfo` removed, for the verifier.
    pub(crate) document: String,
    /// XPaths of the signatures that must verify (one or two).
    pub(crate) signatures: Vec<&'static str>,
}

pub(crate) const ASSERTION_SIGNATURE: &str =
    "/*[local-name()='Response']/*[local-name()='Assertion']/*[local-name()='Signature']";
pub(crate) const RESPONSE_SIGNATURE: &str = "/*[local-name()='Response']/*[local-name()='Signature']";

fn is(node: &Node, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

fn child<'a, 'i>(node: &Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(c, ns, name))
}

fn children<'a, 'i>(node: &Node<'a, 'i>, ns: &'a str, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |c| is(c, ns, name))
}

fn text(node: &Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn time(node: &Node, attribute: &str) -> Result<Option<DateTime<Utc>>, SamlError> {
    node.attribute(attribute)
        .map(|v| {
            DateTime::parse_from_rfc3339(v.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| SamlError::Malformed(format!("{attribute} is not an xs:dateTime")))
        })
        .transpose()
}

/// Checks everything but the signature arithmetic (see [`super::Verifier`]).
pub fn check(xml: &str, expect: &Expectations) -> Result<Checked, SamlError> {
    let original = parse(xml)?;
    // A key belongs in a signature, nowhere else. Everything below reads the document the
    // verifier gets (every `KeyInfo` cut out), so no value can differ from what was checked.
    let stray_key = original
        .descendants()
        .filter(|n| is(n, NS_DSIG, "KeyInfo"))
        .any(|n| !n.parent_element().is_some_and(|p| is(&p, NS_DSIG, "Signature")));
    if stray_key {
        return Err(SamlError::SignatureScope);
    }
    let document = without_key_info(xml, &original);
    let doc = parse(&document)?;
    let response = doc.root_element();
    if !is(&response, NS_SAMLP, "Response") {
        return Err(SamlError::NotAResponse);
    }
    if doc.descendants().any(|n| is(&n, NS_SAML, "EncryptedAssertion")) {
        return Err(SamlError::Encrypted);
    }
    // Exactly one assertion in the whole document, and it is a child of the response: anything a
    // wrapping attack adds is a second assertion somewhere.
    let assertions: Vec<Node> = doc.descendants().filter(|n| is(n, NS_SAML, "Assertion")).collect();
    let [assertion] = assertions.as_slice() else {
        return Err(SamlError::AssertionCount);
    };
    if assertion.parent_element() != Some(response) {
        return Err(SamlError::AssertionCount);
    }

    let status = child(&response, NS_SAMLP, "Status")
        .and_then(|s| child(&s, NS_SAMLP, "StatusCode"))
        .and_then(|c| c.attribute("Value"))
        .unwrap_or("");
    if status != STATUS_SUCCESS {
        return Err(SamlError::Status(status.to_string()));
    }

    let signatures = signatures(&doc, &response, assertion)?;

    // Who and for whom.
    let issuer = child(assertion, NS_SAML, "Issuer")
        .map(|i| text(&i))
        .unwrap_or_default();
    if issuer != expect.idp_entity_id {
        return Err(SamlError::Issuer);
    }
    if let Some(outer) = child(&response, NS_SAML, "Issuer") {
        if text(&outer) != expect.idp_entity_id {
            return Err(SamlError::Issuer);
        }
    }
    if response
        .attribute("Destination")
        .is_some_and(|d| d != expect.sp.acs_url)
    {
        return Err(SamlError::Recipient);
    }
    let in_response_to = response.attribute("InResponseTo");
    check_in_response_to(in_response_to, expect.request_id)?;

    let (name_id, name_id_format, confirmed_until) = subject(assertion, expect)?;
    let conditions_until = conditions(assertion, expect)?;

    let statement = child(assertion, NS_SAML, "AuthnStatement");
    let session_index = statement.and_then(|s| s.attribute("SessionIndex")).map(str::to_string);
    // SAML requires the ID; it is what makes the assertion single use.
    let assertion_id = assertion
        .attribute("ID")
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| SamlError::Malformed("the assertion has no ID".into()))?
        .to_string();
    let not_on_or_after = conditions_until.map_or(confirmed_until, |c| c.min(confirmed_until));

    Ok(Checked {
        assertion: Assertion {
            id: assertion_id,
            issuer,
            name_id,
            name_id_format,
            session_index,
            not_on_or_after,
            attributes: attributes(assertion),
        },
        document: document.clone(),
        signatures,
    })
}

fn check_in_response_to(found: Option<&str>, expected: Option<&str>) -> Result<(), SamlError> {
    match (found, expected) {
        (Some(f), Some(e)) if f == e => Ok(()),
        (None, _) => Ok(()),
        _ => Err(SamlError::InResponseTo),
    }
}

/// Where the signatures sit and what they reference; the XPaths of those to verify.
fn signatures(doc: &roxmltree::Document, response: &Node, assertion: &Node) -> Result<Vec<&'static str>, SamlError> {
    // Every ID in the document is unique: a reference names one element.
    let mut ids = HashSet::new();
    for node in doc.descendants().filter(Node::is_element) {
        for attribute in node.attributes() {
            if attribute.namespace().is_none()
                && matches!(attribute.name(), "ID" | "Id" | "id")
                && !ids.insert(attribute.value())
            {
                return Err(SamlError::SignatureScope);
            }
        }
    }
    let all: Vec<Node> = doc.descendants().filter(|n| is(n, NS_DSIG, "Signature")).collect();
    if all.is_empty() {
        return Err(SamlError::Unsigned);
    }
    let mut xpaths = Vec::new();
    for signature in &all {
        let parent = signature.parent_element().ok_or(SamlError::SignatureScope)?;
        let xpath = if parent == *assertion {
            ASSERTION_SIGNATURE
        } else if parent == *response {
            RESPONSE_SIGNATURE
        } else {
            // A signature anywhere else covers something we would not read.
            return Err(SamlError::SignatureScope);
        };
        if xpaths.contains(&xpath) {
            return Err(SamlError::SignatureScope);
        }
        check_signed_info(signature, &parent)?;
        xpaths.push(xpath);
    }
    // xmlsec1 starts at the first element its XPath selects, by local name: no other element
    // (of another namespace) may share that name and place.
    for (owner, xpath) in [(assertion, ASSERTION_SIGNATURE), (response, RESPONSE_SIGNATURE)] {
        let named = owner
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Signature")
            .count();
        if named > 1 || (named == 1 && !xpaths.contains(&xpath)) {
            return Err(SamlError::SignatureScope);
        }
    }
    Ok(xpaths)
}

/// One reference, to the element the signature sits in, with only the transforms SAML uses.
fn check_signed_info(signature: &Node, owner: &Node) -> Result<(), SamlError> {
    let signed_info = child(signature, NS_DSIG, "SignedInfo").ok_or(SamlError::SignatureScope)?;
    let method = child(&signed_info, NS_DSIG, "SignatureMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .unwrap_or("");
    if !SIGNATURE_METHODS.contains(&method) {
        return Err(SamlError::Algorithm(method.to_string()));
    }
    let c14n = child(&signed_info, NS_DSIG, "CanonicalizationMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .unwrap_or("");
    if c14n != TRANSFORM_EXC_C14N && c14n != TRANSFORM_EXC_C14N_COMMENTS {
        return Err(SamlError::Algorithm(c14n.to_string()));
    }
    let references: Vec<Node> = children(&signed_info, NS_DSIG, "Reference").collect();
    let [reference] = references.as_slice() else {
        return Err(SamlError::SignatureScope);
    };
    let owner_id = owner.attribute("ID").ok_or(SamlError::SignatureScope)?;
    if reference.attribute("URI") != Some(&format!("#{owner_id}")) {
        return Err(SamlError::SignatureScope);
    }
    let digest = child(reference, NS_DSIG, "DigestMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .unwrap_or("");
    if !DIGEST_METHODS.contains(&digest) {
        return Err(SamlError::Algorithm(digest.to_string()));
    }
    let mut enveloped = false;
    if let Some(transforms) = child(reference, NS_DSIG, "Transforms") {
        for transform in transforms.children().filter(Node::is_element) {
            match transform.attribute("Algorithm").unwrap_or("") {
                TRANSFORM_ENVELOPED => enveloped = true,
                TRANSFORM_EXC_C14N | TRANSFORM_EXC_C14N_COMMENTS => {}
                other => return Err(SamlError::Algorithm(other.to_string())),
            }
        }
    }
    if !enveloped {
        return Err(SamlError::SignatureScope);
    }
    Ok(())
}

/// The NameID and the end of the bearer confirmation that holds.
fn subject(assertion: &Node, expect: &Expectations) -> Result<(String, Option<String>, DateTime<Utc>), SamlError> {
    let subject = child(assertion, NS_SAML, "Subject").ok_or(SamlError::Subject)?;
    let name = child(&subject, NS_SAML, "NameID").ok_or(SamlError::Subject)?;
    let name_id = text(&name);
    if name_id.is_empty() {
        return Err(SamlError::Subject);
    }
    // The first failure is reported when no bearer confirmation holds.
    let mut failure = SamlError::Subject;
    for confirmation in children(&subject, NS_SAML, "SubjectConfirmation") {
        if confirmation.attribute("Method") != Some(BEARER) {
            continue;
        }
        let Some(data) = child(&confirmation, NS_SAML, "SubjectConfirmationData") else {
            continue;
        };
        match bearer(&data, expect) {
            Ok(until) => return Ok((name_id, name.attribute("Format").map(str::to_string), until)),
            Err(e) if failure == SamlError::Subject => failure = e,
            Err(_) => {}
        }
    }
    Err(failure)
}

fn bearer(data: &Node, expect: &Expectations) -> Result<DateTime<Utc>, SamlError> {
    if data.attribute("Recipient") != Some(expect.sp.acs_url.as_str()) {
        return Err(SamlError::Recipient);
    }
    check_in_response_to(data.attribute("InResponseTo"), expect.request_id)?;
    if expect.request_id.is_some() && data.attribute("InResponseTo").is_none() {
        return Err(SamlError::InResponseTo);
    }
    let until = time(data, "NotOnOrAfter")?.ok_or(SamlError::Subject)?;
    if expect.now - expect.skew >= until {
        return Err(SamlError::Expired);
    }
    if time(data, "NotBefore")?.is_some_and(|from| from > expect.now + expect.skew) {
        return Err(SamlError::NotYetValid);
    }
    Ok(until)
}

/// The time window and the audience; `Some(end)` when the conditions bound it.
fn conditions(assertion: &Node, expect: &Expectations) -> Result<Option<DateTime<Utc>>, SamlError> {
    let conditions = child(assertion, NS_SAML, "Conditions").ok_or(SamlError::Audience)?;
    if time(&conditions, "NotBefore")?.is_some_and(|from| from > expect.now + expect.skew) {
        return Err(SamlError::NotYetValid);
    }
    let until = time(&conditions, "NotOnOrAfter")?;
    if until.is_some_and(|until| expect.now - expect.skew >= until) {
        return Err(SamlError::Expired);
    }
    // Every audience restriction must name us, and there must be one.
    let mut restrictions = children(&conditions, NS_SAML, "AudienceRestriction").peekable();
    if restrictions.peek().is_none() {
        return Err(SamlError::Audience);
    }
    for restriction in restrictions {
        if !children(&restriction, NS_SAML, "Audience").any(|a| text(&a) == expect.sp.entity_id) {
            return Err(SamlError::Audience);
        }
    }
    Ok(until)
}

fn attributes(assertion: &Node) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in children(assertion, NS_SAML, "AttributeStatement") {
        for attribute in children(&statement, NS_SAML, "Attribute") {
            let values: Vec<String> = children(&attribute, NS_SAML, "AttributeValue")
                .map(|v| text(&v))
                .collect();
            for name in [attribute.attribute("Name"), attribute.attribute("FriendlyName")]
                .into_iter()
                .flatten()
            {
                out.entry(name.to_string()).or_default().extend(values.iter().cloned());
            }
        }
    }
    out
}

/// The document with every `KeyInfo` cut out, so the verifier can only use the configured key.
fn without_key_info(xml: &str, doc: &roxmltree::Document) -> String {
    let mut ranges: Vec<std::ops::Range<usize>> = doc
        .descendants()
        .filter(|n| is(n, NS_DSIG, "KeyInfo"))
        .map(|n| n.range())
        .collect();
    ranges.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(xml.len());
    let mut at = 0;
    for range in ranges {
        if range.start < at {
            continue; // nested in one already cut
        }
        out.push_str(&xml[at..range.start]);
        at = range.end;
    }
    out.push_str(&xml[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture(name: &str) -> String {
        let path = format!("{}/src/saml/fixtures/{name}.xml", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    pub(crate) fn sp() -> ServiceProvider {
        ServiceProvider {
            entity_id: "https://auth.example.com/sso/saml/metadata/conn_01TEST".into(),
            acs_url: "https://auth.example.com/sso/saml/acs/conn_01TEST".into(),
        }
    }

    pub(crate) const IDP: &str = "http://127.0.0.1:41893/metadata";

    pub(crate) fn at(minutes_after_issue: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T18:43:28Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(minutes_after_issue)
    }

    fn check_at(name: &str, request: Option<&str>, now: DateTime<Utc>) -> Result<Checked, SamlError> {
        let sp = sp();
        let expect = Expectations {
            sp: &sp,
            idp_entity_id: IDP,
            request_id: request,
            now,
            skew: Duration::seconds(60),
        };
        check(&fixture(name), &expect)
    }

    #[test]
    fn a_good_response_yields_its_assertion_and_the_signature_to_verify() {
        let checked = check_at("normal", Some("_req1"), at(1)).unwrap();
        let a = &checked.assertion;
        assert_eq!(a.email(), Some("jane.doe@example.com"));
        assert_eq!((a.first_name(), a.last_name()), (Some("Jane"), Some("Doe")));
        assert_eq!(a.idp_id(), "jane.doe@example.com");
        assert_eq!(a.issuer, IDP);
        assert!(a.id.starts_with('_'));
        assert_eq!(checked.signatures, vec![ASSERTION_SIGNATURE]);
        assert!(
            !checked.document.contains("KeyInfo"),
            "the key in the message is never used"
        );
        assert!(checked.document.contains("SignatureValue"));
    }

    #[test]
    fn each_forged_or_misaddressed_response_is_refused_for_its_own_reason() {
        let cases = [
            ("unsigned", SamlError::Unsigned),
            ("wrapped", SamlError::AssertionCount),
            ("wrong_audience", SamlError::Audience),
            ("wrong_recipient", SamlError::Recipient),
            ("wrong_issuer", SamlError::Issuer),
            ("expired", SamlError::Expired),
            ("not_yet_valid", SamlError::NotYetValid),
        ];
        for (name, expected) in cases {
            assert_eq!(check_at(name, Some("_req1"), at(1)).err(), Some(expected), "{name}");
        }
    }

    #[test]
    fn time_bounds_hold_with_the_skew_and_no_further() {
        assert!(
            check_at("normal", Some("_req1"), at(5)).is_ok(),
            "within the skew after NotOnOrAfter"
        );
        assert_eq!(check_at("normal", Some("_req1"), at(7)).err(), Some(SamlError::Expired));
        assert_eq!(
            check_at("normal", Some("_req1"), at(-3)).err(),
            Some(SamlError::NotYetValid)
        );
    }

    #[test]
    fn a_response_to_another_request_or_unsolicited_is_refused() {
        assert_eq!(
            check_at("normal", Some("_other"), at(1)).err(),
            Some(SamlError::InResponseTo)
        );
        assert_eq!(check_at("normal", None, at(1)).err(), Some(SamlError::InResponseTo));
    }

    #[test]
    fn signatures_out_of_place_or_referencing_elsewhere_are_refused() {
        let sp = sp();
        let expect = Expectations {
            sp: &sp,
            idp_entity_id: IDP,
            request_id: Some("_req1"),
            now: at(1),
            skew: Duration::seconds(60),
        };
        let normal = fixture("normal");
        let start = normal.find("<ds:Signature").unwrap();
        let end = normal.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        let signature = &normal[start..end];
        let without = format!("{}{}", &normal[..start], &normal[end..]);

        // Moved into the Subject: it no longer sits in what it signs.
        let moved = without.replacen("<saml:Subject>", &format!("<saml:Subject>{signature}"), 1);
        assert_eq!(check(&moved, &expect).err(), Some(SamlError::SignatureScope));

        // Referencing the response from inside the assertion.
        let response_id = normal.split("ID=\"").nth(1).unwrap().split('"').next().unwrap();
        let assertion_id = normal.split("ID=\"").nth(2).unwrap().split('"').next().unwrap();
        let elsewhere = normal.replacen(
            &format!("URI=\"#{assertion_id}\""),
            &format!("URI=\"#{response_id}\""),
            1,
        );
        assert_eq!(check(&elsewhere, &expect).err(), Some(SamlError::SignatureScope));

        // A KeyInfo (which the verifier never sees) hiding text inside signed values: the
        // verifier would check "jane.doe@…" while the claims read "janet.doe@…".
        let key_info = r#"<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">t</ds:KeyInfo>"#;
        let hidden = normal.replace(">jane.doe@example.com<", &format!(">jane{key_info}.doe@example.com<"));
        assert_ne!(hidden, normal);
        assert_eq!(check(&hidden, &expect).err(), Some(SamlError::SignatureScope));

        // An assertion without its ID, only the response signed (the signature moved there):
        // nothing would make the assertion single use.
        let response_signed = without
            .replacen(
                "<samlp:Status>",
                &format!(
                    "{}<samlp:Status>",
                    signature.replace(&format!("URI=\"#{assertion_id}\""), &format!("URI=\"#{response_id}\""))
                ),
                1,
            )
            .replacen(&format!(" ID=\"{assertion_id}\""), "", 1);
        assert_eq!(
            check(&response_signed, &expect).err(),
            Some(SamlError::Malformed("the assertion has no ID".into()))
        );

        // Two elements with one ID.
        let twice = normal.replacen(
            "<saml:Subject>",
            &format!("<saml:Subject><saml:Extra ID=\"{assertion_id}\"/>"),
            1,
        );
        assert_eq!(check(&twice, &expect).err(), Some(SamlError::SignatureScope));

        // SHA-1 is not accepted.
        let sha1 = normal.replace(
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        );
        assert!(matches!(check(&sha1, &expect).err(), Some(SamlError::Algorithm(_))));

        // An encrypted assertion, a status other than success, no assertion at all.
        let encrypted = normal.replacen("<samlp:Status>", "<saml:EncryptedAssertion/><samlp:Status>", 1);
        assert_eq!(check(&encrypted, &expect).err(), Some(SamlError::Encrypted));
        let denied = normal.replace(STATUS_SUCCESS, "urn:oasis:names:tc:SAML:2.0:status:Requester");
        assert!(matches!(check(&denied, &expect).err(), Some(SamlError::Status(_))));
        assert_eq!(
            check(
                "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"/>",
                &expect
            )
            .err(),
            Some(SamlError::AssertionCount)
        );
        assert_eq!(check("<a/>", &expect).err(), Some(SamlError::NotAResponse));
    }
}
