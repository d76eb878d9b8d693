//! Test support: a real PKI per run, a real HTTP app on 127.0.0.1:0, the real pushgate binary,
//! and a real TLS sender. Nothing on the notification's path is mocked.
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod gate;
pub mod redis;
pub mod samples;
pub mod sender;

pub use app::{App, Received};
pub use gate::{admin, check_config, free_port, metric, Pushgate};
pub use sender::{Resp, Sender};

/// A development PKI written by pushgate's own generator into a fresh directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        pushgate::boot::devcerts::write_dev_certs(dir.path()).expect("dev certs");
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The development CA of this PKI, to issue more certificates and sign CRLs.
    pub fn ca(&self) -> pushgate::boot::devcerts::Ca {
        let key = std::fs::read_to_string(self.path("ca.key")).unwrap();
        pushgate::boot::devcerts::Ca::from_key_pem(pushgate::boot::devcerts::DEV_CA_NAME, &key).unwrap()
    }

    /// Issues a client certificate with `subject` from the development CA, written as
    /// `{name}.pem` and `{name}.key` (so [`Sender::new`] can present it).
    pub fn issue_client(
        &self,
        name: &str,
        subject: &[(pushgate::boot::devcerts::DnType, &str)],
    ) -> pushgate::boot::devcerts::Issued {
        let issued = self.ca().issue_client(subject).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), &issued.cert_pem).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), &issued.key_pem).unwrap();
        issued
    }
}

/// Waits until `f` holds, polling; panics with `what` after `secs`.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, what: &str, mut f: F) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs a future to completion from synchronous code (an `eventually` condition) inside a
/// multi-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// The fingerprint pushgate gives a body's first event under `profile` (hex, as
/// `X-Pushgate-Conflict` shows it): computed by pushgate's own extractor, so tests do not
/// restate how JSON is canonicalised.
pub fn fingerprint_hex(profile: &str, body: &str) -> String {
    let p = pushgate::profile::Profile::build(profile, Default::default(), Default::default()).expect("profile");
    let x = pushgate::profile::extract(&p.spec, &bytes::Bytes::from(body.to_owned()), &http::HeaderMap::new())
        .expect("extractable body");
    format!("{:016x}", x.events[0].fingerprint)
}
