//! The HTTP/1.1 client to the app: Pingora's connector with its keep-alive pool, one request
//! at a time per connection, a deadline on the whole exchange.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::upstreams::peer::HttpPeer;

use super::{Delivery, Upstream};

/// Most of the app's answer body kept (relayed in `ack: upstream`, logged nowhere).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the app answered.
#[derive(Debug, Clone)]
pub struct AppResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// `Retry-After` in seconds, when the app sent one.
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// Why no answer came back. Each is retried by the forwarder.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to the app: {0}")]
    Connect(String),
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    #[error("broken exchange with the app: {0}")]
    Protocol(String),
}

/// Shared by every route; cheap to clone.
#[derive(Clone)]
pub struct AppClient {
    connector: std::sync::Arc<Connector>,
}

impl Default for AppClient {
    fn default() -> Self {
        AppClient {
            connector: std::sync::Arc::new(Connector::new(None)),
        }
    }
}

impl AppClient {
    /// Sends one delivery and reads the answer, within `upstream.timeout`.
    pub async fn send(&self, up: &Upstream, delivery: &Delivery, attempt: u32) -> Result<AppResponse, SendError> {
        let mut peer = HttpPeer::new(up.addr, false, String::new());
        peer.options.connection_timeout = Some(up.timeout.min(Duration::from_secs(5)));
        peer.options.read_timeout = Some(up.timeout);
        peer.options.write_timeout = Some(up.timeout);
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        match tokio::time::timeout(up.timeout, self.exchange(&peer, up, delivery, attempt)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(up.timeout)),
        }
    }

    async fn exchange(
        &self,
        peer: &HttpPeer,
        up: &Upstream,
        d: &Delivery,
        attempt: u32,
    ) -> Result<AppResponse, SendError> {
        let (mut session, _reused) = self
            .connector
            .get_http_session(peer)
            .await
            .map_err(|e| SendError::Connect(e.etype().as_str().to_string()))?;
        let header = d
            .request_header(&up.path, &up.authority, attempt, up.sign.as_deref())
            .map_err(|e| SendError::Protocol(e.to_string()))?;
        let proto = |e: Box<pingora::Error>| SendError::Protocol(e.etype().as_str().to_string());
        session.write_request_header(Box::new(header)).await.map_err(proto)?;
        session.write_request_body(d.body.clone(), true).await.map_err(proto)?;
        session.finish_request_body().await.map_err(proto)?;
        session.read_response_header().await.map_err(proto)?;
        let (status, content_type, retry_after) = {
            let resp = session
                .response_header()
                .ok_or_else(|| SendError::Protocol("no response header".into()))?;
            let get = |name: &str| resp.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let retry_after = get("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            (resp.status.as_u16(), get("content-type"), retry_after)
        };
        let mut body = BytesMut::new();
        let mut complete = true;
        while let Some(chunk) = session.read_response_body().await.map_err(proto)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                complete = false; // too much to keep: stop reading, do not reuse the connection
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if complete && session.response_done() {
            self.connector
                .release_http_session(session, peer, Some(IDLE_TIMEOUT))
                .await;
        } else {
            session.shutdown().await;
        }
        Ok(AppResponse {
            status,
            content_type,
            retry_after,
            body: body.freeze(),
        })
    }
}
