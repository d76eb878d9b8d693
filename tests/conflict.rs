//! An id seen before with other content is never silently dropped (issue 12): with the memory
//! backend, in `ack: spool` and `ack: upstream`, across a `kill -9` and restart, and under each
//! `on_conflict` choice; a re-send of either version is a plain duplicate. (Two replicas on
//! Redis: tests/redis.rs.)

mod support;

use std::time::Duration;

use support::{admin, eventually, metric, App, Pki, Pushgate, Received, Sender};

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";

/// One XBS route per mode and per `on_conflict` choice, each to its own app path.
fn config(app: &App) -> String {
    let route = |name: &str, ack: &str, on_conflict: &str| {
        format!(
            r#"  - name: {name}
    path: /{name}
    profile: mastercard-xbs
    ack: {ack}
    on_conflict: {on_conflict}
    client_dn: ["{PROD_DN}"]
    upstream: {{ url: "{url}" }}
"#,
            url = app.url(&format!("/app/{name}")),
        )
    };
    format!(
        "routes:\n{}{}{}{}  - name: batch\n    path: /batch\n    profile: mastercard-cen\n    events: {{ id_pointer: /idempotencyKey }}\n    client_dn: [\"{PROD_DN}\"]\n    upstream: {{ url: \"{}\" }}\n",
        route("spool", "spool", "deliver"),
        route("upstream", "upstream", "deliver"),
        route("quarantine", "spool", "quarantine"),
        route("drop", "spool", "drop"),
        app.url("/app/batch"),
    )
}

