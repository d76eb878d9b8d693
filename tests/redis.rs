//! Several replicas sharing one duplicate memory in a real Redis: one delivery per event
//! whichever replica each copy reaches, the unavailability policy when Redis dies, recovery,
//! and TTL expiry.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use support::redis::Redis;
use support::{admin, eventually, metric, App, Pki, Pushgate, Sender};

fn config(app: &App, redis: &Redis, extra: &str) -> String {
    format!(
        r#"dedupe:
  backend: redis
  ttl: 72h
  redis: {{ url: "{url}", prefix: "pushgate:test", timeout: 300ms{extra} }}
routes:
  - name: xbs
    path: /xbs
    profile: mastercard-xbs
    client_dn: ["CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US"]
    upstream: {{ url: "{app}" }}
"#,
        url = redis.url(),
        app = app.url("/xbs"),
    )
}

fn event(id: &str) -> String {
    format!(r#"{{"eventRef":"{id}","eventType":"STATUS_CHG"}}"#)
}

fn deliveries(app: &App) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in app.received() {
        *m.entry(r.header("x-pushgate-event-id").unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    m
}

async fn wait_connected(gate: &Pushgate) {
    eventually(20, "redis connected", || {
        let (_, body) = support::block_on(admin(gate.admin, "GET", "/readyz"));
        body.contains("\"dedupe\":true")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_deliver_each_event_once_sequentially_and_concurrently() {
    let redis = Redis::start();
    let pki = Pki::new();
    let app = App::start_with(Arc::new(|_, _| (200, Duration::from_millis(50)))).await;
    let (a, b) = (
        Pushgate::start(&pki, &config(&app, &redis, "")),
        Pushgate::start(&pki, &config(&app, &redis, "")),
    );
    wait_connected(&a).await;
    wait_connected(&b).await;
    let (sa, sb) = (
        Sender::new(&pki, a.addr, Some("xbs-prod")),
        Sender::new(&pki, b.addr, Some("xbs-prod")),
    );

    for i in 0..10 {
        let id = format!("SEQ-{i}");
        assert_eq!(sa.post("/xbs", &[], event(&id)).await.unwrap().status, 200);
        assert_eq!(sb.post("/xbs", &[], event(&id)).await.unwrap().status, 200);
    }
    let mut tasks = Vec::new();
    for i in 0..10 {
        for copy in 0..6 {
            let s = if copy % 2 == 0 { sa.clone() } else { sb.clone() };
            tasks.push(tokio::spawn(async move {
                s.post("/xbs", &[], event(&format!("CONC-{i}"))).await.unwrap().status
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    eventually(20, "20 distinct events delivered", || deliveries(&app).len() == 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deliveries(&app);
    assert!(d.values().all(|&n| n == 1), "an event reached the app twice: {d:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_dying_under_load_loses_nothing_and_recovers_under_the_accept_policy() {
    let mut redis = Redis::start();
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &config(&app, &redis, ""));
    wait_connected(&gate).await;
    let sender = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let mut conn = sender.connect().await.unwrap();
    let mut acked = Vec::new();
    for i in 0..200 {
        if i == 50 {
            redis.kill();
        }
        if i == 150 {
            redis.restart();
        }
        let id = format!("RK-{i}");
        let r = conn.post("/xbs", &[], event(&id)).await.unwrap();
        assert_eq!(r.status, 200, "policy accept never refuses an event");
        acked.push(id);
    }
    eventually(30, "every acknowledged event delivered", || {
        let d = deliveries(&app);
        acked.iter().all(|id| d.contains_key(id))
    })
    .await;
    let unchecked = app
        .received()
        .iter()
        .filter(|r| r.header("x-pushgate-dedupe") == Some("unchecked"))
        .count();
    assert!(unchecked > 0, "events taken while Redis was away are flagged");
    let (_, text) = admin(gate.admin, "GET", "/metrics").await;
    assert!(metric(&text, r#"pushgate_dedupe_unavailable_total{policy="accept"}"#) >= 1.0);

    // Recovered: duplicates are recognised again.
    eventually(20, "redis answers again", || {
        support::block_on(admin(gate.admin, "GET", "/readyz"))
            .1
            .contains("\"dedupe\":true")
    })
    .await;
    for _ in 0..3 {
        assert_eq!(conn.post("/xbs", &[], event("AFTER-1")).await.unwrap().status, 200);
    }
    eventually(10, "delivered", || deliveries(&app).contains_key("AFTER-1")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries(&app)["AFTER-1"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_refuse_policy_answers_503_and_is_unready_while_redis_is_away() {
    let mut redis = Redis::start();
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &config(&app, &redis, ", when_unavailable: refuse"));
    wait_connected(&gate).await;
    let sender = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    redis.kill();
    let r = sender.post("/xbs", &[], event("REF-1")).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(admin(gate.admin, "GET", "/readyz").await.0, 503);
    redis.restart();
    eventually(20, "ready again", || {
        support::block_on(admin(gate.admin, "GET", "/readyz")).0 == 200
    })
    .await;
    assert_eq!(
        sender.post("/xbs", &[], event("REF-1")).await.unwrap().status,
        200,
        "the refused id was not marked seen"
    );
    eventually(10, "delivered once", || deliveries(&app).get("REF-1") == Some(&1)).await;
    let (_, text) = admin(gate.admin, "GET", "/metrics").await;
    assert_eq!(
        metric(&text, r#"pushgate_dedupe_unavailable_total{policy="refuse"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_expiry_lets_an_id_through_again() {
    let redis = Redis::start();
    let pki = Pki::new();
    let app = App::start().await;
    let body = config(&app, &redis, "").replace("ttl: 72h", "ttl: 2s");
    let gate = Pushgate::start(&pki, &body);
    wait_connected(&gate).await;
    let sender = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    assert_eq!(sender.post("/xbs", &[], event("TTL-1")).await.unwrap().status, 200);
    assert_eq!(sender.post("/xbs", &[], event("TTL-1")).await.unwrap().status, 200);
    eventually(10, "delivered", || deliveries(&app).get("TTL-1") == Some(&1)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sender.post("/xbs", &[], event("TTL-1")).await.unwrap().status, 200);
    eventually(10, "delivered again after the TTL", || {
        deliveries(&app).get("TTL-1") == Some(&2)
    })
    .await;
}
