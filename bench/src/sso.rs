//! SSO and the hosted pages, against the server running in this process (`build` on
//! 127.0.0.1:0) and the test OpenID provider (`tests/idp/oidc/idp.js`, node, on loopback):
//! the hosted sign-in page (`GET /user_management/authorize`) under concurrent load, and full OIDC
//! sign-in round trips (authorize → the IdP's login form → keyledger's callback → `POST
//! /sso/token`), one at a time and then concurrently, each hop timed, so the share of the round
//! trip spent in keyledger (authorize, callback, token) is reported beside the IdP's.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keyledger_api::{build, Config, Running};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::http::http_clients;
use crate::load::{closed_loop, ms, Stats};
use crate::report::Row;
use crate::support::Bench;

/// Connections loading the hosted sign-in page.
const PAGE_CONNECTIONS: usize = 8;
/// Concurrent round trips in the second SSO run (the first runs one at a time).
const SSO_CONCURRENT: usize = 4;
/// The application's callback: registered, never visited (the bench reads the code from the
/// redirect).
const APP_CALLBACK: &str = "http://127.0.0.1:9/app/callback";
const IDP_SECRET: &str = "bench-idp-client-secret";
const IDP_PASSWORD: &str = "idp-password";
const EMAIL: &str = "ann.lee@acme.com";

struct Server {
    running: Running,
    pool: PgPool,
    base: String,
    key: String,
    client_id: String,
}

impl Server {
    async fn start(b: &mut Bench) -> anyhow::Result<Server> {
        let url = b.create_database("sso").await?;
        let pool = keyledger_api::connect(&url).await?;
        keyledger_api::migrate(&pool).await?;
        let key = keyledger_api::auth::create_key(&pool, "bench")
            .await
            .context("creating an API key")?;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().context("parsing the listen address")?,
            dns_nameserver: None,
            read_your_writes: Duration::from_secs(5),
            // The SSRF guard stays on; the IdP lives on loopback only.
            webhook_allow: keyledger_api::ssrf::WebhookAllow::loopback(),
            ..Config::default()
        };
        config.auth.redirect_uris = vec![APP_CALLBACK.into()];
        config.rate_limits.authenticate_per_ip = 0;
        let running = build(pool.clone(), config).await.context("starting the server")?;
        let base = format!("http://{}", running.addr);
        let client_id = running.tokens.client_id().to_string();
        Ok(Server {
            running,
            pool,
            base,
            key,
            client_id,
        })
    }
}

/// The test OpenID provider, killed when dropped.
struct Idp {
    issuer: String,
    _child: Child,
}

impl Idp {
    async fn start(callback: &str) -> anyhow::Result<Idp> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/idp/oidc/idp.js");
        let client = json!({ "client_id": "kl", "client_secret": IDP_SECRET, "redirect_uris": [callback] });
        let mut child = Command::new("node")
            .arg(script)
            .args(["--port", "0", "--client", &client.to_string()])
            .env("IDP_PASSWORD", IDP_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the test IdP (node {script}; run npm ci in tests/idp/oidc)"))?;
        let stdout = child.stdout.take().context("the IdP's stdout")?;
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut line))
            .await
            .context("the test IdP did not start within 30 s")?
            .context("reading the IdP's first line")?;
        let v: Value = serde_json::from_str(line.trim()).with_context(|| format!("the IdP said {line:?}"))?;
        let issuer = v["issuer"]
            .as_str()
            .with_context(|| format!("no issuer in {line:?}"))?
            .to_string();
        Ok(Idp { issuer, _child: child })
    }
}

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    let server = Server::start(b).await?;
    let result = stages(b, &server).await;
    server.running.stop().await.context("stopping the server")?;
    server.pool.close().await;
    result
}

async fn stages(b: &mut Bench, server: &Server) -> anyhow::Result<()> {
    hosted_page(b, server).await?;
    let idp = Idp::start(&format!("{}/sso/oidc/callback", server.base)).await?;
    let connection = setup_connection(server, &idp).await?;
    let authorize = authorize_url(server, &connection)?;
    discovery_reference(b, &idp).await?;
    for workers in [1, SSO_CONCURRENT] {
        round_trips(b, server, &idp, &authorize, workers).await?;
    }
    Ok(())
}

