//! What `sign:` costs per delivery: builds the app's request head for a 2.5 KB body with no
//! signing, one secret and two secrets, and prints the time per head and the difference.
//!
//! `cargo run --release --example sign_cost [ITERATIONS]` (default 200000). Wall time: run it
//! on an idle machine.

use std::time::Instant;

use pushgate::forward::{Delivery, Signer};

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let delivery = Delivery {
        route: "xbs".into(),
        event_ids: vec!["4b2a6f0e-1c3d-4e5f-8a9b-0c1d2e3f4a5b".into()],
        fingerprints: vec![0],
        ordering_key: None,
        client_dn: Some("CN=CrossborderServicesNotification-prod.mastercard.com,O=MasterCard".into()),
        received_at_ms: 1_764_600_000_000,
        headers: vec![("content-type".into(), "application/json".into())],
        body: vec![b'x'; 2560].into(),
        quarantine_reason: None,
    };
    let one = Signer::new([&b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"[..]]).expect("valid secret");
    let two = Signer::new([
        &b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"[..],
        &b"whsec_CI3n+9EuHEdnS0LlcMS/hPIUuQeaM84kXYqxm3gprDM="[..],
    ])
    .expect("valid secrets");
    let time = |sign: Option<&Signer>| {
        let start = Instant::now();
        for _ in 0..n {
            let head = delivery
                .request_header("/app", "127.0.0.1:8080", 1, sign)
                .expect("head");
            std::hint::black_box(head);
        }
        start.elapsed().as_nanos() as f64 / f64::from(n)
    };
    time(Some(&two)); // warm up
    let (none, one_ns, two_ns) = (time(None), time(Some(&one)), time(Some(&two)));
    println!("request head for a 2560-byte body, {n} iterations:");
    println!("  unsigned     {none:8.0} ns");
    println!("  one secret   {one_ns:8.0} ns  (+{:.0} ns)", one_ns - none);
    println!("  two secrets  {two_ns:8.0} ns  (+{:.0} ns)", two_ns - none);
}
