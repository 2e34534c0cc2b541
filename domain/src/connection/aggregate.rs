use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::{ConnectionEvent, OidcOptions, SamlOptions, SecretRefs};
use crate::{NoServices, Tenanted};

/// The purpose of the sealed OIDC client secret in [`SecretRefs`].
pub const CLIENT_SECRET: &str = "client_secret";
/// The purpose of the sealed `private_key_jwt` signing key.
pub const JWT_SIGNING_KEY: &str = "jwt_signing_key";

/// Why a connection command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("the connection already exists")]
    AlreadyExists,
    #[error("the connection does not exist")]
    NotFound,
    /// Activation (or a change of an active connection) needs complete options.
    #[error("the connection's options are incomplete")]
    Incomplete,
    /// Only an active connection is deactivated.
    #[error("the connection is not active")]
    NotActive,
    /// `connection_type` cannot change after creation.
    #[error("the connection type cannot be changed")]
    TypeChange,
}

/// The states WorkOS shows that keyledger uses: a draft until its options are complete, then
/// active, inactive when deactivated (and active again when reactivated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    #[default]
    Draft,
    Active,
    Inactive,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }
}

/// A new connection; values arrive parsed and checked (the organization exists).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateConnection {
    pub organization_id: String,
    pub connection_type: String,
    pub name: String,
    pub external_id: Option<String>,
    pub oidc: Option<OidcOptions>,
    pub saml: Option<SamlOptions>,
    pub attribute_maps: Option<Value>,
    pub secrets: SecretRefs,
    pub at: DateTime<Utc>,
}

/// A change: absent fields stay; options are the whole new options (merged by the caller);
/// `state` asks for `active` or `inactive`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateConnection {
    pub name: Option<String>,
    pub external_id: Option<Option<String>>,
    pub connection_type: Option<String>,
    pub oidc: Option<OidcOptions>,
    pub saml: Option<SamlOptions>,
    pub attribute_maps: Option<Value>,
    pub secrets: SecretRefs,
    pub state: Option<ConnectionState>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionCommand {
    Create(CreateConnection),
    Update(UpdateConnection),
    Delete { at: DateTime<Utc> },
}

/// A connection's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub organization_id: Option<String>,
    pub connection_type: String,
    pub name: String,
    pub external_id: Option<String>,
    pub state: ConnectionState,
    pub oidc: Option<OidcOptions>,
    pub saml: Option<SamlOptions>,
    pub attribute_maps: Option<Value>,
    pub secrets: SecretRefs,
    pub created: bool,
    pub deleted: bool,
}

/// Whether options (with the sealed secrets they name) are enough to sign users in.
pub fn complete(oidc: Option<&OidcOptions>, saml: Option<&SamlOptions>, secrets: &SecretRefs) -> bool {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if let Some(o) = oidc {
        let auth = if o.uses_private_key_jwt() {
            secrets.contains_key(JWT_SIGNING_KEY)
        } else {
            secrets.contains_key(CLIENT_SECRET)
        };
        return set(&o.discovery_endpoint) && set(&o.client_id) && auth;
    }
    if let Some(s) = saml {
        // The entity id is what the assertion's issuer is checked against.
        return set(&s.idp_metadata_url)
            || (set(&s.idp_entity_id) && set(&s.idp_sso_url) && !s.idp_signing_certs.is_empty());
    }
    false
}

impl Connection {
    pub fn exists(&self) -> bool {
        self.created && !self.deleted
    }

    pub fn is_complete(&self) -> bool {
        complete(self.oidc.as_ref(), self.saml.as_ref(), &self.secrets)
    }
}

impl Tenanted for Connection {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        self.organization_id.as_deref()
    }
}

