//! Several replicas sharing one duplicate memory in a real Redis: one delivery per event
//! whichever replica each copy reaches, the unavailability policy when Redis dies, recovery,
//! ids taken during an outage remembered and shared once Redis is back, conflicts (same id,
//! other content) across replicas, one round trip per request, and TTL expiry.

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
  - name: cen
    path: /cen
    profile: mastercard-cen
    client_dn: ["CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US"]
    upstream: {{ url: "{cen}" }}
"#,
        url = redis.url(),
        app = app.url("/xbs"),
        cen = app.url("/cen"),
    )
}

fn event(id: &str) -> String {
    format!(r#"{{"eventRef":"{id}","eventType":"STATUS_CHG"}}"#)
}

fn event_with(id: &str, status: &str) -> String {
    format!(r#"{{"eventRef":"{id}","eventType":"STATUS_CHG","status":"{status}"}}"#)
}

async fn metrics(gate: &Pushgate) -> String {
    admin(gate.admin, "GET", "/metrics").await.1
}

async fn raw(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn deliveries(app: &App) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in app.received() {
        *m.entry(r.header("x-pushgate-event-id").unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    m
}

/// Two replicas on one Redis, both connected to it, each with a PROD sender.
async fn two_replicas(pki: &Pki, app: &App, redis: &Redis) -> ((Pushgate, Sender), (Pushgate, Sender)) {
    let (a, b) = (
        Pushgate::start(pki, &config(app, redis, "")),
        Pushgate::start(pki, &config(app, redis, "")),
    );
    wait_connected(&a).await;
    wait_connected(&b).await;
    let (sa, sb) = (
        Sender::new(pki, a.addr, Some("xbs-prod")),
        Sender::new(pki, b.addr, Some("xbs-prod")),
    );
    ((a, sa), (b, sb))
}

async fn wait_connected(gate: &Pushgate) {
    // The admin listener may bind a moment after the notification listener the start waited for.
    eventually(20, "admin listening", || {
        std::net::TcpStream::connect(gate.admin).is_ok()
    })
    .await;
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
    let ((_a, sa), (_b, sb)) = two_replicas(&pki, &app, &redis).await;

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

#[tokio::test(flavor = "multi_thread")]
async fn other_content_under_one_id_at_two_replicas_is_a_conflict_and_either_resend_a_duplicate() {
    let redis = Redis::start();
    let pki = Pki::new();
    let app = App::start().await;
    let ((a, sa), (b, sb)) = two_replicas(&pki, &app, &redis).await;
    let (first, second) = (event_with("RC-1", "QUOTED"), event_with("RC-1", "PAID"));
    assert_eq!(sa.post("/xbs", &[], first.clone()).await.unwrap().status, 200);
    assert_eq!(sb.post("/xbs", &[], second.clone()).await.unwrap().status, 200);
    // Each version re-sent to the replica that did not take it: duplicates.
    assert_eq!(sb.post("/xbs", &[], first.clone()).await.unwrap().status, 200);
    assert_eq!(sa.post("/xbs", &[], second.clone()).await.unwrap().status, 200);
    eventually(10, "both versions delivered", || app.received().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = app.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].body, first.as_bytes());
    assert_eq!(got[1].body, second.as_bytes());
    let fp = support::fingerprint_hex("mastercard-xbs", &first);
    assert_eq!(
        got[1].header("x-pushgate-conflict"),
        Some(format!("first-fingerprint={fp}").as_str())
    );
    let conflicts = |text: &str| metric(text, r#"pushgate_events_total{outcome="conflict",route="xbs"}"#);
    assert_eq!(conflicts(&metrics(&b).await), 1.0);
    assert_eq!(conflicts(&metrics(&a).await), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_under_load_every_id_once_including_those_taken_during_the_outage() {
    let mut redis = Redis::start_durable();
    let pki = Pki::new();
    let app = App::start().await;
    let ((a, sa), (b, sb)) = two_replicas(&pki, &app, &redis).await;
    let senders = [sa, sb];
    let mut conns = [senders[0].connect().await.unwrap(), senders[1].connect().await.unwrap()];
    // (id, the replica that took it)
    let mut taken: Vec<(String, usize)> = Vec::new();
    for i in 0..120 {
        if i == 40 {
            redis.kill();
        }
        if i == 80 {
            // During the outage one replica gets the same id twice: delivered once.
            for _ in 0..2 {
                let r = conns[0].post("/xbs", &[], event("TWICE")).await.unwrap();
                assert_eq!(r.status, 200);
            }
            redis.restart();
        }
        let id = format!("OUT-{i}");
        let r = conns[i % 2].post("/xbs", &[], event(&id)).await.unwrap();
        assert_eq!(r.status, 200, "policy accept never refuses an event");
        taken.push((id, i % 2));
    }
    let logs = a.logs();
    assert!(logs.contains("redis dedupe is away"), "WARN when Redis goes away");

    // Back: both replicas notice, write what they took meanwhile, and say so.
    for gate in [&a, &b] {
        eventually(20, "redis back and the deferred marks written", || {
            let text = support::block_on(metrics(gate));
            metric(&text, "pushgate_dedupe_backend_up") == 1.0 && metric(&text, "pushgate_dedupe_pending_writes") == 0.0
        })
        .await;
    }
    assert!(a.logs().contains("redis dedupe is back"), "INFO when Redis returns");
    assert_eq!(metric(&metrics(&a).await, "pushgate_dedupe_pending_dropped_total"), 0.0);

    // The sender retries every id at the other replica, and TWICE at both: all duplicates.
    for (id, at) in &taken {
        let r = conns[1 - at].post("/xbs", &[], event(id)).await.unwrap();
        assert_eq!(r.status, 200);
    }
    for conn in &mut conns {
        assert_eq!(conn.post("/xbs", &[], event("TWICE")).await.unwrap().status, 200);
    }
    eventually(30, "every id delivered", || {
        let d = deliveries(&app);
        taken.iter().all(|(id, _)| d.contains_key(id)) && d.contains_key("TWICE")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deliveries(&app);
    let twice: Vec<_> = d.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(d.len(), taken.len() + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_event_cen_batch_is_claimed_in_one_round_trip() {
    let redis = Redis::start();
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &config(&app, &redis, ""));
    wait_connected(&gate).await;
    let sender = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let mut conn = sender.connect().await.unwrap();
    let batch = |tag: &str| {
        let events: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"idempotencyKey":"{tag}-{i}","eventType":"TOKEN_LIFECYCLE_EVENT"}}"#))
            .collect();
        format!("[{}]", events.join(","))
    };
    // Warm: connection and scripts.
    assert_eq!(conn.post("/cen", &[], batch("WARM")).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut r = raw(&redis).await;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut r).await.unwrap();
    let started = std::time::Instant::now();
    let resp = conn.post("/cen", &[], batch("B")).await.unwrap();
    let ack = started.elapsed();
    assert_eq!(resp.status, 200);
    eprintln!("1,000-event CEN batch, redis backend: acknowledged in {ack:?}");
    tokio::time::sleep(Duration::from_millis(500)).await; // the commit goes after the answer
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut r)
        .await
        .unwrap();
    let calls = |cmd: &str| {
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|l| l.split(['=', ',']).nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // One script run claims the 1,000 ids before the answer; one marks them seen after it.
    assert_eq!(calls("evalsha"), 2, "{info}");
    // Redis counts the commands scripts run: SET NX (claim) and SET (seen) per id, nothing else.
    assert_eq!(calls("set"), 2000, "{info}");
    assert_eq!(calls("get") + calls("eval"), 0, "{info}");
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut r).await.unwrap();
    assert_eq!(keys, 2000);

    // The re-sent batch: every id a duplicate, answered from the replica's own memory.
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut r).await.unwrap();
    assert_eq!(conn.post("/cen", &[], batch("B")).await.unwrap().status, 200);
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(!info.contains("cmdstat_evalsha"), "{info}");
    eventually(10, "delivered", || app.received().len() == 2).await;
}
