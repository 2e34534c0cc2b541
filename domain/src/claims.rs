//! Set-wide rules expressed as claims on unique keys. An event says which keys it takes or gives
//! back; the event store applies them in the append's transaction, so the rule holds under races.

/// The unique key spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// One user per email, compared case-insensitively.
    UserEmail,
    /// One user per external id.
    UserExternalId,
    /// One organization per external id.
    OrganizationExternalId,
    /// One organization owns a verified domain.
    VerifiedDomain,
    /// One membership per user and organization.
    Membership,
    /// An audit-log `Idempotency-Key` of an organization, reusable after 24 h (migration 0006).
    AuditLogIdempotencyKey,
    /// One webhook endpoint per URL (WorkOS: `duplicate_endpoint`).
    WebhookEndpointUrl,
}

impl ClaimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserEmail => "user_email",
            Self::UserExternalId => "user_external_id",
            Self::OrganizationExternalId => "organization_external_id",
            Self::VerifiedDomain => "verified_domain",
            Self::Membership => "membership",
            Self::AuditLogIdempotencyKey => "audit_log_idempotency_key",
            Self::WebhookEndpointUrl => "webhook_endpoint_url",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::UserEmail,
            Self::UserExternalId,
            Self::OrganizationExternalId,
            Self::VerifiedDomain,
            Self::Membership,
            Self::AuditLogIdempotencyKey,
            Self::WebhookEndpointUrl,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One change to the claims table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Take `value` in `kind` for the aggregate; fails if another aggregate holds it.
    Acquire { kind: ClaimKind, value: String },
    /// Give back `value` (or, with `None`, every value of `kind` the aggregate holds).
    Release { kind: ClaimKind, value: Option<String> },
}

/// Implemented by every aggregate's event type.
pub trait Claims {
    /// The claims this event takes or releases, in order.
    fn claims(&self) -> Vec<Claim>;
}
