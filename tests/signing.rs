//! Standard Webhooks signatures on real deliveries, verified by the app side with the
//! `standardwebhooks` crate (the reference Rust library): one secret, two during a rotation,
//! a batch, redeliveries after a retry and a restart (same `webhook-id`), and a body changed
//! by one byte that fails.

mod support;

use std::sync::Arc;
use std::time::Duration;

use standardwebhooks::Webhook;
use support::samples::sample;
use support::{check_config, eventually, free_port, App, Pki, Pushgate, Received, Sender};

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";
/// Two `whsec_` secrets (24 and 32 random bytes, base64), the new one first.
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const OLD: &str = "whsec_CI3n+9EuHEdnS0LlcMS/hPIUuQeaM84kXYqxm3gprDM=";

fn status_change(event_ref: &str) -> String {
    format!(r#"{{"eventRef":"{event_ref}","eventType":"STATUS_CHG","transactionReference":"tx-1"}}"#)
}

fn verify(secret: &str, r: &Received) -> Result<(), standardwebhooks::WebhookError> {
    Webhook::new(secret).unwrap().verify(&r.body, &r.headers)
}

/// A route named `name` at `/name` for `profile`, signed with `secrets`, acking as `ack`.
fn route(name: &str, profile: &str, ack: &str, secrets: &[&str], upstream: &str) -> String {
    let secrets = secrets
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"  - name: {name}
    path: /{name}
    profile: {profile}
    ack: {ack}
    client_dn: ["{PROD_DN}"]
    sign: {{ secrets: [{secrets}] }}
    upstream: {{ url: "{upstream}", timeout: 5s }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn one_secret_signs_the_exact_bytes_and_a_forged_signature_is_replaced() {
    let pki = Pki::new();
    let app = App::start().await;
    let routes = format!(
        "routes:\n{}",
        route("xbs", "mastercard-xbs", "spool", &[NEW], &app.url("/xbs"))
    );
    let gate = Pushgate::start(&pki, &routes);
    let body = status_change("EVT-SIGN-1");
    // A sender's own webhook-* headers must not reach the app next to pushgate's.
    let forged = [
        ("webhook-id", "EVT-SIGN-1"),
        ("webhook-timestamp", "1"),
        ("webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
    ];
    let r = Sender::new(&pki, gate.addr, Some("xbs-prod"))
        .post("/xbs", &forged, body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", gate.logs());
    eventually(10, "delivered", || app.count() == 1).await;
    let got = &app.received()[0];
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(got.header("webhook-id"), Some("EVT-SIGN-1"));
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(got.headers.get_all(name).iter().count(), 1, "{name} once");
    }
    let ts: u64 = got.header("webhook-timestamp").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts) <= 5, "timestamp {ts} is the attempt's time ({now})");
    verify(NEW, got).unwrap();
    assert!(verify(OLD, got).is_err(), "a secret not configured must not verify");

    // One byte changed anywhere in the body fails verification; so does another id.
    for i in [0, body.len() / 2, body.len() - 1] {
        let mut tampered = got.clone();
        let mut bytes = tampered.body.to_vec();
        bytes[i] ^= 0x01;
        tampered.body = bytes.into();
        assert!(verify(NEW, &tampered).is_err(), "byte {i} changed must fail");
    }
    let mut other_id = got.clone();
    other_id.headers.insert("webhook-id", "EVT-SIGN-2".parse().unwrap());
    assert!(verify(NEW, &other_id).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_rotation_each_secret_verifies_in_ack_upstream() {
    let pki = Pki::new();
    let app = App::start().await;
    let routes = format!(
        "routes:\n{}",
        route("xbs", "mastercard-xbs", "upstream", &[NEW, OLD], &app.url("/xbs"))
    );
    let gate = Pushgate::start(&pki, &routes);
    let r = Sender::new(&pki, gate.addr, Some("xbs-prod"))
        .post("/xbs", &[], status_change("EVT-ROT-1"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", gate.logs());
    let got = &app.received()[0];
    let sig = got.header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    assert!(sig.split(' ').all(|s| s.starts_with("v1,")), "{sig}");
    verify(NEW, got).expect("the new secret verifies");
    verify(OLD, got).expect("the old secret verifies");
    let unrelated = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert!(verify(unrelated, got).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_keeps_the_webhook_id_and_signs_again() {
    let pki = Pki::new();
    // 500 first, then 200: the forwarder retries the same delivery.
    let app = App::start_with(Arc::new(|_, n| (if n == 0 { 500 } else { 200 }, Duration::ZERO))).await;
    let routes = format!(
        "routes:\n{}",
        route("xbs", "mastercard-xbs", "spool", &[NEW], &app.url("/xbs"))
    );
    let gate = Pushgate::start(&pki, &routes);
    let r = Sender::new(&pki, gate.addr, Some("xbs-prod"))
        .post("/xbs", &[], status_change("EVT-RETRY-1"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", gate.logs());
    eventually(15, "retried and delivered", || app.count() == 2).await;
    let got = app.received();
    assert_eq!(
        (got[0].header("x-pushgate-attempt"), got[1].header("x-pushgate-attempt")),
        (Some("1"), Some("2"))
    );
    assert_eq!(got[0].header("webhook-id"), Some("EVT-RETRY-1"));
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    for g in &got {
        verify(NEW, g).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_has_one_stable_id_across_a_retry_and_a_restart() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    // The app fails the first attempt; pushgate is then killed and started again.
    let app = App::start_with(Arc::new(|_, n| (if n == 0 { 503 } else { 200 }, Duration::ZERO))).await;
    let routes = format!(
        "routes:\n{}",
        route("cen", "mastercard-cen", "spool", &[NEW], &app.url("/cen"))
    );
    let mut gate = Pushgate::start_in(&pki, dir.path(), &routes, port, admin_port);
    let body = sample("cen-batch.json");
    let r = Sender::new(&pki, gate.addr, Some("xbs-prod"))
        .post("/cen", &[], body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", gate.logs());
    eventually(10, "first attempt", || app.count() == 1).await;
    gate.kill9();
    let _gate = Pushgate::start_in(&pki, dir.path(), &routes, port, admin_port);
    eventually(20, "delivered after the restart", || app.count() == 2).await;
    let got = app.received();
    let id = got[0].header("webhook-id").unwrap();
    assert!(
        id.starts_with("pg_") && id.len() == 35,
        "a batch gets a derived id: {id}"
    );
    assert_eq!(got[1].header("webhook-id"), Some(id), "same id after a restart");
    assert!(got[0].header("x-pushgate-event-id").unwrap().contains(','), "a batch");
    assert_eq!(got[0].body, got[1].body);
    for g in &got {
        verify(NEW, g).unwrap();
    }
}

#[test]
fn secrets_not_in_whsec_form_are_config_errors_naming_the_key() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    for (secret, why) in [
        ("C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "whsec_"),
        ("whsec_%%%notbase64", "base64"),
        ("whsec_c2hvcnQ=", "bytes"),
    ] {
        let routes = format!(
            "routes:\n{}",
            route("xbs", "mastercard-xbs", "spool", &[NEW, secret], "http://127.0.0.1:9/x")
        );
        let text = Pushgate::config(
            &pki,
            "127.0.0.1:8443".parse().unwrap(),
            "127.0.0.1:9900".parse().unwrap(),
            &dir.path().join("data"),
            &routes,
        );
        let file = dir.path().join("pushgate.yaml");
        std::fs::write(&file, text).unwrap();
        let (code, _, stderr) = check_config(&file);
        assert_eq!(code, Some(1), "{secret}: {stderr}");
        assert!(
            stderr.contains("routes[0].sign.secrets[1]") && stderr.contains(why),
            "{secret}: {stderr}"
        );
        assert!(!stderr.contains(&secret[6..]), "the secret is not echoed: {stderr}");
    }
}
