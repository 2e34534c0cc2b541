//! The `User` aggregate: an environment-wide user account (WorkOS "User Management" user).

mod aggregate;
mod commands;
mod events;

pub use aggregate::{User, UserError};
pub use commands::{CreateUser, SignUpUser, UpdateUser, UserCommand};
pub use events::{SignUpMethod, UserChanges, UserEvent};
