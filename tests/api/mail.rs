//! `keyledger_api::mail` against a real SMTP server (`tests/smtp_sink.py`, aiosmtpd): every
//! template arrives with its To, From, Subject and code or link; an unreachable or stalled
//! server costs a bounded time and is counted, never waited on by `send`; without an SMTP URL
//! nothing is attempted. Metrics are process-wide, so their assertions are lower bounds.

use std::time::{Duration, Instant};

use keyledger_api::mail::{Delivery, Mail, MailConfig, Mailer, MAX_IN_FLIGHT};
use tokio::net::TcpListener;

use crate::smtp::SmtpSink;

fn mailer(url: &str, from: &str, timeout: Duration) -> Mailer {
    Mailer::new(&MailConfig {
        smtp_url: Some(url.parse().expect("SMTP URL")),
        from: from.to_string(),
        timeout,
    })
    .expect("mailer")
}

/// The count of `keyledger_mail_deliveries_total{template, outcome}` so far.
fn delivered(template: &str, outcome: &str) -> f64 {
    let text = keyledger_api::metrics::handle().expect("recorder").render();
    let series = format!("keyledger_mail_deliveries_total{{template=\"{template}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// A loopback port where nothing listens (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An "SMTP server" that accepts connections and never says a word.
async fn stalled_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn every_template_arrives_with_its_recipient_sender_subject_and_code_or_link() {
    let sink = SmtpSink::start().await;
    let m = mailer(&sink.url(), "Acme Sign-in <auth@acme.test>", Duration::from_secs(10));
    // Long links: a mail's lines are folded or encoded, the link must survive either.
    let token = "t".repeat(120);
    let cases = [
        (
            "magic@example.com",
            Mail::MagicAuth { code: "482913".into() },
            "Your sign-in code",
            vec!["482913".to_string()],
        ),
        (
            "verify@example.com",
            Mail::EmailVerification { code: "730155".into() },
            "Verify your email address",
            vec!["730155".to_string()],
        ),
        (
            "reset@example.com",
            Mail::PasswordReset {
                password_reset_url: format!("https://app.acme.test/reset-password?token={token}"),
            },
            "Reset your password",
            vec![format!("https://app.acme.test/reset-password?token={token}")],
        ),
        (
            "new-address@example.com",
            Mail::EmailChange {
                code: "118822".into(),
                new_email: "new-address@example.com".into(),
            },
            "Confirm your new email address",
            vec!["118822".to_string(), "new-address@example.com".to_string()],
        ),
        (
            "invitee@example.com",
            Mail::Invitation {
                accept_invitation_url: format!("https://app.acme.test/invite?token={token}"),
                organization_name: None,
            },
            "You have been invited",
            vec![format!("https://app.acme.test/invite?token={token}")],
        ),
        (
            "joiner@example.com",
            Mail::Invitation {
                accept_invitation_url: "https://app.acme.test/invite?token=inv_2".into(),
                organization_name: Some("Zürich Widgets".into()),
            },
            "You have been invited to join Zürich Widgets",
            vec![
                "https://app.acme.test/invite?token=inv_2".to_string(),
                "Zürich Widgets".to_string(),
            ],
        ),
    ];
    for (to, mail, _, _) in &cases {
        assert_eq!(m.deliver(to, mail.clone()).await, Delivery::Sent, "{mail:?}");
    }
    let got = sink.wait_for(cases.len()).await;
    assert_eq!(got.len(), cases.len());
    for ((to, mail, subject, needles), msg) in cases.iter().zip(&got) {
        assert_eq!(msg.rcpt_tos, vec![to.to_string()], "{mail:?}");
        assert_eq!(msg.mail_from, "auth@acme.test", "{mail:?}");
        assert_eq!(msg.to, *to, "{mail:?}");
        assert_eq!(msg.from, "Acme Sign-in <auth@acme.test>", "{mail:?}");
        assert_eq!(msg.subject, *subject, "{mail:?}");
        assert_eq!(msg.content_type, "text/plain", "{mail:?}");
        for needle in needles {
            assert!(
                msg.body.contains(needle.as_str()),
                "{mail:?}: {needle} not in {:?}",
                msg.body
            );
        }
        assert!(
            msg.raw.contains("\nDate: ") || msg.raw.starts_with("Date: "),
            "{}",
            msg.raw
        );
    }
}

#[tokio::test]
async fn send_returns_at_once_and_the_mail_arrives_from_the_default_sender() {
    let sink = SmtpSink::start().await;
    let m = mailer(&sink.url(), keyledger_api::mail::DEFAULT_FROM, Duration::from_secs(10));
    let before = delivered("magic_auth", "sent");
    let started = Instant::now();
    m.send("someone@example.com", Mail::MagicAuth { code: "555111".into() })
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].from, "keyledger <no-reply@localhost>");
    assert_eq!(got[0].rcpt_tos, vec!["someone@example.com".to_string()]);
    assert!(got[0].body.contains("555111"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while delivered("magic_auth", "sent") < before + 1.0 {
        assert!(Instant::now() < deadline, "the delivery was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unreachable_smtp_server_fails_quickly_and_is_counted_not_raised() {
    let m = mailer(
        &format!("smtp://127.0.0.1:{}", closed_port()),
        keyledger_api::mail::DEFAULT_FROM,
        Duration::from_secs(5),
    );
    let before = delivered("password_reset", "failed");
    let started = Instant::now();
    let outcome = m
        .deliver(
            "a@example.com",
            Mail::PasswordReset {
                password_reset_url: "https://x.test/r?token=1".into(),
            },
        )
        .await;
    assert_eq!(outcome, Delivery::Failed);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(delivered("password_reset", "failed") >= before + 1.0);
}

#[tokio::test]
async fn a_stalled_smtp_server_times_out_and_send_never_waits_for_it() {
    let (port, server) = stalled_server().await;
    let m = mailer(
        &format!("smtp://127.0.0.1:{port}"),
        keyledger_api::mail::DEFAULT_FROM,
        Duration::from_millis(500),
    );
    let started = Instant::now();
    let outcome = m
        .deliver("a@example.com", Mail::EmailVerification { code: "1".into() })
        .await;
    assert_eq!(outcome, Delivery::TimedOut);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let before = delivered("email_verification", "timed_out");
    let started = Instant::now();
    m.send("b@example.com", Mail::EmailVerification { code: "2".into() })
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while delivered("email_verification", "timed_out") < before + 1.0 {
        assert!(Instant::now() < deadline, "the background timeout was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.abort();
}

#[tokio::test]
async fn mails_beyond_the_in_flight_bound_are_dropped_not_queued() {
    let (port, server) = stalled_server().await;
    let m = mailer(
        &format!("smtp://127.0.0.1:{port}"),
        keyledger_api::mail::DEFAULT_FROM,
        Duration::from_secs(5),
    );
    let before = delivered("email_change", "dropped");
    let started = Instant::now();
    for i in 0..MAX_IN_FLIGHT + 3 {
        m.send(
            &format!("u{i}@example.com"),
            Mail::EmailChange {
                code: "9".into(),
                new_email: format!("u{i}@example.com"),
            },
        )
        .await;
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(delivered("email_change", "dropped") >= before + 3.0);
    server.abort();
}

#[tokio::test]
async fn a_recipient_that_is_no_email_address_is_refused_before_any_smtp() {
    let sink = SmtpSink::start().await;
    let m = mailer(&sink.url(), keyledger_api::mail::DEFAULT_FROM, Duration::from_secs(5));
    for to in ["", "not-an-address", "a@b.test, c@d.test", "x@y.test\r\nBcc: z@w.test"] {
        let outcome = m.deliver(to, Mail::MagicAuth { code: "1".into() }).await;
        assert_eq!(outcome, Delivery::InvalidRecipient, "{to:?}");
    }
    // Line breaks in a field cannot add headers or recipients.
    let outcome = m
        .deliver(
            "ok@example.com",
            Mail::Invitation {
                accept_invitation_url: "https://x.test/i?token=2".into(),
                organization_name: Some("Acme\r\nBcc: evil@example.com".into()),
            },
        )
        .await;
    assert_eq!(outcome, Delivery::Sent);
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_tos, vec!["ok@example.com".to_string()]);
    assert!(!got[0].raw.to_ascii_lowercase().contains("\nbcc:"), "{}", got[0].raw);
}

#[tokio::test]
async fn without_an_smtp_url_the_mailer_is_off_and_attempts_nothing() {
    let m = Mailer::new(&MailConfig::default()).expect("mailer");
    assert!(!m.is_enabled());
    let before = delivered("magic_auth", "disabled");
    assert_eq!(
        m.deliver("a@example.com", Mail::MagicAuth { code: "1".into() }).await,
        Delivery::Disabled
    );
    m.send("a@example.com", Mail::MagicAuth { code: "2".into() }).await;
    assert!(delivered("magic_auth", "disabled") >= before + 2.0);
    // Not even the From is looked at while the mailer is off.
    let off = Mailer::new(&MailConfig {
        from: "not a mailbox".into(),
        ..MailConfig::default()
    })
    .expect("an off mailer ignores From");
    assert!(!off.is_enabled());
}

#[tokio::test]
async fn a_from_that_is_no_mailbox_stops_the_start() {
    let err = Mailer::new(&MailConfig {
        smtp_url: Some("smtp://127.0.0.1:2525".parse().expect("URL")),
        from: "keyledger".into(),
        ..MailConfig::default()
    })
    .expect_err("refused");
    assert!(format!("{err:#}").contains("KEYLEDGER_EMAIL_FROM"), "{err:#}");
}

#[tokio::test]
async fn a_server_with_an_smtp_url_builds_and_serves() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = crate::helpers::TestApp::spawn_with(|c| {
        c.mail.smtp_url = Some(url.parse().expect("URL"));
        c.mail.from = "Acme <auth@acme.test>".into();
    })
    .await;
    let (status, _) = app.get("/health").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_tls_url_never_falls_back_to_plain_text() {
    let sink = SmtpSink::start().await;
    for url in [
        // STARTTLS required, and this server does not offer it.
        format!("smtp://127.0.0.1:{}?tls=required", sink.port),
        // TLS from the first byte, and this server speaks plain SMTP.
        format!("smtps://127.0.0.1:{}", sink.port),
    ] {
        let m = mailer(&url, keyledger_api::mail::DEFAULT_FROM, Duration::from_secs(3));
        let started = Instant::now();
        let outcome = m
            .deliver("a@example.com", Mail::MagicAuth { code: "424242".into() })
            .await;
        assert!(
            matches!(outcome, Delivery::Failed | Delivery::TimedOut),
            "{url}: {outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{url}: {:?}",
            started.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sink.messages().is_empty(), "a mail went out in plain text");
}