/// A Cross-Border status change: the same `eventRef`, a different `status`.
fn event(id: &str, status: &str) -> String {
    format!(r#"{{"eventRef":"{id}","eventType":"STATUS_CHG","status":"{status}"}}"#)
}

fn fp_hex(body: &str) -> String {
    support::fingerprint_hex("mastercard-xbs", body)
}

fn at(app: &App, route: &str) -> Vec<Received> {
    let path = format!("/app/{route}");
    app.received().into_iter().filter(|r| r.path == path).collect()
}

fn bodies(app: &App, route: &str) -> Vec<String> {
    at(app, route)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

async fn events_metric(gate: &Pushgate, route: &str, outcome: &str) -> f64 {
    let (_, text) = admin(gate.admin, "GET", "/metrics").await;
    metric(
        &text,
        &format!(r#"pushgate_events_total{{outcome="{outcome}",route="{route}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn other_content_under_a_seen_id_is_delivered_flagged_in_both_modes_and_resends_are_duplicates() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &config(&app));
    let s = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let (first, second) = (event("C-1", "QUOTE_ACCEPTED"), event("C-1", "PAYMENT_SETTLED"));
    for route in ["spool", "upstream"] {
        let path = format!("/{route}");
        for body in [&first, &second, &first, &second] {
            assert_eq!(s.post(&path, &[], body.clone()).await.unwrap().status, 200, "{route}");
        }
        eventually(10, "both versions delivered", || at(&app, route).len() == 2).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for route in ["spool", "upstream"] {
        let got = at(&app, route);
        assert_eq!(bodies(&app, route), [first.clone(), second.clone()], "{route}");
        assert_eq!(got[0].header("x-pushgate-conflict"), None);
        assert_eq!(
            got[1].header("x-pushgate-conflict"),
            Some(format!("first-fingerprint={}", fp_hex(&first)).as_str()),
            "{route}: the second names the first"
        );
        assert_eq!(got[1].header("x-pushgate-event-id"), Some("C-1"));
        assert_eq!(events_metric(&gate, route, "accepted").await, 1.0);
        assert_eq!(events_metric(&gate, route, "conflict").await, 1.0);
        assert_eq!(events_metric(&gate, route, "duplicate").await, 2.0);
    }
    let logs = gate.logs();
    assert!(logs.contains("seen before with other content"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_batch_carrying_one_id_with_two_contents_delivers_both() {
    // The CEN OpenAPI's TOKEN_PROVISIONING and TOKEN_LIFECYCLE examples share one idempotencyKey.
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &config(&app));
    let s = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let a = r#"{"idempotencyKey":"K-1","eventType":"TOKEN_PROVISIONING_EVENT"}"#;
    let b = r#"{"idempotencyKey":"K-1","eventType":"TOKEN_LIFECYCLE_EVENT"}"#;
    let batch = format!("[{a},{b},{a}]");
    assert_eq!(s.post("/batch", &[], batch.clone()).await.unwrap().status, 200);
    assert_eq!(s.post("/batch", &[], batch).await.unwrap().status, 200);
    eventually(10, "delivered", || !at(&app, "batch").is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = at(&app, "batch");
    assert_eq!(got.len(), 1, "the re-sent batch is a duplicate");
    assert_eq!(String::from_utf8_lossy(&got[0].body), format!("[{a},{b}]"));
    assert_eq!(
        got[0].header("x-pushgate-conflict"),
        Some(
            format!(
                "-,first-fingerprint={}",
                support::fingerprint_hex("mastercard-cen", &format!("[{a}]"))
            )
            .as_str()
        )
    );
    assert_eq!(events_metric(&gate, "batch", "conflict").await, 1.0);
    assert_eq!(events_metric(&gate, "batch", "duplicate").await, 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn both_versions_are_remembered_across_a_kill_9() {
    let pki = Pki::new();
    let app = App::start().await;
    let mut gate = Pushgate::start(&pki, &config(&app));
    let s = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let (v1, v2, v3) = (event("R-1", "A"), event("R-1", "B"), event("R-1", "C"));
    for body in [&v1, &v2] {
        assert_eq!(s.post("/spool", &[], body.clone()).await.unwrap().status, 200);
    }
    eventually(10, "delivered before the kill", || at(&app, "spool").len() == 2).await;
    gate.restart();
    for body in [&v1, &v2, &v3, &v3] {
        assert_eq!(s.post("/spool", &[], body.clone()).await.unwrap().status, 200);
    }
    // A delivery the kill interrupted before it was recorded is made again (at least once):
    // what matters is which contents reached the app, and that the third names the first.
    let distinct = || {
        let mut seen: Vec<Received> = Vec::new();
        for r in at(&app, "spool") {
            if !seen.iter().any(|s| s.body == r.body) {
                seen.push(r);
            }
        }
        seen
    };
    eventually(10, "the third version delivered", || distinct().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = distinct();
    let got_bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(got_bodies, [v1.clone(), v2, v3]);
    assert_eq!(
        got[2].header("x-pushgate-conflict"),
        Some(format!("first-fingerprint={}", fp_hex(&v1)).as_str()),
        "after the restart the first version is still the reference"
    );
    assert_eq!(events_metric(&gate, "spool", "duplicate").await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_keeps_the_other_version_for_replay_and_drop_counts_it() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &config(&app));
    let s = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let id = "5105105105105100"; // a sender using a card number as its id: masked in logs
    let (first, second) = (event(id, "A"), event(id, "B"));
    for route in ["quarantine", "drop"] {
        let path = format!("/{route}");
        for body in [&first, &second, &second] {
            assert_eq!(s.post(&path, &[], body.clone()).await.unwrap().status, 200, "{route}");
        }
    }
    eventually(10, "the first versions delivered", || {
        at(&app, "quarantine").len() == 1 && at(&app, "drop").len() == 1
    })
    .await;

    // quarantine: stored, listed, its re-send a duplicate, delivered once replayed.
    assert_eq!(events_metric(&gate, "quarantine", "conflict").await, 1.0);
    assert_eq!(events_metric(&gate, "quarantine", "duplicate").await, 1.0);
    let (status, list) = admin(gate.admin, "GET", "/api/events?route=quarantine&state=quarantined").await;
    assert_eq!(status, 200, "{list}");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["total"], 1, "{list}");
    let item = &list["items"][0];
    assert_eq!(item["event_ids"][0], id);
    assert!(item["quarantine_reason"].as_str().unwrap().contains("id conflict"));
    let seq = item["seq"].as_u64().unwrap();
    let (status, _) = admin(gate.admin, "POST", &format!("/api/events/{seq}/replay")).await;
    assert_eq!(status, 200);
    eventually(10, "replayed", || at(&app, "quarantine").len() == 2).await;
    let got = at(&app, "quarantine");
    assert_eq!(String::from_utf8_lossy(&got[1].body), second);
    assert!(got[1].header("x-pushgate-conflict").is_some());

    // drop: neither stored nor delivered, each arrival counted and logged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies(&app, "drop"), [first]);
    assert_eq!(events_metric(&gate, "drop", "conflict").await, 2.0);
    let logs = gate.logs();
    assert!(logs.contains("dropped"), "{logs}");
    assert!(!logs.contains(id), "the id is masked in every log line");
}
