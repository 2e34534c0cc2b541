use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, ClaimKind, Claims};

/// Events of the [`super::WebhookEndpoint`] aggregate. Each variant is stored under the name
/// in its `#[serde(rename)]`, which `event_type` returns too, so renaming a Rust variant
/// changes nothing stored; a stored name never changes (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookEndpointEvent {
    /// The endpoint starts enabled; the secret lives outside the log.
    #[serde(rename = "WebhookEndpointCreated")]
    WebhookEndpointCreated {
        endpoint_url: String,
        events: Vec<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "WebhookEndpointUpdated")]
    WebhookEndpointUpdated {
        changes: WebhookEndpointChanges,
        /// The URL before a URL change (so its claim can be released).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_url: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "WebhookEndpointEnabled")]
    WebhookEndpointEnabled { at: DateTime<Utc> },
    /// `automatic`: the dispatcher gave up after the failure rule; otherwise a PATCH.
    #[serde(rename = "WebhookEndpointDisabled")]
    WebhookEndpointDisabled {
        reason: String,
        automatic: bool,
        at: DateTime<Utc>,
    },
    #[serde(rename = "WebhookEndpointDeleted")]
    WebhookEndpointDeleted { at: DateTime<Utc> },
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
