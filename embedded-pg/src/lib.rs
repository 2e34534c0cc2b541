//! Embedded PostgreSQL: the private database `keyledger serve` runs when no database URL is set.
//! It owns a cluster under `<data dir>/pg` (initdb once, reused across restarts), started with the
//! PostgreSQL binaries installed on the machine, listening only on a Unix socket in `<data dir>/pg-socket`.

// The workspace lint table denies these everywhere (tests may, see clippy.toml); the crate
// states it too, so the rule is visible where the code is.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

use anyhow::{anyhow, bail, Context, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Port of the private server; it only names the socket file (`.s.PGSQL.<port>`), no TCP is opened.
const PORT: u16 = 5432;
/// Superuser created by initdb (trust authentication, socket only).
const SUPERUSER: &str = "keyledger";
/// Database the application uses.
const DATABASE: &str = "keyledger";
/// Seconds `pg_ctl` may wait for start-up (crash recovery included) and for shutdown.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// How long to keep trying to connect once `pg_ctl` reports the server started.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest socket path the kernel accepts (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The start-up log is rotated once it grows beyond this.
const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// File included from postgresql.conf; rewritten on every start.
const CONF_FILE: &str = "keyledger.conf";
const CONF_INCLUDE: &str = "include = 'keyledger.conf'";

const INSTALL_HINT: &str = "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`, \
Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql`) or set DATABASE_URL \
(or --database-url) to use an existing server";

/// A private PostgreSQL server owned by this process. Stop it with [`EmbeddedPostgres::stop`];
/// dropping it also stops it (best effort, fast shutdown).
pub struct EmbeddedPostgres {
    bin: PgBinaries,
    pg_data: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<PostgresUser>,
    running: bool,
}

/// Absolute paths of the server binaries of one PostgreSQL installation.
#[derive(Debug, Clone)]
struct PgBinaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    postgres: PathBuf,
    major: u32,
}

/// The `postgres` system user the binaries run as when we are root.
#[derive(Debug, Clone, Copy)]
struct PostgresUser {
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Starts (initialising on first use) the private server for `data_dir` and makes sure the
    /// `keyledger` database exists. Reuses a server left running by a previous crashed process.
    pub async fn start(data_dir: &Path) -> Result<EmbeddedPostgres> {
        tokio::fs::create_dir_all(data_dir)
            .await
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let data_dir = tokio::fs::canonicalize(data_dir)
            .await
            .with_context(|| format!("resolving data dir {}", data_dir.display()))?;
        let pg_data = data_dir.join("pg");

        let existing_major = read_pg_version(&pg_data)?;
        let bin = find_binaries(existing_major)?;
        let run_as = if effective_uid()? == 0 {
            Some(postgres_user()?)
        } else {
            None
        };
        if let Some(user) = run_as {
            ensure_reachable_by(&data_dir, user)?;
        }

        let socket_dir = prepare_socket_dir(&data_dir, run_as)?;
        let log_file = prepare_log_file(&data_dir, run_as)?;

        let mut me = EmbeddedPostgres {
            bin,
            pg_data,
            socket_dir,
            run_as,
            running: false,
        };

        match existing_major {
            None => me.init_cluster(&data_dir).await?,
            Some(_) => me.check_data_ownership()?,
        }
        me.write_config()?;

        let mut adopted = false;
        match me.live_postmaster()? {
            Some(pid) => {
                if me.connect_admin(Duration::from_secs(3)).await.is_ok() {
                    tracing::warn!(pid, data = %me.pg_data.display(),
                        "embedded PostgreSQL from a previous run is still running; reusing it");
                    adopted = true;
                } else {
                    tracing::warn!(pid, "stopping unreachable embedded PostgreSQL from a previous run");
                    me.pg_ctl_stop().await?;
                }
            }
            None => me.remove_stale_locks()?,
        }

        if !adopted {
            tracing::info!(version = me.bin.major, data = %me.pg_data.display(),
                "starting embedded PostgreSQL");
            let mut cmd = me.command(&me.bin.pg_ctl);
            cmd.arg("start")
                .arg("-w")
                .arg("-t")
                .arg(PG_CTL_TIMEOUT_SECS)
                .arg("-s")
                .arg("-D")
                .arg(&me.pg_data)
                .arg("-l")
                .arg(&log_file)
                .arg("-p")
                .arg(&me.bin.postgres);
            let out = run(cmd).await.context("running pg_ctl start")?;
            if !out.status.success() {
                bail!(
                    "embedded PostgreSQL failed to start ({}): {}\n--- {} (last lines) ---\n{}",
                    out.status,
                    output_text(&out),
                    log_file.display(),
                    log_tail(&log_file)
                );
            }
        }
        // A server found running (another keyledger process on this data dir, e.g. `serve` while a
        // CLI command runs) is not ours to stop on exit.
        me.running = !adopted;

        let mut admin = me.connect_admin(CONNECT_TIMEOUT).await.with_context(|| {
            format!(
                "embedded PostgreSQL started but is not accepting connections; see {}",
                log_file.display()
            )
        })?;
        ensure_database(&mut admin).await?;
        admin.close().await.ok();
        Ok(me)
    }

