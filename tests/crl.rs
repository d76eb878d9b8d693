//! Client certificate revocation (issue 13 item 4) against the real binary and real handshakes:
//! CRLs signed by the test CA (PEM and DER), a revoked certificate refused in the handshake and
//! counted while an unrevoked one from the same CA is served, a reload with a newer CRL that
//! revokes another certificate without dropping open connections, a CRL past its next update
//! under both `client_crl_expired` settings, and `pushgate check` on broken CRL files.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use pushgate::boot::devcerts::{Issued, XBS_PROD_DN};
use support::{admin, check_config, eventually, metric, App, Pki, Pushgate, Sender};
use time::OffsetDateTime;

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";
const PATH: &str = "/xbs/status/webhook";
const REVOKED: &str = r#"pushgate_tls_handshake_failures_total{reason="revoked"}"#;

fn routes(app: &App) -> String {
    format!(
        r#"routes:
  - name: xbs
    path: {PATH}
    profile: mastercard-xbs
    client_dn: ["{PROD_DN}"]
    upstream: {{ url: "{url}" }}
"#,
        url = app.url("/app/xbs"),
    )
}

fn event(id: &str) -> String {
    format!(r#"{{"partnerId":"ptnr_1","eventRef":"{id}","eventType":"STATUS_CHG","transactionReference":"tx-1"}}"#)
}

/// Writes a CRL of the test CA revoking `revoked` to `name` in the PKI directory (DER when the
/// name ends in `.der`, else PEM); its path.
fn write_crl(pki: &Pki, name: &str, revoked: &[&Issued], next_update: OffsetDateTime, number: u64) -> PathBuf {
    let crl = pki.ca().revocation_list(revoked, next_update, number).unwrap();
    let path = pki.path(name);
    if name.ends_with(".der") {
        std::fs::write(&path, &crl.der).unwrap();
    } else {
        std::fs::write(&path, &crl.pem).unwrap();
    }
    path
}

fn in_a_week() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(7)
}

