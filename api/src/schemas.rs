//! Documentation-only mirrors of the response bodies, for `/openapi.json`. Handlers build their
//! answers as JSON from the read models (`projections/src/objects.rs`, `audit.rs`, `webhooks.rs`),
//! so these types are never constructed: each must say exactly what those builders write (fields,
//! nullability, constants). Unknown fields are denied, so schemathesis's response-conformance
//! check fails the moment a builder adds a field that is not described here.
//! Request bodies are not here: they derive `ToSchema` on the real structs in `routes/`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `{"code", "message"[, "errors"]}`: every error the API answers.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// Stable machine code, e.g. `entity_not_found`, `invalid_request_parameters`.
    code: String,
    /// A sentence for people.
    message: String,
    /// Per-field details of a validation error (422); an audit-log event refused by its
    /// action's schema (400 `invalid_audit_log_event`) lists `instancePath` instead of `field`.
    errors: Option<Vec<FieldError>>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldError {
    field: Option<String>,
    code: Option<String>,
    #[serde(rename = "instancePath")]
    instance_path: Option<String>,
    message: String,
}

/// `list_metadata` of every list: the cursors of the neighbouring pages.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMetadata {
    /// Pass as `before` for the previous page; `null` on the first.
    #[schema(required = true)]
    before: Option<String>,
    /// Pass as `after` for the next page; `null` on the last.
    #[schema(required = true)]
    after: Option<String>,
}

/// `"list"`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListTag {
    List,
}

/// A WorkOS list envelope of `$item`, named `$name`.
macro_rules! list_of {
    ($name:ident, $item:ty) => {
        #[derive(Serialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            object: ListTag,
            data: Vec<$item>,
            list_metadata: ListMetadata,
        }
    };
}

list_of!(UserList, User);
list_of!(SessionList, Session);
list_of!(InvitationList, Invitation);
list_of!(OrganizationList, Organization);
list_of!(OrganizationMembershipList, OrganizationMembership);
list_of!(EventList, Event);
list_of!(AuditLogEventList, AuditLogEvent);
list_of!(AuditLogActionList, AuditLogAction);
list_of!(AuditLogSchemaList, AuditLogSchema);
list_of!(WebhookEndpointList, WebhookEndpoint);
list_of!(WebhookDeliveryList, WebhookDelivery);
list_of!(RedirectUriList, RedirectUri);

/// Declares a one-value string enum: the `object` tag of a WorkOS object.
macro_rules! tag {
    ($name:ident, $value:tt) => {
        #[derive(Serialize, ToSchema)]
        pub enum $name {
            #[serde(rename = $value)]
            Tag,
        }
    };
}

tag!(UserTag, "user");
tag!(SessionTag, "session");
tag!(RedirectUriTag, "redirect_uri");
tag!(InvitationTag, "invitation");
tag!(OrganizationTag, "organization");
tag!(OrganizationDomainTag, "organization_domain");
tag!(OrganizationMembershipTag, "organization_membership");
tag!(EventTag, "event");
tag!(AuditLogEventTag, "audit_log_event");
tag!(AuditLogActionTag, "audit_log_action");
tag!(AuditLogSchemaTag, "audit_log_schema");
tag!(AuditLogExportTag, "audit_log_export");
tag!(WebhookEndpointTag, "webhook_endpoint");
tag!(WebhookDeliveryTag, "webhook_delivery");
tag!(WebhookReplayTag, "webhook_replay");

/// `user` (`objects::apply_user`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    object: UserTag,
    id: String,
    email: String,
    #[schema(required = true)]
    first_name: Option<String>,
    #[schema(required = true)]
    last_name: Option<String>,
    /// The full name, when the application gave one (the SDKs send `name`).
    #[schema(required = true)]
    name: Option<String>,
    email_verified: bool,
    /// Always `null` (no profile pictures here).
    #[schema(required = true)]
    profile_picture_url: Option<String>,
    #[schema(required = true)]
    external_id: Option<String>,
    metadata: BTreeMap<String, String>,
    /// Always `null` (no sign-in here).
    #[schema(required = true, format = DateTime)]
    last_sign_in_at: Option<String>,
    #[schema(required = true)]
    locale: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// `organization` (`objects::apply_organization`), with its domains.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    object: OrganizationTag,
    id: String,
    name: String,
    allow_profiles_outside_organization: bool,
    domains: Vec<OrganizationDomain>,
    metadata: BTreeMap<String, String>,
    #[schema(required = true)]
    external_id: Option<String>,
    stripe_customer_id: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Pending,
    Verified,
    Failed,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStrategy {
    Dns,
}

