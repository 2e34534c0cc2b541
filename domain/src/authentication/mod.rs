//! The `Authentication` aggregate: one sign-in attempt, a stream of its own (a failed attempt
//! for an unknown email has no user to belong to). A successful one is appended together with
//! the `SessionCreated` of the session it starts, in one transaction.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, Claims};
use crate::session::Grant;
use crate::{NoServices, Tenanted};

/// A failed attempt as recorded: WorkOS's `authentication.*_failed` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub grant: Grant,
    /// The email given (normalized), or the user's when the attempt named a user.
    pub email: Option<String>,
    /// The user the attempt was for, when one exists (never revealed to the caller).
    pub user_id: Option<String>,
    pub error_code: String,
    pub error_message: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub at: DateTime<Utc>,
}

/// A successful attempt: WorkOS's `authentication.*_succeeded` data, and the session it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SucceededAttempt {
    /// The grant that proved the credential (a password, a code).
    pub grant: Grant,
    pub email: String,
    pub user_id: String,
    pub session_id: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthenticationCommand {
    Fail(FailedAttempt),
    Succeed(SucceededAttempt),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuthenticationEvent {
    #[serde(rename = "AuthenticationSucceeded")]
    AuthenticationSucceeded(SucceededAttempt),
    #[serde(rename = "AuthenticationFailed")]
    AuthenticationFailed(FailedAttempt),
}

impl DomainEvent for AuthenticationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AuthenticationSucceeded(_) => "AuthenticationSucceeded",
            Self::AuthenticationFailed(_) => "AuthenticationFailed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for AuthenticationEvent {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticationError {
    #[error("the attempt is already recorded")]
    AlreadyRecorded,
}

/// An attempt's stream: one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    pub recorded: bool,
}

impl Tenanted for Authentication {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        None
    }
}

impl Aggregate for Authentication {
    const TYPE: &'static str = "Authentication";
    type Command = AuthenticationCommand;
    type Event = AuthenticationEvent;
    type Error = AuthenticationError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: AuthenticationCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), AuthenticationError> {
        if self.recorded {
            return Err(AuthenticationError::AlreadyRecorded);
        }
        let event = match command {
            AuthenticationCommand::Fail(a) => AuthenticationEvent::AuthenticationFailed(a),
            AuthenticationCommand::Succeed(a) => AuthenticationEvent::AuthenticationSucceeded(a),
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, _event: AuthenticationEvent) {
        self.recorded = true;
    }
}
