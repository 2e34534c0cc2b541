//! The WorkOS objects (user, organization, organization_domain, organization_membership) as
//! JSON documents, and how each event changes them. Pure: the projection engine loads and stores
//! the documents; this module only folds events into them.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use keyledger_domain::authentication::AuthenticationEvent;
use keyledger_domain::connection::{ConnectionEvent, OidcOptions, SamlOptions, SecretRefs};
use keyledger_domain::invitation::InvitationEvent;
use keyledger_domain::membership::MembershipEvent;
use keyledger_domain::one_time_code::OneTimeCodeEvent;
use keyledger_domain::organization::{OrganizationEvent, VERIFICATION_PREFIX};
use keyledger_domain::session::SessionEvent;
use keyledger_domain::user::UserEvent;
use serde_json::{json, Map, Value};

use keyledger_store::decode::AnyEvent;

/// The kinds of document a projection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Organization,
    OrganizationDomain,
    Membership,
    Session,
    /// The data of an `authentication.*` event (a sign-in attempt); kept only by the event feed.
    Authentication,
    Invitation,
    /// The data of a code's public event (`magic_auth.created`, `password_reset.succeeded`, ...),
    /// never the code; kept only by the event feed.
    OneTimeCode,
    /// An organization's policy for the users of its verified domains (keyledger's extension),
    /// keyed by the organization's id.
    OrganizationPolicy,
    /// An SSO connection (`connection_view`).
    Connection,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::User,
        Kind::Organization,
        Kind::OrganizationDomain,
        Kind::Membership,
        Kind::Session,
        Kind::Authentication,
        Kind::Invitation,
        Kind::OneTimeCode,
        Kind::OrganizationPolicy,
        Kind::Connection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Organization => "organization",
            Kind::OrganizationDomain => "organization_domain",
            Kind::Membership => "organization_membership",
            Kind::Session => "session",
            Kind::Authentication => "authentication",
            Kind::Invitation => "invitation",
            Kind::OneTimeCode => "one_time_code",
            Kind::OrganizationPolicy => "organization_policy",
            Kind::Connection => "connection",
        }
    }
}

/// Documents by (kind, id); `None` means "does not exist (any more)".
pub type Docs = HashMap<(Kind, String), Option<Value>>;

/// What one event did to the public objects: the WorkOS event name and its primary object.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub event: &'static str,
    pub kind: Kind,
    pub id: String,
    /// Extra fields of the public event's `data`, which then holds the object under its kind's name.
    pub extra: Option<Value>,
}

