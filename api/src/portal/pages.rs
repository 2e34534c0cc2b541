//! The Admin Portal's HTML (`maud`), in the hosted pages' layout and stylesheet: no script,
//! every value escaped, a label for every input, errors tied to their field.

use maud::{html, Markup};
use serde_json::Value;

use super::paths;
use super::session::PortalSession;
use crate::hosted::pages::{csrf, form_error, input, layout, FieldError};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// What every portal page shows: the organization and the application's links.
pub struct Frame<'a> {
    pub session: &'a PortalSession,
    pub organization_name: &'a str,
    pub token: &'a str,
}

fn page(f: &Frame<'_>, title: &str, body: Markup) -> Markup {
    layout(
        title,
        html! {
            p { "Organization: " strong { (f.organization_name) } }
            (body)
            @if f.session.success_url.is_some() || f.session.return_url.is_some() {
                h2 { "Leave the portal" }
                ul {
                    @if let Some(u) = &f.session.success_url { li { a href=(u) { "Done: back to the application" } } }
                    @if let Some(u) = &f.session.return_url { li { a href=(u) { "Return to the application" } } }
                }
            }
        },
    )
}

/// The notice of a step that worked (`role="status"`).
fn notice(message: Option<&str>) -> Markup {
    html! { @if let Some(m) = message { p.notice role="status" { (m) } } }
}

/// Domain verification: the organization's domains, the TXT record of each pending one, a
/// "Check now" per domain, and a form to add one.
pub fn domains(f: &Frame<'_>, domains: &[Value], message: Option<&str>, error: Option<&FieldError>) -> Markup {
    page(
        f,
        "Verify your domains",
        html! {
            (notice(message))
            (form_error(error))
            @if domains.is_empty() { p { "No domain yet." } }
            @for d in domains {
                section {
                    h2 { (s(d, "domain")) }
                    p { "State: " strong.state { (s(d, "state")) } }
                    @if s(d, "state") != "verified" {
                        p { "Add this DNS TXT record, then check it:" }
                        dl {
                            dt { "Name" }
                            dd { code { (s(d, "verification_prefix")) "." (s(d, "domain")) } }
                            dt { "Value" }
                            dd { code { (s(d, "verification_token")) } }
                        }
                        form method="post" action=(paths::DOMAINS_VERIFY) {
                            (csrf(f.token))
                            input type="hidden" name="domain_id" value=(s(d, "id"));
                            button.secondary type="submit" { "Check now: " (s(d, "domain")) }
                        }
                    }
                }
            }
            h2 { "Add a domain" }
            form method="post" action=(paths::DOMAINS) {
                (csrf(f.token))
                (input("domain", "domain", "Domain (e.g. example.com)", "text", None, "off", true, error))
                button type="submit" { "Add domain" }
            }
        },
    )
}

/// SSO: the organization's connections and the forms to create an OIDC or a SAML one.
pub fn sso(
    f: &Frame<'_>,
    connections: &[Value],
    oidc_callback: &str,
    message: Option<&str>,
    error: Option<&FieldError>,
) -> Markup {
    page(
        f,
        "Single sign-on",
        html! {
            (notice(message))
            (form_error(error))
            h2 { "Connections" }
            @if connections.is_empty() { p { "No connection yet." } }
            ul {
                @for c in connections {
                    li {
                        a href=(format!("{}/{}", paths::CONNECTIONS, s(c, "id"))) { (s(c, "name")) }
                        " — " (s(c, "connection_type")) ", " span.state { (s(c, "state")) }
                    }
                }
            }
            h2 { "Add an OpenID Connect connection" }
            p { "Give your identity provider this redirect (callback) URL: " code { (oidc_callback) } }
            form method="post" action=(paths::SSO_OIDC) {
                (csrf(f.token))
                (input("oidc-name", "name", "Name (optional)", "text", None, "off", false, error))
                (input("discovery-endpoint", "discovery_endpoint", "Discovery endpoint URL (…/.well-known/openid-configuration)", "url", None, "off", true, error))
                (input("client-id", "client_id", "Client ID", "text", None, "off", true, error))
                (input("client-secret", "client_secret", "Client secret", "password", None, "off", true, error))
                button type="submit" { "Create OIDC connection" }
            }
            h2 { "Add a SAML connection" }
            p { "The connection is created as a draft first, so that its service provider details can be given to your identity provider." }
            form method="post" action=(paths::SSO_SAML) {
                (csrf(f.token))
                (input("saml-name", "saml_name", "Name (optional)", "text", None, "off", false, error))
                button type="submit" { "Start a SAML connection" }
            }
        },
    )
}

/// What the connection page shows of the service provider side.
pub struct SpDetails {
    pub acs_url: String,
    pub entity_id: String,
    pub metadata_url: String,
    pub oidc_callback: String,
}

