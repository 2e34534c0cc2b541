//! The `OneTimeCode` aggregate: one issued code or token of a sign-in flow — a Magic Auth code,
//! an email verification code, a password reset token, an email change code — and, for a
//! password reset, its use. The secret itself never enters an event: it lives sealed in the
//! `one_time_code` table beside the log (with its attempts, expiry and use), so the log holds
//! only that it was issued, to whom, until when.

mod aggregate;
mod events;

pub use aggregate::{IssueCode, OneTimeCode, OneTimeCodeCommand, OneTimeCodeError};
pub use events::{OneTimeCodeEvent, Purpose};
