//! The listener's TLS files as the config names them (certificate, key, client CAs, CRLs) and
//! how strictly they apply: a leaf, so the config that checks them and `tls` that loads them
//! (at start and on every reload) share the type without depending on each other.

use std::path::PathBuf;

use serde::Deserialize;

/// Paths already resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM or DER files) that client certificates are checked
    /// against in the handshake; none by default. Needs `client_ca`.
    pub client_crl: Vec<PathBuf>,
    /// What a CRL past its nextUpdate does (`client_crl_expired`): refuse by default.
    pub client_crl_expired: CrlExpired,
    /// Refuse the handshake when no client certificate is sent (off by default: secret-only
    /// senders such as the Mastercard Gateway present none).
    pub require_client_cert: bool,
}

/// What happens to a client certificate checked against a CRL that is past its nextUpdate.
///
/// `refuse` (the default) fails the handshake (counted as `reason="crl_expired"`): a stale
/// CRL cannot show a revocation made since, so trusting it would let a revoked sender in for
/// as long as the CRL is not refreshed — the fail-closed answer a payments security review
/// asks for. The cost is availability if the refresh job breaks, which is why
/// `pushgate_crl_next_update_timestamp_seconds` is exported and alerted on well before.
/// `allow` uses the stale CRL anyway (rustls' own default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CrlExpired {
    #[default]
    Refuse,
    Allow,
}
