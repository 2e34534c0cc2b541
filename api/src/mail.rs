//! The mailer: the plain-text emails of authentication (Magic Auth and verification codes,
//! password reset and invitation links, email change codes), sent over SMTP with `lettre`.
//! It owns the compiled-in templates and the bounded, fire-and-forget delivery. It never makes
//! an API caller wait on an SMTP server, never reports a delivery failure to one (failures are
//! logged and counted in `keyledger_mail_deliveries_total`), and never prints a code or link.
//!
//! Without `KEYLEDGER_SMTP_URL` the mailer is off and sends nothing: the codes and links are
//! only in the API's responses, WorkOS's "send your own email" mode.
//!
//! [`Mailer::send`] hands the mail to a background task and returns at once: an answer that
//! waited for SMTP would be as slow as the mail server, and its timing would tell whether a mail
//! was sent (whether an email exists). Each delivery takes at most the configured timeout
//! (connection and whole SMTP conversation); at most [`MAX_IN_FLIGHT`] run at once, and mails
//! beyond that are dropped (logged, counted) instead of queueing without bound behind a stalled
//! server. Deliveries still running when the process stops are lost; the codes stay valid, so
//! the user asks again.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;

/// The `From` of every mail unless `KEYLEDGER_EMAIL_FROM` says otherwise.
pub const DEFAULT_FROM: &str = "keyledger <no-reply@localhost>";

/// Default bound on one delivery (connecting, TLS, the whole SMTP conversation).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most deliveries running at once; [`Mailer::send`] drops mails beyond it.
pub const MAX_IN_FLIGHT: usize = 64;

/// One email, with what its template needs. Its `Debug` names the template only: the fields
/// are secrets (codes, links with tokens) or personal data.
#[derive(Clone, PartialEq, Eq)]
pub enum Mail {
    /// A Magic Auth sign-in code.
    MagicAuth { code: String },
    /// An email verification code.
    EmailVerification { code: String },
    /// A password reset link (it carries the reset token).
    PasswordReset { password_reset_url: String },
    /// The code that confirms changing an account's email to `new_email` (sent to `new_email`).
    EmailChange { code: String, new_email: String },
    /// An invitation, with the link that accepts it and the inviting organization's name.
    Invitation {
        accept_invitation_url: String,
        organization_name: Option<String>,
    },
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mail::{}", self.template())
    }
}

/// A template: `Subject: ...`, a blank line, then the body; `{{name}}` placeholders.
const MAGIC_AUTH: &str = include_str!("mail/magic_auth.txt");
const EMAIL_VERIFICATION: &str = include_str!("mail/email_verification.txt");
const PASSWORD_RESET: &str = include_str!("mail/password_reset.txt");
const EMAIL_CHANGE: &str = include_str!("mail/email_change.txt");
const INVITATION: &str = include_str!("mail/invitation.txt");
const INVITATION_ORGANIZATION: &str = include_str!("mail/invitation_organization.txt");

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

impl Mail {
    /// The template's name (a metrics label and log field).
    pub fn template(&self) -> &'static str {
        match self {
            Mail::MagicAuth { .. } => "magic_auth",
            Mail::EmailVerification { .. } => "email_verification",
            Mail::PasswordReset { .. } => "password_reset",
            Mail::EmailChange { .. } => "email_change",
            Mail::Invitation { .. } => "invitation",
        }
    }

    /// Subject and body, with the fields filled in.
    pub fn render(&self) -> Rendered {
        let (template, values): (&str, Vec<(&str, &str)>) = match self {
            Mail::MagicAuth { code } => (MAGIC_AUTH, vec![("code", code)]),
            Mail::EmailVerification { code } => (EMAIL_VERIFICATION, vec![("code", code)]),
            Mail::PasswordReset { password_reset_url } => {
                (PASSWORD_RESET, vec![("password_reset_url", password_reset_url)])
            }
            Mail::EmailChange { code, new_email } => (EMAIL_CHANGE, vec![("code", code), ("new_email", new_email)]),
            Mail::Invitation {
                accept_invitation_url,
                organization_name: None,
            } => (INVITATION, vec![("accept_invitation_url", accept_invitation_url)]),
            Mail::Invitation {
                accept_invitation_url,
                organization_name: Some(name),
            } => (
                INVITATION_ORGANIZATION,
                vec![
                    ("accept_invitation_url", accept_invitation_url),
                    ("organization_name", name),
                ],
            ),
        };
        let (head, body) = template.split_once("\n\n").unwrap_or(("", template));
        let subject = head.strip_prefix("Subject: ").unwrap_or(head);
        Rendered {
            subject: fill(subject.trim(), &values),
            body: fill(body, &values),
        }
    }
}

