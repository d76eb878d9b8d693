//! Starting it as a newcomer does, against the real binary: a port that cannot be taken is one
//! line and a quick exit (no panic, no process left, the store free), and so is `-u` with no
//! process to take over from.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, Pki, Pushgate};

const ROUTES: &str = "routes:\n  - name: gw\n    path: /gw\n    profile: generic\n    allow_unauthenticated: true\n    upstream: { url: \"http://127.0.0.1:9/\" }\n";

/// A config on `port` (admin on `admin_port`) in a fresh directory.
fn config(pki: &Pki, port: u16, admin_port: u16, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pushgate.yaml");
    let text = Pushgate::config(
        pki,
        format!("127.0.0.1:{port}").parse().unwrap(),
        format!("127.0.0.1:{admin_port}").parse().unwrap(),
        &tmp.path().join("data"),
        &format!("{extra}{ROUTES}"),
    );
    std::fs::write(&path, text).unwrap();
    (tmp, path)
}

fn start(config: &Path, flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg("run")
        .args(flags)
        .arg("-c")
        .arg(config)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the process to exit by itself within `limit`: (exit code, stdout + stderr, how long).
fn exits_within(mut child: Child, limit: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code(), text, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The store of `config`'s directory can be opened: nobody holds its lock.
fn store_is_free(dir: &Path) {
    let spool = pushgate::spool::Spool::open(&dir.join("data"), Default::default());
    assert!(spool.is_ok(), "the store is still locked: {:?}", spool.err());
}

/// Regression (issue: a second pushgate on a taken port logged "listening", retried for 30 s,
/// panicked in its service threads and stayed alive without a listener, its store locked).
#[test]
fn a_taken_port_is_one_line_and_a_quick_exit_for_either_listener() {
    let pki = Pki::new();
    for which in ["listen.addr", "admin.addr"] {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap().port();
        let (port, admin_port) = match which {
            "listen.addr" => (taken, free_port()),
            _ => (free_port(), taken),
        };
        let (tmp, path) = config(&pki, port, admin_port, "");
        let (code, out, took) = exits_within(start(&path, &[]), Duration::from_secs(10));
        assert_eq!(code, Some(1), "{which}: {out}");
        assert!(
            out.contains(&format!(
                "pushgate: cannot listen on 127.0.0.1:{taken} ({which}): the address is already in use"
            )),
            "{which}: {out}"
        );
        assert!(!out.contains("panicked"), "{which}: {out}");
        assert!(
            !out.contains("listening"),
            "{which}: logged listening without a socket: {out}"
        );
        assert!(took < Duration::from_secs(10), "{which}: took {took:?}");
        store_is_free(tmp.path());
        // Nothing answers on the other port: the process is gone, not half-started.
        let other = if which == "listen.addr" { admin_port } else { port };
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
            "{which}: {out}"
        );
    }
}

/// With `-d` the port is taken before the fork: the starting shell sees the failure, and no
/// daemon is left (it would have written its pid file).
#[test]
fn a_taken_port_fails_a_daemon_start_before_it_forks() {
    let pki = Pki::new();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let (tmp, path) = config(&pki, taken, free_port(), "");
    let log = tmp.path().join("error.log");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("server:\n", &format!("server:\n  error_log: {}\n", log.display()));
    std::fs::write(&path, text).unwrap();
    let (code, out, took) = exits_within(start(&path, &["-d"]), Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot listen on"), "{out}");
    assert!(took < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!tmp.path().join("data/pushgate.pid").exists(), "a daemon was started");
    store_is_free(tmp.path());
}

/// `-u` with no pushgate to take over from: refused at once rather than after Pingora's wait.
#[test]
fn upgrade_without_a_running_pushgate_is_refused_at_once() {
    let pki = Pki::new();
    let port = free_port();
    let (_tmp, path) = config(&pki, port, free_port(), "");
    let (code, out, took) = exits_within(start(&path, &["-u"]), Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "pushgate: run -u: nothing listens on 127.0.0.1:{port}, so there is no running pushgate to take over from"
        )),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// A daemon started by a test, stopped (by its pid file) when the test ends, whatever happens.
struct Daemon(PathBuf);

impl Daemon {
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg("-INT").arg(pid.to_string()).status();
            let gone = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Waits until `path` holds `needle`; its text.
fn file_holds(path: &Path, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {needle:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn post_one(pki: &Pki, port: u16, body: &str) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = support::Sender::new(pki, addr, None)
        .post("/gw", &[], body.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// Regression (issue: under -d every log line went to stdout, which Pingora points at
/// /dev/null; only standard error reaches error_log).
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_writes_its_request_lines_to_error_log() {
    let pki = Pki::new();
    let port = free_port();
    let (tmp, path) = config(&pki, port, free_port(), "");
    let log = tmp.path().join("error.log");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("server:\n", &format!("server:\n  error_log: {}\n", log.display()));
    std::fs::write(&path, text).unwrap();
    let (code, out, _) = exits_within(start(&path, &["-d"]), Duration::from_secs(10));
    assert_eq!(code, Some(0), "the starting process: {out}");
    let daemon = Daemon(tmp.path().join("data/pushgate.pid"));
    file_holds(&log, &format!("pushgate listening addr=127.0.0.1:{port}"), 20);
    post_one(&pki, port, r#"{"id":"D-1"}"#).await;
    let lines = file_holds(&log, "pushgate::request", 10);
    assert!(lines.contains("status=200"), "{lines}");
    assert!(daemon.pid().is_some());
}

#[test]
fn a_daemon_without_error_log_or_log_file_is_refused() {
    let pki = Pki::new();
    let (tmp, path) = config(&pki, free_port(), free_port(), "");
    let (code, out, _) = exits_within(start(&path, &["-d"]), Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("run -d needs server.error_log or log.file: a daemon has no terminal"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!tmp.path().join("data/pushgate.pid").exists(), "a daemon was started");
}

/// `log.file` takes every line, and SIGUSR1 (logrotate's postrotate) moves writing to a new
/// file at the path once the old one has been renamed.
#[tokio::test(flavor = "multi_thread")]
async fn log_file_is_reopened_on_sigusr1_after_a_rotation() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushgate.log");
    let gate = Pushgate::start(
        &pki,
        &format!(
            "log: {{ format: text, level: info, file: {} }}\n{ROUTES}",
            file.display()
        ),
    );
    let port = gate.addr.port();
    file_holds(&file, "pushgate listening", 10);
    post_one(&pki, port, r#"{"id":"R-1"}"#).await;
    file_holds(&file, "pushgate::request", 10);
    std::fs::rename(&file, dir.path().join("pushgate.log.1")).unwrap();
    gate.signal("USR1");
    file_holds(&file, "log file reopened", 10);
    post_one(&pki, port, r#"{"id":"R-2"}"#).await;
    file_holds(&file, "pushgate::request", 10);
    let old = std::fs::read_to_string(dir.path().join("pushgate.log.1")).unwrap();
    assert_eq!(old.matches("pushgate::request").count(), 1, "{old}");
    assert!(
        !gate.logs().contains("pushgate::request"),
        "log lines also went to standard error: {}",
        gate.logs()
    );
}

/// `/readyz`'s `listener` is a connection this process's own accept loop saw (a port held by
/// another process is refused at start, above, and not taken for ours: the probe's unit
/// tests). Its probes leave no trace: no handshake error in the log, no connection counted.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_listener_is_a_connection_this_process_accepted() {
    let pki = Pki::new();
    let gate = Pushgate::start(&pki, ROUTES);
    // The harness's own wait for the port is a connection without a handshake: counted apart.
    let handshakes = || gate.logs().matches("handshake error").count();
    support::eventually(10, "the harness's connection logged", || handshakes() == 1).await;
    for _ in 0..5 {
        let (status, body) = support::admin(gate.admin, "GET", "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""listener":true"#), "{body}");
    }
    let metrics = support::admin(gate.admin, "GET", "/metrics").await.1;
    assert_eq!(support::metric(&metrics, "pushgate_connections_open"), 0.0);
    assert_eq!(
        support::metric(
            &metrics,
            r#"pushgate_requests_total{route="unmatched",outcome="rejected_tls"}"#
        ),
        0.0
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(handshakes(), 1, "{}", gate.logs());
}
