//! Running it at 3 a.m., against the real binary: every counter moves by exactly what was
//! sent, logs never carry secrets, bodies or card numbers, reload under load changes DNs,
//! secrets and the server certificate without a failed request, a bad reload keeps the old
//! config, a graceful upgrade loses nothing, and the spool CLI works.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{admin, eventually, free_port, metric, App, Pki, Pushgate, Sender};

const PROD: &str = "CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US";
const MTF: &str = "CN=CrossborderServicesNotification-mtf.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US";
const S1: &str = "first-secret-0123456789abcdef0123";
const S2: &str = "second-secret-0123456789abcdef012";
const PAN: &str = "5555555555554444";

fn routes(app: &App, dns: &[&str], secrets: &[&str], log_format: &str) -> String {
    let dns = dns.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
    let secrets = secrets
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"log: {{ format: {log_format}, level: info }}
routes:
  - name: xbs
    path: /xbs
    profile: mastercard-xbs
    client_dn: [{dns}]
    max_body: 2KiB
    upstream: {{ url: "{xbs}" }}
  - name: gw
    path: /gw
    profile: mastercard-gateway
    secret: {{ header: X-Notification-Secret, values: [{secrets}] }}
    upstream: {{ url: "{gw}" }}
"#,
        xbs = app.url("/xbs"),
        gw = app.url("/gw"),
    )
}