/// Replaces each `{{name}}` with its value in one pass (a value is never expanded again) and
/// turns control characters in values into spaces (no header injection through a subject, no
/// surprises in a body). An unknown placeholder stays as it is; the tests check none is left.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        match values.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => out.extend(v.chars().map(|c| if c.is_control() { ' ' } else { c })),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `KEYLEDGER_SMTP_URL`: `smtp://host:port` (plain), `smtp://host:port?tls=required` or
/// `?tls=opportunistic` (STARTTLS), `smtps://user:pass@host:465` (TLS from the start);
/// credentials percent-encoded. Its `Debug` and `Display` hide the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl(String);

impl SmtpUrl {
    /// The URL with its credentials replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let authority = rest.find(['/', '?']).unwrap_or(rest.len());
        match rest[..authority].rfind('@') {
            Some(at) => format!("{scheme}://***{}", &rest[at..]),
            None => self.0.clone(),
        }
    }

    fn transport(
        &self,
        timeout: Duration,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
        Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(&self.0)?
            .timeout(Some(timeout))
            .build())
    }
}

impl FromStr for SmtpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let url = SmtpUrl(s.trim().to_string());
        url.transport(DEFAULT_TIMEOUT).map_err(|e| {
            format!(
                "not an SMTP URL ({e}); expected smtp://host:port, smtp://host:port?tls=required or smtps://user:pass@host:port"
            )
        })?;
        Ok(url)
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({})", self.redacted())
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The mailer's settings (`Config::mail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// `None`: the mailer is off.
    pub smtp_url: Option<SmtpUrl>,
    /// The `From` mailbox, e.g. `Example <no-reply@example.com>`.
    pub from: String,
    /// Bound on one delivery.
    pub timeout: Duration,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: DEFAULT_FROM.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What became of one mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The SMTP server accepted it.
    Sent,
    /// The mailer is off (no SMTP URL): nothing was attempted.
    Disabled,
    /// The recipient is not an email address.
    InvalidRecipient,
    /// The server refused it, or could not be reached.
    Failed,
    /// The delivery took longer than the timeout.
    TimedOut,
    /// [`MAX_IN_FLIGHT`] deliveries were already running.
    Dropped,
}

impl Delivery {
    fn label(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Disabled => "disabled",
            Delivery::InvalidRecipient => "invalid_recipient",
            Delivery::Failed => "failed",
            Delivery::TimedOut => "timed_out",
            Delivery::Dropped => "dropped",
        }
    }
}

/// Sends the mails; clones share one transport and one in-flight bound.
#[derive(Clone)]
pub struct Mailer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    from: Mailbox,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(i) => write!(f, "Mailer({})", i.server),
            None => f.write_str("Mailer(disabled)"),
        }
    }
}

impl Mailer {
    /// The mailer of `config`; an unparsable URL or `From` is a start-up error. Connects to
    /// nothing until the first mail.
    pub fn new(config: &MailConfig) -> anyhow::Result<Self> {
        let Some(url) = &config.smtp_url else {
            return Ok(Self::disabled());
        };
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("KEYLEDGER_EMAIL_FROM {:?} is not a mailbox", config.from))?;
        let transport = url
            .transport(config.timeout)
            .with_context(|| format!("configuring SMTP for {url}"))?;
        tracing::info!(server = %url, from = %from, "authentication emails are sent through this SMTP server");
        Ok(Self {
            inner: Some(Arc::new(Inner {
                transport,
                server: url.redacted(),
                from,
                timeout: config.timeout,
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            })),
        })
    }

    /// A mailer that sends nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Sends `mail` to `to` in the background and returns at once (see the module doc);
    /// the outcome is logged and counted, never returned.
    pub async fn send(&self, to: &str, mail: Mail) {
        let Some(inner) = &self.inner else {
            crate::metrics::mail_delivery(mail.template(), Delivery::Disabled.label());
            return;
        };
        let Ok(permit) = inner.in_flight.clone().try_acquire_owned() else {
            tracing::error!(
                template = mail.template(),
                limit = MAX_IN_FLIGHT,
                "too many mails in flight; mail dropped"
            );
            crate::metrics::mail_delivery(mail.template(), Delivery::Dropped.label());
            return;
        };
        let inner = inner.clone();
        let to = to.to_string();
        tokio::spawn(async move {
            inner.deliver(&to, &mail).await;
            drop(permit);
        });
    }

    /// Sends `mail` to `to` and waits for the outcome (at most the timeout): what
    /// [`Mailer::send`] runs in the background. Logged and counted like it.
    pub async fn deliver(&self, to: &str, mail: Mail) -> Delivery {
        match &self.inner {
            Some(inner) => inner.deliver(to, &mail).await,
            None => {
                crate::metrics::mail_delivery(mail.template(), Delivery::Disabled.label());
                Delivery::Disabled
            }
        }
    }
}

