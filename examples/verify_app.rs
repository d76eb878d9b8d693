//! The app side of `sign:`: an app that verifies pushgate's Standard Webhooks signature on every
//! delivery with the reference `standardwebhooks` crate before trusting the body, and uses
//! `webhook-id` as its idempotency key.
//!
//! `WEBHOOK_SECRET=whsec_... cargo run --example verify_app [ADDR]` (default 127.0.0.1:8080),
//! the secret being one of the route's `sign.secrets`. During a rotation, configure the new
//! secret here once pushgate signs with both.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use standardwebhooks::Webhook;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| "set WEBHOOK_SECRET=whsec_...")?;
    let webhook = Arc::new(Webhook::new(&secret)?);
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    // A real app keeps this in its database, in the same transaction as the event's effect.
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    println!("verifying app listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let (webhook, seen) = (webhook.clone(), seen.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (webhook, seen) = (webhook.clone(), seen.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    // The raw bytes, before any JSON parsing: re-serialised JSON would not verify.
                    // verify() also refuses a timestamp more than 5 minutes away (replays).
                    let status = match webhook.verify(&body, &parts.headers) {
                        Err(e) => {
                            println!("refused: {e}");
                            401
                        }
                        Ok(()) => {
                            let id = parts
                                .headers
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            let fresh = seen.lock().map(|mut s| s.insert(id.to_string())).unwrap_or(true);
                            println!(
                                "verified {id} ({} bytes){}",
                                body.len(),
                                if fresh { "" } else { ", a repeat" }
                            );
                            200
                        }
                    };
                    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
