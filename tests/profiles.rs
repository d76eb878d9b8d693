//! Each sender profile against the real binary: the documented shapes (examples/samples) are
//! understood and reach the app byte for byte, duplicates inside and across requests are
//! dropped, Cross-Border JWEs are decrypted before dedupe, and each sender gets its answer.
//! Routes say `ack: upstream`; what the app receives and what the sender is answered for
//! duplicates is the same with `ack: spool`.

mod support;

use support::samples::{
    envelope, jwe_keys, raw_elements, sample, seal, tamper_tag, Enc, MC_A128GCM, MC_A256GCM, MC_KEY_PATH,
};
use support::{App, Pki, Pushgate, Received, Sender};

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

const XBS: &str = "/xbs/status/webhook";
const CEN: &str = "/cen/notifications";
const GW: &str = "/gateway/webhook";
const ETHOCA: &str = "/ethoca/alerts";

struct Setup {
    pki: Pki,
    app: App,
    gate: Pushgate,
    _keys: tempfile::TempDir,
}

impl Setup {
    /// One route per profile, `ack: upstream`.
    async fn new() -> Setup {
        Setup::with_ack("upstream").await
    }

    /// One route per profile; the XBS route holds a generated key and Mastercard's test key.
    async fn with_ack(ack: &str) -> Setup {
        let pki = Pki::new();
        let app = App::start().await;
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("xbs-encryption.pem");
        jwe_keys()[0].write_pem(&key);
        let routes = format!(
            r#"routes:
  - name: xbs
    path: {XBS}
    profile: mastercard-xbs
    ack: {ack}
    client_dn: ["{PROD_DN}"]
    decrypt: {{ keys: ["file:{key}", "file:{MC_KEY_PATH}"] }}
    upstream: {{ url: "{xbs}" }}
  - name: cen
    path: {CEN}
    profile: mastercard-cen
    ack: {ack}
    client_dn: ["{PROD_DN}"]
    upstream: {{ url: "{cen}" }}
  - name: gateway
    path: {GW}
    profile: mastercard-gateway
    ack: {ack}
    secret: {{ header: X-Notification-Secret, values: ["{SECRET}"] }}
    upstream: {{ url: "{gw}" }}
  - name: ethoca
    path: {ETHOCA}
    profile: ethoca-alerts
    ack: {ack}
    client_dn: ["{PROD_DN}"]
    upstream: {{ url: "{ethoca}" }}
"#,
            key = key.display(),
            xbs = app.url("/app/xbs"),
            cen = app.url("/app/cen"),
            gw = app.url("/app/gateway"),
            ethoca = app.url("/app/ethoca"),
        );
        let gate = Pushgate::start(&pki, &routes);
        Setup {
            pki,
            app,
            gate,
            _keys: keys,
        }
    }

    fn mastercard(&self) -> Sender {
        Sender::new(&self.pki, self.gate.addr, Some("xbs-prod"))
    }