/// `organization_domain` (`objects::domain_doc`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationDomain {
    object: OrganizationDomainTag,
    id: String,
    organization_id: String,
    domain: String,
    state: DomainState,
    /// The TXT record's name is `<verification_prefix>.<domain>`.
    verification_prefix: String,
    verification_token: String,
    verification_strategy: VerificationStrategy,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// The state a domain is created in.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewDomainState {
    Pending,
    Verified,
}

/// The roles of this environment.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleSlug {
    Member,
    Admin,
}

/// A public event name; `crate::openapi` lists the catalog (`objects::PUBLIC_EVENT_NAMES`) as
/// its `enum`.
#[derive(Serialize, ToSchema)]
pub struct EventName(String);

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStatus {
    Active,
    Inactive,
    Pending,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Role {
    slug: String,
}

/// `organization_membership` (`objects::apply_membership` and `queries::MEMBERSHIP_SELECT`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationMembership {
    object: OrganizationMembershipTag,
    id: String,
    user_id: String,
    organization_id: String,
    organization_name: String,
    status: MembershipStatus,
    role: Role,
    roles: Vec<Role>,
    directory_managed: bool,
    custom_attributes: BTreeMap<String, Value>,
    /// The member, embedded (the SDKs expect it); absent only while the user's read model lags.
    user: Option<User>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorSource {
    Api,
    System,
}

#[derive(Serialize, ToSchema)]
pub struct EventActor {
    /// The API key's id, or `system`.
    id: String,
    source: ActorSource,
    #[schema(required = true)]
    name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventContext {
    actor: EventActor,
    /// On `*.updated`: the top-level fields that changed, with their values before.
    previous_attributes: Option<BTreeMap<String, Value>>,
}

/// `event` (`engine::EventFeed`): one entry of `/events` and of the live stream.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    object: EventTag,
    id: String,
    /// The event name, e.g. `user.created` (docs/EVENTS.md).
    event: String,
    /// The object after the change (before it, for deletions); `organization_domain.verification_failed`
    /// wraps it as `{reason, organization_domain}`.
    data: BTreeMap<String, Value>,
    #[schema(format = DateTime)]
    created_at: String,
    context: EventContext,
}

/// `{"success": true}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Success {
    success: bool,
}

/// An actor or a target of an audit-log event.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogParty {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[schema(required = true)]
    name: Option<String>,
    metadata: Option<BTreeMap<String, Value>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogEventContext {
    /// The request's IP address (`null` on change events without one).
    #[schema(required = true)]
    location: Option<String>,
    #[schema(required = true)]
    user_agent: Option<String>,
}

/// `audit_log_event` (`audit::audit_event_body`, `audit::change_event_body`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogEvent {
    object: AuditLogEventTag,
    id: String,
    action: String,
    #[schema(format = DateTime)]
    occurred_at: String,
    actor: AuditLogParty,
    targets: Vec<AuditLogParty>,
    context: AuditLogEventContext,
    /// String, number or boolean values.
    metadata: BTreeMap<String, Value>,
    version: u32,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSchemaTarget {
    #[serde(rename = "type")]
    kind: String,
    /// JSON Schema of the target's metadata.
    metadata: Option<BTreeMap<String, Value>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSchemaActor {
    /// JSON Schema of the actor's metadata.
    metadata: BTreeMap<String, Value>,
}

/// `audit_log_schema` (`audit::schema_body`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSchema {
    object: AuditLogSchemaTag,
    version: u32,
    targets: Vec<AuditLogSchemaTarget>,
    actor: Option<AuditLogSchemaActor>,
    /// JSON Schema of the event's metadata.
    metadata: Option<BTreeMap<String, Value>>,
    #[schema(format = DateTime)]
    created_at: String,
}

