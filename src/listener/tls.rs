//! The listener's TLS: the server certificate (behind a resolver, so it can be swapped on
//! reload), the client-certificate verifier (any certificate presented must chain to
//! `client_ca` and not be revoked by a `client_crl`; none at all is allowed unless
//! `require_client_cert`), and the handshake callback that reduces the verified leaf to a
//! [`ClientIdentity`] once per connection.

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::listener::identity::ClientIdentity;
use crate::listener::tls_files::{CrlExpired, TlsFiles};
use crate::ops::metrics::{Metrics, NO_ROUTE};

/// A certificate this close to its expiry is warned about in the log.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Everything the listener's TLS needs, loaded and checked.
pub struct TlsMaterial {
    pub certified_key: Arc<CertifiedKey>,
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// DER of the server leaf and of each client CA, for the expiry gauges.
    pub server_leaf: Vec<u8>,
    pub client_cas: Vec<Vec<u8>>,
    /// DER of each client CRL, for the next-update gauge.
    pub client_crls: Vec<Vec<u8>>,
}

/// Config-time check of the listener's files, with the config key to blame.
pub fn check_files(listen: &TlsFiles) -> Result<(), (&'static str, String)> {
    load(listen).map(|_| ())
}

/// Loads the server certificate and key and the client CA.
pub fn load(listen: &TlsFiles) -> Result<TlsMaterial, (&'static str, String)> {
    let chain = read_certs(&listen.cert).map_err(|m| ("listen.tls.cert", m))?;
    let key = PrivateKeyDer::from_pem_file(&listen.key).map_err(|e| {
        (
            "listen.tls.key",
            format!("{}: no usable private key ({e})", listen.key.display()),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        (
            "listen.tls.key",
            format!("{}: unsupported key ({e})", listen.key.display()),
        )
    })?;
    let server_leaf = chain.first().map(|c| c.to_vec()).unwrap_or_default();
    let certified_key = Arc::new(CertifiedKey::new(chain, signing));
    certified_key.keys_match().map_err(|_| {
        (
            "listen.tls.key",
            "the key does not belong to listen.tls.cert".to_string(),
        )
    })?;

    let (verifier, client_cas, client_crls) = match &listen.client_ca {
        None => (None, vec![], vec![]),
        Some(path) => {
            let cas = read_certs(path).map_err(|m| ("listen.tls.client_ca", m))?;
            let mut roots = RootCertStore::empty();
            for ca in &cas {
                roots
                    .add(ca.clone())
                    .map_err(|e| ("listen.tls.client_ca", format!("{}: {e}", path.display())))?;
            }
            let roots = Arc::new(roots);
            let mut crls = Vec::new();
            for crl_path in &listen.client_crl {
                crls.extend(read_crls(crl_path, &roots).map_err(|m| ("listen.tls.client_crl", m))?);
            }
            let mut builder = WebPkiClientVerifier::builder(roots);
            if !crls.is_empty() {
                // Every certificate of the chain below the trust anchor must have its issuer's
                // CRL here (webpki's default): a certificate whose revocation cannot be known
                // is refused, not waved through.
                builder = builder.with_crls(crls.iter().cloned());
                if listen.client_crl_expired == CrlExpired::Refuse {
                    builder = builder.enforce_revocation_expiration();
                }
            }
            let builder = if listen.require_client_cert {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            let v = builder
                .build()
                .map_err(|e| ("listen.tls.client_ca", format!("{}: {e}", path.display())))?;
            (
                Some(v),
                cas.iter().map(|c| c.to_vec()).collect(),
                crls.iter().map(|c| c.to_vec()).collect(),
            )
        }
    };
    Ok(TlsMaterial {
        certified_key,
        verifier,
        server_leaf,
        client_cas,
        client_crls,
    })
}

/// The CRLs of one file: PEM (`-----BEGIN X509 CRL-----`, one or more) or a single DER CRL,
/// each checked by building a verifier with it, so a bad one is named by its file here rather
/// than by the combined verifier later.
fn read_crls(path: &Path, roots: &Arc<RootCertStore>) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read ({e})", path.display()))?;
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(format!(
            "{}: no CRL in the file (PEM `BEGIN X509 CRL` blocks or one DER CRL)",
            path.display()
        ));
    }
    WebPkiClientVerifier::builder(roots.clone())
        .with_crls(crls.iter().cloned())
        .build()
        .map_err(|e| format!("{}: not a usable CRL ({e})", path.display()))?;
    Ok(crls)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The live TLS state. Swapping its contents (reload) affects new handshakes only; open
/// connections keep what they negotiated.
#[derive(Clone)]
pub struct LiveTls {
    cert: Arc<RwLock<Arc<CertifiedKey>>>,
    verifier: Arc<RwLock<Option<Arc<dyn ClientCertVerifier>>>>,
    metrics: Arc<Metrics>,
}

impl LiveTls {
    pub fn new(m: &TlsMaterial, metrics: Arc<Metrics>) -> LiveTls {
        publish_expiry(m, &metrics);
        LiveTls {
            cert: Arc::new(RwLock::new(m.certified_key.clone())),
            verifier: Arc::new(RwLock::new(m.verifier.clone())),
            metrics,
        }
    }

    /// New handshakes use `m` from now on; open connections keep what they negotiated.
    pub fn swap(&self, m: &TlsMaterial) {
        *self.cert.write().unwrap_or_else(|p| p.into_inner()) = m.certified_key.clone();
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = m.verifier.clone();
        publish_expiry(m, &self.metrics);
    }

    /// Counts a refused client certificate by reason (a handshake never reaches HTTP, so
    /// this is the only place it can be seen).
    fn count_refusal(&self, e: &rustls::Error) {
        let reason = refusal_reason(e);
        tracing::debug!(target: "pushgate::tls", reason, "client certificate refused");
        self.metrics.tls_failures.with_label_values(&[reason]).inc();
        self.metrics
            .requests
            .with_label_values(&[NO_ROUTE, "rejected_tls"])
            .inc();
    }

    fn current_verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.verifier.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Pingora TLS settings for the listener (HTTP/1.1 only: senders use 1.0/1.1; TLS 1.2+).
    pub fn settings(&self) -> Result<TlsSettings, String> {
        let mut tls = TlsSettings::with_callbacks(Box::new(IdentityCallback)).map_err(|e| e.to_string())?;
        tls.set_cert_resolver(Arc::new(CertResolver(self.clone())));
        // Without a client CA it asks for no certificate (offer_client_auth is false).
        tls.set_client_cert_verifier(Arc::new(SwappableVerifier(self.clone())));
        Ok(tls)
    }
}

#[derive(Debug)]
struct CertResolver(LiveTls);

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveTls")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.cert.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Delegates to the current verifier, so the client CA can change without a restart.
#[derive(Debug)]
struct SwappableVerifier(LiveTls);

impl SwappableVerifier {
    fn with_verifier<T>(
        &self,
        f: impl FnOnce(&dyn ClientCertVerifier) -> Result<T, rustls::Error>,
    ) -> Result<T, rustls::Error> {
        match self.0.current_verifier() {
            Some(v) => f(v.as_ref()),
            None => Err(rustls::Error::General("client certificates are not configured".into())),
        }
    }
}

impl ClientCertVerifier for SwappableVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.current_verifier().is_some_and(|v| v.offer_client_auth())
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.current_verifier().is_some_and(|v| v.client_auth_mandatory())
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to borrow from the swappable verifier; clients send their
        // certificate without them.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self.with_verifier(|v| v.verify_client_cert(end_entity, intermediates, now));
        if let Err(e) = &result {
            self.0.count_refusal(e);
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.with_verifier(|v| v.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.with_verifier(|v| v.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .current_verifier()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// A bounded label for why a client certificate was refused.
fn refusal_reason(e: &rustls::Error) -> &'static str {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::UnknownIssuer => "unknown_issuer",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "wrong_purpose",
            C::Revoked => "revoked",
            C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => "bad_signature",
            C::BadEncoding => "bad_encoding",
            C::UnhandledCriticalExtension => "critical_extension",
            C::UnknownRevocationStatus => "unknown_revocation_status",
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => "crl_expired",
            // webpki 0.103 reports an unknown critical extension as Other, not the variant above.
            _ => "other",
        },
        _ => "other",
    }
}

/// Parses the verified leaf once per connection; requests read it from the TLS digest.
struct IdentityCallback;

#[async_trait]
impl TlsAccept for IdentityCallback {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let leaf = tls.peer_certificate_der()?;
        // rustls has verified the chain; a leaf x509-parser cannot read simply has no identity
        // (routes that pin one answer 403).
        let identity = ClientIdentity::from_leaf_der(leaf).ok()?;
        Some(Arc::new(identity))
    }
}

