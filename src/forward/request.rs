//! What the app receives, built here and nowhere else: the sender's headers minus what must
//! not pass ([`app_headers`]), pushgate's verdicts on the events ([`Flags`]), and per attempt
//! the `X-Pushgate-*` head ([`Delivery::request_header`]).

use super::sign::{webhook_id, Signer};

/// The one record of a notification from acceptance to delivery: made once in `accept`,
/// appended to the spool as is and handed to the forwarder (or sent at once under
/// `ack: upstream`); rebuilt only when read back from the store after a restart or a replay.
pub use crate::spool::NewDelivery as Delivery;

/// Header naming, for each event the app receives, the content its id was first seen with.
pub const CONFLICT_HEADER: &str = "x-pushgate-conflict";
/// Header on a delivery whose ids could not be checked against the shared duplicate memory.
pub const DEDUPE_HEADER: &str = "x-pushgate-dedupe";
/// Header on a delivery with an out-of-date status.
pub const STALE_HEADER: &str = "x-pushgate-stale";

/// Headers never passed to the app: hop-by-hop and framing headers (pushgate frames its own
/// request), and `Expect`.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "expect",
];

/// The headers the app is given with a notification: the sender's ([`forwardable_headers`]),
/// and, when the body was a JWE envelope, the plaintext's type (`cty`) in place of the
/// envelope's `Content-Type` and `X-Encrypted`.
pub fn app_headers(
    headers: &http::HeaderMap,
    secret_header: Option<&http::HeaderName>,
    decrypted_type: Option<String>,
) -> Vec<(String, String)> {
    let mut kept = forwardable_headers(headers, secret_header);
    if let Some(content_type) = decrypted_type {
        kept.retain(|(name, _)| name != "content-type" && name != "x-encrypted");
        kept.push(("content-type".into(), content_type));
    }
    kept
}

/// What pushgate tells the app about the events of one delivery, beyond the sender's headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flags<'a> {
    /// The shared duplicate memory could not be asked (policy `accept`): the app dedupes.
    pub unchecked: bool,
    /// A newer status of the same transaction was accepted before (src/ingress/stale.rs).
    pub stale: bool,
    /// Per event, in body order, the fingerprint its id was first seen with when it conflicts;
    /// `-` for the others. Set only when some event conflicts.
    pub conflicts: &'a [Option<u64>],
}

impl Flags<'_> {
    /// Appends the flags to the app's headers.
    pub fn apply(&self, headers: &mut Vec<(String, String)>) {
        if self.unchecked {
            headers.push((DEDUPE_HEADER.into(), "unchecked".into()));
        }
        if self.stale {
            headers.push((STALE_HEADER.into(), "true".into()));
        }
        if self.conflicts.iter().any(Option::is_some) {
            let marks: Vec<String> = self
                .conflicts
                .iter()
                .map(|first| first.map_or("-".into(), |f| format!("first-fingerprint={f:016x}")))
                .collect();
            headers.push((CONFLICT_HEADER.into(), marks.join(",")));
        }
    }
}

/// The sender's headers that go on to the app, in order. The route's secret header and any
/// `X-Pushgate-*` a sender tried to set are dropped: the app must be able to trust those.
pub fn forwardable_headers(
    headers: &http::HeaderMap,
    secret_header: Option<&http::HeaderName>,
) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            !NOT_FORWARDED.contains(&n) && !n.starts_with("x-pushgate-") && Some(*name) != secret_header
        })
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

impl Delivery {
    /// The request head for attempt `attempt` (1, 2, …), signed with `sign` when given (the
    /// signature covers `self.body`, the exact bytes sent after this head).
    pub fn request_header(
        &self,
        path: &str,
        authority: &str,
        attempt: u32,
        sign: Option<&Signer>,
    ) -> pingora::Result<pingora::http::RequestHeader> {
        let mut req = pingora::http::RequestHeader::build("POST", path.as_bytes(), Some(self.headers.len() + 8))?;
        req.insert_header("host", authority)?;
        for (name, value) in &self.headers {
            req.append_header(name.clone(), value.as_str())?;
        }
        req.insert_header("content-length", self.body.len().to_string())?;
        req.insert_header("x-pushgate-route", self.route.as_str())?;
        req.insert_header("x-pushgate-event-id", self.event_ids.join(","))?;
        if let Some(dn) = &self.client_dn {
            // A DN can hold characters a header cannot; those are percent-encoded.
            req.insert_header("x-pushgate-client-dn", header_safe(dn))?;
        }
        req.insert_header("x-pushgate-attempt", attempt.to_string())?;
        req.insert_header("x-pushgate-received-at", rfc3339(self.received_at_ms))?;
        if let Some(signer) = sign {
            // Inserted, not appended: any webhook-* header the sender sent is replaced.
            let id = webhook_id(&self.route, &self.event_ids);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            req.insert_header("webhook-signature", signer.signature(&id, now, &self.body))?;
            req.insert_header("webhook-timestamp", now.to_string())?;
            req.insert_header("webhook-id", id)?;
        }
        Ok(req)
    }
}

fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (' '..='~').contains(&c) && c != '%' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_pushgate_headers_never_pass() {
        let mut h = http::HeaderMap::new();
        h.insert("x-notification-secret", "s3cr3t".parse().unwrap());
        h.insert("x-pushgate-route", "forged".parse().unwrap());
        h.insert("x-notification-id", "N1".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        let secret = http::HeaderName::from_static("x-notification-secret");
        let kept = forwardable_headers(&h, Some(&secret));
        let names: Vec<_> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-notification-id", "content-type"]);
    }

    #[test]
    fn dn_with_non_ascii_is_encoded() {
        assert_eq!(header_safe("CN=Zoë,O=a%b"), "CN=Zo%C3%AB,O=a%25b");
    }
}