/// `audit_log_action` (`audit::actions`): an action with its latest schema.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogAction {
    object: AuditLogActionTag,
    name: String,
    schema: AuditLogSchema,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportState {
    Ready,
}

/// `audit_log_export` (`routes::audit_logs::export_object`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogExport {
    object: AuditLogExportTag,
    id: String,
    state: ExportState,
    /// Download link (CSV), valid 10 minutes.
    url: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

/// `webhook_endpoint` (`webhooks::ENDPOINT_SELECT`), with its signing secret.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    object: WebhookEndpointTag,
    id: String,
    endpoint_url: String,
    secret: String,
    status: EndpointStatus,
    events: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Delivered,
    Failed,
}

/// `webhook_delivery` (`webhooks::deliveries`): one delivery attempt.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookDelivery {
    object: WebhookDeliveryTag,
    id: String,
    webhook_endpoint_id: String,
    event_id: String,
    event: String,
    attempt: i32,
    /// The receiver's HTTP status; `null` when no answer came.
    #[schema(required = true)]
    status_code: Option<i32>,
    #[schema(required = true)]
    error: Option<String>,
    duration_ms: i32,
    status: DeliveryStatus,
    #[schema(format = DateTime)]
    created_at: String,
}

/// The answer to a replay request.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookReplay {
    object: WebhookReplayTag,
    webhook_endpoint_id: String,
    after: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Migrating,
    DatabaseUnavailable,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lag {
    /// Events not yet applied or delivered, counted up to 100,000.
    behind: i64,
}

/// `/health` (`routes::health`): `projections` and `subscribers` only when `ok`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    status: HealthStatus,
    projections: Option<BTreeMap<String, Lag>>,
    subscribers: Option<BTreeMap<String, Lag>>,
    /// With `database_unavailable` (503): the error shape's `code` and `message` beside `status`.
    code: Option<String>,
    message: Option<String>,
}

// --- request parts whose Rust types live in `domain/` (which knows nothing of OpenAPI) ------------

/// An audit-log event's actor or target, as sent (`domain::audit_log::AuditActor`/`AuditTarget`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogPartyInput {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    /// At most 50 keys matching `[a-zA-Z0-9_-]{1,40}`; values strings (≤ 500 characters),
    /// numbers or booleans.
    metadata: Option<BTreeMap<String, Value>>,
}

/// `domain::audit_log::AuditContext`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogContextInput {
    location: String,
    user_agent: Option<String>,
}

/// A schema target as sent (`domain::audit_log::SchemaTarget`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSchemaTargetInput {
    #[serde(rename = "type")]
    kind: String,
    /// JSON Schema (the subset in docs/API.md) of the target's metadata.
    metadata: Option<BTreeMap<String, Value>>,
}

/// `domain::audit_log::SchemaActor`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSchemaActorInput {
    metadata: BTreeMap<String, Value>,
}

/// The body of `POST /audit_logs/actions/{actionName}/schemas` (`domain::audit_log::AuditLogSchema`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAuditLogSchema {
    /// 1 to 50 distinct target types.
    targets: Vec<AuditLogSchemaTargetInput>,
    actor: Option<AuditLogSchemaActorInput>,
    metadata: Option<BTreeMap<String, Value>>,
}

tag!(OrganizationPolicyTag, "organization_policy");

/// `GET`/`PUT /organizations/{id}/policy` (keyledger's extension): the policy for the users of
/// the organization's verified domains.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationPolicy {
    object: OrganizationPolicyTag,
    organization_id: String,
    /// `auto` or `invite_only` (default).
    membership: String,
    /// The role of members who join by domain (default `member`).
    default_role: String,
    /// `any` (default) or `sso_required`.
    authentication: String,
    /// When the policy was last changed; `null` while never set.
    #[schema(required = true)]
    updated_at: Option<String>,
}

/// `GET /organizations/{id}/audit_log_configuration`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogConfiguration {
    organization_id: String,
    retention_period_in_days: u32,
    /// Always `active`: audit logs are always on.
    state: String,
}

/// `GET`/`PUT /organizations/{id}/audit_logs_retention`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogsRetention {
    /// `null` while never set.
    #[schema(required = true)]
    retention_period_in_days: Option<u32>,
}

