//! Each sender profile against the real binary: the documented shapes (examples/samples) are
//! understood and reach the app byte for byte, duplicates inside and across requests are
//! dropped, Cross-Border JWEs are decrypted before dedupe, Cross-Border XML is read, ambiguous
//! bodies are refused and quarantined, and each sender gets its answer.
//! Routes say `ack: upstream`; what the app receives and what the sender is answered for
//! duplicates is the same with `ack: spool`.

mod support;

use support::samples::{
    envelope, jwe_keys, raw_elements, sample, seal, tamper_tag, Enc, MC_A128GCM, MC_A256GCM, MC_KEY_PATH,
};
use support::{admin, App, Pki, Pushgate, Received, Sender};

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

    /// How many bodies the route has quarantined (the admin API's count).
    async fn quarantined(&self, route: &str) -> u64 {
        let (status, page) = admin(
            self.gate.admin,
            "GET",
            &format!("/api/events?route={route}&state=quarantined"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let page: serde_json::Value = serde_json::from_str(&page).unwrap();
        page["total"].as_u64().unwrap()
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
    // Every CEN notification is keyed by its content (docs/profiles.md), the token one too.
    let ids = event_ids(&got[0]);
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.starts_with("sha256:")), "{ids:?}");
}

/// Re-pushed CEN notifications differ only in `pushStatus` (and maybe layout); they are
/// dropped whether they come in the same batch or a later one.
#[tokio::test(flavor = "multi_thread")]
async fn cen_duplicates_inside_and_across_batches() {
    let s = Setup::new().await;
    let elements = raw_elements(&sample("cen-batch.json"));
    let (auth, clearing, token) = (&elements[0], &elements[1], &elements[2]);
    let repushed = |element: &str| {
        let mut v: serde_json::Value = serde_json::from_str(element).unwrap();
        v["pushStatus"] = "DELIVERED".into();
        serde_json::to_string_pretty(&v).unwrap()
    };
    let (auth_again, token_again) = (repushed(auth), repushed(token));

    // One batch holding one notification twice.
    s.ok(CEN, &[], array_of(&[auth, &auth_again, clearing])).await;
    // A later batch: a repeat, a new one, and that one re-pushed in the same batch.
    s.ok(CEN, &[], array_of(&[clearing, token, &token_again])).await;
    // All seen: 200, no body, nothing forwarded.
    let (status, ct, body) = s.post(CEN, &[], array_of(&[&auth_again, &token_again, clearing])).await;
    assert_eq!((status, ct.as_str(), body.as_str()), (200, "", ""));

    let got = s.received("/app/cen");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, array_of(&[auth, clearing]).as_bytes());
    assert_eq!(got[1].body, array_of(&[token]).as_bytes());
}

/// `idempotencyKey` names the request that caused a token event, and one request causes
/// several notifications (the CEN OpenAPI's TOKEN_PROVISIONING_EVENT and TOKEN_LIFECYCLE_EVENT
/// examples share one): two notifications with one key both reach the app. And a
/// notification created at another time is another notification (`createdTimestamp` is the
/// notification's creation, which a re-push keeps).
#[tokio::test(flavor = "multi_thread")]
async fn cen_notifications_sharing_an_idempotency_key_all_reach_the_app() {
    let s = Setup::new().await;
    let token = raw_elements(&sample("cen-batch.json")).remove(2);
    let mut provisioning: serde_json::Value = serde_json::from_str(&token).unwrap();
    assert!(provisioning["idempotencyKey"].is_string());
    assert_eq!(provisioning["subject"], "TOKEN_LIFECYCLE_EVENT");
    provisioning["subject"] = "TOKEN_PROVISIONING_EVENT".into();
    let provisioning = provisioning.to_string();
    let mut later: serde_json::Value = serde_json::from_str(&token).unwrap();
    later["createdTimestamp"] = "2025-01-21T08:30:05.000Z".into();
    let later = later.to_string();
    s.ok(CEN, &[], array_of(&[&token, &provisioning])).await;
    s.ok(CEN, &[], array_of(&[&later, &token])).await;
    let got = s.received("/app/cen");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, array_of(&[&token, &provisioning]).as_bytes());
    assert_eq!(got[1].body, array_of(&[&later]).as_bytes());
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

// ---- Ambiguous bodies ------------------------------------------------------------------------

