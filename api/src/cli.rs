//! The `keyledger` command line: flags, else environment variables, else defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use keyledger_embedded_pg::EmbeddedPostgres;
use keyledger_projections::engine;
use sqlx::PgPool;

use crate::{auth, build, connect_with, migrate, Config};

#[derive(Debug, Parser)]
#[command(
    name = "keyledger",
    version,
    about = "Event-sourced, WorkOS-compatible identity backend"
)]
pub struct Cli {
    /// PostgreSQL URL; without one, an embedded PostgreSQL runs under the data dir.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Where the embedded PostgreSQL keeps its data.
    #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./.keyledger", global = true)]
    pub data_dir: PathBuf,
    /// Longest wait for a pooled database connection, in ms; past it a request answers 503
    /// `database_unavailable` (database down or every connection busy).
    #[arg(long, env = "KEYLEDGER_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 1000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,
    /// The master key sealing secrets at rest: 32 random bytes as 64 hex digits or base64url.
    /// Default: `<data dir>/secret.key`, generated once. Back it up: without it the signing keys
    /// are lost (docs/OPERATIONS.md).
    #[arg(long, env = "KEYLEDGER_SECRET_KEY", hide_env_values = true, global = true)]
    pub secret_key: Option<SecretArg>,
    /// The SDKs' client id; default: a `client_...` id generated once and kept in the database.
    #[arg(long, env = "KEYLEDGER_CLIENT_ID", global = true)]
    pub client_id: Option<String>,
    /// Lifetime of the access tokens, in seconds.
    #[arg(long, env = "KEYLEDGER_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 300, global = true,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub access_token_ttl_seconds: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// A secret given on the command line or in the environment: never printed.
#[derive(Clone)]
pub struct SecretArg(pub String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretArg(..)")
    }
}

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API and projection workers in one process (applies migrations first).
    Serve {
        #[arg(long, env = "KEYLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// DNS server (ip:port) for domain verification; default: the system resolver.
        #[arg(long, env = "KEYLEDGER_DNS_NAMESERVER")]
        dns_nameserver: Option<SocketAddr>,
        /// NATS server URL; when set, every public event is published to JetStream.
        #[arg(long, env = "KEYLEDGER_NATS_URL")]
        nats_url: Option<String>,
        /// JetStream stream the events go to (created if absent).
        #[arg(long, env = "KEYLEDGER_NATS_STREAM", default_value = "KEYLEDGER")]
        nats_stream: String,
        /// Subject prefix: subjects are `<prefix>.<organization id or global>.<event name>`.
        #[arg(long, env = "KEYLEDGER_NATS_SUBJECT_PREFIX", default_value = "keyledger")]
        nats_subject_prefix: String,
        /// This server's public base URL, for links it hands out (audit log export downloads;
        /// default: the request's Host header) and the SSO addresses identity providers call
        /// back (default: `http://<listen address>`).
        #[arg(long, env = "KEYLEDGER_PUBLIC_URL")]
        public_url: Option<String>,
        /// The `xmlsec1` program (Debian's package `xmlsec1`) that checks SAML signatures.
        #[arg(long, env = "KEYLEDGER_XMLSEC1", default_value = "xmlsec1")]
        xmlsec1: std::path::PathBuf,
        /// First webhook retry delay in ms; later ones are fixed multiples of it (docs/API.md).
        #[arg(long, env = "KEYLEDGER_WEBHOOK_RETRY_BASE_MS", default_value_t = 30_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        webhook_retry_base_ms: u64,
        /// Consecutive failed attempts on one event after which a webhook endpoint is disabled.
        #[arg(long, env = "KEYLEDGER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..))]
        webhook_max_attempts: u32,
        /// How long a webhook receiver has to answer, in ms.
        #[arg(long, env = "KEYLEDGER_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        webhook_timeout_ms: u64,
        /// Internal webhook receivers the SSRF guard lets through, comma-separated: CIDRs (or
        /// bare IPs) matched against the address connected to, and host names matched exactly
        /// against the endpoint URL's host. Everything non-public else is always refused.
        #[arg(long, env = "KEYLEDGER_WEBHOOK_ALLOW", value_delimiter = ',')]
        webhook_allow: Vec<crate::ssrf::AllowEntry>,
        /// Deprecated and without effect: the SSRF guard is always on (see --webhook-allow).
        #[arg(long, env = "KEYLEDGER_WEBHOOK_BLOCK_PRIVATE", hide = true)]
        webhook_block_private: bool,
        #[command(flatten)]
        edge: Box<ServeEdgeArgs>,
        // Boxed: these flags would make `Serve` far larger than the other commands.
        #[command(flatten)]
        auth: Box<ServeAuthArgs>,
        #[command(flatten)]
        sign_in: Box<SignInArgs>,
    },
    /// Applies migrations and exits.
    Migrate,
    /// Manages API keys.
    #[command(name = "api-keys")]
    ApiKeys {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Projection maintenance.
    Projections {
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// An organization's audit trail (its audit-log events and change events).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Prints the SDKs' client id (generating and keeping it on first use).
    #[command(name = "client-id")]
    ClientId,
    /// The access tokens' signing keys.
    #[command(name = "signing-keys")]
    SigningKeys {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Makes a new key active at once; the previous one stays published (tokens it signed keep
    /// verifying) for the overlap, at least the access-token lifetime plus a minute.
    Rotate {
        #[arg(long, default_value_t = 3600)]
        overlap_seconds: u64,
    },
    /// Every key: kid, state, created, retire_after (never private material).
    List,
}

/// The overlap a rotation keeps the previous key for: as asked, but never shorter than a token
/// signed just before the rotation lives (plus a minute of clock skew and key reload).
pub fn rotation_overlap(asked_secs: u64, access_token_ttl_secs: u64) -> Duration {
    Duration::from_secs(asked_secs.max(access_token_ttl_secs.saturating_add(60)))
}

/// The master key of this run (flag, else environment, else the key file), said in the log.
fn master_key(cli: &Cli) -> anyhow::Result<crate::secrets::MasterKey> {
    let (key, source) = crate::secrets::load(cli.secret_key.as_ref().map(|s| s.0.as_str()), &cli.data_dir)?;
    match source {
        crate::secrets::KeySource::Configured => tracing::info!("secret key from KEYLEDGER_SECRET_KEY / --secret-key"),
        crate::secrets::KeySource::File(p) => tracing::info!(path = %p.display(), "secret key read"),
        crate::secrets::KeySource::Generated(p) => tracing::warn!(
            path = %p.display(),
            "generated a new secret key; back it up: without it the signing keys are lost"
        ),
    }
    Ok(key)
}

/// Sign-in and session settings of `serve`.
#[derive(Debug, clap::Args)]
pub struct SignInArgs {
    /// Whether password sign-in of a user whose email is not verified answers
    /// `email_verification_required` (WorkOS's default) instead of signing in.
    #[arg(long, env = "KEYLEDGER_REQUIRE_EMAIL_VERIFICATION", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub require_email_verification: bool,
    /// How long a just-rotated refresh token still returns its successor, in seconds
    /// (concurrent refreshes from several browser tabs); 0 turns the grace window off.
    #[arg(long, env = "KEYLEDGER_REFRESH_GRACE_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub refresh_grace_seconds: u64,
    /// How long a session lasts from sign-in, in seconds (refreshes do not extend it).
    #[arg(long, env = "KEYLEDGER_SESSION_TTL_SECONDS", default_value_t = 30 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub session_ttl_seconds: u64,
    /// Redirect URIs a browser may be sent to (`return_to` of logout), comma-separated.
    #[arg(long, env = "KEYLEDGER_REDIRECT_URIS", value_delimiter = ',')]
    pub redirect_uris: Vec<String>,
    /// The application's page that accepts invitations (`accept_invitation_url` is it with
    /// `invitation_token=<token>` added); default: `<public URL>/invite`.
    #[arg(long, env = "KEYLEDGER_INVITATION_URL")]
    pub invitation_url: Option<String>,
    /// The application's page that resets a password: a reset's `password_reset_url` is this
    /// URL with `token=<token>` added to its query.
    #[arg(long, env = "KEYLEDGER_PASSWORD_RESET_URL", default_value = crate::state::DEFAULT_PASSWORD_RESET_URL)]
    pub password_reset_url: String,
    /// The membership role (slug) whose access tokens may read their organization through the
    /// management API (docs/API.md, "Reading an organization with a user's access token").
    #[arg(long, env = "KEYLEDGER_TENANT_READER_ROLE", default_value = "admin",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub tenant_reader_role: String,
}

impl SignInArgs {
    fn settings(&self) -> anyhow::Result<crate::state::AuthSettings> {
        for u in &self.redirect_uris {
            let parsed = url::Url::parse(u).with_context(|| format!("KEYLEDGER_REDIRECT_URIS: {u:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("KEYLEDGER_REDIRECT_URIS: {u:?} must be an http or https URL");
            }
        }
        if let Some(u) = &self.invitation_url {
            let parsed = url::Url::parse(u).with_context(|| format!("KEYLEDGER_INVITATION_URL: {u:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("KEYLEDGER_INVITATION_URL: {u:?} must be an http or https URL");
            }
        }
        Ok(crate::state::AuthSettings {
            require_email_verification: self.require_email_verification,
            refresh_grace: Duration::from_secs(self.refresh_grace_seconds),
            session_ttl: Duration::from_secs(self.session_ttl_seconds),
            redirect_uris: self.redirect_uris.clone(),
            invitation_url: self.invitation_url.clone(),
            password_reset_url: {
                let parsed = url::Url::parse(&self.password_reset_url).with_context(|| {
                    format!(
                        "KEYLEDGER_PASSWORD_RESET_URL: {:?} is not a URL",
                        self.password_reset_url
                    )
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    bail!("KEYLEDGER_PASSWORD_RESET_URL must be an http or https URL");
                }
                self.password_reset_url.clone()
            },
            tenant_reader_role: self.tenant_reader_role.clone(),
        })
    }
}

/// Connection timeouts and the metrics listener of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeEdgeArgs {
    /// How long a client may take to send a complete request head (from connecting, or from
    /// the first byte of a later request), in ms; then the connection is closed.
    #[arg(long, env = "KEYLEDGER_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request body, in ms; then it is answered 408.
    #[arg(long, env = "KEYLEDGER_BODY_READ_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,
    /// How long a keep-alive connection may sit idle between requests, in ms.
    #[arg(long, env = "KEYLEDGER_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Serve `GET /metrics` (Prometheus, no API key) only on this address instead of beside
    /// the API; e.g. a port reachable by the monitoring network alone.
    #[arg(long, env = "KEYLEDGER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Password hashes (sign-ins, password changes) run at once; default: the available cores.
    #[arg(long, env = "KEYLEDGER_HASHING_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub hashing_concurrency: Option<u32>,
    /// Password hashes that may wait for a turn; beyond, 503 `server_busy` with Retry-After.
    /// Default: 64 per concurrent hash.
    #[arg(long, env = "KEYLEDGER_HASHING_QUEUE")]
    pub hashing_queue: Option<u32>,
}

/// Rate limits and the mailer of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeAuthArgs {
    /// Password attempts per email per minute (shared by every server on the database); 0: off.
    #[arg(long, env = "KEYLEDGER_RATE_LIMIT_PASSWORD_PER_MINUTE", default_value_t = 10)]
    pub rate_limit_password_per_minute: u32,
    /// Magic Auth and password reset codes per email per minute; 0: off.
    #[arg(long, env = "KEYLEDGER_RATE_LIMIT_CODES_PER_MINUTE", default_value_t = 3)]
    pub rate_limit_codes_per_minute: u32,
    /// Authenticate calls per client IP per minute; 0: off.
    #[arg(long, env = "KEYLEDGER_RATE_LIMIT_AUTHENTICATE_PER_MINUTE", default_value_t = 300)]
    pub rate_limit_authenticate_per_minute: u32,
    /// SMTP server for authentication emails: smtp://host:port, smtp://host:port?tls=required
    /// (STARTTLS) or smtps://user:pass@host:465; unset: no emails are sent (the codes are only
    /// in API responses).
    #[arg(long, env = "KEYLEDGER_SMTP_URL")]
    pub smtp_url: Option<crate::mail::SmtpUrl>,
    /// The From of every email.
    #[arg(long, env = "KEYLEDGER_EMAIL_FROM", default_value = crate::mail::DEFAULT_FROM)]
    pub email_from: String,
    /// Longest one email delivery may take (connection and SMTP conversation), in ms.
    #[arg(long, env = "KEYLEDGER_SMTP_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub smtp_timeout_ms: u64,
}

impl ServeAuthArgs {
    fn rate_limits(&self) -> crate::rate_limit::Settings {
        crate::rate_limit::Settings {
            password_per_email: self.rate_limit_password_per_minute,
            codes_per_email: self.rate_limit_codes_per_minute,
            authenticate_per_ip: self.rate_limit_authenticate_per_minute,
            period: Duration::from_secs(60),
        }
    }

    fn mail(&self) -> crate::mail::MailConfig {
        crate::mail::MailConfig {
            smtp_url: self.smtp_url.clone(),
            from: self.email_from.clone(),
            timeout: Duration::from_millis(self.smtp_timeout_ms),
        }
    }
}

impl ServeEdgeArgs {
    fn hashing_concurrency(&self) -> usize {
        self.hashing_concurrency
            .map_or_else(crate::password::default_concurrency, |n| n as usize)
    }

    fn hashing_queue(&self) -> usize {
        self.hashing_queue.map_or_else(
            || self.hashing_concurrency() * crate::password::QUEUE_PER_PERMIT,
            |n| n as usize,
        )
    }

    fn timeouts(&self) -> crate::serve::HttpTimeouts {
        crate::serve::HttpTimeouts {
            header_read: Duration::from_millis(self.header_read_timeout_ms),
            body_read: Duration::from_millis(self.body_read_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Writes the organization's trail, oldest first, to stdout (the read models as they stand).
    Export {
        #[arg(long)]
        organization: String,
        /// Only events that occurred at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events that occurred before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
}

/// Output format of `events export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The columns of the HTTP export (docs/API.md), with a header row.
    Csv,
    /// One audit-log event object per line.
    Jsonl,
}

fn cli_time(flag: &str, v: &Option<String>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    v.as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .with_context(|| format!("{flag} must be an RFC 3339 timestamp"))
        })
        .transpose()
}

async fn export_events(
    pool: &PgPool,
    organization: &str,
    since: &Option<String>,
    until: &Option<String>,
    format: ExportFormat,
) -> anyhow::Result<()> {
    use keyledger_projections::audit;
    use std::io::Write;
    let filter = audit::TrailFilter {
        organization_id: organization.to_string(),
        range_start: cli_time("--since", since)?,
        range_end: cli_time("--until", until)?,
        ..Default::default()
    };
    if keyledger_projections::queries::organization(pool, organization)
        .await?
        .is_none()
    {
        bail!("organization {organization} not found");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let io = |e: std::io::Error| keyledger_store::StorageError::Other(format!("writing stdout: {e}"));
    if format == ExportFormat::Csv {
        out.write_all(audit::csv_header().as_bytes()).map_err(io)?;
    }
    audit::trail_all(pool, &filter, |rows| {
        for r in &rows {
            match format {
                ExportFormat::Csv => out.write_all(audit::csv_row(r).as_bytes()).map_err(io)?,
                ExportFormat::Jsonl => writeln!(out, "{r}").map_err(io)?,
            }
        }
        Ok(())
    })
    .await?;
    out.flush().context("writing stdout")?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Prints a new secret key once; only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
    },
    /// Every key: id, name, hint, when it was created and whether it is active or revoked.
    List,
    /// Revokes a key by id or by hint (as `list` shows it); every server refuses it within
    /// seconds (docs/OPERATIONS.md). The row stays, so the audit trail can still name it.
    Revoke {
        #[arg(value_name = "ID_OR_HINT")]
        key: String,
    },
}

fn print_keys(keys: &[crate::api_keys::KeyInfo]) {
    println!("{:<32} {:<20} {:<18} {:<24} state", "id", "name", "hint", "created");
    for k in keys {
        println!(
            "{:<32} {:<20} {:<18} {:<24} {}",
            k.id,
            k.name,
            k.hint,
            k.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            k.state()
        );
    }
}

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Replays the log once into fresh read models of the named projections (all when none are
    /// named) and swaps them in together.
    Rebuild { names: Vec<String> },
    /// Each projection's checkpoint against the head of the log.
    Status,
}

/// The database for this run: the given URL, or a started embedded PostgreSQL.
struct Database {
    pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    async fn open(cli: &Cli) -> anyhow::Result<Self> {
        let (url, embedded) = match &cli.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = EmbeddedPostgres::start(&cli.data_dir).await?;
                (pg.database_url(), Some(pg))
            }
        };
        let pool = connect_with(&url, Duration::from_millis(cli.db_acquire_timeout_ms)).await?;
        Ok(Self { pool, embedded })
    }

    async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop().await?;
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let db = Database::open(&cli).await?;
    let result = dispatch(&cli, &db.pool).await;
    db.close().await?;
    result
}

async fn dispatch(cli: &Cli, pool: &PgPool) -> anyhow::Result<()> {
    migrate(pool).await?;
    match &cli.command {
        Command::Migrate => {
            println!("migrations applied");
        }
        Command::Serve {
            listen,
            dns_nameserver,
            nats_url,
            nats_stream,
            nats_subject_prefix,
            public_url,
            xmlsec1,
            webhook_retry_base_ms,
            webhook_max_attempts,
            webhook_timeout_ms,
            webhook_allow,
            webhook_block_private,
            edge,
            auth: auth_args,
            sign_in,
        } => {
            if *webhook_block_private {
                tracing::warn!("--webhook-block-private is deprecated: the SSRF guard is always on");
            }
            let webhook_allow = crate::ssrf::WebhookAllow::new(webhook_allow.iter().cloned());
            if !webhook_allow.is_empty() {
                tracing::info!(allow = %webhook_allow.describe(), "webhook deliveries may reach these internal receivers");
            }
            if let Ok(key) = std::env::var("KEYLEDGER_BOOTSTRAP_API_KEY") {
                if !key.starts_with("sk_") || key.len() < 12 {
                    bail!("KEYLEDGER_BOOTSTRAP_API_KEY must start with sk_ and be at least 12 characters");
                }
                if auth::register_key(pool, "bootstrap", &key)
                    .await
                    .context("registering the bootstrap key")?
                {
                    tracing::info!("bootstrap API key registered");
                }
            }
            let master_key = master_key(cli)?;
            let config = Config {
                master_key: Some(master_key),
                client_id: cli.client_id.clone(),
                access_token_ttl: Duration::from_secs(cli.access_token_ttl_seconds),
                listen: *listen,
                dns_nameserver: *dns_nameserver,
                read_your_writes: Duration::from_secs(5),
                nats: nats_url.as_ref().map(|url| crate::NatsConfig {
                    url: url.clone(),
                    stream: nats_stream.clone(),
                    subject_prefix: nats_subject_prefix.clone(),
                }),
                public_url: public_url.clone(),
                xmlsec1: xmlsec1.clone(),
                webhook_retry_base: Duration::from_millis(*webhook_retry_base_ms),
                webhook_max_attempts: *webhook_max_attempts,
                webhook_timeout: Duration::from_millis(*webhook_timeout_ms),
                webhook_allow,
                http: edge.timeouts(),
                metrics_listen: edge.metrics_listen,
                hashing_concurrency: edge.hashing_concurrency(),
                hashing_queue: edge.hashing_queue(),
                rate_limits: auth_args.rate_limits(),
                mail: auth_args.mail(),
                auth: sign_in.settings()?,
                ..Config::default()
            };
            let mut running = build(pool.clone(), config).await?;
            tracing::info!(addr = %running.addr, client_id = %running.tokens.client_id(), "keyledger listening");
            tokio::select! {
                r = running.wait() => r?,
                _ = shutdown_signal() => {
                    tracing::info!("shutting down");
                    running.stop().await?;
                }
            }
        }
        Command::ApiKeys {
            command: ApiKeyCommand::Create { name },
        } => {
            let secret = auth::create_key(pool, name).await.context("creating the API key")?;
            println!("{secret}");
        }
        Command::ApiKeys {
            command: ApiKeyCommand::List,
        } => print_keys(&crate::api_keys::list(pool).await?),
        Command::ApiKeys {
            command: ApiKeyCommand::Revoke { key },
        } => match crate::api_keys::revoke(pool, key).await? {
            crate::api_keys::Revoked::Now(k) => println!("revoked {} ({}, {})", k.id, k.name, k.hint),
            crate::api_keys::Revoked::Already(k) => println!("{} ({}) was already {}", k.id, k.name, k.state()),
        },
        Command::ClientId => {
            println!("{}", crate::tokens::client_id(pool, cli.client_id.as_deref()).await?);
        }
        Command::SigningKeys {
            command: SigningKeyCommand::Rotate { overlap_seconds },
        } => {
            let master = master_key(cli)?;
            crate::secrets::check_against_database(pool, &master).await?;
            let overlap = rotation_overlap(*overlap_seconds, cli.access_token_ttl_seconds);
            let r = crate::signing_keys::rotate(pool, &master, overlap).await?;
            println!("active: {}", r.kid);
            if let Some((kid, until)) = r.retiring {
                println!("retiring: {kid} until {}", until.format("%Y-%m-%d %H:%M:%S UTC"));
            }
        }
        Command::SigningKeys {
            command: SigningKeyCommand::List,
        } => {
            println!("{:<32} {:<9} {:<24} retire_after", "kid", "state", "created");
            for k in crate::signing_keys::list(pool).await? {
                println!(
                    "{:<32} {:<9} {:<24} {}",
                    k.kid,
                    k.state,
                    k.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    k.retire_after
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        Command::Events {
            command:
                EventsCommand::Export {
                    organization,
                    since,
                    until,
                    format,
                },
        } => export_events(pool, organization, since, until, *format).await?,
        Command::Projections {
            command: ProjectionCommand::Status,
        } => {
            println!(
                "{:<16} {:>24} {:>24} {:>10}",
                "projection", "checkpoint (txid/pos)", "head (txid/pos)", "behind"
            );
            for s in engine::status(pool).await? {
                println!(
                    "{:<16} {:>24} {:>24} {:>10}",
                    s.name,
                    format!("{}/{}", s.checkpoint.transaction_id, s.checkpoint.position),
                    format!("{}/{}", s.head.transaction_id, s.head.position),
                    s.behind
                );
            }
            let subscribers = keyledger_projections::feed::subscriber_status(pool).await?;
            println!();
            println!(
                "{:<16} {:>24} {:>24} {:>10}",
                "subscriber", "checkpoint (txid/pos/seq)", "updated", "behind"
            );
            if subscribers.is_empty() {
                println!("(none has a checkpoint yet)");
            }
            for s in subscribers {
                println!(
                    "{:<16} {:>24} {:>24} {:>10}",
                    s.name,
                    format!(
                        "{}/{}/{}",
                        s.checkpoint.transaction_id, s.checkpoint.position, s.checkpoint.seq
                    ),
                    s.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    s.behind
                );
            }
        }
        Command::Projections {
            command: ProjectionCommand::Rebuild { names },
        } => {
            let targets: Vec<engine::Projection> = if names.is_empty() {
                engine::ALL.to_vec()
            } else {
                names
                    .iter()
                    .map(|n| {
                        engine::by_name(n)
                            .with_context(|| format!("unknown projection {n}; known: {}", engine::names().join(", ")))
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            // One read of the log feeds every projection named; their tables swap in together.
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} events {per_sec} {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            let label = targets.iter().map(|p| p.name).collect::<Vec<_>>().join(", ");
            bar.set_prefix(if targets.len() == engine::ALL.len() {
                "all".to_string()
            } else {
                label.clone()
            });
            let started = std::time::Instant::now();
            let n = engine::rebuild_all(pool, &targets, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
            bar.finish();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{label}: {} events in {:.2}s ({:.0} events/s)",
                n,
                secs,
                n as f64 / secs.max(1e-9)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssrf::WebhookAllow;

    fn allow(args: &[&str]) -> Result<WebhookAllow, String> {
        match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Serve { webhook_allow, .. },
                ..
            }) => Ok(WebhookAllow::new(webhook_allow)),
            Ok(other) => panic!("{args:?} parsed as {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn connection_timeouts_and_the_metrics_address_come_from_flags() {
        let cli = Cli::try_parse_from([
            "keyledger",
            "serve",
            "--header-read-timeout-ms",
            "1500",
            "--body-read-timeout-ms",
            "2500",
            "--idle-timeout-ms",
            "3500",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--db-acquire-timeout-ms",
            "750",
        ]);
        match cli {
            Ok(Cli {
                command: Command::Serve { edge, .. },
                db_acquire_timeout_ms,
                ..
            }) => {
                let t = edge.timeouts();
                assert_eq!(t.header_read, Duration::from_millis(1500));
                assert_eq!(t.body_read, Duration::from_millis(2500));
                assert_eq!(t.idle, Duration::from_millis(3500));
                assert_eq!(edge.metrics_listen, Some(SocketAddr::from(([127, 0, 0, 1], 9100))));
                assert_eq!(db_acquire_timeout_ms, 750);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["keyledger", "serve", "--idle-timeout-ms", "0"]).is_err(),
            "a zero timeout is refused"
        );
    }

    #[test]
    fn the_rotation_overlap_outlives_the_tokens_of_the_previous_key() {
        assert_eq!(rotation_overlap(3600, 300), Duration::from_secs(3600));
        assert_eq!(rotation_overlap(10, 300), Duration::from_secs(360));
        assert_eq!(rotation_overlap(0, 86_400), Duration::from_secs(86_460));
        let cli = Cli::try_parse_from(["keyledger", "signing-keys", "rotate", "--secret-key", "abc"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::SigningKeys {
                command: SigningKeyCommand::Rotate { overlap_seconds: 3600 }
            }
        ));
        assert!(
            !format!("{cli:?}").contains("abc"),
            "the secret key is printed: {cli:?}"
        );
    }

    #[test]
    fn rate_limits_and_the_mailer_come_from_flags_and_refuse_bad_values() {
        let parsed = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Serve { auth, .. },
                ..
            }) => Ok((auth.rate_limits(), auth.mail())),
            Ok(other) => panic!("{args:?} parsed as {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let (limits, mail) = parsed(&[
            "keyledger",
            "serve",
            "--rate-limit-password-per-minute",
            "5",
            "--rate-limit-codes-per-minute",
            "0",
            "--rate-limit-authenticate-per-minute",
            "1000",
            "--smtp-url",
            "smtps://user:pass@mail.example.com:465",
            "--email-from",
            "Acme <auth@acme.test>",
            "--smtp-timeout-ms",
            "2500",
        ])
        .expect("parses");
        assert_eq!(
            (
                limits.password_per_email,
                limits.codes_per_email,
                limits.authenticate_per_ip
            ),
            (5, 0, 1000)
        );
        assert_eq!(limits.period, Duration::from_secs(60));
        assert_eq!(
            mail.smtp_url.map(|u| u.to_string()).as_deref(),
            Some("smtps://***@mail.example.com:465")
        );
        assert_eq!(mail.from, "Acme <auth@acme.test>");
        assert_eq!(mail.timeout, Duration::from_millis(2500));
        for bad in [
            &["keyledger", "serve", "--smtp-url", "http://mail.example.com"][..],
            &["keyledger", "serve", "--rate-limit-password-per-minute", "-1"],
            &["keyledger", "serve", "--smtp-timeout-ms", "0"],
        ] {
            assert!(parsed(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn the_webhook_allow_list_is_empty_unless_given_and_refuses_bad_entries() {
        if std::env::var_os("KEYLEDGER_WEBHOOK_ALLOW").is_none() {
            assert_eq!(allow(&["keyledger", "serve"]), Ok(WebhookAllow::default()));
        }
        assert_eq!(
            allow(&["keyledger", "serve", "--webhook-allow", "127.0.0.1/32,::1/128"]),
            Ok(WebhookAllow::loopback())
        );
        assert_eq!(
            allow(&[
                "keyledger",
                "serve",
                "--webhook-allow",
                "10.0.0.0/8",
                "--webhook-allow",
                "hooks.internal"
            ]),
            WebhookAllow::parse("10.0.0.0/8,hooks.internal").map_err(|e| e.to_string())
        );
        let err = allow(&["keyledger", "serve", "--webhook-allow", "10.0.0.0/40"]).expect_err("refused");
        assert!(err.contains("prefix length"), "{err}");
        // The old opt-in flag still parses (a deployment using it keeps starting).
        assert!(allow(&["keyledger", "serve", "--webhook-block-private"]).is_ok());
    }
}