tag!(JwkKeyType, "RSA");
tag!(JwkAlgorithm, "RS256");
tag!(JwkUse, "sig");

/// One public signing key of the access tokens (`signing_keys::generate`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    kty: JwkKeyType,
    alg: JwkAlgorithm,
    #[serde(rename = "use")]
    #[schema(rename = "use")]
    key_use: JwkUse,
    /// The key id the tokens' header names (`key_...`).
    kid: String,
    /// RSA modulus, base64url.
    n: String,
    /// RSA exponent, base64url.
    e: String,
    /// A self-signed X.509 certificate of the key (base64 DER).
    x5c: Vec<String>,
    /// SHA-256 thumbprint of that certificate, base64url.
    #[serde(rename = "x5t#S256")]
    #[schema(rename = "x5t#S256")]
    x5t_s256: String,
}

/// `GET /sso/jwks/{clientId}`: the keys that verify access tokens, the active one first.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Expired,
    Revoked,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionAuthMethod {
    Password,
    MagicCode,
    Sso,
}

/// `session` (`objects::apply_session`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    object: SessionTag,
    id: String,
    user_id: String,
    /// The organization the session is signed in to, if any.
    #[schema(required = true)]
    organization_id: Option<String>,
    #[schema(required = true)]
    ip_address: Option<String>,
    #[schema(required = true)]
    user_agent: Option<String>,
    auth_method: SessionAuthMethod,
    status: SessionStatus,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(required = true, format = DateTime)]
    ended_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub enum AuthenticationMethod {
    Password,
    MagicAuth,
    #[serde(rename = "SSO")]
    Sso,
}

/// The answer of `POST /user_management/authenticate` (WorkOS's `AuthenticateResponse`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticateResponse {
    user: User,
    /// The organization the session is signed in to (absent when none).
    organization_id: Option<String>,
    /// RS256 JWT; verify it with `GET /sso/jwks/{client_id}`.
    access_token: String,
    /// Opaque, single use: each refresh returns the next one.
    refresh_token: String,
    authentication_method: AuthenticationMethod,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationState {
    Pending,
    Accepted,
    Expired,
    Revoked,
}

/// `invitation` (WorkOS's `UserlandUserInvite`; `objects::apply_invitation` plus the token).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    object: InvitationTag,
    id: String,
    email: String,
    state: InvitationState,
    #[schema(required = true, format = DateTime)]
    accepted_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    revoked_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: String,
    /// The organization the recipient joins on acceptance.
    #[schema(required = true)]
    organization_id: Option<String>,
    #[schema(required = true)]
    inviter_user_id: Option<String>,
    #[schema(required = true)]
    accepted_user_id: Option<String>,
    /// The role of the membership made on acceptance (`null` without an organization).
    #[schema(required = true)]
    role_slug: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// The secret that accepts the invitation (`invitation_token` of the sign-in).
    token: String,
    /// `KEYLEDGER_INVITATION_URL` with `?invitation_token=<token>`.
    accept_invitation_url: String,
}

tag!(MagicAuthTag, "magic_auth");
tag!(EmailVerificationTag, "email_verification");
tag!(PasswordResetTag, "password_reset");
tag!(EmailChangeTag, "email_change");
tag!(EmailChangeConfirmationTag, "email_change_confirmation");

/// A one-time code as WorkOS shows it (`magic_auth`, `email_verification`), with the code.
macro_rules! code_object {
    ($name:ident, $tag:ty) => {
        #[derive(Serialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            object: $tag,
            id: String,
            /// For a Magic Auth code to an email nobody holds yet: the id the user it signs up gets.
            user_id: String,
            email: String,
            /// Six digits.
            code: String,
            #[schema(format = DateTime)]
            expires_at: String,
            #[schema(format = DateTime)]
            created_at: String,
            #[schema(format = DateTime)]
            updated_at: String,
        }
    };
}

code_object!(MagicAuth, MagicAuthTag);
code_object!(EmailVerification, EmailVerificationTag);

