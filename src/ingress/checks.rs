//! Who may send to a route: the client certificate's subject DN and leaf pin (→ 403), then the
//! shared-secret header compared in constant time (→ 401). Plain functions, no I/O.

use subtle::ConstantTimeEq;

use crate::listener::identity::{ClientDn, ClientIdentity};
use crate::secret::Secret;

/// Why a request was refused before its body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No certificate, or its DN / leaf is not one the route pins. 403.
    Identity,
    /// Secret header missing, repeated or wrong. 401.
    Secret,
}

impl From<Denied> for crate::ingress::refusal::Refusal {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Identity => crate::ingress::refusal::Refusal::Identity,
            Denied::Secret => crate::ingress::refusal::Refusal::Secret,
        }
    }
}

/// A secret header and the values it may carry (several, so a secret can rotate without downtime).
#[derive(Debug)]
pub struct SecretCheck {
    header: http::HeaderName,
    values: Vec<Secret>,
}

impl SecretCheck {
    pub fn new(header: http::HeaderName, values: Vec<Secret>) -> SecretCheck {
        SecretCheck { header, values }
    }

    pub fn header(&self) -> &http::HeaderName {
        &self.header
    }

    fn accepts(&self, headers: &http::HeaderMap) -> bool {
        let mut sent = headers.get_all(&self.header).iter();
        let (Some(value), None) = (sent.next(), sent.next()) else {
            return false; // absent, or repeated: ambiguous, so refused
        };
        // Compare against every value without stopping early, so timing does not reveal which
        // one (if any) matched. `ct_eq` on slices of different lengths is false.
        let mut matched = subtle::Choice::from(0);
        for v in &self.values {
            matched |= v.expose().ct_eq(value.as_bytes());
        }
        matched.into()
    }
}

/// The identity and secret requirements of one route.
#[derive(Debug)]
pub struct RouteAuth {
    dns: Vec<ClientDn>,
    pins: Vec<[u8; 32]>,
    secret: Option<SecretCheck>,
}

impl RouteAuth {
    pub fn new(dns: Vec<ClientDn>, pins: Vec<[u8; 32]>, secret: Option<SecretCheck>) -> RouteAuth {
        RouteAuth { dns, pins, secret }
    }

    /// Whether the route checks anything at all (start-up refuses routes that do not, unless
    /// they say `allow_unauthenticated`).
    pub fn authenticates(&self) -> bool {
        !self.dns.is_empty() || !self.pins.is_empty() || self.secret.is_some()
    }

    /// One line for `pushgate check`: what the route requires of a sender.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.dns.is_empty() {
            parts.push(format!("{} DN(s)", self.dns.len()));
        }
        if !self.pins.is_empty() {
            parts.push(format!("{} pin(s)", self.pins.len()));
        }
        if let Some(s) = &self.secret {
            parts.push(format!("secret {} ({} value(s))", s.header, s.values.len()));
        }
        if parts.is_empty() {
            "unauthenticated".into()
        } else {
            parts.join(" + ")
        }
    }

    pub fn secret(&self) -> Option<&SecretCheck> {
        self.secret.as_ref()
    }

    /// Identity first (403), then the secret (401), as SPEC §4 orders them. When both a DN list
    /// and pins are configured, both must match: the pin narrows the DN, it is not an alternative.
    pub fn check(&self, identity: Option<&ClientIdentity>, headers: &http::HeaderMap) -> Result<(), Denied> {
        if !self.dns.is_empty() || !self.pins.is_empty() {
            let id = identity.ok_or(Denied::Identity)?;
            if !self.dns.is_empty() && !self.dns.contains(&id.dn) {
                return Err(Denied::Identity);
            }
            if !self.pins.is_empty() && !self.pins.iter().any(|p| bool::from(p.ct_eq(&id.sha256))) {
                return Err(Denied::Identity);
            }
        }
        if let Some(secret) = &self.secret {
            if !secret.accepts(headers) {
                return Err(Denied::Secret);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(values: &[&str]) -> SecretCheck {
        SecretCheck::new(
            http::HeaderName::from_static("x-notification-secret"),
            values.iter().map(|v| Secret::new(v.as_bytes().to_vec())).collect(),
        )
    }

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("x-notification-secret", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn secret_rotation_accepts_any_configured_value() {
        let auth = RouteAuth::new(
            vec![],
            vec![],
            Some(secret(&["old-secret-0123456789abcdef0123", "new"])),
        );
        assert_eq!(auth.check(None, &headers(&["old-secret-0123456789abcdef0123"])), Ok(()));
        assert_eq!(auth.check(None, &headers(&["new"])), Ok(()));
        assert_eq!(auth.check(None, &headers(&["ne"])), Err(Denied::Secret));
        assert_eq!(auth.check(None, &headers(&["new "])), Err(Denied::Secret));
        assert_eq!(auth.check(None, &headers(&[])), Err(Denied::Secret));
        assert_eq!(auth.check(None, &headers(&["new", "new"])), Err(Denied::Secret));
    }

    #[test]
    fn identity_is_checked_before_the_secret() {
        let dn = ClientDn::parse("CN=a,O=b").unwrap();
        let auth = RouteAuth::new(vec![dn], vec![], Some(secret(&["s"])));
        // No certificate and a wrong secret: the identity failure answers.
        assert_eq!(auth.check(None, &headers(&["x"])), Err(Denied::Identity));
    }
}