/// Sets `pushgate_cert_expiry_timestamp_seconds` for the server certificate and each client
/// CA, and warns about any within [`EXPIRY_WARNING`] of its end; sets
/// `pushgate_crl_next_update_timestamp_seconds` for each client CRL, and warns about any
/// already past it.
pub fn publish_expiry(m: &TlsMaterial, metrics: &Metrics) {
    // A CA removed by a reload must not keep its series (and its expiry alert).
    metrics.cert_expiry.reset();
    let mut certs = vec![("server".to_string(), m.server_leaf.as_slice())];
    for der in &m.client_cas {
        certs.push((format!("client_ca:{}", subject_cn(der)), der.as_slice()));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for (label, der) in certs {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            continue;
        };
        let not_after = cert.validity().not_after.timestamp();
        metrics
            .cert_expiry
            .with_label_values(&[label.as_str()])
            .set(not_after as f64);
        let left = not_after - now;
        if left < EXPIRY_WARNING.as_secs() as i64 {
            tracing::warn!(cert = %label, days_left = left / 86_400, "certificate expires soon");
        }
    }
    metrics.crl_next_update.reset();
    for der in &m.client_crls {
        let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
            continue;
        };
        let issuer = name_cn(crl.issuer());
        // A CRL without nextUpdate never expires; it gets no series.
        let Some(next) = crl.next_update().map(|t| t.timestamp()) else {
            continue;
        };
        metrics
            .crl_next_update
            .with_label_values(&[issuer.as_str()])
            .set(next as f64);
        if next < now {
            tracing::warn!(
                target: "pushgate::tls",
                crl_issuer = %issuer,
                hours_past = (now - next) / 3600,
                "client CRL is past its next update: refresh it and reload \
                 (with client_crl_expired: refuse, certificates it covers are refused)"
            );
        }
    }
}

fn name_cn(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| "unnamed".into(), str::to_string)
}

fn subject_cn(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unnamed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_refusals_have_their_own_reasons() {
        let cert = |c: CertificateError| refusal_reason(&rustls::Error::InvalidCertificate(c));
        assert_eq!(cert(CertificateError::Revoked), "revoked");
        assert_eq!(cert(CertificateError::ExpiredRevocationList), "crl_expired");
        assert_eq!(
            cert(CertificateError::ExpiredRevocationListContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(2)),
                next_update: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1)),
            }),
            "crl_expired"
        );
        assert_eq!(
            cert(CertificateError::UnknownRevocationStatus),
            "unknown_revocation_status"
        );
        assert_eq!(refusal_reason(&rustls::Error::General("x".into())), "other");
    }
}