/// `password_reset`: the token and the link that carries it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    object: PasswordResetTag,
    id: String,
    user_id: String,
    email: String,
    password_reset_token: String,
    /// `KEYLEDGER_PASSWORD_RESET_URL` with `token=<password_reset_token>` added.
    password_reset_url: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// `email_change`: a code sent to `new_email`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChange {
    object: EmailChangeTag,
    user: User,
    new_email: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// The user after a code or token flow (`{"user": ...}`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserResponse {
    user: User,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChangeConfirmation {
    object: EmailChangeConfirmationTag,
    user: User,
}

/// `redirect_uri` (`crate::redirect_uris`): where the hosted sign-in may send a browser.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectUri {
    object: RedirectUriTag,
    /// `redirect_uri_...`
    id: String,
    uri: String,
    /// The first URI registered.
    default: bool,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

list_of!(ConnectionList, Connection);
tag!(ConnectionTag, "connection");
tag!(ConnectionDomainTag, "connection_domain");

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Draft,
    Active,
    Inactive,
}

/// Deprecated mirror of `state`: `linked` when active.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Linked,
    Unlinked,
}

/// One of the organization's domains (`organization_domain` id).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionDomain {
    object: ConnectionDomainTag,
    id: String,
    domain: String,
}

/// The non-secret OIDC options (keyledger's extension): `client_secret` is write-only.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionOidcOptions {
    #[schema(required = true)]
    discovery_endpoint: Option<String>,
    #[schema(required = true)]
    client_id: Option<String>,
    #[schema(required = true)]
    redirect_uri: Option<String>,
    #[schema(required = true)]
    pkce: Option<bool>,
    #[schema(required = true)]
    token_authentication_method: Option<String>,
    #[schema(required = true)]
    id_token_signature_algorithm: Option<String>,
    #[schema(required = true)]
    fetch_user_info: Option<bool>,
    /// The certificate of the `private_key_jwt` key pair, if any.
    jwt_signing_certs: Vec<String>,
    /// Whether a client secret is set (never the secret).
    has_client_secret: bool,
}

/// The non-secret SAML options (keyledger's extension): private keys are write-only.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSamlOptions {
    #[schema(required = true)]
    idp_metadata_url: Option<String>,
    #[schema(required = true)]
    acs_url: Option<String>,
    #[schema(required = true)]
    sp_entity_id: Option<String>,
    #[schema(required = true)]
    idp_entity_id: Option<String>,
    #[schema(required = true)]
    idp_sso_url: Option<String>,
    idp_signing_certs: Vec<String>,
    #[schema(required = true)]
    sp_signing_cert: Option<String>,
    sp_encryption_certs: Vec<String>,
}

/// WorkOS's `options` of a SAML connection.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSigningCert {
    #[schema(required = true)]
    signing_cert: Option<String>,
}

/// `connection` (`objects::apply_connection`, with the organization's domains).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    object: ConnectionTag,
    id: String,
    organization_id: String,
    /// `GenericOIDC`, `GenericSAML`, `OktaSAML`, ...
    connection_type: String,
    name: String,
    #[schema(required = true)]
    external_id: Option<String>,
    /// WorkOS's key of the connection (the SP entity id's default); its id here.
    external_key: String,
    state: ConnectionState,
    status: ConnectionStatus,
    domains: Vec<ConnectionDomain>,
    /// As given (`standard_attributes`, `custom_attributes`).
    #[schema(required = true, value_type = Option<Object>)]
    attribute_maps: Option<serde_json::Value>,
    oidc_options: Option<ConnectionOidcOptions>,
    saml_options: Option<ConnectionSamlOptions>,
    options: Option<ConnectionSigningCert>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

tag!(ProfileTag, "profile");

/// WorkOS's `profile` of an SSO sign-in.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoProfile {
    object: ProfileTag,
    /// `prof_...`
    id: String,
    organization_id: String,
    connection_id: String,
    connection_type: String,
    /// The identity provider's subject.
    idp_id: String,
    email: String,
    #[schema(required = true)]
    first_name: Option<String>,
    #[schema(required = true)]
    last_name: Option<String>,
    #[schema(required = true)]
    name: Option<String>,
    /// The ID token's claims.
    raw_attributes: BTreeMap<String, Value>,
}

/// `POST /sso/token`'s answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoTokenResponse {
    /// `Bearer`.
    token_type: String,
    access_token: String,
    expires_in: i64,
    profile: SsoProfile,
}
