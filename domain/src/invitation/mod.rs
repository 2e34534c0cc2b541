//! The `Invitation` aggregate: an invitation of an email address to the application or to one
//! organization, from sending to acceptance, revocation or expiry. "One pending invitation per
//! organization and email" is a claim taken at creation and given back when it ends. The token
//! that accepts it never enters an event: it lives sealed beside the log (`invitation_token`).

mod aggregate;
mod events;

pub use aggregate::{CreateInvitation, Invitation, InvitationCommand, InvitationError, InvitationState};
pub use events::InvitationEvent;
