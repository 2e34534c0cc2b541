//! The `keyledger` binary end to end: its embedded PostgreSQL keeps data across restarts, and
//! SIGTERM shuts it down cleanly (exit 0).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `keyledger serve` with the given environment and waits for /health.
pub(crate) async fn serve(envs: &[(&str, &str)], remove_database_url: bool) -> (Child, String) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyledger"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if remove_database_url {
        cmd.env_remove("DATABASE_URL");
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn keyledger");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await {
            if r.status() == StatusCode::OK {
                return (child, base);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("keyledger exited early with {status}");
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -TERM failed");
}

pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyledger did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_its_embedded_postgres_keeps_data_across_restarts_and_exits_zero_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("kl-embedded-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let data_dir = dir.to_string_lossy().to_string();
    let key = "sk_test_embedded_0123456789";
    let envs = [
        ("KEYLEDGER_DATA_DIR", data_dir.as_str()),
        ("KEYLEDGER_BOOTSTRAP_API_KEY", key),
    ];
    let http = reqwest::Client::new();

    let (mut child, base) = serve(&envs, true).await;
    let r = http
        .post(format!("{base}/user_management/users"))
        .bearer_auth(key)
        .json(&json!({ "email": "durable@example.com" }))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let user: Value = r.json().await.expect("json");
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let (mut child, base) = serve(&envs, true).await;
    let r = http
        .get(format!(
            "{base}/user_management/users/{}",
            user["id"].as_str().expect("id")
        ))
        .bearer_auth(key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK, "the user survived the restart");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads from `tcp` until `end` has been seen (or the peer closes), within a generous deadline.
async fn read_until(tcp: &mut tokio::net::TcpStream, end: &[u8]) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !got.windows(end.len()).any(|w| w == end) {
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {end:?} within 60 s; got {:?}", String::from_utf8_lossy(&got)))
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    use tokio::io::AsyncWriteExt;
    let db_url = crate::helpers::fresh_database().await;
    let key = "sk_test_sigterm_0123456789";
    let (mut child, base) = serve(
        &[("DATABASE_URL", db_url.as_str()), ("KEYLEDGER_BOOTSTRAP_API_KEY", key)],
        false,
    )
    .await;
    let addr = base.trim_start_matches("http://").to_string();
    let body = json!({ "email": "inflight@example.com", "password": "a long enough password" }).to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /user_management/users HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("send head");
    // The server answers `100 Continue` once the handler reads the body: the request is in
    // flight, past authentication. SIGTERM now, then let it finish.
    let interim = read_until(&mut tcp, b"\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    sigterm(&child);
    tcp.write_all(body.as_bytes()).await.expect("send body");
    let response = read_until(&mut tcp, b"\"inflight@example.com\"").await;
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the in-flight request completed: {response}"
    );
    assert!(
        wait_exit(&mut child, Duration::from_secs(30)).success(),
        "exit 0 after SIGTERM"
    );
}

/// SIGTERM, then a clean exit within 30 s.
pub(crate) fn sigterm_and_wait(child: &mut Child) {
    sigterm(child);
    assert!(
        wait_exit(child, Duration::from_secs(30)).success(),
        "exit 0 after SIGTERM"
    );
}
