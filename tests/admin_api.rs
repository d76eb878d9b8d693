//! The admin API as a newcomer meets it, against the real binary: a parameter it does not take
//! is refused with the ones it takes, an unknown route is 404, a delivered event shows the
//! attempt the app took and no stale error, and a replayed quarantined body carries an id.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::{admin, block_on, eventually, App, Pki, Pushgate, Sender};

const PROD: &str = "CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US";

fn routes(app: &App) -> String {
    format!(
        "routes:\n  - name: xbs\n    path: /xbs\n    profile: mastercard-xbs\n    client_dn: [\"{PROD}\"]\n    upstream: {{ url: \"{}\" }}\n",
        app.url("/xbs")
    )
}

fn event(id: &str) -> String {
    format!(r#"{{"eventRef":"{id}","transactionReference":"T-{id}","status":"SUCCESS"}}"#)
}

async fn json(gate: &Pushgate, method: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = admin(gate.admin, method, path).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// Regression (issue: `GET /api/events?stat=dead`, a typo, answered every event).
#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_an_endpoint_does_not_take_is_refused_with_the_ones_it_takes() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app));
    let prod = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    assert_eq!(prod.post("/xbs", &[], event("P-1")).await.unwrap().status, 200);

    let (status, body) = json(&gate, "GET", "/api/events?stat=dead").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "unknown parameter stat; this endpoint takes route, state, start, end, offset, limit"
    );
    assert_eq!(
        body["known"],
        serde_json::json!(["route", "state", "start", "end", "offset", "limit"])
    );
    let (status, body) = json(&gate, "GET", "/api/events?state=dead").await;
    assert_eq!((status, body["total"].as_u64()), (200, Some(0)), "{body}");

    for (method, path) in [
        ("GET", "/api/events/1?bdy=true"),
        ("POST", "/api/purge?state=delivered&rute=xbs"),
        ("POST", "/api/events/1/replay?now=1"),
        ("GET", "/api/stats?route=xbs"),
    ] {
        let (status, body) = json(&gate, method, path).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("unknown parameter"),
            "{body}"
        );
    }
    let (_, page) = json(&gate, "GET", "/api/events").await;
    assert_eq!(page["total"], 1, "nothing was purged or replayed: {page}");
}

/// Regression (issue: `replay-dead` of a route that does not exist answered 200
/// `{"replayed":0}`).
#[tokio::test(flavor = "multi_thread")]
async fn replay_dead_of_an_unknown_route_is_404_with_or_without_a_server() {
    let pki = Pki::new();
    let app = App::start().await;
    let mut gate = Pushgate::start(&pki, &routes(&app));
    let (status, body) = json(&gate, "POST", "/api/routes/xsb/replay-dead").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["error"],
        "no route `xsb`: not configured, and no event of it is stored"
    );
    let (status, body) = json(&gate, "POST", "/api/routes/xbs/replay-dead").await;
    assert_eq!((status, body), (200, serde_json::json!({ "replayed": 0 })));

    let config = gate.config.clone();
    let cli = |route: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["spool", "-c"])
            .arg(&config)
            .args(["replay-dead", "--route", route])
            .output()
            .unwrap()
    };
    let out = cli("xsb");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 404: no route `xsb`"));
    gate.kill9();
    let out = cli("xsb");
    assert_eq!(out.status.code(), Some(1), "the store itself");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route `xsb`"));
    assert!(cli("xbs").status.success());
}

/// Regression (issue: a delivered event showed `attempts: 0` while the app saw attempt 1, and
/// kept its old `last_error` after a successful replay).
#[tokio::test(flavor = "multi_thread")]
async fn a_delivered_event_shows_the_attempt_the_app_took_and_no_error() {
    let pki = Pki::new();
    // 503 to the first request, 200 after.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = App::start_with(Arc::new(move |_, _| {
        let status = if c.fetch_add(1, Ordering::SeqCst) == 0 {
            503
        } else {
            200
        };
        (status, Duration::ZERO)
    }))
    .await;
    let gate = Pushgate::start(&pki, &routes(&app));
    let prod = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    assert_eq!(prod.post("/xbs", &[], event("A-1")).await.unwrap().status, 200);
    let delivered = || block_on(json(&gate, "GET", "/api/events?state=delivered")).1;
    eventually(30, "delivered on the second attempt", || delivered()["total"] == 1).await;
    let item = &delivered()["items"][0];
    let last = app
        .received()
        .last()
        .unwrap()
        .header("x-pushgate-attempt")
        .unwrap()
        .to_string();
    assert_eq!((item["attempts"].as_u64(), last.as_str()), (Some(2), "2"), "{item}");
    assert!(item["last_error"].is_null(), "{item}");

    let seq = item["seq"].as_u64().unwrap();
    let (status, _) = json(&gate, "POST", &format!("/api/events/{seq}/replay")).await;
    assert_eq!(status, 200);
    eventually(10, "delivered again", || app.count() == 3).await;
    eventually(10, "recorded", || {
        let (_, e) = block_on(json(&gate, "GET", &format!("/api/events/{seq}")));
        e["state"] == "delivered" && e["attempts"] == 1 && e["last_error"].is_null()
    })
    .await;
}

/// Regression (issue: a replayed quarantined body went out with an empty
/// `X-Pushgate-Event-Id`): it carries `sha256:` and the SHA-256 of its bytes, the same on
/// every replay, so the app can drop a repeat.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_quarantined_body_carries_the_sha256_of_its_bytes() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app));
    let body = "this is not JSON";
    let prod = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    assert_eq!(prod.post("/xbs", &[], body).await.unwrap().status, 400);
    let (_, page) = json(&gate, "GET", "/api/events?state=quarantined").await;
    let seq = page["items"][0]["seq"].as_u64().expect("quarantined");
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(body.as_bytes())));
    for n in 1..=2 {
        let (status, _) = json(&gate, "POST", &format!("/api/events/{seq}/replay")).await;
        assert_eq!(status, 200);
        eventually(10, "the replay reaches the app", || app.count() == n).await;
        let got = &app.received()[n - 1];
        assert_eq!(got.body.as_ref(), body.as_bytes());
        assert_eq!(got.header("x-pushgate-event-id"), Some(expected.as_str()));
    }
}