/// `GET /user_management/authorize` (the sign-in page, server-rendered) at `PAGE_CONNECTIONS`.
async fn hosted_page(b: &mut Bench, server: &Server) -> anyhow::Result<()> {
    eprintln!("  hosted sign-in page, {PAGE_CONNECTIONS} connections...");
    let mut url = Url::parse(&format!("{}/user_management/authorize", server.base)).context("page URL")?;
    url.query_pairs_mut()
        .append_pair("client_id", &server.client_id)
        .append_pair("redirect_uri", APP_CALLBACK)
        .append_pair("response_type", "code")
        .append_pair("state", "bench-state");
    let url = url.to_string();
    let clients = http_clients(PAGE_CONNECTIONS)?;
    let stats = closed_loop(PAGE_CONNECTIONS, b.warmup, b.window, move |w, _| {
        let client = clients[w].clone();
        let url = url.clone();
        async move {
            let r = client.get(&url).send().await.context("GET")?;
            let status = r.status();
            let body = r.bytes().await.context("reading the page")?;
            if status != StatusCode::OK || !body.starts_with(b"<!DOCTYPE") && !body.starts_with(b"<!doctype") {
                bail!("the sign-in page answered {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
    })
    .await?;
    let p99 = stats.percentile(0.99);
    b.rows.push(Row::absolute(
        format!("GET /user_management/authorize (hosted sign-in page), {PAGE_CONNECTIONS} connections: p99"),
        format!(
            "{} (p50 {}, {:.0} req/s)",
            ms(p99),
            ms(stats.percentile(0.5)),
            stats.rate()
        ),
        "< 10 ms",
        p99 < Duration::from_millis(10),
    ));
    Ok(())
}

/// Fetches of the IdP's discovery document and JWKS, one after the other, as keyledger's
/// `discover` does (openidconnect's `discover_async`: both, at every authorize and callback):
/// what that back channel costs inside keyledger's hops.
async fn discovery_reference(b: &mut Bench, idp: &Idp) -> anyhow::Result<()> {
    const FETCHES: usize = 200;
    eprintln!("  the IdP's discovery + JWKS, {FETCHES} times...");
    let http = reqwest::Client::new();
    let discovery = format!("{}/.well-known/openid-configuration", idp.issuer);
    let mut latencies = Vec::with_capacity(FETCHES);
    let t = Instant::now();
    for _ in 0..FETCHES {
        let t0 = Instant::now();
        let doc: Value = http
            .get(&discovery)
            .send()
            .await
            .context("GET discovery")?
            .error_for_status()
            .context("discovery")?
            .json()
            .await
            .context("parsing discovery")?;
        let jwks = doc["jwks_uri"].as_str().context("no jwks_uri")?;
        http.get(jwks)
            .send()
            .await
            .context("GET jwks")?
            .error_for_status()
            .context("jwks")?
            .bytes()
            .await
            .context("reading the JWKS")?;
        latencies.push(t0.elapsed());
    }
    let stats = Stats::from_latencies(latencies, t.elapsed());
    b.rows.push(Row::reference(
        "the IdP's discovery document + JWKS, fetched one after the other (what keyledger fetches at each authorize and callback)",
        format!("p50 {}, p99 {}", ms(stats.percentile(0.5)), ms(stats.percentile(0.99))),
    ));
    Ok(())
}

/// An organization and an active OIDC connection to the IdP; its id.
async fn setup_connection(server: &Server, idp: &Idp) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let org: Value = admin_post(
        &http,
        server,
        "/organizations",
        &json!({ "name": "Acme", "domain_data": [{ "domain": "acme.com", "state": "verified" }] }),
    )
    .await?;
    let org_id = org["id"].as_str().context("organization id")?;
    let c = admin_post(
        &http,
        server,
        "/connections",
        &json!({ "organization_id": org_id, "name": "Acme IdP", "oidc_options": {
            "discovery_endpoint": format!("{}/.well-known/openid-configuration", idp.issuer),
            "client_id": "kl", "client_secret": IDP_SECRET } }),
    )
    .await?;
    if c["state"] != "active" {
        bail!("the connection is not active: {c}");
    }
    Ok(c["id"].as_str().context("connection id")?.to_string())
}

async fn admin_post(http: &reqwest::Client, server: &Server, path: &str, body: &Value) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{}{path}", server.base))
        .bearer_auth(&server.key)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = r.status();
    let text = r.bytes().await.context("reading the response")?;
    if !status.is_success() {
        bail!("POST {path} answered {status}: {}", String::from_utf8_lossy(&text));
    }
    serde_json::from_slice(&text).context("parsing the response")
}

fn authorize_url(server: &Server, connection: &str) -> anyhow::Result<String> {
    let mut u = Url::parse(&format!("{}/sso/authorize", server.base)).context("authorize URL")?;
    u.query_pairs_mut()
        .append_pair("connection", connection)
        .append_pair("client_id", &server.client_id)
        .append_pair("redirect_uri", APP_CALLBACK)
        .append_pair("response_type", "code")
        .append_pair("state", "bench-state")
        .append_pair("login_hint", EMAIL);
    Ok(u.to_string())
}

/// What a round trip needs of the server.
struct Target {
    base: String,
    client_id: String,
    key: String,
}

/// Who answers a hop of the round trip.
#[derive(Debug, Clone, Copy)]
enum Hop {
    /// `GET /sso/authorize`.
    Authorize,
    /// `GET /sso/oidc/callback`: includes keyledger's own server-to-server code exchange with
    /// the IdP (its token endpoint), which the browser waits for.
    Callback,
    /// `POST /sso/token`.
    Token,
    /// The IdP's authorize, login form, login POST and resume.
    Idp,
}

/// Time of one round trip, split by hop.
#[derive(Debug, Clone, Copy, Default)]
struct Hops {
    authorize: Duration,
    callback: Duration,
    token: Duration,
    idp: Duration,
}

impl Hops {
    fn keyledger(&self) -> Duration {
        self.authorize + self.callback + self.token
    }
}

/// A browser of one round trip: no redirects followed, its own cookies (a fresh one signs in at
/// the IdP every time), each hop timed and charged to keyledger or to the IdP.
struct Browser<'a> {
    http: &'a reqwest::Client,
    cookies: Vec<String>,
    hops: Hops,
}