    /// POSTs and returns (status, content-type, body) of the answer.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: impl Into<bytes::Bytes>) -> (u16, String, String) {
        let sender = if path == GW {
            Sender::new(&self.pki, self.gate.addr, None)
        } else {
            self.mastercard()
        };
        let r = sender.post(path, headers, body).await.unwrap();
        let ct = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (r.status, ct, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// POSTs and expects a 200.
    async fn ok(&self, path: &str, headers: &[(&str, &str)], body: impl Into<bytes::Bytes>) {
        let (status, _, _) = self.post(path, headers, body).await;
        assert_eq!(status, 200, "{}", self.gate.logs());
    }

    fn received(&self, app_path: &str) -> Vec<Received> {
        self.app.received().into_iter().filter(|r| r.path == app_path).collect()
    }
}

fn event_ids(r: &Received) -> Vec<String> {
    r.header("x-pushgate-event-id")
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect()
}

fn array_of(elements: &[&str]) -> String {
    format!("[{}]", elements.join(","))
}

// ---- Cross-Border Services -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn xbs_documented_shapes_reach_the_app_exactly_and_once() {
    let s = Setup::new().await;
    let cases = [
        ("xbs-status-change.json", "ref_Xq7Lm2Vb9Tc4Rz8Wp1Nd6Kf3Hs5Gj0Ya"),
        ("xbs-status-change-snake.json", "ref_Bn4Qw8Ze1Mr6Tx3Ly9Pc2Vk7Ja5Hd0Sg"),
        ("xbs-carded-rate.json", "ref_Cr3Dt7Fy1Gu5Hi9Jo2Kp6Lq0Mr4Ns8Ot"),
        ("xbs-rfi.json", "ref_Rf1Ia2Mb3Nc4Od5Pe6Qf7Rg8Sh9Ti0Uj"),
    ];
    for (file, _) in cases {
        s.ok(XBS, &[], sample(file)).await;
    }
    // Mastercard retries up to three times: every retry is answered 200 and dropped.
    for (file, _) in cases {
        let (status, ct, body) = s.post(XBS, &[], sample(file)).await;
        assert_eq!((status, ct.as_str(), body.as_str()), (200, "", ""), "{file}");
    }
    let got = s.received("/app/xbs");
    assert_eq!(got.len(), cases.len());
    for (r, (file, id)) in got.iter().zip(cases) {
        assert_eq!(r.body, sample(file), "{file} is forwarded byte for byte");
        assert_eq!(r.header("x-pushgate-event-id"), Some(id));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
}

/// The published samples reuse one eventRef across RFI requests: a second RFI push that
/// reuses an eventRef for another request is not a duplicate but a conflict (docs/profiles.md),
/// delivered flagged; its exact re-send is a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn rfi_reusing_an_event_ref_for_another_request_reaches_the_app_as_a_conflict() {
    let s = Setup::new().await;
    let first = sample("xbs-rfi.json");
    let mut other: serde_json::Value = serde_json::from_slice(&first).unwrap();
    other["notification"]["requestId"] = "RFI-SAMPLE-000002".into();
    let other = other.to_string();
    s.ok(XBS, &[], first).await;
    s.ok(XBS, &[], other.clone()).await;
    s.ok(XBS, &[], other.clone()).await;
    let got = s.received("/app/xbs");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body, other.as_bytes());
    assert!(got[1].header("x-pushgate-conflict").is_some());
}

// ---- Cross-Border JWE ------------------------------------------------------------------------