impl Connection {
    fn update(&self, u: UpdateConnection) -> Result<Vec<ConnectionEvent>, ConnectionError> {
        if let Some(t) = &u.connection_type {
            if *t != self.connection_type {
                return Err(ConnectionError::TypeChange);
            }
        }
        let name = u.name.filter(|n| *n != self.name);
        let external_id = u.external_id.filter(|e| *e != self.external_id);
        let oidc = u.oidc.filter(|o| Some(o) != self.oidc.as_ref());
        let saml = u.saml.filter(|s| Some(s) != self.saml.as_ref());
        let attribute_maps = u.attribute_maps.filter(|a| Some(a) != self.attribute_maps.as_ref());
        let secrets: SecretRefs = u
            .secrets
            .into_iter()
            .filter(|(k, v)| self.secrets.get(k) != Some(v))
            .collect();
        let mut events = Vec::new();
        let changed = name.is_some()
            || external_id.is_some()
            || oidc.is_some()
            || saml.is_some()
            || attribute_maps.is_some()
            || !secrets.is_empty();
        let mut after = self.clone();
        if changed {
            let e = ConnectionEvent::ConnectionUpdated {
                name,
                external_id,
                oidc,
                saml,
                attribute_maps,
                secrets,
                at: u.at,
            };
            after.apply(e.clone());
            events.push(e);
        }
        let complete = after.is_complete();
        let at = u.at;
        match (u.state, self.state) {
            (Some(ConnectionState::Active), _) if !complete => return Err(ConnectionError::Incomplete),
            (Some(ConnectionState::Active), ConnectionState::Draft | ConnectionState::Inactive) => {
                events.push(ConnectionEvent::ConnectionActivated { at });
            }
            (Some(ConnectionState::Inactive), ConnectionState::Active) => {
                events.push(ConnectionEvent::ConnectionDeactivated { at });
            }
            (Some(ConnectionState::Inactive | ConnectionState::Draft), ConnectionState::Draft) => {
                return Err(ConnectionError::NotActive)
            }
            // An active connection keeps complete options; a draft that became complete starts.
            (None, ConnectionState::Active) if !complete => return Err(ConnectionError::Incomplete),
            (None, ConnectionState::Draft) if complete => events.push(ConnectionEvent::ConnectionActivated { at }),
            _ => {}
        }
        Ok(events)
    }
}

