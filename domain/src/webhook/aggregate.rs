use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::events::{WebhookEndpointChanges, WebhookEndpointEvent};
use crate::{NoServices, Tenanted};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookEndpointError {
    #[error("the webhook endpoint already exists")]
    AlreadyExists,
    #[error("the webhook endpoint does not exist")]
    NotFound,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEndpointCommand {
    /// `endpoint_url` and `events` are validated by the caller (URL shape, event catalog).
    Create {
        endpoint_url: String,
        events: Vec<String>,
        at: DateTime<Utc>,
    },
    Update(UpdateWebhookEndpoint),
    /// The dispatcher's failure rule tripped: stop delivering, say why.
    DisableAutomatically {
        reason: String,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateWebhookEndpoint {
    pub endpoint_url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(true)`: enabled, `Some(false)`: disabled.
    pub enabled: Option<bool>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub endpoint_url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

impl WebhookEndpoint {
    pub fn exists(&self) -> bool {
        self.created_at.is_some() && !self.deleted
    }
}

/// Webhook endpoints are environment-wide: no organization.
impl Tenanted for WebhookEndpoint {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        None
    }
}

impl Aggregate for WebhookEndpoint {
    const TYPE: &'static str = "WebhookEndpoint";
    type Command = WebhookEndpointCommand;
    type Event = WebhookEndpointEvent;
    type Error = WebhookEndpointError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: WebhookEndpointCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), WebhookEndpointError> {
        let events = match command {
            WebhookEndpointCommand::Create {
                endpoint_url,
                events,
                at,
            } => {
                if self.created_at.is_some() {
                    return Err(WebhookEndpointError::AlreadyExists);
                }
                vec![WebhookEndpointEvent::WebhookEndpointCreated {
                    endpoint_url,
                    events,
                    at,
                }]
            }
            _ if !self.exists() => return Err(WebhookEndpointError::NotFound),
            WebhookEndpointCommand::Update(u) => {
                let changes = WebhookEndpointChanges {
                    endpoint_url: u.endpoint_url.filter(|n| *n != self.endpoint_url),
                    events: u.events.filter(|n| *n != self.events),
                };
                let mut out = Vec::new();
                if !changes.is_empty() {
                    let previous_url = changes.endpoint_url.as_ref().map(|_| self.endpoint_url.clone());
                    out.push(WebhookEndpointEvent::WebhookEndpointUpdated {
                        changes,
                        previous_url,
                        at: u.at,
                    });
                }
                match u.enabled {
                    Some(true) if !self.enabled => out.push(WebhookEndpointEvent::WebhookEndpointEnabled { at: u.at }),
                    Some(false) if self.enabled => out.push(WebhookEndpointEvent::WebhookEndpointDisabled {
                        reason: "disabled through the API".into(),
                        automatic: false,
                        at: u.at,
                    }),
                    _ => {}
                }
                out
            }
            WebhookEndpointCommand::DisableAutomatically { reason, at } => {
                if self.enabled {
                    vec![WebhookEndpointEvent::WebhookEndpointDisabled {
                        reason,
                        automatic: true,
                        at,
                    }]
                } else {
                    Vec::new()
                }
            }
            WebhookEndpointCommand::Delete { at } => vec![WebhookEndpointEvent::WebhookEndpointDeleted { at }],
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: WebhookEndpointEvent) {
        match event {
            WebhookEndpointEvent::WebhookEndpointCreated {
                endpoint_url,
                events,
                at,
            } => {
                self.endpoint_url = endpoint_url;
                self.events = events;
                self.enabled = true;
                self.created_at = Some(at);
            }
            WebhookEndpointEvent::WebhookEndpointUpdated { changes, .. } => {
                if let Some(u) = changes.endpoint_url {
                    self.endpoint_url = u;
                }
                if let Some(e) = changes.events {
                    self.events = e;
                }
            }
            WebhookEndpointEvent::WebhookEndpointEnabled { .. } => self.enabled = true,
            WebhookEndpointEvent::WebhookEndpointDisabled { .. } => self.enabled = false,
            WebhookEndpointEvent::WebhookEndpointDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{Claim, ClaimKind, Claims};
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn created() -> WebhookEndpointEvent {
        WebhookEndpointEvent::WebhookEndpointCreated {
            endpoint_url: "https://a.example/hook".into(),
            events: vec!["user.created".into()],
            at: at(),
        }
    }

    #[test]
    fn creating_an_endpoint_claims_its_url() {
        TestFramework::<WebhookEndpoint>::with(NoServices)
            .given_no_previous_events()
            .when(WebhookEndpointCommand::Create {
                endpoint_url: "https://a.example/hook".into(),
                events: vec!["user.created".into()],
                at: at(),
            })
            .then_expect_events(vec![created()]);
        assert_eq!(
            created().claims(),
            vec![Claim::Acquire {
                kind: ClaimKind::WebhookEndpointUrl,
                value: "https://a.example/hook".into()
            }]
        );
    }

    #[test]
    fn a_url_change_moves_the_claim_and_disabling_is_recorded() {
        let updated = WebhookEndpointEvent::WebhookEndpointUpdated {
            changes: WebhookEndpointChanges {
                endpoint_url: Some("https://b.example/hook".into()),
                events: None,
            },
            previous_url: Some("https://a.example/hook".into()),
            at: at(),
        };
        TestFramework::<WebhookEndpoint>::with(NoServices)
            .given(vec![created()])
            .when(WebhookEndpointCommand::Update(UpdateWebhookEndpoint {
                endpoint_url: Some("https://b.example/hook".into()),
                events: Some(vec!["user.created".into()]),
                enabled: Some(false),
                at: at(),
            }))
            .then_expect_events(vec![
                updated.clone(),
                WebhookEndpointEvent::WebhookEndpointDisabled {
                    reason: "disabled through the API".into(),
                    automatic: false,
                    at: at(),
                },
            ]);
        assert_eq!(updated.claims().len(), 2);
    }

    #[test]
    fn automatic_disabling_of_a_disabled_endpoint_changes_nothing() {
        TestFramework::<WebhookEndpoint>::with(NoServices)
            .given(vec![
                created(),
                WebhookEndpointEvent::WebhookEndpointDisabled {
                    reason: "x".into(),
                    automatic: false,
                    at: at(),
                },
            ])
            .when(WebhookEndpointCommand::DisableAutomatically {
                reason: "failing".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_deleted_endpoint_is_not_found() {
        TestFramework::<WebhookEndpoint>::with(NoServices)
            .given(vec![
                created(),
                WebhookEndpointEvent::WebhookEndpointDeleted { at: at() },
            ])
            .when(WebhookEndpointCommand::Delete { at: at() })
            .then_expect_error(WebhookEndpointError::NotFound);
    }
}