    /// URL of the `keyledger` database over the Unix socket (sqlx and libpq understand it).
    pub fn database_url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// Stops the server (fast shutdown: open sessions are disconnected) and waits until it is down.
    pub async fn stop(mut self) -> Result<()> {
        if self.running {
            self.running = false;
            self.pg_ctl_stop().await?;
            tracing::info!("embedded PostgreSQL stopped");
        }
        Ok(())
    }

    fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={}&sslmode=disable",
            percent_encode(&self.socket_dir.to_string_lossy())
        )
    }

    fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
            .disable_statement_logging()
    }

    /// Connects to the `postgres` database, retrying until `timeout` has passed.
    async fn connect_admin(&self, timeout: Duration) -> Result<PgConnection> {
        let options = self.connect_options("postgres");
        let deadline = Instant::now() + timeout;
        loop {
            match options.connect().await {
                Ok(conn) => return Ok(conn),
                Err(err) if Instant::now() >= deadline => {
                    return Err(anyhow!(err).context(format!(
                        "connecting to embedded PostgreSQL via {}",
                        self.socket_dir.display()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Builds a command for a PostgreSQL binary, run as `postgres` through `runuser` when root.
    fn command(&self, program: &Path) -> std::process::Command {
        pg_command(program, self.run_as)
    }

    /// initdb into a scratch dir, then rename it into place, so a crash never leaves half a cluster.
    async fn init_cluster(&self, data_dir: &Path) -> Result<()> {
        if self.pg_data.exists() {
            let empty = std::fs::read_dir(&self.pg_data)
                .with_context(|| format!("reading {}", self.pg_data.display()))?
                .next()
                .is_none();
            if !empty {
                bail!(
                    "{} exists but is not a PostgreSQL data directory (no PG_VERSION); \
                     move it away so keyledger can initialise a fresh one",
                    self.pg_data.display()
                );
            }
            std::fs::remove_dir(&self.pg_data).with_context(|| format!("removing empty {}", self.pg_data.display()))?;
        }
        let scratch = data_dir.join("pg.initdb-tmp");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).with_context(|| format!("removing leftover {}", scratch.display()))?;
        }
        std::fs::create_dir(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        set_mode(&scratch, 0o700)?;
        if let Some(user) = self.run_as {
            chown(&scratch, user.uid, user.gid)?;
        }

        tracing::info!(version = self.bin.major, data = %self.pg_data.display(),
            "initialising embedded PostgreSQL data directory");
        let mut cmd = self.command(&self.bin.initdb);
        cmd.arg("-D")
            .arg(&scratch)
            .arg("--auth=trust")
            .arg("-U")
            .arg(SUPERUSER)
            .arg("-E")
            .arg("UTF8")
            .arg("--locale=C");
        let out = run(cmd).await.context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed ({}): {}", out.status, output_text(&out));
        }
        std::fs::rename(&scratch, &self.pg_data)
            .with_context(|| format!("moving {} to {}", scratch.display(), self.pg_data.display()))?;
        Ok(())
    }

    /// The data must belong to the user the server runs as; fix it when root, explain otherwise.
    fn check_data_ownership(&self) -> Result<()> {
        let owner = std::fs::metadata(&self.pg_data)
            .with_context(|| format!("reading {}", self.pg_data.display()))?
            .uid();
        match self.run_as {
            Some(user) if owner != user.uid => {
                tracing::warn!(data = %self.pg_data.display(),
                    "giving the embedded PostgreSQL data directory to the postgres user");
                chown_recursive(&self.pg_data, user.uid, user.gid)
            }
            Some(_) => Ok(()),
            None => {
                let me = effective_uid()?;
                if owner != me {
                    bail!(
                        "{} belongs to uid {owner}, but keyledger runs as uid {me}; run keyledger as \
                         the same user that created it (as root it runs PostgreSQL as `postgres`), \
                         or use another --data-dir",
                        self.pg_data.display()
                    );
                }
                Ok(())
            }
        }
    }

    /// Points the server at our socket dir and nothing else: `keyledger.conf`, included from
    /// postgresql.conf, is rewritten on every start (so a moved data dir keeps working).
    fn write_config(&self) -> Result<()> {
        let conf = self.pg_data.join(CONF_FILE);
        let text = format!(
            "# Written by keyledger on every start; changes here are overwritten.\n\
             listen_addresses = ''\n\
             port = {PORT}\n\
             unix_socket_directories = '{}'\n\
             unix_socket_permissions = 0777\n",
            conf_quote(&self.socket_dir.to_string_lossy())
        );
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        if let Some(user) = self.run_as {
            chown(&conf, user.uid, user.gid)?;
        }

        let main_conf = self.pg_data.join("postgresql.conf");
        let current =
            std::fs::read_to_string(&main_conf).with_context(|| format!("reading {}", main_conf.display()))?;
        if !current.lines().any(|line| line.trim() == CONF_INCLUDE) {
            let mut updated = current;
            if !updated.ends_with('\n') {
                updated.push('\n');
            }
            updated.push_str("\n# keyledger: socket-only settings\n");
            updated.push_str(CONF_INCLUDE);
            updated.push('\n');
            std::fs::write(&main_conf, updated).with_context(|| format!("writing {}", main_conf.display()))?;
        }
        Ok(())
    }

    /// PID of a postmaster still serving this data dir (e.g. left behind by a killed process).
    /// A pid file whose process is gone, or is not a postgres for this data dir (PID reused after
    /// a reboot or container restart), is stale: `None`.
    fn live_postmaster(&self) -> Result<Option<u32>> {
        let pid_file = self.pg_data.join("postmaster.pid");
        let text = match std::fs::read_to_string(&pid_file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", pid_file.display()));
            }
        };
        let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else {
            return Ok(None);
        };
        if !Path::new("/proc/self").exists() {
            // No procfs: let pg_ctl/postgres judge the lock file themselves.
            return Ok(None);
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return Ok(None);
        };
        let data = self.pg_data.as_os_str().as_encoded_bytes();
        let ours = cmdline.split(|b| *b == 0).any(|arg| arg == data);
        Ok(ours.then_some(pid))
    }

    /// Removes lock files and the socket left behind by a server that is no longer running.
    fn remove_stale_locks(&self) -> Result<()> {
        let socket = format!(".s.PGSQL.{PORT}");
        for path in [
            self.pg_data.join("postmaster.pid"),
            self.socket_dir.join(&socket),
            self.socket_dir.join(format!("{socket}.lock")),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed stale PostgreSQL lock"),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("removing stale {}", path.display()));
                }
            }
        }
        Ok(())
    }

    async fn pg_ctl_stop(&self) -> Result<()> {
        let out = run(self.stop_command()).await.context("running pg_ctl stop")?;
        if out.status.success() || !self.pg_data.join("postmaster.pid").exists() {
            Ok(())
        } else {
            bail!(
                "stopping embedded PostgreSQL failed ({}): {}",
                out.status,
                output_text(&out)
            )
        }
    }

    fn stop_command(&self) -> std::process::Command {
        let mut cmd = self.command(&self.bin.pg_ctl);
        cmd.arg("stop")
            .arg("-w")
            .arg("-t")
            .arg(PG_CTL_TIMEOUT_SECS)
            .arg("-s")
            .arg("-m")
            .arg("fast")
            .arg("-D")
            .arg(&self.pg_data);
        cmd
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let mut cmd = self.stop_command();
        cmd.stdin(Stdio::null());
        match cmd.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(output = %output_text(&out),
                "stopping embedded PostgreSQL on drop failed"),
            Err(err) => tracing::warn!(%err, "stopping embedded PostgreSQL on drop failed"),
        }
    }
}

