//! The real pushgate binary, started on free ports with a config written for the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Pki;

/// A port for a server a test starts later (pushgate, its admin, Redis, a restartable app).
///
/// Taken from 20000–31999, below the kernel's ephemeral range (32768 and up here), and never
/// handed out twice in one test binary: a port from `bind(:0)` could meanwhile be given to
/// another test's app or to a client socket, and a readiness probe would then find the wrong
/// server listening there.
pub fn free_port() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        let mut taken = TAKEN.lock().unwrap();
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
}

pub struct Pushgate {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// `pushgate check -c FILE`: its exit code, stdout and stderr.
pub fn check_config(file: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["check", "-c"])
        .arg(file)
        .env_remove("PUSHGATE_TEST_UNSET")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

impl Pushgate {
    /// The config head (listen, admin, storage) for `pki`, with `body` (routes and any other
    /// sections) appended. `{app}` in `body` is not substituted: callers format it in.
    pub fn config(pki: &Pki, addr: SocketAddr, admin: SocketAddr, data: &std::path::Path, body: &str) -> String {
        Pushgate::config_with(pki, addr, admin, data, "", body)
    }

    /// [`Pushgate::config`] with more `listen:` keys (`listen`: lines indented by two spaces).
    pub fn config_with(
        pki: &Pki,
        addr: SocketAddr,
        admin: SocketAddr,
        data: &std::path::Path,
        listen: &str,
        body: &str,
    ) -> String {
        Pushgate::config_tls(pki, addr, admin, data, listen, "", body)
    }

    /// [`Pushgate::config_with`] with more `listen.tls:` keys (`tls`: lines indented by four
    /// spaces), e.g. `client_crl`.
    pub fn config_tls(
        pki: &Pki,
        addr: SocketAddr,
        admin: SocketAddr,
        data: &std::path::Path,
        listen: &str,
        tls: &str,
        body: &str,
    ) -> String {
        format!(
            "listen:\n  addr: \"{addr}\"\n{listen}  tls:\n    cert: {cert}\n    key: {key}\n    client_ca: {ca}\n{tls}\
             admin:\n  addr: \"{admin}\"\nstorage:\n  path: {data}\nserver:\n  grace_period: 1s\n  graceful_shutdown_timeout: 1s\n{body}",
            cert = pki.path("server.pem").display(),
            key = pki.path("server.key").display(),
            ca = pki.path("client-ca.pem").display(),
            data = data.display(),
        )
    }

    /// Writes a config (see [`Pushgate::config`]) into a fresh directory and starts the binary.
    pub fn start(pki: &Pki, body: &str) -> Pushgate {
        Pushgate::start_with(pki, "", body)
    }

    /// [`Pushgate::start`] with more `listen:` keys (see [`Pushgate::config_with`]).
    pub fn start_with(pki: &Pki, listen: &str, body: &str) -> Pushgate {
        Pushgate::start_tls(pki, listen, "", body)
    }

    /// [`Pushgate::start`] with more `listen:` and `listen.tls:` keys (see
    /// [`Pushgate::config_tls`]).
    pub fn start_tls(pki: &Pki, listen: &str, tls: &str, body: &str) -> Pushgate {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut g = Pushgate::start_in_with(pki, &dir, listen, tls, body, free_port(), free_port());
        g._tmp = Some(tmp);
        g
    }

    /// Starts (or restarts) on given ports in a given directory (so data survives).
    pub fn start_in(pki: &Pki, dir: &std::path::Path, body: &str, port: u16, admin_port: u16) -> Pushgate {
        Pushgate::start_in_with(pki, dir, "", "", body, port, admin_port)
    }

    fn start_in_with(
        pki: &Pki,
        dir: &std::path::Path,
        listen: &str,
        tls: &str,
        body: &str,
        port: u16,
        admin_port: u16,
    ) -> Pushgate {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let config = dir.join("pushgate.yaml");
        let text = Pushgate::config_tls(pki, addr, admin, &dir.join("data"), listen, tls, body);
        std::fs::write(&config, text).unwrap();
        let mut g = Pushgate {
            child: None,
            addr,
            admin,
            dir: dir.to_path_buf(),
            config,
            log: dir.join("pushgate.log"),
            _tmp: None,
        };
        g.spawn();
        g
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["run", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start pushgate");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("pushgate exited with {status}:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "pushgate did not listen:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        // Once the child is gone pid() is 0, and `kill -SIG 0` would signal the test runner's
        // whole process group.
        if self.child.is_none() {
            return;
        }
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return s.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Pushgate {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A plain-HTTP request to the admin listener: (status, body).
pub async fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("admin connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of one sample in Prometheus text (`name{labels}`), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