/// A body whose id member is written twice (`eventRef` then `event\u0052ef`, which unescapes
/// to the same name) reads as two different events to parsers keeping the first and the last
/// value: it is refused with 400, quarantined as received, and nothing reaches the app; the
/// unambiguous event sent afterwards is new. Likewise a repeated member inside a CEN element
/// (keyed by its content) and an Ethoca alert with `alertId` twice.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_with_a_member_twice_are_refused_and_quarantined() {
    let s = Setup::with_ack("spool").await;
    let xbs_a = status_change("ref_amb_A");
    let cen = raw_elements(&sample("cen-batch.json"));
    let cases: [(&str, &str, String); 6] = [
        (
            "xbs",
            XBS,
            r#"{"eventRef":"ref_amb_A","eventType":"STATUS_CHG","eventRef":"ref_amb_B"}"#.into(),
        ),
        (
            "xbs",
            XBS,
            r#"{"eventRef":"ref_amb_A","eventType":"STATUS_CHG","event\u0052ef":"ref_amb_B"}"#.into(),
        ),
        (
            "cen",
            CEN,
            format!(r#"[{},{{"subject":"CLEARING","subject":"PAYMENT_UPDATE"}}]"#, cen[0]),
        ),
        (
            "cen",
            CEN,
            r#"[{"subject":"CLEARING","subj\u0065ct":"PAYMENT_UPDATE"}]"#.into(),
        ),
        (
            "ethoca",
            ETHOCA,
            r#"{"alerts":[{"alertId":"A0AMBIGUOUS0000000000001Z","alertId":"A0AMBIGUOUS0000000000002Z"}]}"#.into(),
        ),
        (
            "ethoca",
            ETHOCA,
            r#"{"alerts":[{"alertId":"A0AMBIGUOUS0000000000001Z","alert\u0049d":"A0AMBIGUOUS0000000000002Z"}]}"#.into(),
        ),
    ];
    let mut quarantined = std::collections::HashMap::new();
    for (route, path, body) in &cases {
        let (status, _, answer) = s.post(path, &[], body.clone()).await;
        assert_eq!((status, answer.as_str()), (400, ""), "{body}");
        *quarantined.entry(*route).or_insert(0u64) += 1;
    }
    for (route, n) in quarantined {
        assert_eq!(s.quarantined(route).await, n, "{route}");
    }
    // The quarantined bodies are kept byte for byte.
    let (_, page) = admin(s.gate.admin, "GET", "/api/events?route=xbs&state=quarantined").await;
    assert!(page.contains("\"seq\""), "{page}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.app.count(), 0, "nothing ambiguous is forwarded");
    // Nothing was remembered: the unambiguous events are new.
    s.ok(XBS, &[], xbs_a.clone()).await;
    s.ok(CEN, &[], array_of(&[&cen[0]])).await;
    s.ok(ETHOCA, &[], alerts(&[&alert("A0AMBIGUOUS0000000000001Z")])).await;
    support::eventually(10, "the three unambiguous events", || s.app.count() == 3).await;
    assert!(s.gate.logs().contains("ambiguous body"), "the reason is logged");
}

// ---- Cross-Border XML ------------------------------------------------------------------------

/// Shaped like the carded-rate push's published XML form (values made up): no event_ref, and
/// two `<rates>` elements with no root around them, as published.
const CARDED_RATE_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" ?>
<rates>
    <account_type>BANK</account_type>
    <partner_id>DEMO_PARTNER_1</partner_id>
    <from_currency_code>USD</from_currency_code>
    <to_currency_code>EUR</to_currency_code>
    <tiers>
        <rate_id>rate_sample_0001</rate_id>
        <ask_rate/>
        <bid_rate>0.912345</bid_rate>
    </tiers>
</rates>
<rates>
    <account_type>BANK</account_type>
    <partner_id>DEMO_PARTNER_1</partner_id>
    <from_currency_code>USD</from_currency_code>
    <to_currency_code>GBP</to_currency_code>
    <tiers>
        <rate_id>rate_sample_0002</rate_id>
        <ask_rate/>
        <bid_rate>0.787654</bid_rate>
    </tiers>
</rates>
"#;

#[tokio::test(flavor = "multi_thread")]
async fn xbs_xml_bodies_are_keyed_and_forwarded_byte_for_byte() {
    let s = Setup::new().await;
    let xml = ("content-type", "application/xml");
    let with_ref = r#"<statusChange><eventRef>ref_xml_1</eventRef><eventType>STATUS_CHG</eventType>
  <requestStatus><requestHistory><eventRef>ref_nested</eventRef></requestHistory></requestStatus>
  <note>a &amp; b &#x263A;</note></statusChange>"#;
    s.ok(XBS, &[xml], CARDED_RATE_XML).await;
    s.ok(XBS, &[xml], with_ref).await;
    // A re-send of the same bytes is a duplicate; the same eventRef in a JSON body is the id
    // seen with other content: a conflict, delivered flagged.
    s.ok(XBS, &[xml], CARDED_RATE_XML).await;
    s.ok(XBS, &[xml], with_ref).await;
    s.ok(XBS, &[], status_change("ref_xml_1")).await;
    let got = s.received("/app/xbs");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body, CARDED_RATE_XML.as_bytes());
    assert_eq!(got[1].body, with_ref.as_bytes());
    assert_eq!(got[2].body, status_change("ref_xml_1").as_bytes());
    assert!(got[1].header("x-pushgate-conflict").is_none());
    let conflict = got[2].header("x-pushgate-conflict").unwrap_or_default();
    assert!(conflict.starts_with("first-fingerprint="), "{conflict}");
    for r in &got[..2] {
        assert_eq!(r.header("content-type"), Some("application/xml"));
    }
    let hashed = got[0].header("x-pushgate-event-id").unwrap();
    assert!(
        hashed.starts_with("sha256:"),
        "no event_ref: keyed by the bytes' hash, {hashed}"
    );
    assert_eq!(got[1].header("x-pushgate-event-id"), Some("ref_xml_1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn xml_with_a_dtd_an_entity_or_a_repeated_id_is_refused_and_quarantined() {
    let s = Setup::with_ack("spool").await;
    let xml = ("content-type", "application/xml");
    let bodies = [
        r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "ref_x">]><r><eventRef>&x;</eventRef></r>"#,
        r#"<!DOCTYPE r SYSTEM "file:///etc/passwd"><r><eventRef>ref_dtd</eventRef></r>"#,
        r#"<r><eventRef>&x;</eventRef></r>"#,
        r#"<r><eventRef>ref_a</eventRef><eventRef>ref_b</eventRef></r>"#,
        r#"<r><eventRef>ref_a</eventRef><x:eventRef xmlns:x="urn:x">ref_b</x:eventRef></r>"#,
        r#"<r><eventRef>ref_a</eventRef>"#,
    ];
    for body in bodies {
        let (status, _, answer) = s.post(XBS, &[xml], body).await;
        assert_eq!((status, answer.as_str()), (400, ""), "{body}");
    }
    assert_eq!(s.quarantined("xbs").await, bodies.len() as u64);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.app.count(), 0);
    assert!(!s.gate.logs().contains("passwd"), "the body is not logged");
}