fn status_change(event_ref: &str) -> String {
    format!(
        r#"{{"partnerId":"DEMO","eventRef":"{event_ref}","eventType":"STATUS_CHG","transactionType":"PAYMENT","payment":{{"transactionStatus":{{"status":"SUCCESS"}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn jwe_payloads_are_decrypted_for_every_enc_iv_and_kid_combination() {
    let s = Setup::new().await;
    let key = &jwe_keys()[0];
    let mut sent = Vec::new();
    for enc in [Enc::A128Gcm, Enc::A256Gcm] {
        for iv_len in [12, 16] {
            for with_kid in [true, false] {
                let id = format!("ref_jwe_{enc:?}_{iv_len}_{with_kid}");
                let plaintext = status_change(&id);
                let jwe = seal(
                    key,
                    enc,
                    iv_len,
                    with_kid,
                    Some("application/json"),
                    plaintext.as_bytes(),
                );
                s.ok(XBS, &[("x-encrypted", "true")], envelope(&jwe)).await;
                sent.push((id, plaintext));
            }
        }
    }
    let got = s.received("/app/xbs");
    assert_eq!(got.len(), sent.len());
    for (r, (id, plaintext)) in got.iter().zip(&sent) {
        assert_eq!(r.body, plaintext.as_bytes(), "the app gets the plaintext");
        assert_eq!(r.header("x-pushgate-event-id"), Some(id.as_str()));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-encrypted"), None, "the plaintext is not encrypted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jwe_content_type_comes_from_cty_and_dedupe_from_the_plaintext() {
    let s = Setup::new().await;
    let key = &jwe_keys()[0];
    let plaintext = status_change("ref_jwe_same");
    // Two encryptions of one notification differ in every byte, yet are one event.
    let a = seal(
        key,
        Enc::A256Gcm,
        12,
        true,
        Some("application/vnd.sample+json"),
        plaintext.as_bytes(),
    );
    let b = seal(key, Enc::A256Gcm, 16, false, None, plaintext.as_bytes());
    assert_ne!(a, b);
    s.ok(XBS, &[], envelope(&a)).await;
    s.ok(XBS, &[("x-encrypted", "true")], envelope(&b)).await;
    // And the plaintext itself, sent unencrypted, is the same event again.
    s.ok(XBS, &[], plaintext.clone()).await;
    let got = s.received("/app/xbs");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, plaintext.as_bytes());
    assert_eq!(got[0].header("content-type"), Some("application/vnd.sample+json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn undecryptable_payloads_are_refused_with_400() {
    let s = Setup::new().await;
    let [ours, theirs] = jwe_keys();
    let pt = status_change("ref_jwe_bad");
    let cases = [
        (
            "for a key the route does not hold (kid)",
            seal(theirs, Enc::A256Gcm, 12, true, None, pt.as_bytes()),
        ),
        (
            "for a key the route does not hold (no kid)",
            seal(theirs, Enc::A128Gcm, 16, false, None, pt.as_bytes()),
        ),
        (
            "tampered tag",
            tamper_tag(&seal(ours, Enc::A256Gcm, 12, true, None, pt.as_bytes())),
        ),
        ("not a JWE", "not.a.jwe".to_string()),
    ];
    for (what, jwe) in cases {
        let (status, _, body) = s.post(XBS, &[], envelope(&jwe)).await;
        assert_eq!((status, body.as_str()), (400, ""), "{what}");
    }
    // x-encrypted without an envelope is not passed on as if it were plaintext.
    let (status, _, _) = s.post(XBS, &[("x-encrypted", "true")], pt.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(s.app.count(), 0);
    // Nothing refused was remembered: the same event, properly encrypted, gets through.
    s.ok(
        XBS,
        &[],
        envelope(&seal(ours, Enc::A256Gcm, 12, true, None, pt.as_bytes())),
    )
    .await;
    assert_eq!(s.app.count(), 1);
}

/// Mastercard's own client-encryption-java test vectors, end to end.
#[tokio::test(flavor = "multi_thread")]
async fn mastercard_published_jwe_vectors_decrypt_end_to_end() {
    let s = Setup::new().await;
    s.ok(XBS, &[("x-encrypted", "true")], envelope(MC_A256GCM)).await;
    let got = s.received("/app/xbs");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, &br#"{"foo":"bar"}"#[..]);
    // The header's `application\/json` (escaped slash) is the plain type.
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    // `{"foo":"bar"}` has no eventRef: it is keyed by its hash, so the A128GCM vector (no kid,
    // the route's other key tried first), which holds the same plaintext, is a duplicate.
    let id = got[0].header("x-pushgate-event-id").unwrap().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    s.ok(XBS, &[], envelope(MC_A128GCM)).await;
    assert_eq!(s.app.count(), 1);
}

// ---- Commercial Event Notifications ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn cen_batch_elements_reach_the_app_as_written() {
    let s = Setup::new().await;
    let body = sample("cen-batch.json");
    s.ok(CEN, &[], body.clone()).await;
    let got = s.received("/app/cen");
    assert_eq!(got.len(), 1);
    let elements = raw_elements(&body);
    let refs: Vec<&str> = elements.iter().map(String::as_str).collect();
    assert_eq!(
        got[0].body,
        array_of(&refs).as_bytes(),
        "each element's bytes preserved"
    );
    let ids = event_ids(&got[0]);
    assert_eq!(ids.len(), 3);
    assert!(ids[0].starts_with("sha256:") && ids[1].starts_with("sha256:"));
    assert_eq!(ids[2], "c0ffee00-5a3e-4d6b-9f21-000000000001");
}

/// Repeated CEN notifications are dropped whether they come in the same batch or a later one;
/// another notification under a seen idempotencyKey is delivered as a conflict. (Re-pushes that
/// differ only in `pushStatus` are the fingerprint's concern: see docs/profiles.md.)
#[tokio::test(flavor = "multi_thread")]
async fn cen_duplicates_inside_and_across_batches() {
    let s = Setup::new().await;
    let elements = raw_elements(&sample("cen-batch.json"));
    let (auth, clearing, token) = (&elements[0], &elements[1], &elements[2]);
    let auth_again = auth.to_string();
    let mut token_again: serde_json::Value = serde_json::from_str(token).unwrap();
    token_again["createdTimestamp"] = "2025-01-21T08:30:05.000Z".into();
    let token_again = serde_json::to_string(&token_again).unwrap();

    // One batch holding one notification twice.
    s.ok(CEN, &[], array_of(&[auth, &auth_again, clearing])).await;
    // A later batch: a repeat, a new one, and another token event under its idempotencyKey.
    s.ok(CEN, &[], array_of(&[clearing, token, &token_again])).await;
    // All seen: 200, no body, nothing forwarded.
    let (status, ct, body) = s.post(CEN, &[], array_of(&[&auth_again, token, clearing])).await;
    assert_eq!((status, ct.as_str(), body.as_str()), (200, "", ""));

    let got = s.received("/app/cen");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, array_of(&[auth, clearing]).as_bytes());
    assert_eq!(got[1].body, array_of(&[token, &token_again]).as_bytes());
    assert_eq!(
        event_ids(&got[1]),
        [
            "c0ffee00-5a3e-4d6b-9f21-000000000001",
            "c0ffee00-5a3e-4d6b-9f21-000000000001"
        ]
    );
    let conflict = got[1].header("x-pushgate-conflict").unwrap_or("");
    assert!(conflict.starts_with("-,first-fingerprint="), "{conflict}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cen_bodies_that_are_not_arrays_are_refused() {
    let s = Setup::new().await;
    for body in ["{\"subject\":\"CLEARING\"}", "[]", "[1,"] {
        let (status, _, _) = s.post(CEN, &[], body).await;
        assert_eq!(status, 400, "{body}");
    }
    assert_eq!(s.app.count(), 0);
}

// ---- Mastercard Gateway ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn gateway_json_and_nvp_with_and_without_notification_id() {
    let s = Setup::new().await;
    let json = sample("gateway.json");
    let nvp = sample("gateway.nvp");
    let secret = ("x-notification-secret", SECRET);

    s.ok(
        GW,
        &[secret, ("x-notification-id", "NTF-J1"), ("x-notification-attempt", "1")],
        json.clone(),
    )
    .await;
    s.ok(
        GW,
        &[
            secret,
            FORM,
            ("x-notification-id", "NTF-N1"),
            ("x-notification-attempt", "1"),
        ],
        nvp.clone(),
    )
    .await;
    // Re-deliveries carry the same X-Notification-Id and a higher attempt.
    s.ok(
        GW,
        &[secret, ("x-notification-id", "NTF-J1"), ("x-notification-attempt", "2")],
        json.clone(),
    )
    .await;
    s.ok(
        GW,
        &[
            secret,
            FORM,
            ("x-notification-id", "NTF-N1"),
            ("x-notification-attempt", "3"),
        ],
        nvp.clone(),
    )
    .await;
    // No X-Notification-Id: the body's hash is the id, so only an identical body is a repeat.
    s.ok(GW, &[secret, FORM], nvp.clone()).await;
    s.ok(GW, &[secret, FORM], nvp.clone()).await;

    let got = s.received("/app/gateway");
    assert_eq!(got.len(), 3);
    assert_eq!(
        (got[0].body.as_ref(), got[0].header("content-type")),
        (&json[..], Some("application/json"))
    );
    for r in &got[1..] {
        assert_eq!(r.body, nvp, "NVP is forwarded as sent");
        assert_eq!(r.header("content-type"), Some("application/x-www-form-urlencoded"));
    }
    assert_eq!(got[0].header("x-pushgate-event-id"), Some("NTF-J1"));
    assert_eq!(got[1].header("x-pushgate-event-id"), Some("NTF-N1"));
    assert_eq!(
        got[1].header("x-notification-id"),
        Some("NTF-N1"),
        "sender headers pass through"
    );
    assert!(got[2].header("x-pushgate-event-id").unwrap().starts_with("sha256:"));
    assert!(got.iter().all(|r| r.header("x-notification-secret").is_none()));
    let logs = s.gate.logs();
    assert!(
        !logs.contains(SECRET) && !logs.contains("5555"),
        "no secret or card number is logged"
    );
}

// ---- Ethoca ----------------------------------------------------------------------------------

fn alert(id: &str) -> String {
    format!(
        r#"{{"alertId":"{id}","alertType":"CUSTOMERDISPUTE","cardNumber":"5555********4444","amount":{{"value":"1.00","currencyCode":"USD"}}}}"#
    )
}

fn alerts(list: &[&str]) -> String {
    format!(r#"{{"alerts":{}}}"#, array_of(list))
}

fn ack(ids: &[&str]) -> serde_json::Value {
    let list: Vec<_> = ids
        .iter()
        .map(|id| serde_json::json!({"alertId": id, "status": "SUCCESS"}))
        .collect();
    serde_json::json!({ "alerts": list })
}

#[tokio::test(flavor = "multi_thread")]
async fn ethoca_alerts_are_forwarded_per_alert_and_acknowledged_each() {
    let s = Setup::new().await;
    let body = sample("ethoca-alerts.json");
    s.ok(ETHOCA, &[], body.clone()).await;
    let a3 = alert("A0SAMPLE0000000000000003Z");
    // Re-sent alerts are the sample's own (another content under a seen alertId is a conflict).
    let sent = raw_alerts(&body);
    let (a1, a2) = (sent[0], sent[1]);

    // An old alert, a new one, and the new one again in the same push.
    s.ok(ETHOCA, &[], alerts(&[a1, &a3, &a3])).await;
    // Everything seen: pushgate answers itself, acknowledging each alert with SUCCESS.
    let all = alerts(&[a2, a1, &a3]);
    let (status, ct, answer) = s.post(ETHOCA, &[], all).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer,
        ack(&[
            "A0SAMPLE0000000000000002Z",
            "A0SAMPLE0000000000000001Z",
            "A0SAMPLE0000000000000003Z"
        ])
    );

    let got = s.received("/app/ethoca");
    assert_eq!(got.len(), 2);
    // The sample's alerts, each exactly as written in its pretty-printed file.
    assert_eq!(got[0].body, array_of(&raw_alerts(&body)).as_bytes());
    assert_eq!(got[1].body, array_of(&[&a3]).as_bytes());
    assert_eq!(event_ids(&got[1]), ["A0SAMPLE0000000000000003Z"]);
    assert!(!s.gate.logs().contains("5555"), "no card number is logged");
}

/// The elements of the body's `alerts` array exactly as written.
fn raw_alerts(body: &[u8]) -> Vec<&str> {
    #[derive(serde::Deserialize)]
    struct Alerts<'a> {
        #[serde(borrow)]
        alerts: Vec<&'a serde_json::value::RawValue>,
    }
    let parsed: Alerts<'_> = serde_json::from_slice(body).unwrap();
    parsed.alerts.into_iter().map(|r| r.get()).collect()
}

/// With `ack: spool` pushgate answers every accepted push itself, so a push mixing new and
/// already-seen alerts is acknowledged alert by alert. (With `ack: upstream` the app's own
/// answer is relayed whenever something was new: see accept.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn ethoca_mixed_push_is_acknowledged_alert_by_alert_with_spool() {
    let s = Setup::with_ack("spool").await;
    let (a1, a2) = (alert("A0SAMPLE0000000000000001Z"), alert("A0SAMPLE0000000000000002Z"));
    let (status, _, answer) = s.post(ETHOCA, &[], alerts(&[&a1])).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer).unwrap(),
        ack(&["A0SAMPLE0000000000000001Z"])
    );
    let (status, ct, answer) = s.post(ETHOCA, &[], alerts(&[&a1, &a2])).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer).unwrap(),
        ack(&["A0SAMPLE0000000000000001Z", "A0SAMPLE0000000000000002Z"])
    );
}
