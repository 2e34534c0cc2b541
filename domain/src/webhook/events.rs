use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, ClaimKind, Claims};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookEndpointEvent {
    /// The endpoint starts enabled; the secret lives outside the log.
    WebhookEndpointCreated {
        endpoint_url: String,
        events: Vec<String>,
        at: DateTime<Utc>,
    },
    WebhookEndpointUpdated {
        changes: WebhookEndpointChanges,
        /// The URL before a URL change (so its claim can be released).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_url: Option<String>,
        at: DateTime<Utc>,
    },
    WebhookEndpointEnabled {
        at: DateTime<Utc>,
    },
    /// `automatic`: the dispatcher gave up after the failure rule; otherwise a PATCH.
    WebhookEndpointDisabled {
        reason: String,
        automatic: bool,
        at: DateTime<Utc>,
    },
    WebhookEndpointDeleted {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WebhookEndpointChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

impl WebhookEndpointChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for WebhookEndpointEvent {
    fn event_type(&self) -> String {
        match self {
            Self::WebhookEndpointCreated { .. } => "WebhookEndpointCreated",
            Self::WebhookEndpointUpdated { .. } => "WebhookEndpointUpdated",
            Self::WebhookEndpointEnabled { .. } => "WebhookEndpointEnabled",
            Self::WebhookEndpointDisabled { .. } => "WebhookEndpointDisabled",
            Self::WebhookEndpointDeleted { .. } => "WebhookEndpointDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for WebhookEndpointEvent {
    fn claims(&self) -> Vec<Claim> {
        let kind = ClaimKind::WebhookEndpointUrl;
        match self {
            Self::WebhookEndpointCreated { endpoint_url, .. } => vec![Claim::Acquire {
                kind,
                value: endpoint_url.clone(),
            }],
            Self::WebhookEndpointUpdated {
                changes:
                    WebhookEndpointChanges {
                        endpoint_url: Some(url),
                        ..
                    },
                previous_url,
                ..
            } => vec![
                Claim::Release {
                    kind,
                    value: previous_url.clone(),
                },
                Claim::Acquire {
                    kind,
                    value: url.clone(),
                },
            ],
            Self::WebhookEndpointDeleted { .. } => vec![Claim::Release { kind, value: None }],
            _ => Vec::new(),
        }
    }
}