/// A notification from `cert` on a new connection: its status, or why it got none.
async fn send(pki: &Pki, gate: &Pushgate, cert: &str, id: &str) -> Result<u16, String> {
    Sender::new(pki, gate.addr, Some(cert))
        .post(PATH, &[], event(id))
        .await
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

async fn metrics(gate: &Pushgate) -> String {
    admin(gate.admin, "GET", "/metrics").await.1
}

/// The ids the app received, sorted.
fn delivered(app: &App) -> Vec<String> {
    let mut ids: Vec<String> = app
        .received()
        .iter()
        .map(|r| r.header("x-pushgate-event-id").unwrap_or("").to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_certificate_fails_the_handshake_and_an_unrevoked_one_is_served() {
    let pki = Pki::new();
    let good = pki.issue_client("good", &XBS_PROD_DN);
    let revoked = pki.issue_client("revoked", &XBS_PROD_DN);
    let next_update = in_a_week();
    let crl = write_crl(&pki, "ca-crl.pem", &[&revoked], next_update, 1);
    let app = App::start().await;
    let gate = Pushgate::start_tls(
        &pki,
        "",
        &format!("    client_crl: [\"{}\"]\n", crl.display()),
        &routes(&app),
    );

    let refused = send(&pki, &gate, "revoked", "REVOKED-1").await;
    assert!(
        refused.is_err(),
        "a revoked certificate must not be served: {refused:?}"
    );
    assert_eq!(send(&pki, &gate, "good", "GOOD-1").await, Ok(200));
    // The dev certificate is in no CRL either.
    assert_eq!(send(&pki, &gate, "xbs-prod", "PROD-1").await, Ok(200));
    let _ = good;

    let m = metrics(&gate).await;
    assert_eq!(metric(&m, REVOKED), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            r#"pushgate_requests_total{outcome="rejected_tls",route="unmatched"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"pushgate_crl_next_update_timestamp_seconds{issuer="pushgate development CA"}"#
        ),
        next_update.unix_timestamp() as f64
    );
    eventually(10, "the two accepted events reach the app", || app.count() >= 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(delivered(&app), ["GOOD-1", "PROD-1"], "nothing of the revoked sender");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_with_a_newer_crl_revokes_another_without_dropping_open_connections() {
    let pki = Pki::new();
    let first = pki.issue_client("first", &XBS_PROD_DN);
    let second = pki.issue_client("second", &XBS_PROD_DN);
    // DER this time; the first CRL revokes `first` only.
    let crl = write_crl(&pki, "ca-crl.der", &[&first], in_a_week(), 1);
    let app = App::start().await;
    let gate = Pushgate::start_tls(
        &pki,
        "",
        &format!("    client_crl: [\"{}\"]\n", crl.display()),
        &routes(&app),
    );

    let mut open = Sender::new(&pki, gate.addr, Some("second")).connect().await.unwrap();
    let r = open.request("POST", PATH, &[], event("OPEN-1").into()).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(send(&pki, &gate, "first", "FIRST-1").await.is_err());

    // The CA revokes `second` too: a newer CRL over the same file, then a reload.
    write_crl(&pki, "ca-crl.der", &[&first, &second], in_a_week(), 2);
    let (status, body) = admin(gate.admin, "POST", "/reload").await;
    assert_eq!(status, 200, "{body}");

    // The connection opened before keeps its session and is served...
    let r = open.request("POST", PATH, &[], event("OPEN-2").into()).await.unwrap();
    assert_eq!(r.status, 200, "an established connection is not dropped by the reload");
    // ...while a new handshake with the newly revoked certificate is refused.
    assert!(send(&pki, &gate, "second", "SECOND-NEW").await.is_err());
    assert_eq!(send(&pki, &gate, "xbs-prod", "PROD-1").await, Ok(200));

    let m = metrics(&gate).await;
    assert_eq!(metric(&m, REVOKED), 2.0, "{m}");
    assert_eq!(metric(&m, r#"pushgate_reloads_total{result="ok"}"#), 1.0);
    eventually(10, "the accepted events reach the app", || app.count() >= 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(delivered(&app), ["OPEN-1", "OPEN-2", "PROD-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crl_past_its_next_update_refuses_by_default_and_is_used_when_allowed() {
    let pki = Pki::new();
    let revoked = pki.issue_client("revoked", &XBS_PROD_DN);
    let stale = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let crl = write_crl(&pki, "ca-crl.pem", &[&revoked], stale, 1);
    let app = App::start().await;
    let crl_line = format!("    client_crl: [\"{}\"]\n", crl.display());
    let gate = Pushgate::start_tls(&pki, "", &crl_line, &routes(&app));

    // refuse (the default): even a certificate the CRL does not list is refused.
    assert!(send(&pki, &gate, "xbs-prod", "STALE-1").await.is_err());
    let m = metrics(&gate).await;
    assert_eq!(
        metric(&m, r#"pushgate_tls_handshake_failures_total{reason="crl_expired"}"#),
        1.0,
        "{m}"
    );
    assert!(
        gate.logs().contains("past its next update"),
        "the stale CRL is warned about:\n{}",
        gate.logs()
    );

    // allow: the stale CRL is used as it is.
    let text = std::fs::read_to_string(&gate.config).unwrap();
    let text = text.replace(&crl_line, &format!("{crl_line}    client_crl_expired: allow\n"));
    std::fs::write(&gate.config, text).unwrap();
    let (status, body) = admin(gate.admin, "POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(send(&pki, &gate, "xbs-prod", "STALE-2").await, Ok(200));
    assert!(send(&pki, &gate, "revoked", "STALE-3").await.is_err());
    let m = metrics(&gate).await;
    assert_eq!(metric(&m, REVOKED), 1.0, "{m}");

    eventually(10, "the accepted event reaches the app", || app.count() >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(delivered(&app), ["STALE-2"]);
}

/// `pushgate check` with `tls` (flow-mapping entries) added to `listen.tls`: (exit code, stderr).
fn check(pki: &Pki, tls: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    let text = format!(
        r#"listen:
  addr: "127.0.0.1:8443"
  tls: {{ cert: {cert}, key: {key}{tls} }}
routes:
  - name: xbs
    path: /xbs
    profile: mastercard-xbs
    client_dn: ["{PROD_DN}"]
    upstream: {{ url: "http://127.0.0.1:8080/xbs" }}
"#,
        cert = pki.path("server.pem").display(),
        key = pki.path("server.key").display(),
    );
    std::fs::write(&file, text).unwrap();
    let (code, _, stderr) = check_config(&file);
    (code, stderr)
}

#[test]
fn pushgate_check_names_a_broken_crl_file_and_its_key() {
    let pki = Pki::new();
    let ca = format!(", client_ca: {}", pki.path("client-ca.pem").display());
    let good = write_crl(&pki, "good.pem", &[], in_a_week(), 1);
    let good_der = write_crl(&pki, "good.der", &[], in_a_week(), 1);
    let (code, stderr) = check(
        &pki,
        &format!("{ca}, client_crl: [\"{}\", \"{}\"]", good.display(), good_der.display()),
    );
    assert_eq!(code, Some(0), "PEM and DER CRLs pass: {stderr}");

    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(pki.path(name), bytes).unwrap();
        pki.path(name).display().to_string()
    };
    let mut torn = std::fs::read(&good_der).unwrap();
    torn.truncate(torn.len() / 2);
    let pem = std::fs::read_to_string(&good).unwrap();
    let bad_base64 = pem.replacen("\nM", "\n!", 1);
    let cases = [
        ("garbage", write("garbage.crl", b"\x30\x03\x02\x01\x05 not a CRL")),
        ("a torn DER CRL", write("torn.der", &torn)),
        ("a certificate, not a CRL", pki.path("ca.pem").display().to_string()),
        ("broken base64", write("bad64.pem", bad_base64.as_bytes())),
        ("an empty file", write("empty.pem", b"")),
        ("a missing file", pki.path("missing.crl").display().to_string()),
    ];
    for (what, path) in cases {
        let (code, stderr) = check(&pki, &format!("{ca}, client_crl: [\"{}\", \"{path}\"]", good.display()));
        assert_eq!(code, Some(1), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line, got:\n{stderr}");
        assert!(stderr.contains("broken.yaml"), "{what}: names the config: {stderr}");
        assert!(
            stderr.contains("listen.tls.client_crl:"),
            "{what}: names the key: {stderr}"
        );
        assert!(stderr.contains(&path), "{what}: names the CRL file: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }

    let (code, stderr) = check(&pki, &format!(", client_crl: [\"{}\"]", good.display()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("listen.tls.client_crl:") && stderr.contains("client_ca"),
        "a CRL without a client CA: {stderr}"
    );
    let (code, stderr) = check(
        &pki,
        &format!(
            "{ca}, client_crl: [\"{}\"], client_crl_expired: sometimes",
            good.display()
        ),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("client_crl_expired"), "{stderr}");
}