impl Aggregate for Connection {
    const TYPE: &'static str = "Connection";
    type Command = ConnectionCommand;
    type Event = ConnectionEvent;
    type Error = ConnectionError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: ConnectionCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), ConnectionError> {
        let events = match command {
            ConnectionCommand::Create(c) => {
                if self.created {
                    return Err(ConnectionError::AlreadyExists);
                }
                let state = if complete(c.oidc.as_ref(), c.saml.as_ref(), &c.secrets) {
                    ConnectionState::Active
                } else {
                    ConnectionState::Draft
                };
                vec![ConnectionEvent::ConnectionCreated {
                    organization_id: c.organization_id,
                    connection_type: c.connection_type,
                    name: c.name,
                    external_id: c.external_id,
                    state,
                    oidc: c.oidc,
                    saml: c.saml,
                    attribute_maps: c.attribute_maps,
                    secrets: c.secrets,
                    at: c.at,
                }]
            }
            ConnectionCommand::Update(u) => {
                if !self.exists() {
                    return Err(ConnectionError::NotFound);
                }
                self.update(u)?
            }
            ConnectionCommand::Delete { at } => {
                if !self.exists() {
                    return Err(ConnectionError::NotFound);
                }
                vec![ConnectionEvent::ConnectionDeleted { at }]
            }
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: ConnectionEvent) {
        match event {
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
                ..
            } => {
                *self = Connection {
                    organization_id: Some(organization_id),
                    connection_type,
                    name,
                    external_id,
                    state,
                    oidc,
                    saml,
                    attribute_maps,
                    secrets,
                    created: true,
                    deleted: false,
                };
            }
            ConnectionEvent::ConnectionUpdated {
                name,
                external_id,
                oidc,
                saml,
                attribute_maps,
                secrets,
                ..
            } => {
                if let Some(n) = name {
                    self.name = n;
                }
                if let Some(e) = external_id {
                    self.external_id = e;
                }
                if oidc.is_some() {
                    self.oidc = oidc;
                }
                if saml.is_some() {
                    self.saml = saml;
                }
                if attribute_maps.is_some() {
                    self.attribute_maps = attribute_maps;
                }
                self.secrets.extend(secrets);
            }
            ConnectionEvent::ConnectionActivated { .. } => self.state = ConnectionState::Active,
            ConnectionEvent::ConnectionDeactivated { .. } => self.state = ConnectionState::Inactive,
            ConnectionEvent::ConnectionDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
    }

    fn oidc() -> OidcOptions {
        OidcOptions {
            discovery_endpoint: Some("https://idp.example.com/.well-known/openid-configuration".into()),
            client_id: Some("client".into()),
            ..Default::default()
        }
    }

    fn secrets() -> SecretRefs {
        [(CLIENT_SECRET.to_string(), "csec_1".to_string())].into()
    }

    fn create(secrets: SecretRefs) -> CreateConnection {
        CreateConnection {
            organization_id: "org_1".into(),
            connection_type: "GenericOIDC".into(),
            name: "Acme".into(),
            external_id: None,
            oidc: Some(oidc()),
            saml: None,
            attribute_maps: None,
            secrets,
            at: at(0),
        }
    }

    fn created(state: ConnectionState, secrets: SecretRefs) -> ConnectionEvent {
        ConnectionEvent::ConnectionCreated {
            organization_id: "org_1".into(),
            connection_type: "GenericOIDC".into(),
            name: "Acme".into(),
            external_id: None,
            state,
            oidc: Some(oidc()),
            saml: None,
            attribute_maps: None,
            secrets,
            at: at(0),
        }
    }

    #[test]
    fn a_connection_with_complete_options_is_active_at_once_and_a_draft_otherwise() {
        TestFramework::<Connection>::with(NoServices)
            .given_no_previous_events()
            .when(ConnectionCommand::Create(create(secrets())))
            .then_expect_events(vec![created(ConnectionState::Active, secrets())]);
        TestFramework::<Connection>::with(NoServices)
            .given_no_previous_events()
            .when(ConnectionCommand::Create(create(SecretRefs::new())))
            .then_expect_events(vec![created(ConnectionState::Draft, SecretRefs::new())]);
    }

    #[test]
    fn a_draft_completed_by_an_update_is_activated_in_the_same_command() {
        TestFramework::<Connection>::with(NoServices)
            .given(vec![created(ConnectionState::Draft, SecretRefs::new())])
            .when(ConnectionCommand::Update(UpdateConnection {
                secrets: secrets(),
                at: at(5),
                ..Default::default()
            }))
            .then_expect_events(vec![
                ConnectionEvent::ConnectionUpdated {
                    name: None,
                    external_id: None,
                    oidc: None,
                    saml: None,
                    attribute_maps: None,
                    secrets: secrets(),
                    at: at(5),
                },
                ConnectionEvent::ConnectionActivated { at: at(5) },
            ]);
    }

    #[test]
    fn an_active_connection_is_deactivated_and_reactivated_but_a_draft_cannot_be_either() {
        TestFramework::<Connection>::with(NoServices)
            .given(vec![created(ConnectionState::Active, secrets())])
            .when(ConnectionCommand::Update(UpdateConnection {
                state: Some(ConnectionState::Inactive),
                at: at(5),
                ..Default::default()
            }))
            .then_expect_events(vec![ConnectionEvent::ConnectionDeactivated { at: at(5) }]);
        TestFramework::<Connection>::with(NoServices)
            .given(vec![
                created(ConnectionState::Active, secrets()),
                ConnectionEvent::ConnectionDeactivated { at: at(5) },
            ])
            .when(ConnectionCommand::Update(UpdateConnection {
                state: Some(ConnectionState::Active),
                at: at(6),
                ..Default::default()
            }))
            .then_expect_events(vec![ConnectionEvent::ConnectionActivated { at: at(6) }]);
        TestFramework::<Connection>::with(NoServices)
            .given(vec![created(ConnectionState::Draft, SecretRefs::new())])
            .when(ConnectionCommand::Update(UpdateConnection {
                state: Some(ConnectionState::Active),
                at: at(5),
                ..Default::default()
            }))
            .then_expect_error(ConnectionError::Incomplete);
        TestFramework::<Connection>::with(NoServices)
            .given(vec![created(ConnectionState::Draft, SecretRefs::new())])
            .when(ConnectionCommand::Update(UpdateConnection {
                state: Some(ConnectionState::Inactive),
                at: at(5),
                ..Default::default()
            }))
            .then_expect_error(ConnectionError::NotActive);
    }

    #[test]
    fn the_type_is_immutable_and_a_deleted_connection_is_gone() {
        TestFramework::<Connection>::with(NoServices)
            .given(vec![created(ConnectionState::Active, secrets())])
            .when(ConnectionCommand::Update(UpdateConnection {
                connection_type: Some("GenericSAML".into()),
                at: at(5),
                ..Default::default()
            }))
            .then_expect_error(ConnectionError::TypeChange);
        TestFramework::<Connection>::with(NoServices)
            .given(vec![
                created(ConnectionState::Active, secrets()),
                ConnectionEvent::ConnectionDeleted { at: at(5) },
            ])
            .when(ConnectionCommand::Delete { at: at(6) })
            .then_expect_error(ConnectionError::NotFound);
    }
}
