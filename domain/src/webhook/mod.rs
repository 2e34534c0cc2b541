//! The `WebhookEndpoint` aggregate: an environment-wide receiver of the public event feed, its
//! URL, event filter and status. Its signing secret is never in an event: the API hands it to the
//! event store as an append extra, which writes it to its own table in the append's transaction.

mod aggregate;
mod events;

pub use aggregate::{UpdateWebhookEndpoint, WebhookEndpoint, WebhookEndpointCommand, WebhookEndpointError};
pub use events::{WebhookEndpointChanges, WebhookEndpointEvent};
