//! The `Session` aggregate: one signed-in user's session, from sign-in to revocation. The log
//! holds what audit and replay need — that it was created (how, by whom, from where), when it
//! changed organization, and when and why it ended. Refresh-token rotation is not an event: it
//! lives in `session_token` beside the log (docs/ARCHITECTURE.md, "Sessions and tokens").

mod aggregate;
mod events;

pub use aggregate::{Session, SessionCommand, SessionError, StartSession};
pub use events::{AuthMethod, Grant, RevokeReason, SessionEvent};
