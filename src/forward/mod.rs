//! Delivery to the app: where it is ([`Upstream`]), what it is sent (the one record,
//! [`Delivery`], and its headers per SPEC §5), and the keep-alive client that sends it ([`AppClient`]). Used
//! synchronously by `ack: upstream` routes and by the spool's forwarder.

mod client;
mod forwarder;
mod request;
pub mod retry;
mod schedule;
mod sign;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub use client::{AppClient, AppResponse, SendError};
pub use forwarder::{Forwarder, ForwarderHandle};
pub use request::{app_headers, forwardable_headers, Delivery, Flags, CONFLICT_HEADER, DEDUPE_HEADER, STALE_HEADER};
pub use sign::{webhook_id, Signer};

/// A route's app endpoint: plain HTTP/1.1, address resolved once at load.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: String,
    pub addr: SocketAddr,
    /// `Host` header value (authority of the URL).
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub max_age: Duration,
    pub concurrency: usize,
    /// Standard Webhooks signing (`sign:`), when the route asks for it.
    pub sign: Option<std::sync::Arc<Signer>>,
}

impl Upstream {
    pub fn parse(url: &str, timeout: Duration, max_age: Duration, concurrency: usize) -> Result<Upstream, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "`{url}`: only http:// is supported (the app is local: TLS ends at pushgate)"
            ));
        }
        let authority = uri.authority().ok_or_else(|| format!("`{url}` has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = (authority.host().trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve `{}`: {e}", authority.host()))?
            .next()
            .ok_or_else(|| format!("`{}` resolves to no address", authority.host()))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        if timeout.is_zero() {
            return Err("upstream.timeout must be positive".into());
        }
        Ok(Upstream {
            url: url.to_string(),
            addr,
            authority: authority.as_str().to_string(),
            path,
            timeout,
            max_age,
            concurrency,
            sign: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let d = Duration::from_secs(1);
        let u = Upstream::parse("http://127.0.0.1:8080/mastercard/xbs?x=1", d, d, 1).unwrap();
        assert_eq!(
            (u.addr.port(), u.authority.as_str(), u.path.as_str()),
            (8080, "127.0.0.1:8080", "/mastercard/xbs?x=1")
        );
        assert_eq!(Upstream::parse("http://[::1]/", d, d, 1).unwrap().addr.port(), 80);
        assert!(Upstream::parse("https://127.0.0.1/", d, d, 1).is_err());
        assert!(Upstream::parse("nonsense", d, d, 1).is_err());
    }
}