/// WorkOS timestamp format: RFC 3339 with milliseconds and `Z`.
pub fn ts(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Every public event name this server emits (the catalog webhook endpoint filters are checked
/// against; keep in step with [`apply`] and docs/EVENTS.md).
pub const PUBLIC_EVENT_NAMES: &[&str] = &[
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organization.policy_updated",
    "organization_domain.created",
    "organization_domain.verified",
    "organization_domain.verification_failed",
    "organization_domain.deleted",
    "organization_membership.created",
    "organization_membership.updated",
    "organization_membership.deleted",
    "session.created",
    "session.revoked",
    "authentication.password_succeeded",
    "authentication.password_failed",
    "authentication.magic_auth_succeeded",
    "authentication.magic_auth_failed",
    "authentication.email_verification_succeeded",
    "authentication.email_verification_failed",
    "invitation.created",
    "invitation.accepted",
    "invitation.revoked",
    "invitation.resent",
    "magic_auth.created",
    "email_verification.created",
    "password_reset.created",
    "password_reset.succeeded",
    "connection.activated",
    "connection.deactivated",
    "connection.deleted",
];

/// The documents an event reads; the engine loads them before [`apply`].
pub fn needs(aggregate_id: &str, event: &AnyEvent) -> Vec<(Kind, String)> {
    match event {
        AnyEvent::User(_) => vec![(Kind::User, aggregate_id.to_string())],
        AnyEvent::Membership(_) => vec![(Kind::Membership, aggregate_id.to_string())],
        AnyEvent::WebhookEndpoint(_) => Vec::new(),
        AnyEvent::Session(_) => vec![(Kind::Session, aggregate_id.to_string())],
        AnyEvent::Authentication(_) => Vec::new(),
        AnyEvent::Invitation(_) => vec![(Kind::Invitation, aggregate_id.to_string())],
        // Each event carries its object's facts: nothing to read.
        AnyEvent::OneTimeCode(_) => Vec::new(),
        AnyEvent::Connection(_) => vec![(Kind::Connection, aggregate_id.to_string())],
        AnyEvent::Organization(e) => {
            let mut v = vec![(Kind::Organization, aggregate_id.to_string())];
            if let Some(d) = domain_id(e) {
                v.push((Kind::OrganizationDomain, d.to_string()));
            }
            if matches!(
                e,
                OrganizationEvent::OrganizationPolicyChanged { .. } | OrganizationEvent::OrganizationDeleted { .. }
            ) {
                v.push((Kind::OrganizationPolicy, aggregate_id.to_string()));
            }
            v
        }
        // Audit-log aggregates have no WorkOS object documents (projection `audit_logs`).
        AnyEvent::AuditLog(_) | AnyEvent::AuditLogAction(_) | AnyEvent::AuditLogExport(_) => Vec::new(),
    }
}

fn domain_id(e: &OrganizationEvent) -> Option<&str> {
    match e {
        OrganizationEvent::OrganizationDomainCreated { domain_id, .. }
        | OrganizationEvent::OrganizationDomainVerified { domain_id, .. }
        | OrganizationEvent::OrganizationDomainVerificationFailed { domain_id, .. }
        | OrganizationEvent::OrganizationDomainDeleted { domain_id, .. } => Some(domain_id),
        _ => None,
    }
}

fn set(doc: &mut Value, key: &str, v: Value) {
    if let Some(o) = doc.as_object_mut() {
        o.insert(key.to_string(), v);
    }
}

fn get_doc(docs: &Docs, kind: Kind, id: &str) -> Option<Value> {
    docs.get(&(kind, id.to_string())).cloned().flatten()
}

/// Folds one event into the documents and says which public event it is.
pub fn apply(aggregate_id: &str, event: &AnyEvent, docs: &mut Docs) -> Vec<Change> {
    match event {
        AnyEvent::User(e) => apply_user(aggregate_id, e, docs),
        AnyEvent::Organization(e) => apply_organization(aggregate_id, e, docs),
        AnyEvent::Membership(e) => apply_membership(aggregate_id, e, docs),
        AnyEvent::AuditLog(_) | AnyEvent::AuditLogAction(_) | AnyEvent::AuditLogExport(_) => Vec::new(),
        // Webhook endpoints are configuration, not public objects: no public event.
        AnyEvent::WebhookEndpoint(_) => Vec::new(),
        AnyEvent::Session(e) => apply_session(aggregate_id, e, docs),
        AnyEvent::Authentication(e) => apply_authentication(aggregate_id, e, docs),
        AnyEvent::OneTimeCode(e) => apply_one_time_code(aggregate_id, e, docs),
        AnyEvent::Connection(e) => apply_connection(aggregate_id, e, docs),
        AnyEvent::Invitation(e) => apply_invitation(aggregate_id, e, docs),
    }
}

/// The invitation object without its token and link (those are secrets: the API adds them to
/// its own answers from `invitation_token`, never to events). `state` is as of the event; reads
/// show `expired` once `expires_at` has passed (`queries::INVITATION_BODY`).
fn apply_invitation(id: &str, e: &InvitationEvent, docs: &mut Docs) -> Vec<Change> {
    match e {
        InvitationEvent::InvitationCreated {
            email,
            organization_id,
            role,
            inviter_user_id,
            expires_at,
            at,
        } => {
            docs.insert(
                (Kind::Invitation, id.to_string()),
                Some(json!({
                    "object": "invitation",
                    "id": id,
                    "email": email.as_str(),
                    "state": "pending",
                    "accepted_at": null,
                    "revoked_at": null,
                    "expires_at": ts(expires_at),
                    "organization_id": organization_id,
                    "inviter_user_id": inviter_user_id,
                    "accepted_user_id": null,
                    "role_slug": role.as_ref().map(|r| r.as_str()),
                    "created_at": ts(at),
                    "updated_at": ts(at),
                })),
            );
            change("invitation.created", Kind::Invitation, id)
        }
        InvitationEvent::InvitationAccepted { user_id, at } => {
            let ok = patch(docs, Kind::Invitation, id, at, |d| {
                set(d, "state", json!("accepted"));
                set(d, "accepted_at", json!(ts(at)));
                set(d, "accepted_user_id", json!(user_id));
            });
            if ok {
                change("invitation.accepted", Kind::Invitation, id)
            } else {
                Vec::new()
            }
        }
        InvitationEvent::InvitationRevoked { at } => {
            let ok = patch(docs, Kind::Invitation, id, at, |d| {
                set(d, "state", json!("revoked"));
                set(d, "revoked_at", json!(ts(at)));
            });
            if ok {
                change("invitation.revoked", Kind::Invitation, id)
            } else {
                Vec::new()
            }
        }
        InvitationEvent::InvitationResent { at } => {
            if patch(docs, Kind::Invitation, id, at, |_| {}) {
                change("invitation.resent", Kind::Invitation, id)
            } else {
                Vec::new()
            }
        }
        // Replaced by a new invitation: no public event (WorkOS's catalog has none).
        InvitationEvent::InvitationExpired { at } => {
            patch(docs, Kind::Invitation, id, at, |d| set(d, "state", json!("expired")));
            Vec::new()
        }
    }
}

/// A code's public object as WorkOS's events show it: never the code or token. An email change
/// has no public event.
/// The non-secret OIDC options as the connection object shows them (keyledger's extension;
/// `has_client_secret` says whether a sealed secret is set, never what it is).
fn oidc_json(o: &OidcOptions, secrets: &SecretRefs) -> Value {
    json!({
        "discovery_endpoint": o.discovery_endpoint,
        "client_id": o.client_id,
        "redirect_uri": o.redirect_uri,
        "pkce": o.pkce,
        "token_authentication_method": o.token_authentication_method,
        "id_token_signature_algorithm": o.id_token_signature_algorithm,
        "fetch_user_info": o.fetch_user_info,
        "jwt_signing_certs": o.jwt_signing_cert.iter().collect::<Vec<_>>(),
        "has_client_secret": secrets.contains_key(keyledger_domain::connection::CLIENT_SECRET),
    })
}

fn saml_json(o: &SamlOptions) -> Value {
    json!({
        "idp_metadata_url": o.idp_metadata_url,
        "acs_url": o.acs_url,
        "sp_entity_id": o.sp_entity_id,
        "idp_entity_id": o.idp_entity_id,
        "idp_sso_url": o.idp_sso_url,
        "idp_signing_certs": o.idp_signing_certs,
        "sp_signing_cert": o.sp_signing_cert,
        "sp_encryption_certs": o.sp_encryption_certs,
    })
}

fn set_connection_state(doc: &mut Value, state: &str) {
    set(doc, "state", json!(state));
    set(
        doc,
        "status",
        json!(if state == "active" { "linked" } else { "unlinked" }),
    );
}

/// The WorkOS connection object. `domains` are the organization's, added by the reads
/// (`queries::CONNECTION_BODY`); documents and public events hold `[]`.
fn apply_connection(id: &str, e: &ConnectionEvent, docs: &mut Docs) -> Vec<Change> {
    match e {
        ConnectionEvent::ConnectionCreated {
            organization_id,
            connection_type,
            name,
            external_id,
            state,
            oidc,
            saml,
            attribute_maps,
            secrets,
            at,
        } => {
            let mut doc = json!({
                "object": "connection",
                "id": id,
                "organization_id": organization_id,
                "connection_type": connection_type,
                "name": name,
                "external_id": external_id,
                // WorkOS's key of the connection (the SP entity id's default): its id here.
                "external_key": id,
                "state": state.as_str(),
                "status": "unlinked",
                "domains": [],
                "attribute_maps": attribute_maps,
                "created_at": ts(at),
                "updated_at": ts(at),
            });
            set_connection_state(&mut doc, state.as_str());
            if let Some(o) = oidc {
                set(&mut doc, "oidc_options", oidc_json(o, secrets));
            }
            if let Some(o) = saml {
                set(&mut doc, "saml_options", saml_json(o));
                set(
                    &mut doc,
                    "options",
                    json!({ "signing_cert": o.idp_signing_certs.first() }),
                );
            }
            docs.insert((Kind::Connection, id.to_string()), Some(doc));
            if state.as_str() == "active" {
                change("connection.activated", Kind::Connection, id)
            } else {
                Vec::new()
            }
        }
        ConnectionEvent::ConnectionUpdated {
            name,
            external_id,
            oidc,
            saml,
            attribute_maps,
            secrets,
            at,
        } => {
            patch(docs, Kind::Connection, id, at, |d| {
                if let Some(n) = name {
                    set(d, "name", json!(n));
                }
                if let Some(x) = external_id {
                    set(d, "external_id", json!(x));
                }
                if let Some(a) = attribute_maps {
                    set(d, "attribute_maps", a.clone());
                }
                let had_secret = d
                    .pointer("/oidc_options/has_client_secret")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(o) = oidc {
                    let mut refs = secrets.clone();
                    if had_secret {
                        refs.entry(keyledger_domain::connection::CLIENT_SECRET.to_string())
                            .or_default();
                    }
                    set(d, "oidc_options", oidc_json(o, &refs));
                } else if secrets.contains_key(keyledger_domain::connection::CLIENT_SECRET) {
                    if let Some(o) = d.get_mut("oidc_options") {
                        set(o, "has_client_secret", json!(true));
                    }
                }
                if let Some(o) = saml {
                    set(d, "saml_options", saml_json(o));
                    set(d, "options", json!({ "signing_cert": o.idp_signing_certs.first() }));
                }
            });
            Vec::new()
        }
        ConnectionEvent::ConnectionActivated { at } => {
            if patch(docs, Kind::Connection, id, at, |d| set_connection_state(d, "active")) {
                change("connection.activated", Kind::Connection, id)
            } else {
                Vec::new()
            }
        }
        ConnectionEvent::ConnectionDeactivated { at } => {
            if patch(docs, Kind::Connection, id, at, |d| set_connection_state(d, "inactive")) {
                change("connection.deactivated", Kind::Connection, id)
            } else {
                Vec::new()
            }
        }
        ConnectionEvent::ConnectionDeleted { .. } => {
            docs.insert((Kind::Connection, id.to_string()), None);
            change("connection.deleted", Kind::Connection, id)
        }
    }
}

fn apply_one_time_code(id: &str, e: &OneTimeCodeEvent, docs: &mut Docs) -> Vec<Change> {
    let (name, user_id, email, expires_at, created_at, updated_at) = match e {
        OneTimeCodeEvent::MagicAuthCreated {
            user_id,
            email,
            expires_at,
            at,
            ..
        } => ("magic_auth.created", user_id, email, expires_at, at, at),
        OneTimeCodeEvent::EmailVerificationCreated {
            user_id,
            email,
            expires_at,
            at,
        } => ("email_verification.created", user_id, email, expires_at, at, at),
        OneTimeCodeEvent::PasswordResetCreated {
            user_id,
            email,
            expires_at,
            at,
        } => ("password_reset.created", user_id, email, expires_at, at, at),
        OneTimeCodeEvent::PasswordResetSucceeded {
            user_id,
            email,
            expires_at,
            created_at,
            at,
        } => ("password_reset.succeeded", user_id, email, expires_at, created_at, at),
        OneTimeCodeEvent::EmailChangeCreated { .. } => return Vec::new(),
    };
    let mut doc = json!({
        "object": e.purpose().as_str(),
        "id": id,
        "user_id": user_id,
        "email": email.as_str(),
        "expires_at": ts(expires_at),
        "created_at": ts(created_at),
    });
    // WorkOS's password reset object has no `updated_at`; the others do.
    if e.purpose() != keyledger_domain::one_time_code::Purpose::PasswordReset {
        set(&mut doc, "updated_at", json!(ts(updated_at)));
    }
    docs.insert((Kind::OneTimeCode, id.to_string()), Some(doc));
    change(name, Kind::OneTimeCode, id)
}

/// The `authentication.<type>_<status>` event name of a grant type, from the catalog.
fn authentication_event(event_type: &str, succeeded: bool) -> Option<&'static str> {
    let name = format!(
        "authentication.{event_type}_{}",
        if succeeded { "succeeded" } else { "failed" }
    );
    PUBLIC_EVENT_NAMES.iter().copied().find(|n| *n == name)
}

fn apply_session(id: &str, e: &SessionEvent, docs: &mut Docs) -> Vec<Change> {
    match e {
        SessionEvent::SessionCreated {
            user_id,
            organization_id,
            auth_method,
            ip_address,
            user_agent,
            expires_at,
            at,
            ..
        } => {
            docs.insert(
                (Kind::Session, id.to_string()),
                Some(json!({
                    "object": "session",
                    "id": id,
                    "user_id": user_id,
                    "organization_id": organization_id,
                    "ip_address": ip_address,
                    "user_agent": user_agent,
                    "auth_method": auth_method.as_str(),
                    "status": "active",
                    "expires_at": ts(expires_at),
                    "ended_at": null,
                    "created_at": ts(at),
                    "updated_at": ts(at),
                })),
            );
            change("session.created", Kind::Session, id)
        }
        SessionEvent::SessionOrganizationSwitched {
            organization_id, at, ..
        } => {
            patch(docs, Kind::Session, id, at, |d| {
                set(d, "organization_id", json!(organization_id))
            });
            Vec::new()
        }
        SessionEvent::SessionRevoked { at, .. } => {
            if patch(docs, Kind::Session, id, at, |d| {
                set(d, "status", json!("revoked"));
                set(d, "ended_at", json!(ts(at)));
            }) {
                change("session.revoked", Kind::Session, id)
            } else {
                Vec::new()
            }
        }
    }
}

fn apply_authentication(id: &str, e: &AuthenticationEvent, docs: &mut Docs) -> Vec<Change> {
    let a = match e {
        AuthenticationEvent::AuthenticationSucceeded(a) => {
            let Some(event_type) = a.grant.event_type() else {
                return Vec::new();
            };
            let Some(name) = authentication_event(event_type, true) else {
                return Vec::new();
            };
            docs.insert(
                (Kind::Authentication, id.to_string()),
                Some(json!({
                    "type": event_type,
                    "status": "succeeded",
                    "ip_address": a.ip_address,
                    "user_agent": a.user_agent,
                    "email": a.email,
                    "user_id": a.user_id,
                })),
            );
            return change(name, Kind::Authentication, id);
        }
        AuthenticationEvent::AuthenticationFailed(a) => a,
    };
    let Some(event_type) = a.grant.event_type() else {
        return Vec::new();
    };
    let Some(name) = authentication_event(event_type, false) else {
        return Vec::new();
    };
    docs.insert(
        (Kind::Authentication, id.to_string()),
        Some(json!({
            "type": event_type,
            "status": "failed",
            "ip_address": a.ip_address,
            "user_agent": a.user_agent,
            "email": a.email,
            "user_id": a.user_id,
            "error": { "code": a.error_code, "message": a.error_message },
        })),
    );
    change(name, Kind::Authentication, id)
}

fn change(event: &'static str, kind: Kind, id: &str) -> Vec<Change> {
    vec![Change {
        event,
        kind,
        id: id.to_string(),
        extra: None,
    }]
}

/// Patches an existing document; an event for a missing document changes nothing (it can only
/// happen if the log was written by a buggy build, and must not stop the projection).
fn patch(docs: &mut Docs, kind: Kind, id: &str, at: &DateTime<Utc>, f: impl FnOnce(&mut Value)) -> bool {
    match docs.get_mut(&(kind, id.to_string())) {
        Some(Some(doc)) => {
            f(doc);
            set(doc, "updated_at", json!(ts(at)));
            true
        }
        _ => false,
    }
}

fn apply_user(id: &str, e: &UserEvent, docs: &mut Docs) -> Vec<Change> {
    let key = (Kind::User, id.to_string());
    match e {
        UserEvent::UserCreated {
            email,
            first_name,
            last_name,
            name,
            email_verified,
            external_id,
            metadata,
            at,
            ..
        } => {
            docs.insert(
                key,
                Some(json!({
                    "object": "user",
                    "id": id,
                    "email": email.as_str(),
                    "first_name": first_name,
                    "last_name": last_name,
                    "name": name,
                    "email_verified": email_verified,
                    "profile_picture_url": null,
                    "external_id": external_id,
                    "metadata": metadata,
                    "last_sign_in_at": null,
                    "locale": null,
                    "created_at": ts(at),
                    "updated_at": ts(at),
                })),
            );
            change("user.created", Kind::User, id)
        }
        UserEvent::UserSignedUp {
            email,
            first_name,
            last_name,
            email_verified,
            at,
            ..
        } => {
            docs.insert(
                key,
                Some(json!({
                    "object": "user",
                    "id": id,
                    "email": email.as_str(),
                    "first_name": first_name,
                    "last_name": last_name,
                    "name": null,
                    "email_verified": email_verified,
                    "profile_picture_url": null,
                    "external_id": null,
                    "metadata": {},
                    "last_sign_in_at": null,
                    "locale": null,
                    "created_at": ts(at),
                    "updated_at": ts(at),
                })),
            );
            change("user.created", Kind::User, id)
        }
        UserEvent::UserUpdated { changes, at } => {
            let c = changes.clone();
            let ok = patch(docs, Kind::User, id, at, |doc| {
                if let Some(v) = c.email {
                    set(doc, "email", json!(v.as_str()));
                }
                if let Some(v) = c.first_name {
                    set(doc, "first_name", json!(v));
                }
                if let Some(v) = c.last_name {
                    set(doc, "last_name", json!(v));
                }
                if let Some(v) = c.name {
                    set(doc, "name", json!(v));
                }
                if let Some(v) = c.email_verified {
                    set(doc, "email_verified", json!(v));
                }
                if let Some(v) = c.external_id {
                    set(doc, "external_id", json!(v));
                }
                if let Some(v) = c.metadata {
                    set(doc, "metadata", json!(v));
                }
                if let Some(v) = c.locale {
                    set(doc, "locale", json!(v));
                }
            });
            if ok {
                change("user.updated", Kind::User, id)
            } else {
                Vec::new()
            }
        }
        UserEvent::UserPasswordChanged { at } | UserEvent::UserPasswordRemoved { at } => {
            if patch(docs, Kind::User, id, at, |_| {}) {
                change("user.updated", Kind::User, id)
            } else {
                Vec::new()
            }
        }
        UserEvent::UserDeleted { .. } => {
            docs.insert(key, None);
            change("user.deleted", Kind::User, id)
        }
    }
}

fn domain_doc(org_id: &str, domain_id: &str, domain: &str, state: &str, token: &str, at: &DateTime<Utc>) -> Value {
    json!({
        "object": "organization_domain",
        "id": domain_id,
        "organization_id": org_id,
        "domain": domain,
        "state": state,
        "verification_prefix": VERIFICATION_PREFIX,
        "verification_token": token,
        "verification_strategy": "dns",
        "created_at": ts(at),
        "updated_at": ts(at),
    })
}

/// Rewrites the organization's embedded `domains` entry for `domain_id` (or removes it).
fn sync_org_domain(docs: &mut Docs, org_id: &str, domain_id: &str, at: &DateTime<Utc>) {
    let current = get_doc(docs, Kind::OrganizationDomain, domain_id);
    patch(docs, Kind::Organization, org_id, at, |org| {
        if let Some(list) = org.get_mut("domains").and_then(Value::as_array_mut) {
            let pos = list
                .iter()
                .position(|d| d.get("id").and_then(Value::as_str) == Some(domain_id));
            match (pos, current) {
                (Some(i), Some(doc)) => list[i] = doc,
                (Some(i), None) => {
                    list.remove(i);
                }
                (None, Some(doc)) => list.push(doc),
                (None, None) => {}
            }
        }
    });
}

fn apply_organization(id: &str, e: &OrganizationEvent, docs: &mut Docs) -> Vec<Change> {
    match e {
        OrganizationEvent::OrganizationCreated {
            name,
            external_id,
            metadata,
            allow_profiles_outside_organization,
            at,
        } => {
            docs.insert(
                (Kind::Organization, id.to_string()),
                Some(json!({
                    "object": "organization",
                    "id": id,
                    "name": name,
                    "allow_profiles_outside_organization": allow_profiles_outside_organization,
                    "domains": [],
                    "metadata": metadata,
                    "external_id": external_id,
                    "created_at": ts(at),
                    "updated_at": ts(at),
                })),
            );
            change("organization.created", Kind::Organization, id)
        }
        OrganizationEvent::OrganizationUpdated { changes, at } => {
            let c = changes.clone();
            let ok = patch(docs, Kind::Organization, id, at, |doc| {
                if let Some(v) = c.name {
                    set(doc, "name", json!(v));
                }
                if let Some(v) = c.external_id {
                    set(doc, "external_id", json!(v));
                }
                if let Some(v) = c.metadata {
                    set(doc, "metadata", json!(v));
                }
                if let Some(v) = c.allow_profiles_outside_organization {
                    set(doc, "allow_profiles_outside_organization", json!(v));
                }
                // The spec types it a string, never null: absent while unset.
                match c.stripe_customer_id {
                    Some(Some(v)) => set(doc, "stripe_customer_id", json!(v)),
                    Some(None) => {
                        if let Some(o) = doc.as_object_mut() {
                            o.remove("stripe_customer_id");
                        }
                    }
                    None => {}
                }
            });
            if ok {
                change("organization.updated", Kind::Organization, id)
            } else {
                Vec::new()
            }
        }
        OrganizationEvent::OrganizationDeleted { .. } => {
            let org = get_doc(docs, Kind::Organization, id);
            let domain_ids: Vec<String> = org
                .as_ref()
                .and_then(|o| o.get("domains"))
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|d| d.get("id").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for d in domain_ids {
                docs.insert((Kind::OrganizationDomain, d), None);
            }
            docs.insert((Kind::OrganizationPolicy, id.to_string()), None);
            docs.insert((Kind::Organization, id.to_string()), None);
            change("organization.deleted", Kind::Organization, id)
        }
        OrganizationEvent::OrganizationDomainCreated {
            domain_id,
            domain,
            state,
            verification_token,
            at,
        } => {
            let doc = domain_doc(id, domain_id, domain.as_str(), state.as_str(), verification_token, at);
            docs.insert((Kind::OrganizationDomain, domain_id.clone()), Some(doc));
            sync_org_domain(docs, id, domain_id, at);
            change("organization_domain.created", Kind::OrganizationDomain, domain_id)
        }
        OrganizationEvent::OrganizationDomainVerified { domain_id, at, .. } => {
            patch(docs, Kind::OrganizationDomain, domain_id, at, |d| {
                set(d, "state", json!("verified"))
            });
            sync_org_domain(docs, id, domain_id, at);
            change("organization_domain.verified", Kind::OrganizationDomain, domain_id)
        }
        OrganizationEvent::OrganizationDomainVerificationFailed {
            domain_id, reason, at, ..
        } => {
            patch(docs, Kind::OrganizationDomain, domain_id, at, |d| {
                set(d, "state", json!("failed"))
            });
            sync_org_domain(docs, id, domain_id, at);
            vec![Change {
                event: "organization_domain.verification_failed",
                kind: Kind::OrganizationDomain,
                id: domain_id.clone(),
                extra: Some(json!({ "reason": reason })),
            }]
        }
        OrganizationEvent::OrganizationDomainDeleted { domain_id, at, .. } => {
            docs.insert((Kind::OrganizationDomain, domain_id.clone()), None);
            sync_org_domain(docs, id, domain_id, at);
            change("organization_domain.deleted", Kind::OrganizationDomain, domain_id)
        }
        // Configuration outside the WorkOS object: no public event (the audit trail shows it).
        OrganizationEvent::OrganizationAuditLogsRetentionChanged { .. } => Vec::new(),
        OrganizationEvent::OrganizationPolicyChanged {
            membership,
            default_role,
            authentication,
            at,
            ..
        } => {
            docs.insert(
                (Kind::OrganizationPolicy, id.to_string()),
                Some(policy_doc(
                    id,
                    membership.as_str(),
                    default_role.as_str(),
                    authentication.as_str(),
                    Some(at),
                )),
            );
            change("organization.policy_updated", Kind::OrganizationPolicy, id)
        }
    }
}

/// The `organization_policy` object (keyledger's extension, docs/API.md). `updated_at` is null
/// while the policy was never set (the defaults apply).
pub fn policy_doc(
    organization_id: &str,
    membership: &str,
    default_role: &str,
    authentication: &str,
    at: Option<&DateTime<Utc>>,
) -> Value {
    json!({
        "object": "organization_policy",
        "organization_id": organization_id,
        "membership": membership,
        "default_role": default_role,
        "authentication": authentication,
        "updated_at": at.map(ts),
    })
}

/// The policy object of an organization that never set one.
pub fn default_policy_doc(organization_id: &str) -> Value {
    let p = keyledger_domain::organization::OrganizationPolicy::default();
    policy_doc(
        organization_id,
        p.membership.as_str(),
        p.default_role.as_str(),
        p.authentication.as_str(),
        None,
    )
}

fn apply_membership(id: &str, e: &MembershipEvent, docs: &mut Docs) -> Vec<Change> {
    let (event, ok) = match e {
        MembershipEvent::MembershipCreated {
            user_id,
            organization_id,
            organization_name,
            role,
            at,
            ..
        } => {
            docs.insert(
                (Kind::Membership, id.to_string()),
                Some(json!({
                    "object": "organization_membership",
                    "id": id,
                    "user_id": user_id,
                    "organization_id": organization_id,
                    "organization_name": organization_name,
                    "status": "active",
                    "role": { "slug": role.as_str() },
                    "roles": [{ "slug": role.as_str() }],
                    "directory_managed": false,
                    "custom_attributes": {},
                    "created_at": ts(at),
                    "updated_at": ts(at),
                })),
            );
            ("organization_membership.created", true)
        }
        MembershipEvent::MembershipRoleChanged { role, at } => (
            "organization_membership.updated",
            patch(docs, Kind::Membership, id, at, |d| {
                set(d, "role", json!({ "slug": role.as_str() }));
                set(d, "roles", json!([{ "slug": role.as_str() }]));
            }),
        ),
        MembershipEvent::MembershipDeactivated { at } => (
            "organization_membership.updated",
            patch(docs, Kind::Membership, id, at, |d| set(d, "status", json!("inactive"))),
        ),
        MembershipEvent::MembershipReactivated { at } => (
            "organization_membership.updated",
            patch(docs, Kind::Membership, id, at, |d| set(d, "status", json!("active"))),
        ),
        MembershipEvent::MembershipDeleted { .. } => {
            docs.insert((Kind::Membership, id.to_string()), None);
            ("organization_membership.deleted", true)
        }
    };
    if ok {
        change(event, Kind::Membership, id)
    } else {
        Vec::new()
    }
}

/// Renders an object from the events that created it (a fallback when a read model lags).
pub fn render(aggregate_id: &str, events: &[AnyEvent], kind: Kind, id: &str) -> Option<Value> {
    let mut docs = Docs::new();
    for e in events {
        apply(aggregate_id, e, &mut docs);
    }
    docs.remove(&(kind, id.to_string())).flatten()
}

/// The top-level fields whose values differ, with their values before the change.
pub fn previous_attributes(before: &Value, after: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, v) in b {
            if k != "updated_at" && a.get(k) != Some(v) {
                out.insert(k.clone(), v.clone());
            }
        }
        // A field that appeared (e.g. `stripe_customer_id`, absent while unset) was null before.
        for k in a.keys() {
            if !b.contains_key(k) {
                out.insert(k.clone(), Value::Null);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_domain::user::UserChanges;
    use keyledger_domain::values::{Email, Metadata};

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_user_document_follows_create_update_delete() {
        let mut docs = Docs::new();
        let created = AnyEvent::User(UserEvent::UserCreated {
            email: Email::parse("email", "a@example.com").unwrap(),
            first_name: None,
            last_name: None,
            name: None,
            email_verified: false,
            external_id: None,
            metadata: Metadata::new(),
            has_password: false,
            at: at(),
        });
        assert_eq!(apply("user_1", &created, &mut docs)[0].event, "user.created");
        let before = get_doc(&docs, Kind::User, "user_1").unwrap();
        assert_eq!(before["created_at"], "2023-11-14T22:13:20.000Z");
        let updated = AnyEvent::User(UserEvent::UserUpdated {
            changes: UserChanges {
                first_name: Some(Some("Ann".into())),
                ..Default::default()
            },
            at: at(),
        });
        assert_eq!(apply("user_1", &updated, &mut docs)[0].event, "user.updated");
        let after = get_doc(&docs, Kind::User, "user_1").unwrap();
        assert_eq!(after["first_name"], "Ann");
        assert_eq!(
            previous_attributes(&before, &after).get("first_name"),
            Some(&Value::Null)
        );
        apply(
            "user_1",
            &AnyEvent::User(UserEvent::UserDeleted { at: at() }),
            &mut docs,
        );
        assert_eq!(docs.get(&(Kind::User, "user_1".to_string())), Some(&None));
    }

    #[test]
    fn a_policy_change_writes_the_policy_document_and_the_organizations_deletion_removes_it() {
        use keyledger_domain::organization::{AuthenticationPolicy, MembershipPolicy};
        use keyledger_domain::values::RoleSlug;
        let mut docs = Docs::new();
        let changed = AnyEvent::Organization(OrganizationEvent::OrganizationPolicyChanged {
            membership: MembershipPolicy::Auto,
            default_role: RoleSlug::member(),
            authentication: AuthenticationPolicy::SsoRequired,
            previous_membership: None,
            previous_default_role: None,
            previous_authentication: None,
            at: at(),
        });
        assert!(needs("org_1", &changed).contains(&(Kind::OrganizationPolicy, "org_1".to_string())));
        let c = apply("org_1", &changed, &mut docs);
        assert_eq!(
            (c[0].event, c[0].kind),
            ("organization.policy_updated", Kind::OrganizationPolicy)
        );
        assert!(PUBLIC_EVENT_NAMES.contains(&c[0].event));
        assert_eq!(
            get_doc(&docs, Kind::OrganizationPolicy, "org_1").unwrap(),
            policy_doc("org_1", "auto", "member", "sso_required", Some(&at()))
        );
        assert_eq!(default_policy_doc("org_2")["membership"], "invite_only");
        apply(
            "org_1",
            &AnyEvent::Organization(OrganizationEvent::OrganizationDeleted { at: at() }),
            &mut docs,
        );
        assert_eq!(docs.get(&(Kind::OrganizationPolicy, "org_1".to_string())), Some(&None));
    }

    #[test]
    fn an_update_of_a_missing_document_changes_nothing() {
        let mut docs = Docs::new();
        let e = AnyEvent::User(UserEvent::UserPasswordChanged { at: at() });
        assert!(apply("user_x", &e, &mut docs).is_empty());
        assert!(docs.is_empty());
    }
}
