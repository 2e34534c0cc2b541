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
    /// A user that exists, keyed by its own id: what a membership's append locks (`Require`).
    LiveUser,
    /// An organization that exists, keyed by its own id (as [`ClaimKind::LiveUser`]).
    LiveOrganization,
    /// One pending invitation per organization (or none) and email: `<organization_id>:<email key>`.
    PendingInvitation,
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
            Self::LiveUser => "live_user",
            Self::LiveOrganization => "live_organization",
            Self::PendingInvitation => "pending_invitation",
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
            Self::LiveUser,
            Self::LiveOrganization,
            Self::PendingInvitation,
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
    /// Take the aggregate's own id in `kind` (liveness: it exists).
    AcquireOwn { kind: ClaimKind },
    /// Require `value` to be held (by any aggregate) and keep it from being given back until the
    /// append commits; fails (the parent is gone) if nobody holds it. Taken before the append
    /// touches anything else.
    Require { kind: ClaimKind, value: String },
    /// Give back the aggregate's own id in `kind`, before the append touches anything else, so
    /// appends that hold it with `Require` finish first and later ones fail.
    RetireOwn { kind: ClaimKind },
    /// Fail the append (a concurrent change: decide again) if, after its releases, a claim of
    /// `kind` still names the aggregate as `part` of its `:`-separated value, e.g. a membership
    /// (`<organization_id>:<user_id>`) of a user being deleted.
    NoDependents { kind: ClaimKind, part: KeyPart },
}

/// A part of a two-part claim value `<first>:<second>` (a membership: organization, then user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    First,
    Second,
}

/// Implemented by every aggregate's event type.
pub trait Claims {
    /// The claims this event takes or releases, in order.
    fn claims(&self) -> Vec<Claim>;
}
