//! Crash loop: the real binary is `kill -9`ed five times at random moments while keep-alive
//! senders push events as fast as they are acknowledged and the app takes deliveries. Every
//! 200 is counted; after the last restart every acknowledged id must reach the app (0 lost).
//! Ids delivered more than once (a delivered mark lost with the process) are counted and
//! printed: allowed, since delivery is at least once.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{eventually, free_port, App, Pki, Pushgate, Sender};

const KILLS: usize = 5;
const SENDERS: usize = 8;

fn routes(app_port: u16) -> String {
    format!(
        r#"routes:
  - name: xbs
    path: /xbs
    profile: mastercard-xbs
    client_dn: ["CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US"]
    upstream: {{ url: "http://127.0.0.1:{app_port}/xbs", timeout: 5s, max_age: 1h }}
"#
    )
}

fn event(id: &str) -> String {
    format!(
        r#"{{"eventRef":"{id}","eventType":"STATUS_CHG","transactionReference":"t-{id}","pad":"{}"}}"#,
        "p".repeat(2000)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_five_times_under_load_loses_no_acknowledged_event() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port, app_port) = (free_port(), free_port(), free_port());
    let app = App::start_on(
        format!("127.0.0.1:{app_port}").parse().unwrap(),
        Arc::new(|_, _| (200, Duration::ZERO)),
    )
    .await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));

    for round in 0..KILLS {
        let mut gate = Pushgate::start_in(&pki, dir.path(), &routes(app_port), port, admin_port);
        let sender = Sender::new(&pki, gate.addr, Some("xbs-prod"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for t in 0..SENDERS {
            let (sender, acked, stop) = (sender.clone(), acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut conn) = sender.connect().await else { return };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = format!("CL-{round}-{t}-{i}");
                    match conn.post("/xbs", &[], event(&id)).await {
                        Ok(r) if r.status == 200 => acked.lock().unwrap().push(id),
                        Ok(r) => panic!("{id}: {} while healthy", r.status),
                        Err(_) => return, // killed
                    }
                }
            }));
        }
        // Load first (a busy CI machine may be slow to get going), then a random moment: the
        // kill may land mid-write, mid-sync or mid-delivery.
        let floor = acked.lock().unwrap().len() + 10;
        eventually(30, "the senders get going", || acked.lock().unwrap().len() >= floor).await;
        let ms = 100 + rand::random::<u64>() % 900;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        gate.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let logs = gate.logs();
        assert!(!logs.contains("panicked"), "round {round}:\n{logs}");
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= KILLS * 10,
        "too little load: {} acknowledged",
        acked.len()
    );
    let gate = Pushgate::start_in(&pki, dir.path(), &routes(app_port), port, admin_port);
    let want: HashSet<String> = acked.iter().cloned().collect();
    let received = || -> Vec<String> {
        app.received()
            .iter()
            .map(|r| r.header("x-pushgate-event-id").unwrap_or("").to_string())
            .collect()
    };
    eventually(60, "every acknowledged event delivered after five kill -9", || {
        let got: HashSet<String> = received().into_iter().collect();
        want.is_subset(&got)
    })
    .await;
    let mut times: HashMap<String, usize> = HashMap::new();
    for id in received() {
        *times.entry(id).or_default() += 1;
    }
    let twice = want
        .iter()
        .filter(|id| times.get(*id).copied().unwrap_or(0) > 1)
        .count();
    let lost = want.iter().filter(|id| !times.contains_key(*id)).count();
    eprintln!(
        "crash loop: {KILLS} × kill -9, {} acknowledged, {lost} lost, {twice} delivered more than once",
        acked.len()
    );
    assert_eq!(lost, 0);
    assert!(!gate.logs().contains("panicked"), "{}", gate.logs());
}
