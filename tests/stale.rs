//! The out-of-date status guard against the real binary: Cross-Border statuses sent
//! newest-first for one transaction flag the older one (`X-Pushgate-Stale: true`, counted),
//! other transactions are not disturbed, the guard survives `kill -9`, and `on_stale:
//! quarantine` holds the older status instead of delivering it.

mod support;

use std::time::Duration;

use support::{admin, eventually, free_port, metric, App, Pki, Pushgate, Received, Sender};

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";

fn routes(app: &App, on_stale: &str) -> String {
    format!(
        r#"routes:
  - name: xbs
    path: /xbs
    profile: mastercard-xbs
    client_dn: ["{PROD_DN}"]
    on_stale: {on_stale}
    upstream: {{ url: "{url}", timeout: 5s }}
"#,
        url = app.url("/xbs")
    )
}

/// A payment status change as Cross-Border sends it (status-change sample 06's shape): the
/// newest history entry first, at `minute` past 15:00 (-05:00).
fn status(event_ref: &str, tx: &str, state: &str, minute: u32) -> String {
    format!(
        r#"{{"eventRef":"{event_ref}","eventType":"STATUS_CHG","transactionReference":"{tx}","payment":{{"transactionStatus":{{"status":"{state}"}}}},"transactionHistories":[{{"status":"{state}","timestamp":"2021-06-25T15:{minute:02}:00-05:00"}},{{"status":"PENDING","timestamp":"2021-06-25T15:00:00-05:00"}}]}}"#
    )
}

fn stale_of(got: &[Received], event_ref: &str) -> Option<Option<String>> {
    got.iter()
        .find(|r| r.header("x-pushgate-event-id") == Some(event_ref))
        .map(|r| r.header("x-pushgate-stale").map(str::to_string))
}

async fn send(gate: &Pushgate, pki: &Pki, body: String) {
    let r = Sender::new(pki, gate.addr, Some("xbs-prod"))
        .post("/xbs", &[], body)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", gate.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_status_after_a_newer_one_is_flagged_and_counted_other_transactions_not() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app, "deliver"));
    // T1: SUCCESS at 15:41, then the late PENDING of 15:40.
    send(&gate, &pki, status("E1-NEW", "T1", "SUCCESS", 41)).await;
    send(&gate, &pki, status("E1-OLD", "T1", "PENDING", 40)).await;
    // T2: older than T1's newest, but a different transaction. T3: in order, and a repeat of
    // the same time (not older).
    send(&gate, &pki, status("E2", "T2", "PENDING", 10)).await;
    send(&gate, &pki, status("E3-A", "T3", "PENDING", 20)).await;
    send(&gate, &pki, status("E3-B", "T3", "SUCCESS", 30)).await;
    send(&gate, &pki, status("E3-C", "T3", "SUCCESS", 30)).await;
    eventually(10, "six deliveries", || app.count() == 6).await;
    let got = app.received();
    assert_eq!(
        stale_of(&got, "E1-OLD"),
        Some(Some("true".into())),
        "the late status is flagged"
    );
    for fresh in ["E1-NEW", "E2", "E3-A", "E3-B", "E3-C"] {
        assert_eq!(stale_of(&got, fresh), Some(None), "{fresh} is not stale");
    }
    // One transaction's statuses reach the app in acceptance order.
    let order: Vec<_> = got
        .iter()
        .filter_map(|r| r.header("x-pushgate-event-id"))
        .filter(|id| id.starts_with("E1"))
        .collect();
    assert_eq!(order, ["E1-NEW", "E1-OLD"]);
    let (_, text) = admin(gate.admin, "GET", "/metrics").await;
    assert_eq!(
        metric(&text, r#"pushgate_events_total{outcome="stale",route="xbs"}"#),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guard_survives_kill_9() {
    let pki = Pki::new();
    let app = App::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut gate = Pushgate::start_in(&pki, dir.path(), &routes(&app, "deliver"), port, admin_port);
    send(&gate, &pki, status("R-NEW", "TR", "SUCCESS", 41)).await;
    eventually(10, "delivered", || app.count() == 1).await;
    gate.kill9();
    let gate = Pushgate::start_in(&pki, dir.path(), &routes(&app, "deliver"), port, admin_port);
    // A `deliver` route never makes an acknowledgement wait for the rebuild: wait for it here.
    eventually(10, "the guard rebuilt", || gate.logs().contains("stale guard rebuilt")).await;
    send(&gate, &pki, status("R-OLD", "TR", "PENDING", 40)).await;
    send(&gate, &pki, status("R-OTHER", "TR-2", "PENDING", 40)).await;
    // (R-NEW may come again too: delivery is at least once across a kill -9.)
    eventually(10, "delivered after the restart", || {
        let got = app.received();
        stale_of(&got, "R-OLD").is_some() && stale_of(&got, "R-OTHER").is_some()
    })
    .await;
    let got = app.received();
    assert_eq!(stale_of(&got, "R-OLD"), Some(Some("true".into())), "{}", gate.logs());
    assert_eq!(stale_of(&got, "R-OTHER"), Some(None));
    assert!(gate.logs().contains("stale guard rebuilt"), "{}", gate.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_mode_holds_the_older_status_and_keeps_it() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app, "quarantine"));
    send(&gate, &pki, status("Q-NEW", "TQ", "SUCCESS", 41)).await;
    send(&gate, &pki, status("Q-OLD", "TQ", "PENDING", 40)).await;
    eventually(10, "the newer status delivered", || app.count() == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count(), 1, "the older status is held, not delivered");
    let (status_code, body) = admin(gate.admin, "GET", "/api/events?route=xbs&state=quarantined").await;
    assert_eq!(status_code, 200);
    assert!(body.contains("Q-OLD") && body.contains("stale"), "{body}");
    // Its retry is a duplicate (it was taken), not a second held copy.
    send(&gate, &pki, status("Q-OLD", "TQ", "PENDING", 40)).await;
    let (_, body) = admin(gate.admin, "GET", "/api/events?route=xbs&state=quarantined").await;
    assert_eq!(body.matches("Q-OLD").count(), 1, "{body}");
    let (_, text) = admin(gate.admin, "GET", "/metrics").await;
    assert_eq!(
        metric(&text, r#"pushgate_events_total{outcome="stale",route="xbs"}"#),
        1.0
    );
}
