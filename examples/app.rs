//! An example app behind pushgate: prints what each notification carries (the X-Pushgate-*
//! headers and the body's size, never the body) and answers 200.
//!
//! `cargo run --example app [ADDR]` (default 127.0.0.1:8080).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("example app listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                let line = format!(
                    "{} route={} events={} attempt={} dn={}",
                    req.uri().path(),
                    h("x-pushgate-route"),
                    h("x-pushgate-event-id"),
                    h("x-pushgate-attempt"),
                    h("x-pushgate-client-dn"),
                );
                let size = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                println!("{line} bytes={size}");
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
