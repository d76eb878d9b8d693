//! Standard Webhooks signatures on deliveries, so an app behind a plain-HTTP hop can check
//! that a request comes from pushgate and was not changed on the way.
//!
//! As the specification (standardwebhooks.com, v1.0.0) defines them: `webhook-id`,
//! `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature: v1,<base64
//! HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per configured secret, space-separated, so
//! a rotation can overlap. Secrets are written `whsec_<base64>`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::hmac;
use sha2::{Digest, Sha256};

/// Shortest and longest secret the specification allows (24 bytes = 192 bits; 64 = 512 bits).
const MIN_SECRET: usize = 24;
const MAX_SECRET: usize = 64;
/// Longest event id used as `webhook-id` as it is; longer ones are hashed.
const MAX_ID: usize = 128;

/// A route's signing keys, in the order configured (the new one first, during a rotation).
pub struct Signer {
    keys: Vec<hmac::Key>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    /// Keys from `whsec_<base64>` secrets. The error is the index of the bad secret and why.
    /// Never echoes the secret.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Result<Signer, (usize, String)> {
        let mut keys = Vec::new();
        for (i, s) in secrets.into_iter().enumerate() {
            keys.push(parse_whsec(s).map_err(|m| (i, m))?);
        }
        if keys.is_empty() {
            return Err((0, "at least one secret is needed".into()));
        }
        Ok(Signer { keys })
    }

    /// The `webhook-signature` value for one attempt: `v1,<sig>` per key, space-separated.
    pub fn signature(&self, webhook_id: &str, timestamp: u64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        let mut out = String::with_capacity(self.keys.len() * 48);
        for (i, key) in self.keys.iter().enumerate() {
            // Fed in pieces: the signed content is never copied into one buffer.
            let mut ctx = hmac::Context::with_key(key);
            ctx.update(webhook_id.as_bytes());
            ctx.update(b".");
            ctx.update(ts.as_bytes());
            ctx.update(b".");
            ctx.update(body);
            if i > 0 {
                out.push(' ');
            }
            out.push_str("v1,");
            B64.encode_string(ctx.sign().as_ref(), &mut out);
        }
        out
    }
}

fn parse_whsec(s: &[u8]) -> Result<hmac::Key, String> {
    let rest = s
        .strip_prefix(b"whsec_")
        .ok_or("must be in the Standard Webhooks form whsec_<base64>")?;
    let key = B64
        .decode(rest)
        .map_err(|_| "the part after whsec_ is not standard base64")?;
    if !(MIN_SECRET..=MAX_SECRET).contains(&key.len()) {
        return Err(format!(
            "decodes to {} bytes; Standard Webhooks secrets are {MIN_SECRET} to {MAX_SECRET} random bytes",
            key.len()
        ));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
}

/// The `webhook-id` of a delivery: stable across retries, restarts and replays, so the app can
/// use it as its idempotency key.
///
/// A single event's id is used as it is when it is short and made of `A-Z a-z 0-9 _ - :`: the
/// specification forbids `.` in the id (it delimits the signed content) and a header cannot
/// hold every character. Anything else (a batch, an unusual id) gets `pg_` and 32 hex digits
/// of SHA-256 over the route and the event ids, which are stored with the delivery.
pub fn webhook_id(route: &str, event_ids: &[String]) -> String {
    if let [id] = event_ids {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':');
        if !id.is_empty() && id.len() <= MAX_ID && id.chars().all(plain) {
            return id.clone();
        }
    }
    let mut h = Sha256::new();
    // Each part length-prefixed, so ["ab","c"] and ["a","bc"] never meet.
    for part in std::iter::once(route).chain(event_ids.iter().map(String::as_str)) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("pg_{}", &hex::encode(h.finalize())[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    #[test]
    fn matches_the_reference_implementation_vector() {
        // The test vector of the standard-webhooks reference libraries.
        let s = Signer::new([SECRET]).unwrap();
        assert_eq!(
            s.signature(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let other = format!("whsec_{}", B64.encode([7u8; 32]));
        let s = Signer::new([SECRET, other.as_bytes()]).unwrap();
        let sig = s.signature("id", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,") && p.len() == 47), "{sig}");
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn bad_secrets_are_refused_with_the_index_and_never_echoed() {
        let short = format!("whsec_{}", B64.encode([1u8; 16]));
        let long = format!("whsec_{}", B64.encode([1u8; 65]));
        for (bad, why) in [
            (&b"C2FVsBQIhrscChlQIMV+b5sSYspob7oD"[..], "whsec_"),
            (b"whsec_not*base64!", "base64"),
            (short.as_bytes(), "16 bytes"),
            (long.as_bytes(), "65 bytes"),
        ] {
            let Err((i, msg)) = Signer::new([SECRET, bad]) else {
                panic!("accepted {bad:?}")
            };
            assert_eq!(i, 1);
            assert!(msg.contains(why), "{msg}");
            assert!(!msg.contains("C2FVsBQ") && !msg.contains("base64!"), "{msg}");
        }
        assert!(Signer::new(std::iter::empty()).is_err());
    }

    #[test]
    fn webhook_ids_are_plain_and_stable() {
        let one = |id: &str| webhook_id("r", &[id.to_string()]);
        assert_eq!(one("EVT-1"), "EVT-1");
        assert_eq!(one("sha256:abc"), "sha256:abc");
        // A dot (the signed content's delimiter) or a space is never passed through.
        for odd in ["a.b", "a b", "", &"x".repeat(129)] {
            let id = one(odd);
            assert!(id.starts_with("pg_") && id.len() == 35, "{id}");
        }
        let batch = webhook_id("r", &["a".into(), "b".into()]);
        assert_eq!(batch, webhook_id("r", &["a".into(), "b".into()]));
        assert_ne!(batch, webhook_id("r", &["ab".into()]));
        assert_ne!(batch, webhook_id("other", &["a".into(), "b".into()]));
        assert_ne!(batch, webhook_id("r", &["b".into(), "a".into()]));
    }
}
