//! A real redis-server on a free loopback port, killed when dropped: the one launcher, for
//! the integration tests and (through a `#[path]` module) the unit tests of
//! src/dedupe/redis.rs. Self-contained for that reason.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Its working directory; with `durable`, the append-only file survives a SIGKILL.
    dir: tempfile::TempDir,
    durable: bool,
    /// Arguments after the defaults (`--requirepass`, cluster or TLS settings).
    extra: Vec<String>,
}

/// A loopback port the kernel says is free, never handed out twice in one test process.
pub fn free_port() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        if !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_as(false, |_, _| Vec::new())
    }

    /// Every write fsync'd to an append-only file before it is answered, as a Redis holding
    /// a duplicate memory should be run: a SIGKILL loses nothing.
    pub fn start_durable() -> Redis {
        Redis::start_as(true, |_, _| Vec::new())
    }

    /// With `extra` arguments after the defaults.
    pub fn start_args(extra: &[&str]) -> Redis {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Redis::start_as(false, |_, _| extra)
    }

    /// With arguments made from the port and the working directory (e.g. TLS files there).
    pub fn start_with(extra: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Redis {
        Redis::start_as(false, extra)
    }

    fn start_as(durable: bool, extra: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Redis {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = extra(port, dir.path());
        let mut r = Redis {
            port,
            child: None,
            dir,
            durable,
            extra,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.durable { "yes" } else { "no" },
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's process id, while it runs (to stop it with a signal).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (empty unless `durable`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