impl Inner {
    async fn deliver(&self, to: &str, mail: &Mail) -> Delivery {
        let outcome = self.attempt(to, mail).await;
        crate::metrics::mail_delivery(mail.template(), outcome.label());
        outcome
    }

    async fn attempt(&self, to: &str, mail: &Mail) -> Delivery {
        let template = mail.template();
        let Ok(to) = to.parse::<Mailbox>() else {
            tracing::error!(template, "mail not sent: the recipient is not an email address");
            return Delivery::InvalidRecipient;
        };
        let Rendered { subject, body } = mail.render();
        let message = match Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
        {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(template, error = %e, "mail not sent: building the message failed");
                return Delivery::Failed;
            }
        };
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => {
                tracing::debug!(template, server = %self.server, "mail sent");
                Delivery::Sent
            }
            Ok(Err(e)) => {
                tracing::error!(template, server = %self.server, error = %e, "mail not sent: SMTP failed");
                Delivery::Failed
            }
            Err(_) => {
                tracing::error!(template, server = %self.server, timeout = ?self.timeout, "mail not sent: SMTP timed out");
                Delivery::TimedOut
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_mail() -> Vec<Mail> {
        vec![
            Mail::MagicAuth { code: "123456".into() },
            Mail::EmailVerification { code: "234567".into() },
            Mail::PasswordReset {
                password_reset_url: "https://app.example.com/reset?token=tok_abc".into(),
            },
            Mail::EmailChange {
                code: "345678".into(),
                new_email: "new@example.com".into(),
            },
            Mail::Invitation {
                accept_invitation_url: "https://app.example.com/invite?token=inv_abc".into(),
                organization_name: None,
            },
            Mail::Invitation {
                accept_invitation_url: "https://app.example.com/invite?token=inv_def".into(),
                organization_name: Some("Acme".into()),
            },
        ]
    }

    #[test]
    fn every_template_has_a_subject_and_fills_every_placeholder() {
        for mail in every_mail() {
            let r = mail.render();
            assert!(!r.subject.is_empty(), "{mail:?}: empty subject");
            assert!(!r.subject.starts_with("Subject"), "{mail:?}: {}", r.subject);
            assert!(!r.body.is_empty(), "{mail:?}: empty body");
            for text in [&r.subject, &r.body] {
                assert!(!text.contains("{{"), "{mail:?}: placeholder left in {text:?}");
            }
        }
    }

    #[test]
    fn each_template_carries_its_fields() {
        let all = every_mail();
        let body = |i: usize| all[i].render().body;
        assert!(body(0).contains("123456"));
        assert!(body(1).contains("234567"));
        assert!(body(2).contains("https://app.example.com/reset?token=tok_abc"));
        assert!(body(3).contains("345678") && body(3).contains("new@example.com"));
        assert!(body(4).contains("https://app.example.com/invite?token=inv_abc"));
        assert!(body(5).contains("inv_def") && body(5).contains("Acme"));
        assert!(all[5].render().subject.contains("Acme"));
    }

    #[test]
    fn values_are_filled_once_and_lose_control_characters() {
        let out = fill(
            "a {{x}} b {{y}} {{unknown}} {{",
            &[("x", "{{y}}"), ("y", "1\r\nBcc: evil")],
        );
        assert_eq!(out, "a {{y}} b 1  Bcc: evil {{unknown}} {{");
    }

    #[test]
    fn debug_never_prints_secrets() {
        for mail in every_mail() {
            let shown = format!("{mail:?}");
            assert!(!shown.contains("token") && !shown.contains("23456"), "{shown}");
        }
        let url: SmtpUrl = "smtps://user:s3cret@mail.example.com:465".parse().unwrap();
        assert_eq!(format!("{url:?}"), "SmtpUrl(smtps://***@mail.example.com:465)");
        assert!(!format!("{url}").contains("s3cret"));
    }

    #[test]
    fn smtp_urls_are_checked_when_parsed() {
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com:587?tls=required",
            "smtp://mail.example.com?tls=opportunistic",
            "smtps://user:pa%40ss@mail.example.com:465",
        ] {
            assert!(ok.parse::<SmtpUrl>().is_ok(), "{ok}");
        }
        for bad in ["", "mail.example.com", "http://mail.example.com", "smtp://x?tls=maybe"] {
            assert!(bad.parse::<SmtpUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_from_is_a_mailbox() {
        let from: Mailbox = DEFAULT_FROM.parse().unwrap();
        assert_eq!(from.email.to_string(), "no-reply@localhost");
    }
}