async fn ensure_database(admin: &mut PgConnection) -> Result<()> {
    let exists: bool = sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
        .bind(DATABASE)
        .fetch_one(&mut *admin)
        .await
        .context("checking for the keyledger database")?;
    if exists {
        return Ok(());
    }
    match sqlx::query(&format!("create database {DATABASE}"))
        .execute(&mut *admin)
        .await
    {
        Ok(_) => {
            tracing::info!("created database {DATABASE}");
            Ok(())
        }
        // Created concurrently by someone else: fine.
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P04") => Ok(()),
        Err(err) => Err(err).context("creating the keyledger database"),
    }
}

/// Major version recorded in an existing data dir, `None` if there is no cluster yet.
fn read_pg_version(pg_data: &Path) -> Result<Option<u32>> {
    let file = pg_data.join("PG_VERSION");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let major = text
                .trim()
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| anyhow!("unexpected content in {}: {text:?}", file.display()))?;
            Ok(Some(major))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", file.display())),
    }
}

/// Finds initdb/pg_ctl/postgres: PATH first, then the highest version under the usual prefixes.
/// With an existing cluster, only binaries of its major version will do.
fn find_binaries(required_major: Option<u32>) -> Result<PgBinaries> {
    let candidates = candidate_dirs();
    let mut found = Vec::new();
    for dir in candidates {
        let Some(bin) = binaries_in(&dir) else {
            continue;
        };
        match required_major {
            Some(major) if bin.major != major => found.push(bin.major),
            _ => return Ok(bin),
        }
    }
    match required_major {
        Some(major) if !found.is_empty() => bail!(
            "the embedded data was created by PostgreSQL {major}, but only version(s) {found:?} are \
             installed; install PostgreSQL {major} (e.g. `apt-get install postgresql-{major}`), \
             upgrade the data with pg_upgrade, or use another --data-dir"
        ),
        _ => bail!(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH or under \
             /usr/lib/postgresql/*/bin; {INSTALL_HINT}"
        ),
    }
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    for pattern_dir in ["/usr/lib/postgresql", "/usr/local/lib/postgresql"] {
        dirs.extend(versioned_dirs(Path::new(pattern_dir), "", "bin"));
    }
    dirs.extend(versioned_dirs(Path::new("/usr"), "pgsql-", "bin"));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

/// `<root>/<prefix><version>/<sub>` for every numeric version, highest first.
fn versioned_dirs(root: &Path, prefix: &str, sub: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?;
            let parts: Option<Vec<u32>> = version.split('.').map(|p| p.parse().ok()).collect();
            Some((parts?, entry.path().join(sub)))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    versioned.into_iter().map(|(_, dir)| dir).collect()
}

fn binaries_in(dir: &Path) -> Option<PgBinaries> {
    let resolve = |name: &str| -> Option<PathBuf> {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return None;
        }
        std::fs::canonicalize(&path).ok()
    };
    let initdb = resolve("initdb")?;
    let pg_ctl = resolve("pg_ctl")?;
    let postgres = resolve("postgres")?;
    let out = std::process::Command::new(&postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    // "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split(')').nth(1)?.split_whitespace().next()?;
    let major = version.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some(PgBinaries {
        initdb,
        pg_ctl,
        postgres,
        major,
    })
}

/// Effective uid from /proc/self/status, else from `id -u`.
fn effective_uid() -> Result<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(euid) = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok())
        {
            return Ok(euid);
        }
    }
    id_number(&["-u"]).context("determining the current user id (`id -u`)")
}

fn postgres_user() -> Result<PostgresUser> {
    let lookup = || -> Result<PostgresUser> {
        Ok(PostgresUser {
            uid: id_number(&["-u", "postgres"])?,
            gid: id_number(&["-g", "postgres"])?,
        })
    };
    let user = lookup().map_err(|_| {
        anyhow!(
            "running as root, PostgreSQL must run as the `postgres` system user, which does not \
             exist; {INSTALL_HINT} (the package creates that user), or run keyledger as a non-root user"
        )
    })?;
    if runuser_path().is_none() {
        bail!(
            "running as root needs `runuser` (util-linux) to start PostgreSQL as `postgres`; \
             install util-linux, run keyledger as a non-root user, or set DATABASE_URL"
        );
    }
    Ok(user)
}

fn id_number(args: &[&str]) -> Result<u32> {
    let out = std::process::Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `id`")?;
    if !out.status.success() {
        bail!("`id {}` failed: {}", args.join(" "), output_text(&out));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("parsing the output of `id {}`", args.join(" ")))
}

/// `runuser` from PATH, else from /usr/sbin or /sbin (often missing from a non-login PATH).
fn runuser_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("runuser"))
        .find(|candidate| candidate.is_file())
}

fn pg_command(program: &Path, run_as: Option<PostgresUser>) -> std::process::Command {
    let mut cmd = match run_as {
        Some(_) => {
            let runuser = runuser_path().unwrap_or_else(|| PathBuf::from("runuser"));
            let mut cmd = std::process::Command::new(runuser);
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        }
        None => std::process::Command::new(program),
    };
    // The postgres user may not be able to enter our working directory.
    cmd.current_dir("/");
    // Our config file decides port and socket; keep the caller's libpq settings out of it.
    for var in ["PGPORT", "PGHOST", "PGDATA", "PGOPTIONS"] {
        cmd.env_remove(var);
    }
    cmd
}

/// As root, the `postgres` user must be able to traverse down to the data dir: grant search
/// permission (o+x, not read) on the directories that lack it.
fn ensure_reachable_by(data_dir: &Path, user: PostgresUser) -> Result<()> {
    let can_enter = || {
        pg_command(Path::new("test"), Some(user))
            .arg("-x")
            .arg(data_dir)
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if can_enter() {
        return Ok(());
    }
    for dir in data_dir.ancestors() {
        let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            tracing::warn!(dir = %dir.display(),
                "granting others search permission (o+x) so the postgres user can reach the data dir");
            set_mode(dir, (mode & 0o7777) | 0o001)?;
        }
    }
    if !can_enter() {
        bail!(
            "the `postgres` user cannot reach {}; make it and its parent directories searchable \
             (chmod o+x) or use another --data-dir",
            data_dir.display()
        );
    }
    Ok(())
}

/// `<data dir>/pg-socket`, or a short per-data-dir directory under the temp dir when that path
/// would exceed the kernel's socket path limit.
fn prepare_socket_dir(data_dir: &Path, run_as: Option<PostgresUser>) -> Result<PathBuf> {
    let socket_name_len = format!("/.s.PGSQL.{PORT}.lock").len();
    let mut dir = data_dir.join("pg-socket");
    if dir.as_os_str().len() + socket_name_len > MAX_SOCKET_PATH {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        data_dir.hash(&mut hasher);
        dir = std::env::temp_dir().join(format!("keyledger-pg-{:016x}", hasher.finish()));
        tracing::warn!(socket_dir = %dir.display(),
            "data dir path too long for a Unix socket; using a socket dir under the temp dir");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    match run_as {
        // Owned by postgres, group root: root clients get in even without CAP_DAC_OVERRIDE,
        // other users do not (authentication is `trust`).
        Some(user) => {
            chown(&dir, user.uid, 0)?;
            set_mode(&dir, 0o770)?;
        }
        None => {
            let owner = std::fs::metadata(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .uid();
            let me = effective_uid()?;
            if owner != me {
                bail!(
                    "socket dir {} belongs to uid {owner}, not to us (uid {me})",
                    dir.display()
                );
            }
            set_mode(&dir, 0o700)?;
        }
    }
    Ok(dir)
}

/// `<data dir>/pg.log` (pg_ctl's server log), rotated to `pg.log.old` when large.
fn prepare_log_file(data_dir: &Path, run_as: Option<PostgresUser>) -> Result<PathBuf> {
    let log = data_dir.join("pg.log");
    if std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > MAX_LOG_BYTES {
        std::fs::rename(&log, data_dir.join("pg.log.old")).with_context(|| format!("rotating {}", log.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("creating {}", log.display()))?;
    set_mode(&log, 0o640)?;
    if let Some(user) = run_as {
        chown(&log, user.uid, user.gid)?;
    }
    Ok(log)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            let entry = entry.with_context(|| format!("reading {}", path.display()))?;
            chown_recursive(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

async fn run(cmd: std::process::Command) -> Result<Output> {
    let program: OsString = cmd.get_program().to_owned();
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null());
    cmd.output()
        .await
        .with_context(|| format!("running {}", Path::new(&program).display()))
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    text
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Quotes a value for postgresql.conf (inside single quotes).
fn conf_quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// Everything but unreserved characters and `/` is percent-encoded in a URL query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a socket path for the `host` query parameter of a PostgreSQL URL.
fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encodes_socket_paths() {
        assert_eq!(percent_encode("/tmp/a b/ü"), "/tmp/a%20b/%C3%BC");
        assert_eq!(
            percent_encode("/x/a-b_c.d~e?f&g=h%i#j+k"),
            "/x/a-b_c.d~e%3Ff%26g%3Dh%25i%23j%2Bk"
        );
    }

    #[tokio::test]
    async fn starts_restarts_and_keeps_data() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("keyledger-embedded-test-{}-{nanos}", std::process::id()));
        // temp_dir() is world-searchable, so the postgres user can reach it when we are root.

        let pg = EmbeddedPostgres::start(&dir).await.unwrap();
        let url = pg.database_url();
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let one: i32 = sqlx::query_scalar("select 1").fetch_one(&mut conn).await.unwrap();
        assert_eq!(one, 1);
        sqlx::query("create table survives_restart (id int primary key)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("insert into survives_restart values (42)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        pg.stop().await.unwrap();
        assert!(!dir.join("pg/postmaster.pid").exists());

        let pg = EmbeddedPostgres::start(&dir).await.unwrap();
        assert_eq!(pg.database_url(), url);
        let mut conn = PgConnection::connect(&pg.database_url()).await.unwrap();
        let id: i32 = sqlx::query_scalar("select id from survives_restart")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(id, 42);
        conn.close().await.unwrap();
        // Dropping stops the server as well.
        drop(pg);
        assert!(!dir.join("pg/postmaster.pid").exists());

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