fn event(id: &str) -> String {
    format!(r#"{{"eventRef":"{id}","payment":{{"senderAccountUri":"pan:{PAN};exp=2099-12"}}}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_counter_moves_by_exactly_what_was_sent() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app, &[PROD], &[S1], "text"));
    let prod = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let none = Sender::new(&pki, gate.addr, None);
    for id in ["M-1", "M-2", "M-3", "M-1", "M-2"] {
        assert_eq!(prod.post("/xbs", &[], event(id)).await.unwrap().status, 200);
    }
    let h = [
        ("x-notification-secret", S1),
        ("x-notification-attempt", "3"),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        none.post("/gw", &h, r#"{"order":{"id":"O"}}"#).await.unwrap().status,
        200
    ); // no id: hashed
    assert_eq!(
        Sender::new(&pki, gate.addr, Some("xbs-mtf"))
            .post("/xbs", &[], event("M-9"))
            .await
            .unwrap()
            .status,
        403
    );
    assert_eq!(
        none.post("/gw", &[("x-notification-secret", "wrong")], "{}")
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(prod.post("/nowhere", &[], "{}").await.unwrap().status, 404);
    let mut conn = prod.connect().await.unwrap();
    assert_eq!(
        conn.request("GET", "/xbs", &[], Default::default())
            .await
            .unwrap()
            .status,
        405
    );
    assert_eq!(prod.post("/xbs", &[], "x".repeat(3000)).await.unwrap().status, 413);
    assert_eq!(prod.post("/xbs", &[], "{not json").await.unwrap().status, 400);
    assert!(Sender::new(&pki, gate.addr, Some("untrusted"))
        .post("/xbs", &[], event("M-U"))
        .await
        .is_err());
    eventually(10, "deliveries", || app.count() == 4).await;

    let (status, text) = admin(gate.admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let m = |series: &str| metric(&text, series);
    let want = [
        (r#"pushgate_requests_total{outcome="accepted",route="xbs"}"#, 3.0),
        (r#"pushgate_requests_total{outcome="duplicate",route="xbs"}"#, 2.0),
        (r#"pushgate_requests_total{outcome="accepted",route="gw"}"#, 1.0),
        (r#"pushgate_requests_total{outcome="rejected_dn",route="xbs"}"#, 1.0),
        (r#"pushgate_requests_total{outcome="rejected_secret",route="gw"}"#, 1.0),
        (r#"pushgate_requests_total{outcome="not_found",route="unmatched"}"#, 1.0),
        (r#"pushgate_requests_total{outcome="rejected_method",route="xbs"}"#, 1.0),
        (r#"pushgate_requests_total{outcome="rejected_size",route="xbs"}"#, 1.0),
        (r#"pushgate_requests_total{outcome="rejected_body",route="xbs"}"#, 1.0),
        (
            r#"pushgate_requests_total{outcome="rejected_tls",route="unmatched"}"#,
            1.0,
        ),
        (r#"pushgate_tls_handshake_failures_total{reason="unknown_issuer"}"#, 1.0),
        (r#"pushgate_events_total{outcome="accepted",route="xbs"}"#, 3.0),
        (r#"pushgate_events_total{outcome="duplicate",route="xbs"}"#, 2.0),
        (r#"pushgate_events_total{outcome="quarantined",route="xbs"}"#, 1.0),
        (r#"pushgate_events_total{outcome="missing_id",route="gw"}"#, 1.0),
        (r#"pushgate_forward_total{result="delivered",route="xbs"}"#, 3.0),
        (r#"pushgate_forward_total{result="delivered",route="gw"}"#, 1.0),
        (r#"pushgate_ack_seconds_count{route="xbs"}"#, 9.0),
        (r#"pushgate_sender_attempt_sum{route="gw"}"#, 3.0),
        (r#"pushgate_spool_pending{route="xbs"}"#, 0.0),
        (r#"pushgate_dead_letters{route="xbs"}"#, 0.0),
        ("pushgate_dedupe_keys", 4.0),
    ];
    for (series, value) in want {
        assert_eq!(m(series), value, "{series}\n{text}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(m(r#"pushgate_cert_expiry_timestamp_seconds{cert="server"}"#) > now);
    assert!(
        m(r#"pushgate_cert_expiry_timestamp_seconds{cert="client_ca:pushgate dev CA"}"#) > now
            || text.contains("client_ca:")
    );
    // Five events were fsync'd before their 200s (group commit may have joined some).
    assert!(m("pushgate_store_commits_total") >= 1.0, "{text}");
    for name in ["pushgate_forward_seconds", "pushgate_spool_oldest_pending_seconds"] {
        assert!(text.contains(&format!("# TYPE {name}")), "{name} missing");
    }
    assert_eq!(admin(gate.admin, "GET", "/healthz").await.0, 200);
    assert_eq!(admin(gate.admin, "GET", "/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_never_carry_secrets_bodies_or_card_numbers() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app, &[PROD], &[S1], "json"));
    let prod = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let gw = Sender::new(&pki, gate.addr, None);
    assert_eq!(prod.post("/xbs", &[], event("LOG-1")).await.unwrap().status, 200);
    // A body that fails to parse right after a card number: parsers like to quote what they saw.
    let broken = format!(r#"{{"eventRef":"LOG-2","pan":"{PAN}"x}}"#);
    assert_eq!(prod.post("/xbs", &[], broken).await.unwrap().status, 400);
    let nvp = format!("order.id=O-1&sourceOfFunds.provided.card.number={PAN}&result=SUCCESS");
    let form = ("content-type", "application/x-www-form-urlencoded");
    assert_eq!(
        gw.post("/gw", &[("x-notification-secret", S1), form], nvp.clone())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        gw.post("/gw", &[("x-notification-secret", S2), form], nvp)
            .await
            .unwrap()
            .status,
        401
    );
    // An id that is itself a card-number-like digit run is not the sender's business to log.
    assert_eq!(
        prod.post("/xbs", &[], format!(r#"{{"eventRef":"{PAN}"}}"#))
            .await
            .unwrap()
            .status,
        200
    );
    eventually(10, "deliveries", || app.count() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logs = gate.logs();
    assert!(
        logs.contains("\"outcome\":\"accepted\""),
        "one JSON line per request:\n{logs}"
    );
    assert!(logs.contains("LOG-1"), "event ids are logged");
    for forbidden in [S1, S2, PAN, "senderAccountUri", "sourceOfFunds", "exp=2099"] {
        assert!(!logs.contains(forbidden), "`{forbidden}` leaked into the log:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_changes_dns_secrets_and_the_certificate_without_a_failed_request() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app, &[PROD], &[S1], "text"));
    let prod = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    let mtf = Sender::new(&pki, gate.addr, Some("xbs-mtf"));
    let gw = Sender::new(&pki, gate.addr, None);
    assert_eq!(mtf.post("/xbs", &[], event("R-MTF-0")).await.unwrap().status, 403);
    assert_eq!(
        gw.post("/gw", &[("x-notification-secret", S2)], "{}")
            .await
            .unwrap()
            .status,
        401
    );
    let cert_before = server_cert(&Sender::new(&pki, gate.addr, Some("xbs-prod"))).await;

    // Continuous load on identities valid before and after, on one kept-alive connection and
    // on fresh ones.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for t in 0..4 {
        let (prod, gw, stop, ok, failed) = (prod.clone(), gw.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut conn = prod.connect().await.unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let a = conn
                    .post("/xbs", &[], event(&format!("R-{t}-{i}")))
                    .await
                    .map(|r| r.status);
                let id = format!("G-{t}-{i}");
                let h = [("x-notification-secret", S1), ("x-notification-id", id.as_str())];
                let b = gw.post("/gw", &h, "{}").await.map(|r| r.status);
                for r in [a, b] {
                    if matches!(r, Ok(200)) {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // New config: MTF allowed beside PROD, the secret rotated to S1+S2, a new server certificate.
    let ca_dir = tempfile::tempdir().unwrap();
    let reissued = reissue_server_cert(&pki, ca_dir.path());
    let new_config = std::fs::read_to_string(&gate.config)
        .unwrap()
        .replace(
            &format!("client_dn: [\"{PROD}\"]"),
            &format!("client_dn: [\"{PROD}\", \"{MTF}\"]"),
        )
        .replace(&format!("values: [\"{S1}\"]"), &format!("values: [\"{S1}\", \"{S2}\"]"))
        .replace(
            &pki.path("server.pem").display().to_string(),
            &reissued.0.display().to_string(),
        )
        .replace(
            &pki.path("server.key").display().to_string(),
            &reissued.1.display().to_string(),
        );
    std::fs::write(&gate.config, new_config).unwrap();
    gate.signal("HUP");
    eventually(10, "the reload took effect", || {
        support::block_on(Sender::new(&pki, gate.addr, Some("xbs-mtf")).post("/xbs", &[], event("R-MTF-1")))
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert_eq!(
        gw.post(
            "/gw",
            &[("x-notification-secret", S2), ("x-notification-id", "R-S2")],
            "{}"
        )
        .await
        .unwrap()
        .status,
        200
    );
    // A fresh client (no session to resume) sees what a new sender sees.
    let fresh = Sender::new(&pki, gate.addr, Some("xbs-prod"));
    assert_ne!(
        server_cert(&fresh).await,
        cert_before,
        "new handshakes get the new certificate"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed across the reload");
    assert!(ok.load(Ordering::Relaxed) > 20);
    let (_, text) = admin(gate.admin, "GET", "/metrics").await;
    assert_eq!(metric(&text, r#"pushgate_reloads_total{result="ok"}"#), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_reload_keeps_the_old_config() {
    let pki = Pki::new();
    let app = App::start().await;
    let gate = Pushgate::start(&pki, &routes(&app, &[PROD], &[S1], "text"));
    let good = std::fs::read_to_string(&gate.config).unwrap();
    std::fs::write(
        &gate.config,
        good.replace("profile: mastercard-xbs", "profile: no-such-profile"),
    )
    .unwrap();
    gate.signal("HUP");
    let bad_cli = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["reload", "-c"])
        .arg(&gate.config)
        .output()
        .unwrap();
    assert_eq!(bad_cli.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad_cli.stderr).contains("routes[0].profile"),
        "{}",
        String::from_utf8_lossy(&bad_cli.stderr)
    );
    eventually(10, "the refused reload is counted", || {
        metric(
            &support::block_on(admin(gate.admin, "GET", "/metrics")).1,
            r#"pushgate_reloads_total{result="error"}"#,
        ) == 1.0
    })
    .await;
    let r = Sender::new(&pki, gate.addr, Some("xbs-prod"))
        .post("/xbs", &[], event("KEEP-1"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "the old config still serves");
    assert!(gate.logs().contains("reload refused"));
    // And the CLI reload of a good file works.
    std::fs::write(&gate.config, good).unwrap();
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["reload", "-c"])
        .arg(&gate.config)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_loses_no_request() {
    let pki = Pki::new();
    let app = App::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let body = routes(&app, &[PROD], &[S1], "text");
    let old = Pushgate::start_in(&pki, dir.path(), &body, port, admin_port);
    let prod = Sender::new(&pki, old.addr, Some("xbs-prod"));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::Mutex::new(Vec::<(String, Result<u16, String>)>::new()));
    let mut load = Vec::new();
    for t in 0..4 {
        let (prod, stop, sent) = (prod.clone(), stop.clone(), sent.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = format!("UP-{t}-{i}");
                let r = prod
                    .post("/xbs", &[], event(&id))
                    .await
                    .map(|r| r.status)
                    .map_err(|e| e.to_string());
                sent.lock().unwrap().push((id, r));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The new process asks the old one for its sockets; SIGQUIT tells the old one to hand them over.
    let log = std::fs::File::create(dir.path().join("new.log")).unwrap();
    let mut new = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["run", "-u", "-c"])
        .arg(&old.config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    let mut old = old;
    assert!(old.wait_exit(30).is_some(), "the old process exits after handing over");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    let failures: Vec<_> = sent.iter().filter(|(_, r)| r != &Ok(200)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}\n{}",
        failures.len(),
        sent.len(),
        &failures[..failures.len().min(5)],
        std::fs::read_to_string(dir.path().join("new.log")).unwrap_or_default()
    );
    eventually(30, "every acknowledged event delivered", || {
        let got: std::collections::HashSet<String> = app
            .received()
            .iter()
            .filter_map(|r| r.header("x-pushgate-event-id").map(str::to_string))
            .collect();
        sent.iter().all(|(id, _)| got.contains(id))
    })
    .await;
    let _ = new.kill();
    let _ = new.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn spool_cli_lists_shows_and_replays_with_or_without_a_running_server() {
    let pki = Pki::new();
    let app = App::start_with(Arc::new(|r, _| {
        (if r.path == "/gw" { 422 } else { 200 }, Duration::ZERO)
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut gate = Pushgate::start_in(
        &pki,
        dir.path(),
        &routes(&app, &[PROD], &[S1], "text"),
        port,
        admin_port,
    );
    let gw = Sender::new(&pki, gate.addr, None);
    assert_eq!(
        gw.post(
            "/gw",
            &[("x-notification-secret", S1), ("x-notification-id", "CLI-1")],
            "{}"
        )
        .await
        .unwrap()
        .status,
        200
    );
    let config = gate.config.clone();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .arg("spool")
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    eventually(10, "a dead letter", || cli(&["dead", "--route", "gw"])["total"] == 1).await;
    let page = cli(&["list", "--route", "gw", "--state", "dead"]);
    let seq = page["items"][0]["seq"].as_u64().unwrap();
    assert_eq!(cli(&["show", &seq.to_string(), "--body"])["body"], "{}");
    assert_eq!(cli(&["stats"])["routes"]["gw"]["dead"], 1);

    // With the server stopped, the CLI opens the store itself. Outcome changes (dead,
    // delivered) are fsync'd lazily, within a second of quiet; a kill before that would
    // leave the event pending, to be tried again: at least once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gate.kill9();
    assert_eq!(cli(&["list", "--state", "dead"])["total"], 1);
    assert_eq!(cli(&["replay-dead", "--route", "gw"])["replayed"], 1);
    assert_eq!(cli(&["stats"])["routes"]["gw"]["pending"], 1);
}

async fn server_cert(sender: &Sender) -> Vec<u8> {
    let tls = sender.tls().await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A second server certificate from the same dev CA (its key is in the PKI directory).
fn reissue_server_cert(pki: &Pki, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use pushgate::boot::devcerts::{Ca, DEV_CA_NAME};
    let ca = Ca::from_key_pem(DEV_CA_NAME, &std::fs::read_to_string(pki.path("ca.key")).unwrap()).unwrap();
    let issued = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, issued.chain_pem(&ca)).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}
