use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::ConnectionState;
use crate::claims::{Claim, ClaimKind, Claims};

/// Which sealed secret rows a connection uses, by purpose (`client_secret`,
/// `jwt_signing_key`, `sp_signing_key`, `sp_encryption_key`): purpose → row id
/// (`connection_secret.id`). The ids are opaque references; the secrets never enter the log.
pub type SecretRefs = BTreeMap<String, String>;

/// The non-secret OIDC options (WorkOS's `oidc_options` without `client_secret` and private keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcOptions {
    pub discovery_endpoint: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub pkce: Option<bool>,
    pub token_authentication_method: Option<String>,
    pub id_token_signature_algorithm: Option<String>,
    pub fetch_user_info: Option<bool>,
    /// The public certificate of a `private_key_jwt` key pair.
    pub jwt_signing_cert: Option<String>,
}

impl OidcOptions {
    /// Whether `private_key_jwt` authenticates the token request (no client secret then).
    pub fn uses_private_key_jwt(&self) -> bool {
        self.token_authentication_method.as_deref() == Some("private_key_jwt")
    }
}

/// The non-secret SAML options (the IdP's signing certificates and the SP certificates are public).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlOptions {
    pub idp_metadata_url: Option<String>,
    pub acs_url: Option<String>,
    pub sp_entity_id: Option<String>,
    pub idp_entity_id: Option<String>,
    pub idp_sso_url: Option<String>,
    #[serde(default)]
    pub idp_signing_certs: Vec<String>,
    pub sp_signing_cert: Option<String>,
    #[serde(default)]
    pub sp_encryption_certs: Vec<String>,
}

/// Events of the [`super::Connection`] aggregate, stored under the names in `#[serde(rename)]`
/// (docs/EVENTS.md). None carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConnectionEvent {
    /// "SSO connection added": `state` is `active` when the options were complete, else `draft`.
    #[serde(rename = "ConnectionCreated")]
    ConnectionCreated {
        organization_id: String,
        connection_type: String,
        name: String,
        external_id: Option<String>,
        state: ConnectionState,
        oidc: Option<OidcOptions>,
        saml: Option<SamlOptions>,
        /// WorkOS's `attribute_maps`, as given (an object of strings).
        attribute_maps: Option<Value>,
        #[serde(default)]
        secrets: SecretRefs,
        at: DateTime<Utc>,
    },
    /// Changed fields only; options, when present, are the whole new options; `secrets` holds
    /// the purposes whose sealed row changed.
    #[serde(rename = "ConnectionUpdated")]
    ConnectionUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, with = "crate::double_option", skip_serializing_if = "Option::is_none")]
        external_id: Option<Option<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        oidc: Option<OidcOptions>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        saml: Option<SamlOptions>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribute_maps: Option<Value>,
        #[serde(default, skip_serializing_if = "SecretRefs::is_empty")]
        secrets: SecretRefs,
        at: DateTime<Utc>,
    },
    #[serde(rename = "ConnectionActivated")]
    ConnectionActivated { at: DateTime<Utc> },
    #[serde(rename = "ConnectionDeactivated")]
    ConnectionDeactivated { at: DateTime<Utc> },
    #[serde(rename = "ConnectionDeleted")]
    ConnectionDeleted { at: DateTime<Utc> },
}

impl DomainEvent for ConnectionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ConnectionCreated { .. } => "ConnectionCreated",
            Self::ConnectionUpdated { .. } => "ConnectionUpdated",
            Self::ConnectionActivated { .. } => "ConnectionActivated",
            Self::ConnectionDeactivated { .. } => "ConnectionDeactivated",
            Self::ConnectionDeleted { .. } => "ConnectionDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for ConnectionEvent {
    /// A connection's creation locks its organization (it cannot land after the organization's
    /// deletion, whose cascade then finds it).
    fn claims(&self) -> Vec<Claim> {
        match self {
            Self::ConnectionCreated { organization_id, .. } => vec![Claim::Require {
                kind: ClaimKind::LiveOrganization,
                value: organization_id.clone(),
            }],
            _ => Vec::new(),
        }
    }
}
