//! The ingress path against the real binary: TLS, routing, identity, secrets, body limits,
//! extraction, duplicates, and what the app receives (`ack: upstream`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{App, Pki, Pushgate, Sender};

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const SECRET_NEXT: &str = "fedcba9876543210fedcba9876543210";

fn routes(app: &App) -> String {
    format!(
        r#"routes:
  - name: xbs
    path: /xbs/status/webhook
    profile: mastercard-xbs
    ack: upstream
    client_dn: ["{PROD_DN}"]
    max_body: 4KiB
    read_timeout: 1s
    upstream: {{ url: "{xbs}" }}
  - name: gw
    path: /gateway
    profile: mastercard-gateway
    ack: upstream
    secret: {{ header: X-Notification-Secret, values: ["{SECRET}", "{SECRET_NEXT}"] }}
    upstream: {{ url: "{gw}" }}
"#,
        xbs = app.url("/app/xbs"),
        gw = app.url("/app/gw"),
    )
}

fn status_change(event_ref: &str) -> String {
    format!(
        r#"{{"partnerId":"ptnr_1","eventRef":"{event_ref}","eventType":"STATUS_CHG","transactionReference":"tx-1","transactionType":"PAYMENT","payment":{{"transactionStatus":{{"status":"SUCCESS"}}}}}}"#
    )
}

struct Setup {
    pki: Pki,
    app: App,
    gate: Pushgate,
}

impl Setup {
    async fn new() -> Setup {
        let pki = Pki::new();
        let app = App::start().await;
        let gate = Pushgate::start(&pki, &routes(&app));
        Setup { pki, app, gate }
    }

