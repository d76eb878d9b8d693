//! An example app behind pushgate: prints what each notification carries (the X-Pushgate-*
//! headers and the body's size, never the body) and answers 200.
//!
//! `cargo run --example app [ADDR]` (default 127.0.0.1:8080).
//!
//! For benchmarks (`bench/compare.sh`) it can also play a slow or failing app and keep quiet:
//! `app 127.0.0.1:8080 --quiet --delay-ms 3000 --status 200`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Parser, Debug, Clone, Copy)]
#[command(name = "app", about = "Example app behind pushgate: answers every request")]
struct Args {
    /// Address to listen on
    #[arg(default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Wait this long before answering (a slow app)
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Status code to answer with
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Print nothing per request (benchmarks: a line per request would cost more than the app)
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let status = hyper::StatusCode::from_u16(args.status)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--status: {e}")))?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!(
        "example app listening on http://{} (status {}, delay {} ms)",
        args.addr, args.status, args.delay_ms
    );
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                let line = (!args.quiet).then(|| {
                    format!(
                        "{} route={} events={} attempt={} dn={}",
                        req.uri().path(),
                        h("x-pushgate-route"),
                        h("x-pushgate-event-id"),
                        h("x-pushgate-attempt"),
                        h("x-pushgate-client-dn"),
                    )
                });
                let size = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                if let Some(line) = line {
                    println!("{line} bytes={size}");
                }
                if args.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
                }
                let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = status;
                Ok::<_, Infallible>(resp)
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