/// One connection: its state, the SP details (SAML) or callback (OIDC), the IdP form (SAML),
/// activate/deactivate and, when available, the test sign-in link.
pub fn connection(
    f: &Frame<'_>,
    c: &Value,
    sp: &SpDetails,
    test_url: Option<&str>,
    message: Option<&str>,
    error: Option<&FieldError>,
) -> Markup {
    let id = s(c, "id");
    let state = s(c, "state");
    let saml = s(c, "connection_type").ends_with("SAML");
    page(
        f,
        &format!("Connection {}", s(c, "name")),
        html! {
            (notice(message))
            (form_error(error))
            p { "Type: " (s(c, "connection_type")) }
            p { "State: " strong.state { (state) } }
            @if saml {
                h2 { "Give your identity provider these details" }
                dl {
                    dt { "ACS URL (Assertion Consumer Service)" } dd { code { (sp.acs_url) } }
                    dt { "SP entity ID" } dd { code { (sp.entity_id) } }
                    dt { "SP metadata URL" } dd { code { (sp.metadata_url) } }
                }
                h2 { "Your identity provider's details" }
                p { "Paste its metadata XML, or give its metadata URL, or enter its entity ID, sign-on URL and certificate." }
                form method="post" action=(format!("{}/{id}/saml", paths::CONNECTIONS)) {
                    (csrf(f.token))
                    div.field {
                        label for="metadata-xml" { "IdP metadata XML" }
                        textarea #metadata-xml name="metadata_xml" rows="6"
                            aria-invalid=[error.filter(|e| e.field == "metadata_xml").map(|_| "true")]
                            aria-describedby=[error.filter(|e| e.field == "metadata_xml").map(|_| "metadata-xml-error")] {}
                        @if let Some(e) = error.filter(|e| e.field == "metadata_xml") {
                            p.error #metadata-xml-error role="alert" { (e.message) }
                        }
                    }
                    (input("metadata-url", "metadata_url", "IdP metadata URL", "url", None, "off", false, error))
                    (input("idp-entity-id", "idp_entity_id", "IdP entity ID", "text", None, "off", false, error))
                    (input("idp-sso-url", "idp_sso_url", "IdP sign-on URL", "url", None, "off", false, error))
                    div.field {
                        label for="idp-certificate" { "IdP signing certificate (PEM)" }
                        textarea #idp-certificate name="idp_certificate" rows="6"
                            aria-invalid=[error.filter(|e| e.field == "idp_certificate").map(|_| "true")]
                            aria-describedby=[error.filter(|e| e.field == "idp_certificate").map(|_| "idp-certificate-error")] {}
                        @if let Some(e) = error.filter(|e| e.field == "idp_certificate") {
                            p.error #idp-certificate-error role="alert" { (e.message) }
                        }
                    }
                    button type="submit" { "Save identity provider" }
                }
            } @else {
                p { "Redirect (callback) URL for your identity provider: " code { (sp.oidc_callback) } }
            }
            @if state == "active" {
                form method="post" action=(format!("{}/{id}/state", paths::CONNECTIONS)) {
                    (csrf(f.token))
                    input type="hidden" name="state" value="inactive";
                    button.secondary type="submit" { "Deactivate" }
                }
                @if let Some(u) = test_url { p { a href=(u) { "Test the connection (sign in)" } } }
            } @else if state == "inactive" {
                form method="post" action=(format!("{}/{id}/state", paths::CONNECTIONS)) {
                    (csrf(f.token))
                    input type="hidden" name="state" value="active";
                    button.secondary type="submit" { "Activate" }
                }
            }
            p { a href=(paths::SSO) { "All connections" } }
        },
    )
}

/// The audit trail, newest first, one page; `before`/`after` cursors link the neighbours.
/// What a test sign-in of a connection brought back.
pub fn test_result(f: &Frame<'_>, profile: &Value) -> Markup {
    let text = |k: &str| profile.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    page(
        f,
        "Test sign-in succeeded",
        html! {
            p role="status" { "The identity provider signed this user in; this is what keyledger received." }
            dl {
                dt { "Email" } dd { (text("email")) }
                dt { "First name" } dd { (text("first_name")) }
                dt { "Last name" } dd { (text("last_name")) }
                dt { "User id at the identity provider" } dd { (text("idp_id")) }
                dt { "Connection" } dd { (text("connection_id")) " (" (text("connection_type")) ")" }
            }
            p { a href="/portal/sso" { "Back to the connections" } }
        },
    )
}

pub fn audit_logs(f: &Frame<'_>, events: &[Value], before: Option<&str>, after: Option<&str>) -> Markup {
    page(
        f,
        "Audit logs",
        html! {
            @if events.is_empty() { p { "No event." } }
            @else {
                table {
                    caption { "The organization's audit trail, newest first" }
                    thead { tr { th scope="col" { "Time" } th scope="col" { "Action" } th scope="col" { "Actor" } th scope="col" { "Targets" } } }
                    tbody {
                        @for e in events {
                            tr {
                                td { (s(e, "occurred_at")) }
                                td.action { (s(e, "action")) }
                                td { (e.get("actor").map(|a| { let n = s(a, "name"); if n.is_empty() { s(a, "id") } else { n } }).unwrap_or_default()) }
                                td {
                                    @for t in e.get("targets").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                                        (s(t, "type")) " " code { (s(t, "id")) } " "
                                    }
                                }
                            }
                        }
                    }
                }
            }
            nav aria-label="Pages" {
                @if let Some(b) = before { a href=(format!("{}?before={}", paths::AUDIT_LOGS, urlencode(b))) { "Newer" } " " }
                @if let Some(a) = after { a href=(format!("{}?after={}", paths::AUDIT_LOGS, urlencode(a))) { "Older" } }
            }
        },
    )
}

fn urlencode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