    fn sender(&self, cert: Option<&str>) -> Sender {
        Sender::new(&self.pki, self.gate.addr, cert)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_event_reaches_the_app_byte_for_byte_with_pushgate_headers() {
    let s = Setup::new().await;
    let body = status_change("EVT-1");
    let r = s
        .sender(Some("xbs-prod"))
        .post(
            "/xbs/status/webhook",
            &[("x-pushgate-route", "forged"), ("x-notification-id", "passes")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", s.gate.logs());
    let got = s.app.received();
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert_eq!(e.path, "/app/xbs");
    assert_eq!(e.body, body.as_bytes());
    assert_eq!(e.header("content-type"), Some("application/json"));
    assert_eq!(e.header("x-pushgate-route"), Some("xbs"));
    assert_eq!(e.header("x-pushgate-event-id"), Some("EVT-1"));
    assert_eq!(e.header("x-pushgate-attempt"), Some("1"));
    assert_eq!(
        e.header("x-pushgate-client-dn"),
        Some("CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US")
    );
    assert!(e.header("x-pushgate-received-at").is_some_and(|v| v.ends_with('Z')));
    assert_eq!(e.header("x-notification-id"), Some("passes"));
    assert_eq!(
        e.headers.get_all("x-pushgate-route").iter().count(),
        1,
        "the forged header is dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_has_its_status_and_forwards_nothing() {
    let s = Setup::new().await;
    let prod = s.sender(Some("xbs-prod"));
    let body = status_change("EVT-R");

    type Case<'a> = (&'a str, Sender, &'a str, Vec<(&'a str, &'a str)>, String, u16);
    let cases: Vec<Case> = vec![
        ("unknown path", prod.clone(), "/nope", vec![], body.clone(), 404),
        (
            "MTF cert on the PROD route",
            s.sender(Some("xbs-mtf")),
            "/xbs/status/webhook",
            vec![],
            body.clone(),
            403,
        ),
        (
            "other DN from the same CA",
            s.sender(Some("other")),
            "/xbs/status/webhook",
            vec![],
            body.clone(),
            403,
        ),
        (
            "no certificate on a DN route",
            s.sender(None),
            "/xbs/status/webhook",
            vec![],
            body.clone(),
            403,
        ),
        ("no secret", s.sender(None), "/gateway", vec![], body.clone(), 401),
        (
            "wrong secret",
            s.sender(None),
            "/gateway",
            vec![("x-notification-secret", "0123456789abcdef0123456789abcdeX")],
            body.clone(),
            401,
        ),
        (
            "body over max_body",
            prod.clone(),
            "/xbs/status/webhook",
            vec![],
            "x".repeat(5000),
            413,
        ),
        (
            "not JSON",
            prod.clone(),
            "/xbs/status/webhook",
            vec![],
            "{\"eventRef\":".into(),
            400,
        ),
    ];
    for (what, sender, path, headers, body, want) in cases {
        let r = sender.post(path, &headers, body).await.unwrap();
        assert_eq!(r.status, want, "{what}");
    }
    let mut conn = prod.connect().await.unwrap();
    let r = conn
        .request("GET", "/xbs/status/webhook", &[], Default::default())
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.headers.get("allow").map(|v| v.to_str().unwrap())),
        (405, Some("POST"))
    );
    assert_eq!(s.app.count(), 0, "nothing refused may reach the app");
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_client_certificate_fails_the_handshake() {
    let s = Setup::new().await;
    let err = match s
        .sender(Some("untrusted"))
        .post("/xbs/status/webhook", &[], status_change("E"))
        .await
    {
        Ok(r) => panic!("an untrusted certificate got an answer: {}", r.status),
        Err(e) => e,
    };
    let _ = err; // the handshake (or the first read after it, in TLS 1.3) fails
    assert_eq!(s.app.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_answered_200_and_not_forwarded() {
    let s = Setup::new().await;
    let prod = s.sender(Some("xbs-prod"));
    for _ in 0..3 {
        assert_eq!(
            prod.post("/xbs/status/webhook", &[], status_change("DUP-1"))
                .await
                .unwrap()
                .status,
            200
        );
    }
    // The snake_case variant's id is found too, and is its own event.
    let snake = r#"{"partner_id":"p","event_ref":"DUP-2","event_type":"STATUS_CHG"}"#;
    assert_eq!(prod.post("/xbs/status/webhook", &[], snake).await.unwrap().status, 200);
    assert_eq!(prod.post("/xbs/status/webhook", &[], snake).await.unwrap().status, 200);
    let ids: Vec<_> = s
        .app
        .received()
        .iter()
        .map(|r| r.header("x-pushgate-event-id").unwrap().to_string())
        .collect();
    assert_eq!(ids, ["DUP-1", "DUP-2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_copies_of_one_new_event_reach_the_app_once() {
    let pki = Pki::new();
    // A slow app keeps the first copy in flight while the others arrive.
    let app = App::start_with(Arc::new(|_, _| (200, Duration::from_millis(300)))).await;
    let gate = Pushgate::start(&pki, &routes(&app));
    let sender = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = sender.clone();
            tokio::spawn(async move {
                s.post("/xbs/status/webhook", &[], status_change("CONC-1"))
                    .await
                    .unwrap()
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_delivery_is_not_remembered_as_seen() {
    let pki = Pki::new();
    let app = App::start_with(Arc::new(|_, n| (if n == 0 { 500 } else { 200 }, Duration::ZERO))).await;
    let gate = Pushgate::start(&pki, &routes(&app));
    let prod = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    assert_eq!(
        prod.post("/xbs/status/webhook", &[], status_change("RETRY-1"))
            .await
            .unwrap()
            .status,
        500
    );
    assert_eq!(
        prod.post("/xbs/status/webhook", &[], status_change("RETRY-1"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        prod.post("/xbs/status/webhook", &[], status_change("RETRY-1"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        app.count(),
        2,
        "the sender's retry is delivered, the third copy is a duplicate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_secret_rotation_ids_and_nvp() {
    let s = Setup::new().await;
    let gw = s.sender(None);
    let nvp = "order.id=ORD-7&transaction.id=1&result=SUCCESS";
    let form = ("content-type", "application/x-www-form-urlencoded");
    for (secret, id) in [(SECRET, "N-1"), (SECRET_NEXT, "N-2"), (SECRET, "N-1")] {
        let h = [
            ("x-notification-secret", secret),
            ("x-notification-id", id),
            ("x-notification-attempt", "1"),
            form,
        ];
        assert_eq!(gw.post("/gateway", &h, nvp).await.unwrap().status, 200);
    }
    let got = s.app.received();
    assert_eq!(got.len(), 2, "N-1 twice is one event");
    for r in &got {
        assert!(
            r.header("x-notification-secret").is_none(),
            "the secret never reaches the app"
        );
        assert_eq!(r.header("content-type"), Some("application/x-www-form-urlencoded"));
        assert_eq!(r.body, nvp.as_bytes());
    }
    // Without X-Notification-Id the body's hash is the id: the same body is a duplicate.
    let h = [("x-notification-secret", SECRET), form];
    assert_eq!(
        gw.post("/gateway", &h, "order.id=ORD-8&result=SUCCESS")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        gw.post("/gateway", &h, "order.id=ORD-8&result=SUCCESS")
            .await
            .unwrap()
            .status,
        200
    );
    let last = s.app.received().pop().unwrap();
    assert!(last.header("x-pushgate-event-id").unwrap().starts_with("sha256:"));
    assert_eq!(s.app.count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_trickles_past_the_read_timeout_gets_408() {
    use tokio::io::AsyncWriteExt;
    let s = Setup::new().await;
    let mut tls = s.sender(Some("xbs-prod")).tls().await.unwrap();
    let body = status_change("SLOW-1");
    let head = format!(
        "POST /xbs/status/webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body.as_bytes()[..10]).await.unwrap();
    tls.flush().await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s.app.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn leaf_pins_narrow_the_route() {
    let pki = Pki::new();
    let app = App::start().await;
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_file(pki.path("xbs-prod.pem")).unwrap();
    let pin = sha2_hex(&der);
    let body = format!(
        "routes:\n  - name: pinned\n    path: /p\n    ack: upstream\n    client_cert_sha256: [\"{pin}\"]\n    upstream: {{ url: \"{}\" }}\n",
        app.url("/p")
    );
    let gate = Pushgate::start(&pki, &body);
    let ok = Sender::new(&pki, gate.addr, Some("xbs-prod"))
        .post("/p", &[], "{}")
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let other = Sender::new(&pki, gate.addr, Some("xbs-mtf"))
        .post("/p", &[], "{}")
        .await
        .unwrap();
    assert_eq!(other.status, 403);
    assert_eq!(app.count(), 1);
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
