//! The hosted pages' HTML, compiled into the binary (`maud`): every value is escaped, there is
//! no script at all, and the only style is the served stylesheet (`CSS`). Each page has a
//! `lang`, a label for every input, its errors tied to their field (`aria-describedby`,
//! `aria-invalid`) and announced (`role="alert"`); plain forms and links, usable by keyboard.

use maud::{html, Markup, DOCTYPE};

/// The stylesheet every page links (`GET /user_management/authorize/hosted.css`). Colours keep
/// a contrast ratio of at least 7:1 for text and a visible focus ring.
pub const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f4f5f7;color:#111827;line-height:1.5}\
main{max-width:26rem;margin:3rem auto;padding:2rem;background:#fff;border:1px solid #d1d5db;border-radius:.5rem}\
h1{font-size:1.5rem;margin:0 0 1rem}\
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}\
.field{margin:0 0 1rem}\
label{display:block;font-weight:600;margin:0 0 .25rem}\
input[type=email],input[type=password],input[type=text]{width:100%;padding:.6rem;font-size:1rem;border:2px solid #4b5563;border-radius:.25rem;color:#111827;background:#fff}\
input[aria-invalid=true]{border-color:#b91c1c}\
fieldset{border:0;margin:0 0 1rem;padding:0}\
legend{font-weight:600;margin:0 0 .5rem}\
.choice{display:flex;gap:.5rem;align-items:center;margin:0 0 .5rem}\
.choice label{font-weight:400;margin:0}\
button{width:100%;padding:.7rem;font-size:1rem;font-weight:600;border:0;border-radius:.25rem;background:#1e3a8a;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#1e3a8a;border:2px solid #1e3a8a}\
a{color:#1e3a8a}\
:focus-visible{outline:3px solid #b45309;outline-offset:2px}\
.error{color:#b91c1c;font-weight:600;margin:.25rem 0 0}\
.notice{background:#eff6ff;border:1px solid #1e3a8a;padding:.75rem;border-radius:.25rem}\
";

/// Where the pages post and link (all under the flow cookie's path).
pub mod paths {
    pub const AUTHORIZE: &str = "/user_management/authorize";
    pub const SIGN_IN: &str = "/user_management/authorize/sign_in";
    pub const SIGN_UP: &str = "/user_management/authorize/sign_up";
    pub const PASSWORD: &str = "/user_management/authorize/password";
    pub const MAGIC_AUTH: &str = "/user_management/authorize/magic_auth";
    pub const MAGIC_AUTH_CODE: &str = "/user_management/authorize/magic_auth/code";
    pub const EMAIL_VERIFICATION: &str = "/user_management/authorize/email_verification";
    pub const ORGANIZATION: &str = "/user_management/authorize/organization";
    pub const CSS: &str = "/user_management/authorize/hosted.css";
}

/// A message about one field of a form (or the form as a whole: `field` "form").
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The page every hosted answer (sign-in, Admin Portal) is laid out in.
pub(crate) fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                link rel="stylesheet" href=(paths::CSS);
            }
            body {
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(token); }
}

/// A form-wide error (not tied to one field), announced.
pub(crate) fn form_error(error: Option<&FieldError>) -> Markup {
    html! {
        @if let Some(e) = error.filter(|e| e.field == "form") {
            p.error #form-error role="alert" { (e.message) }
        }
    }
}

/// One labelled input, its error (if about it) tied to it.
#[allow(clippy::too_many_arguments, reason = "one input's attributes")]
pub(crate) fn input(
    id: &str,
    name: &str,
    label: &str,
    kind: &str,
    value: Option<&str>,
    autocomplete: &str,
    required: bool,
    error: Option<&FieldError>,
) -> Markup {
    let message = error.filter(|e| e.field == name).map(|e| e.message.as_str());
    let error_id = format!("{id}-error");
    html! {
        div.field {
            label for=(id) { (label) }
            input #(id) type=(kind) name=(name) value=[value] autocomplete=(autocomplete) required[required]
                aria-invalid=[message.map(|_| "true")] aria-describedby=[message.map(|_| error_id.as_str())];
            @if let Some(m) = message {
                p.error #(error_id) role="alert" { (m) }
            }
        }
    }
}

/// Sign in: email and password; or a one-time code by email; a link to sign up.
pub fn sign_in(token: &str, email: Option<&str>, error: Option<&FieldError>) -> Markup {
    layout(
        "Sign in",
        html! {
            (form_error(error))
            form method="post" action=(paths::PASSWORD) {
                (csrf(token))
                (input("email", "email", "Email", "email", email, "username", true, error))
                (input("password", "password", "Password", "password", None, "current-password", true, error))
                button type="submit" { "Sign in" }
            }
            h2 { "Or sign in without a password" }
            form method="post" action=(paths::MAGIC_AUTH) {
                (csrf(token))
                (input("magic-email", "magic_email", "Email", "email", email, "username", true, error))
                button.secondary type="submit" { "Email me a code" }
            }
            p { "No account yet? " a href=(paths::SIGN_UP) { "Sign up" } }
        },
    )
}

/// What the sign-up form keeps when shown again.
#[derive(Debug, Default, Clone)]
pub struct SignUpValues {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// Sign up: email, password, first and last name.
pub fn sign_up(token: &str, v: &SignUpValues, error: Option<&FieldError>) -> Markup {
    layout(
        "Create your account",
        html! {
            (form_error(error))
            form method="post" action=(paths::SIGN_UP) {
                (csrf(token))
                (input("email", "email", "Email", "email", v.email.as_deref(), "email", true, error))
                (input("password", "password", "Password (at least 8 characters)", "password", None, "new-password", true, error))
                (input("first-name", "first_name", "First name", "text", v.first_name.as_deref(), "given-name", false, error))
                (input("last-name", "last_name", "Last name", "text", v.last_name.as_deref(), "family-name", false, error))
                button type="submit" { "Create account" }
            }
            p { "Already have an account? " a href=(paths::SIGN_IN) { "Sign in" } }
        },
    )
}

/// The one-time code form (Magic Auth or email verification).
fn code_form(title: &str, action: &str, token: &str, notice: Markup, error: Option<&FieldError>) -> Markup {
    layout(
        title,
        html! {
            p.notice role="status" { (notice) }
            (form_error(error))
            form method="post" action=(action) {
                (csrf(token))
                (input("code", "code", "Code", "text", None, "one-time-code", true, error))
                button type="submit" { "Continue" }
            }
            p { a href=(paths::SIGN_IN) { "Back to sign in" } }
        },
    )
}

/// Enter the Magic Auth code sent to `email`.
pub fn magic_code(token: &str, email: &str, error: Option<&FieldError>) -> Markup {
    code_form(
        "Check your email",
        paths::MAGIC_AUTH_CODE,
        token,
        html! { "We sent a sign-in code to " strong { (email) } "." },
        error,
    )
}

/// Enter the email verification code sent to `email`.
pub fn email_verification(token: &str, email: &str, error: Option<&FieldError>) -> Markup {
    code_form(
        "Verify your email",
        paths::EMAIL_VERIFICATION,
        token,
        html! { "We sent a verification code to " strong { (email) } ". Enter it to continue." },
        error,
    )
}

/// Pick one of the user's organizations: (id, name) each.
pub fn organizations(token: &str, choices: &[(String, String)], error: Option<&FieldError>) -> Markup {
    let message = error
        .filter(|e| e.field == "organization_id")
        .map(|e| e.message.as_str());
    layout(
        "Choose an organization",
        html! {
            (form_error(error))
            form method="post" action=(paths::ORGANIZATION) {
                (csrf(token))
                fieldset aria-describedby=[message.map(|_| "organization-error")] {
                    legend { "Sign in to" }
                    @for (i, (id, name)) in choices.iter().enumerate() {
                        div.choice {
                            input #(format!("organization-{i}")) type="radio" name="organization_id" value=(id) required checked[i == 0];
                            label for=(format!("organization-{i}")) { (name) }
                        }
                    }
                    @if let Some(m) = message {
                        p.error #organization-error role="alert" { (m) }
                    }
                }
                button type="submit" { "Continue" }
            }
        },
    )
}

/// On the way to an identity provider: the page moves on by itself (meta refresh) and offers
/// the link, for browsers that do not refresh.
pub fn continue_to(url: &str) -> Markup {
    let title = "Continue to your organization's sign-in";
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                meta http-equiv="refresh" content=(format!("0;url={url}"));
                title { (title) }
                link rel="stylesheet" href=(paths::CSS);
            }
            body {
                main {
                    h1 { (title) }
                    p { "Your organization signs you in with its identity provider." }
                    p { a href=(url) { "Continue" } }
                }
            }
        }
    }
}

/// An error page: nothing to do here but read it (never a redirect).
pub fn error(title: &str, message: &str) -> Markup {
    layout(
        title,
        html! {
            p.error role="alert" { (message) }
            p { "Return to the application you came from and start signing in again." }
        },
    )
}
