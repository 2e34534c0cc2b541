//! A real SMTP server for the mail tests: `tests/smtp_sink.py` (Python `aiosmtpd`) on a free
//! loopback port, writing each message it accepts into a directory of its own. The Python comes
//! from `KEYLEDGER_TEST_SMTP_PYTHON` (scripts/test.sh sets it), else `target/smtp-venv`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

const HOW_TO: &str = "create the venv with: python3 -m venv target/smtp-venv && \
     target/smtp-venv/bin/python -m pip install aiosmtpd==1.4.6 \
     (scripts/test.sh does this), or point KEYLEDGER_TEST_SMTP_PYTHON at a Python with aiosmtpd";

/// One message as the sink stored it (headers and body decoded).
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub content_type: String,
    pub body: String,
    pub raw: String,
}

pub struct SmtpSink {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    /// Closing it (on drop) ends the sink.
    _stdin: ChildStdin,
}

fn python() -> PathBuf {
    let path = match std::env::var_os("KEYLEDGER_TEST_SMTP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(WORKSPACE).join("target/smtp-venv/bin/python"),
    };
    assert!(
        path.is_file(),
        "no Python for the SMTP sink at {}: {HOW_TO}",
        path.display()
    );
    path
}

impl SmtpSink {
    /// Starts a sink on a free 127.0.0.1 port and waits until it listens.
    pub async fn start() -> SmtpSink {
        let dir = std::env::temp_dir().join(format!("kl-smtp-{}", ulid::Ulid::new().to_string().to_lowercase()));
        let mut child = Command::new(python())
            .arg(Path::new(WORKSPACE).join("tests/smtp_sink.py"))
            .arg("0")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the SMTP sink: {e}; {HOW_TO}"));
        let stdin = child.stdin.take().expect("sink stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("sink stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let port = match ready {
            Ok(Ok(Some(line))) if line.starts_with("READY ") => line[6..].trim().parse().expect("sink port"),
            other => {
                let _ = child.start_kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut err)).await;
                }
                panic!("the SMTP sink did not start ({other:?}): {err}\n{HOW_TO}");
            }
        };
        SmtpSink {
            port,
            dir,
            child,
            _stdin: stdin,
        }
    }

    /// `smtp://127.0.0.1:<port>`: plain SMTP to this sink.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read message")).expect("message JSON"))
            .collect()
    }

    /// Waits (up to 20 s) until at least `n` messages arrived, then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the SMTP sink received {} of {n} messages",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
