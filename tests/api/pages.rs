//! The server's HTML pages (hosted sign-in, Admin Portal) as a browser without JavaScript sees
//! them: one cookie remembered, forms posted with their CSRF token, redirects read and never
//! followed, every answer's security headers checkable.

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::helpers::TestApp;

/// A page as the browser got it.
pub(crate) struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The CSRF token of the page's forms (a tiny form reader: every form of a page carries the
    /// same token).
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf_token" value=""#;
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF token in {}", self.body));
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    /// Where the page redirects, if it does.
    pub fn location(&self) -> Option<String> {
        self.headers.get(LOCATION).map(|v| v.to_str().unwrap().to_string())
    }

    /// Where the page redirects; it must.
    pub fn redirect(&self) -> String {
        self.location()
            .unwrap_or_else(|| panic!("no Location ({}): {}", self.status, self.body))
    }

    /// The answer carries the pages' security headers; every answer but a redirect and the
    /// stylesheet is an HTML page that declares its language and holds no script.
    pub fn assert_secured(&self, what: &str) {
        let h = |n: &str| self.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        let csp = h("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
        assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("script-src"),
            "{what}: {csp}"
        );
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{what}");
        assert_eq!(h("referrer-policy").as_deref(), Some("no-referrer"), "{what}");
        assert_eq!(h("cache-control").as_deref(), Some("no-store"), "{what}");
        let css = h("content-type").is_some_and(|t| t.starts_with("text/css"));
        if self.status != StatusCode::SEE_OTHER && !css {
            assert!(self.body.contains(r#"<html lang="en">"#), "{what}: {}", self.body);
            assert!(!self.body.contains("<script"), "{what}");
        }
    }
}

/// A browser: no redirects followed, one cookie remembered (a `Max-Age=0` one forgets it). Every
/// cookie it is given must be `HttpOnly`, `SameSite=Lax` and, when the browser was made for one,
/// scoped to a path.
pub(crate) struct Browser {
    http: reqwest::Client,
    base: String,
    cookie_path: Option<&'static str>,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.base.clone(),
            cookie_path: None,
            cookie: None,
        }
    }

    /// A browser whose every cookie must carry `Path={path}`.
    pub fn scoped(app: &TestApp, path: &'static str) -> Self {
        Self {
            cookie_path: Some(path),
            ..Self::new(app)
        }
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let r = req.send().await.unwrap();
        for v in r.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            assert!(v.contains("HttpOnly") && v.contains("SameSite=Lax"), "{v}");
            if let Some(path) = self.cookie_path {
                assert!(v.contains(&format!("Path={path}")), "{v}");
            }
            let pair = v.split(';').next().unwrap().to_string();
            self.cookie = if v.contains("Max-Age=0") { None } else { Some(pair) };
        }
        let (status, headers) = (r.status(), r.headers().clone());
        Page {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    /// `path` on the server, or an absolute URL (a link).
    pub async fn get(&mut self, path: &str) -> Page {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let req = self.http.get(url);
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }
}