impl Browser<'_> {
    async fn send(
        &mut self,
        method: Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
        hop: Hop,
    ) -> anyhow::Result<(StatusCode, Option<String>, usize)> {
        let t0 = Instant::now();
        let mut req = self.http.request(method.clone(), url);
        if !self.cookies.is_empty() {
            req = req.header(COOKIE, self.cookies.join("; "));
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        for c in resp.headers().get_all(SET_COOKIE) {
            let pair = c.to_str().unwrap_or_default().split(';').next().unwrap_or_default();
            let name = pair.split('=').next().unwrap_or_default();
            self.cookies.retain(|k| !k.starts_with(&format!("{name}=")));
            self.cookies.push(pair.to_string());
        }
        let location = match resp.headers().get(LOCATION) {
            Some(l) => Some(
                Url::parse(url)
                    .and_then(|base| base.join(l.to_str().unwrap_or_default()))
                    .context("a bad Location")?
                    .to_string(),
            ),
            None => None,
        };
        let body = resp.bytes().await.context("reading the body")?;
        let spent = t0.elapsed();
        *match hop {
            Hop::Authorize => &mut self.hops.authorize,
            Hop::Callback => &mut self.hops.callback,
            Hop::Token => &mut self.hops.token,
            Hop::Idp => &mut self.hops.idp,
        } += spent;
        if !status.is_success() && !status.is_redirection() {
            bail!("{method} {url} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok((status, location, body.len()))
    }
}

fn redirect(location: Option<String>, what: &str) -> anyhow::Result<String> {
    location.with_context(|| format!("{what}: no redirect"))
}

fn query(url: &str, key: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// One sign-in: authorize (keyledger) → the IdP's authorize, login form, login POST and resume
/// (IdP) → the callback (keyledger) → `POST /sso/token` as the SDK sends it (keyledger).
async fn round_trip(http: &reqwest::Client, server: &Target, idp: &str, authorize: &str) -> anyhow::Result<Hops> {
    let mut br = Browser {
        http,
        cookies: Vec::new(),
        hops: Hops::default(),
    };
    let (_, loc, _) = br.send(Method::GET, authorize, None, Hop::Authorize).await?;
    let to_idp = redirect(loc, "/sso/authorize")?;
    if !to_idp.starts_with(idp) {
        bail!("/sso/authorize sent the browser to {to_idp}");
    }
    let (_, loc, _) = br.send(Method::GET, &to_idp, None, Hop::Idp).await?;
    let interaction = redirect(loc, "the IdP's authorize")?;
    // The login form, as a browser shows it, then its submission.
    br.send(Method::GET, &interaction, None, Hop::Idp).await?;
    let (_, loc, _) = br
        .send(
            Method::POST,
            &format!("{interaction}/login"),
            Some(&[("email", EMAIL), ("password", IDP_PASSWORD)]),
            Hop::Idp,
        )
        .await?;
    let mut next = redirect(loc, "the IdP's login")?;
    let mut steps = 0;
    while !next.starts_with(&server.base) {
        steps += 1;
        if steps > 5 {
            bail!("the IdP never sent the browser back: {next}");
        }
        let (_, loc, _) = br.send(Method::GET, &next, None, Hop::Idp).await?;
        next = redirect(loc, "the IdP")?;
    }
    let (_, loc, _) = br.send(Method::GET, &next, None, Hop::Callback).await?;
    let back = redirect(loc, "the callback")?;
    let code = match query(&back, "code") {
        Some(c) if back.starts_with(APP_CALLBACK) => c,
        _ => bail!("the callback sent the browser to {back}"),
    };
    let token_url = format!("{}/sso/token", server.base);
    let (status, _, len) = br
        .send(
            Method::POST,
            &token_url,
            Some(&[
                ("client_id", &server.client_id),
                ("client_secret", &server.key),
                ("grant_type", "authorization_code"),
                ("code", &code),
            ]),
            Hop::Token,
        )
        .await?;
    if status != StatusCode::OK || len == 0 {
        bail!("POST /sso/token answered {status}");
    }
    Ok(br.hops)
}

/// `workers` loops of round trips for warm-up + window; the round trips that end inside the
/// window count.
async fn round_trips(b: &mut Bench, server: &Server, idp: &Idp, authorize: &str, workers: usize) -> anyhow::Result<()> {
    eprintln!("  SSO round trips through the IdP, {workers} at a time...");
    let start = Instant::now() + b.warmup;
    let end = start + b.window;
    let clients = (0..workers)
        .map(|_| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("building an HTTP client")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let target = Arc::new(Target {
        base: server.base.clone(),
        client_id: server.client_id.clone(),
        key: server.key.clone(),
    });
    let mut tasks = Vec::with_capacity(workers);
    for http in clients {
        let (target, issuer, authorize) = (target.clone(), idp.issuer.clone(), authorize.to_string());
        tasks.push(tokio::spawn(async move {
            let mut hops = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let h = round_trip(&http, &target, &issuer, &authorize).await?;
                let t1 = Instant::now();
                if t1 >= start && t1 <= end {
                    hops.push(h);
                }
            }
            anyhow::Ok(hops)
        }));
    }
    let mut hops = Vec::new();
    for t in tasks {
        hops.extend(t.await.context("joining a round-trip worker")??);
    }
    if hops.is_empty() {
        bail!("no round trip completed in the window");
    }
    let stats = |f: fn(&Hops) -> Duration| Stats::from_latencies(hops.iter().map(f).collect(), b.window);
    let totals = stats(|h| h.keyledger() + h.idp);
    let ours = stats(Hops::keyledger);
    let theirs = stats(|h| h.idp);
    let p50 = |f: fn(&Hops) -> Duration| ms(stats(f).percentile(0.5));
    let sum = |f: fn(&Hops) -> Duration| hops.iter().map(f).sum::<Duration>().as_secs_f64();
    let share = sum(Hops::keyledger) / (sum(Hops::keyledger) + sum(|h| h.idp)).max(1e-9);
    b.rows.push(Row::reference(
        format!(
            "SSO round trip (authorize → IdP login → callback → POST /sso/token), {workers} at a time, IdP on loopback"
        ),
        format!(
            "{} — {:.0}% in keyledger: its 3 hops p50 {}, p99 {} (p50 authorize {}, callback {} incl. its code \
             exchange with the IdP, token {}); the IdP's 4–5 hops p50 {}, p99 {}",
            totals.summary("sign-ins"),
            share * 100.0,
            ms(ours.percentile(0.5)),
            ms(ours.percentile(0.99)),
            p50(|h| h.authorize),
            p50(|h| h.callback),
            p50(|h| h.token),
            ms(theirs.percentile(0.5)),
            ms(theirs.percentile(0.99)),
        ),
    ));
    Ok(())
}
