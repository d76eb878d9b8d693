//! Throwaway development PKI: a CA, a localhost server certificate and client certificates carrying the Mastercard sender DNs.
//!
//! `pushgate dev-certs --out DIR` uses [`write_dev_certs`] so a newcomer can run pushgate with real
//! mTLS locally; the integration tests use the building blocks ([`Ca`], [`LeafSpec`]) to make the
//! certificates they handshake with, including deliberately bad ones. Nothing here is fit for
//! production: keys are unencrypted and the CA key sits next to the certificates.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, PrintableString, RevocationReason,
    RevokedCertParams, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
pub use rcgen::{CustomExtension, DnType};
use time::{Duration, OffsetDateTime};

/// Subject of Mastercard's Cross-Border Services notification sender in MTF (test), DER order.
pub const XBS_MTF_DN: [(DnType, &str); 6] = [
    (DnType::CountryName, "US"),
    (DnType::StateOrProvinceName, "Missouri"),
    (DnType::LocalityName, "O'Fallon"),
    (DnType::OrganizationName, "MasterCard International Incorporated"),
    (DnType::OrganizationalUnitName, "admin"),
    (DnType::CommonName, "CrossborderServicesNotification-mtf.mastercard.com"),
];

/// Subject of Mastercard's Cross-Border Services notification sender in production, DER order.
pub const XBS_PROD_DN: [(DnType, &str); 6] = [
    (DnType::CountryName, "US"),
    (DnType::StateOrProvinceName, "Missouri"),
    (DnType::LocalityName, "O'Fallon"),
    (DnType::OrganizationName, "MasterCard International Incorporated"),
    (DnType::OrganizationalUnitName, "admin"),
    (
        DnType::CommonName,
        "CrossborderServicesNotification-prod.mastercard.com",
    ),
];

/// A sender that chains to the trusted CA but is not on any allow-list: tests DN authorisation.
pub const OTHER_DN: [(DnType, &str); 3] = [
    (DnType::CountryName, "US"),
    (DnType::OrganizationName, "Example Other Sender"),
    (DnType::CommonName, "other-sender.example"),
];

/// Failure to generate or write development certificates.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// A CA that can issue certificates (keeps its rcgen Certificate + KeyPair).
/// The common name of the CA `write_dev_certs` makes.
pub const DEV_CA_NAME: &str = "pushgate development CA";

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Validity window, EKUs and SANs of a leaf; the knobs tests turn to make bad certificates.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub client_auth: bool,
    pub server_auth: bool,
    /// SANs; entries that parse as IP addresses become iPAddress SANs, the rest dNSName.
    pub names: Vec<String>,
    /// Extra extensions, e.g. an unknown critical one that verifiers must refuse.
    pub extensions: Vec<CustomExtension>,
}

impl Default for LeafSpec {
    /// Valid from an hour ago (tolerates clock skew) for 825 days, the usual leaf maximum.
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(825),
            client_auth: true,
            server_auth: false,
            names: Vec::new(),
            extensions: Vec::new(),
        }
    }
}

/// An issued leaf: PKCS#8 key and certificate (leaf only; see [`Issued::chain_pem`]).
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl Issued {
    /// Leaf followed by the issuing CA, the form TLS servers present.
    pub fn chain_pem(&self, ca: &Ca) -> String {
        format!("{}{}", self.cert_pem, ca.cert_pem())
    }
}

impl std::fmt::Debug for Issued {
    /// Keeps the private key out of logs and assertion messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Self-signed ECDSA P-256 CA valid for 10 years; pathlen 0 so it can only sign leaves.
    pub fn new(common_name: &str) -> Result<Ca, DevCertError> {
        Ca::with_key(common_name, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
    }

    /// The CA of an existing `ca.key` (PEM): certificates it issues chain to the `ca.pem`
    /// written with that key and name (same subject, same key), so more can be issued later.
    pub fn from_key_pem(common_name: &str, key_pem: &str) -> Result<Ca, DevCertError> {
        Ca::with_key(common_name, KeyPair::from_pem(key_pem)?)
    }

    fn with_key(common_name: &str, key: KeyPair) -> Result<Ca, DevCertError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&[(DnType::CommonName, common_name)]);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// The CA's private key (PKCS#8 PEM), so `dev-certs` users can issue more certs themselves.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server cert for the given DNS names / IPs (e.g. `["localhost", "127.0.0.1"]`), serverAuth EKU, ECDSA P-256.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, DevCertError> {
        let cn = names.first().copied().unwrap_or("pushgate development server");
        let spec = LeafSpec {
            client_auth: false,
            server_auth: true,
            names: names.iter().map(|n| n.to_string()).collect(),
            ..LeafSpec::default()
        };
        self.issue_with(&[(DnType::CommonName, cn)], spec)
    }

    /// A client cert with the given subject (DER order), clientAuth EKU.
    pub fn issue_client(&self, subject: &[(DnType, &str)]) -> Result<Issued, DevCertError> {
        self.issue_with(subject, LeafSpec::default())
    }

    /// Full control for tests: validity window and EKUs (used to make expired / not-yet-valid /
    /// serverAuth-only certs). With neither EKU flag set the cert has no EKU extension at all,
    /// which verifiers treat as "any purpose".
    pub fn issue_with(&self, subject: &[(DnType, &str)], spec: LeafSpec) -> Result<Issued, DevCertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(spec.names)?;
        params.distinguished_name = distinguished_name(subject);
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = [
            (spec.server_auth, ExtendedKeyUsagePurpose::ServerAuth),
            (spec.client_auth, ExtendedKeyUsagePurpose::ClientAuth),
        ]
        .into_iter()
        .filter_map(|(wanted, eku)| wanted.then_some(eku))
        .collect();
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = spec.extensions;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

/// A certificate revocation list signed by a [`Ca`].
#[derive(Debug, Clone)]
pub struct Crl {
    pub pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    /// A CRL revoking `revoked` (certificates this CA issued), valid until `next_update`
    /// (a time in the past makes an expired CRL). `number` is the CRL number, which a newer
    /// CRL of the same CA raises.
    pub fn revocation_list(
        &self,
        revoked: &[&Issued],
        next_update: OffsetDateTime,
        number: u64,
    ) -> Result<Crl, DevCertError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for issued in revoked {
            let serial = x509_parser::parse_x509_certificate(&issued.cert_der)
                .map_err(|_| DevCertError::Rcgen(rcgen::Error::CouldNotParseCertificate))?
                .1
                .raw_serial()
                .to_vec();
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: now - Duration::minutes(5),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: (now - Duration::hours(1)).min(next_update - Duration::hours(1)),
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.cert, &self.key)?;
        Ok(Crl {
            pem: crl.pem()?,
            der: crl.der().to_vec(),
        })
    }
}

/// Builds a DN in the given (DER) order. Values are PrintableString where the charset allows,
/// as in Mastercard's real certificates (and as RFC 5280 requires for C), else UTF8String.
fn distinguished_name(subject: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in subject {
        let value = PrintableString::try_from(*value)
            .map(DnValue::PrintableString)
            .unwrap_or_else(|_| DnValue::Utf8String((*value).to_string()));
        dn.push(ty.clone(), value);
    }
    dn
}

const README: &str = "\
pushgate development PKI - FOR LOCAL DEVELOPMENT AND TESTS ONLY: never deploy or trust these files.
ca.pem, ca.key: the development CA; it issued server.pem and the trusted client certificates.
client-ca.pem: copy of ca.pem; point the config's client_ca at it.
server.pem, server.key: server certificate for localhost, 127.0.0.1 and ::1 (leaf followed by ca.pem).
xbs-mtf.pem, xbs-mtf.key: client certificate with the Mastercard Cross-Border MTF sender DN.
xbs-prod.pem, xbs-prod.key: client certificate with the Mastercard Cross-Border PROD sender DN.
other.pem, other.key: client certificate from the same CA for an unknown sender (CN=other-sender.example).
untrusted-ca.pem: a second CA that pushgate must not trust (its key was thrown away).
untrusted.pem, untrusted.key: PROD-DN client certificate issued by untrusted-ca.pem; must be rejected.
Keys are unencrypted PKCS#8 PEM (mode 0600); rerun `pushgate dev-certs --out DIR` to regenerate.
";

/// What `pushgate dev-certs --out DIR` writes; returns the list of files written (relative names) for the CLI to print.
///
/// Everything is generated before the first write and each file is replaced atomically, so no file
/// is ever torn; an I/O error part-way can still leave a mix of old and new files: just rerun.
pub fn write_dev_certs(out: &Path) -> Result<Vec<String>, DevCertError> {
    let ca = Ca::new(DEV_CA_NAME)?;
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
    let mtf = ca.issue_client(&XBS_MTF_DN)?;
    let prod = ca.issue_client(&XBS_PROD_DN)?;
    let other = ca.issue_client(&OTHER_DN)?;
    let rogue_ca = Ca::new("pushgate untrusted development CA")?;
    let untrusted = rogue_ca.issue_client(&XBS_PROD_DN)?;

    let files: [(&str, String, bool); 15] = [
        ("ca.pem", ca.cert_pem(), false),
        ("ca.key", ca.key_pem(), true),
        ("server.pem", server.chain_pem(&ca), false),
        ("server.key", server.key_pem, true),
        ("client-ca.pem", ca.cert_pem(), false),
        ("xbs-mtf.pem", mtf.cert_pem, false),
        ("xbs-mtf.key", mtf.key_pem, true),
        ("xbs-prod.pem", prod.cert_pem, false),
        ("xbs-prod.key", prod.key_pem, true),
        ("other.pem", other.cert_pem, false),
        ("other.key", other.key_pem, true),
        ("untrusted-ca.pem", rogue_ca.cert_pem(), false),
        ("untrusted.pem", untrusted.cert_pem, false),
        ("untrusted.key", untrusted.key_pem, true),
        ("README.txt", README.to_string(), false),
    ];
    fs::create_dir_all(out).map_err(io_err(out))?;
    for (name, contents, secret) in &files {
        write_atomic(out, name, contents.as_bytes(), *secret)?;
    }
    Ok(files.iter().map(|(name, ..)| name.to_string()).collect())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DevCertError + '_ {
    move |source| DevCertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes via a fresh temp file + rename: readers never see a torn file, and a key's 0600 mode
/// is set at creation, so it is never readable by others even for an instant.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], secret: bool) -> Result<(), DevCertError> {
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover temp file from a crash could carry a wrong mode; create_new below needs it gone.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let result = written
        .map_err(io_err(&tmp))
        .and_then(|()| fs::rename(&tmp, &dest).map_err(io_err(&dest)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::oid_registry::*;
    use x509_parser::prelude::*;

    /// DER of every certificate in a PEM file, checked with parse_x509_pem + parse_x509_certificate.
    fn certs_in(path: &Path) -> Vec<Vec<u8>> {
        let data = fs::read(path).unwrap();
        let ders: Vec<Vec<u8>> = Pem::iter_from_buffer(&data).map(|p| p.unwrap().contents).collect();
        let (_, first) = parse_x509_pem(&data).unwrap();
        assert_eq!(first.contents, ders[0]);
        for der in &ders {
            parse_x509_certificate(der).unwrap();
        }
        ders
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        parse_x509_certificate(der).unwrap().1
    }

    fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
        let e = cert.extended_key_usage().unwrap().unwrap().value;
        (e.client_auth, e.server_auth)
    }

    #[test]
    fn writes_every_file_and_they_parse() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/dev");
        write_dev_certs(&out).unwrap();
        // Second run overwrites in place and leaves no temp files behind.
        let names = write_dev_certs(&out).unwrap();
        assert_eq!(names.len(), 15);
        let mut on_disk: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut expected = names.clone();
        expected.sort();
        assert_eq!(on_disk, expected);
        for name in &names {
            let path = out.join(name);
            if name.ends_with(".pem") {
                assert!(!certs_in(&path).is_empty(), "{name}");
            } else if name.ends_with(".key") {
                let data = fs::read(&path).unwrap();
                assert_eq!(parse_x509_pem(&data).unwrap().1.label, "PRIVATE KEY");
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = fs::metadata(&path).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, 0o600, "{name} must be private");
                }
            }
        }
        assert_eq!(certs_in(&out.join("server.pem")).len(), 2);
        let readme = fs::read_to_string(out.join("README.txt")).unwrap();
        assert_eq!(readme.lines().count(), 10);
        assert!(readme.contains("DEVELOPMENT AND TESTS ONLY"));
        assert_eq!(
            fs::read(out.join("client-ca.pem")).unwrap(),
            fs::read(out.join("ca.pem")).unwrap()
        );
    }

    #[test]
    fn certificates_have_the_right_names_usages_and_issuers() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_certs(dir.path()).unwrap();
        let load = |name: &str| certs_in(&dir.path().join(name)).remove(0);
        let (ca_der, rogue_der) = (load("ca.pem"), load("untrusted-ca.pem"));
        let (ca, rogue) = (parse(&ca_der), parse(&rogue_der));
        assert!(ca.is_ca() && rogue.is_ca());

        for (file, cn) in [("xbs-prod.pem", XBS_PROD_DN[5].1), ("xbs-mtf.pem", XBS_MTF_DN[5].1)] {
            let der = load(file);
            let cert = parse(&der);
            let attrs: Vec<(Oid<'_>, &str)> = cert
                .subject()
                .iter_rdn()
                .map(|rdn| {
                    assert_eq!(rdn.iter().count(), 1);
                    let a = rdn.iter().next().unwrap();
                    (a.attr_type().clone(), a.as_str().unwrap())
                })
                .collect();
            let want = [
                (OID_X509_COUNTRY_NAME, "US"),
                (OID_X509_STATE_OR_PROVINCE_NAME, "Missouri"),
                (OID_X509_LOCALITY_NAME, "O'Fallon"),
                (OID_X509_ORGANIZATION_NAME, "MasterCard International Incorporated"),
                (OID_X509_ORGANIZATIONAL_UNIT, "admin"),
                (OID_X509_COMMON_NAME, cn),
            ];
            assert_eq!(attrs, want);
            let abbrev = ["C", "ST", "L", "O", "OU", "CN"];
            let rfc4514: Vec<String> = (0..6).rev().map(|i| format!("{}={}", abbrev[i], attrs[i].1)).collect();
            assert_eq!(
                rfc4514.join(","),
                format!("CN={cn},OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US")
            );
        }

        for file in ["xbs-mtf.pem", "xbs-prod.pem", "other.pem", "untrusted.pem"] {
            let der = load(file);
            let cert = parse(&der);
            assert_eq!(eku(&cert), (true, false), "{file}");
            let issuer = cert.issuer().as_raw();
            let (signer, other) = if file == "untrusted.pem" {
                (&rogue, &ca)
            } else {
                (&ca, &rogue)
            };
            assert_eq!(issuer, signer.subject().as_raw(), "{file}");
            assert_ne!(issuer, other.subject().as_raw(), "{file}");
        }

        let server_der = load("server.pem");
        let server = parse(&server_der);
        assert_eq!(eku(&server), (false, true));
        assert_eq!(server.issuer().as_raw(), ca.subject().as_raw());
        let sans = &server.subject_alternative_name().unwrap().unwrap().value;
        let names = &sans.general_names;
        assert!(names.contains(&GeneralName::DNSName("localhost")));
        assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        let v6_loopback = std::net::Ipv6Addr::LOCALHOST.octets();
        assert!(names.contains(&GeneralName::IPAddress(&v6_loopback)));
    }

    #[test]
    fn revocation_lists_name_the_revoked_serials() {
        let ca = Ca::new("test CA").unwrap();
        let (a, b) = (
            ca.issue_client(&XBS_PROD_DN).unwrap(),
            ca.issue_client(&OTHER_DN).unwrap(),
        );
        let next = OffsetDateTime::now_utc() + Duration::days(7);
        let crl = ca.revocation_list(&[&a], next, 1).unwrap();
        assert!(crl.pem.starts_with("-----BEGIN X509 CRL-----"));
        let (_, parsed) = x509_parser::parse_x509_crl(&crl.der).unwrap();
        let serials: Vec<&[u8]> = parsed.iter_revoked_certificates().map(|r| r.raw_serial()).collect();
        assert_eq!(serials, [parse(&a.cert_der).raw_serial()]);
        assert_ne!(parse(&a.cert_der).raw_serial(), parse(&b.cert_der).raw_serial());
        assert_eq!(parsed.issuer().as_raw(), parse(&ca.cert_der()).subject().as_raw());
        assert_eq!(parsed.next_update().unwrap().timestamp(), next.unix_timestamp());
        // Past its next update: this_update still comes before.
        let old = OffsetDateTime::now_utc() - Duration::days(1);
        let stale_der = ca.revocation_list(&[], old, 2).unwrap().der;
        let (_, stale) = x509_parser::parse_x509_crl(&stale_der).unwrap();
        assert!(stale.last_update().timestamp() < stale.next_update().unwrap().timestamp());
    }

    #[test]
    fn issue_with_makes_expired_and_server_auth_only_certs() {
        let ca = Ca::new("test CA").unwrap();
        let now = OffsetDateTime::now_utc();
        let expired = ca
            .issue_with(
                &XBS_PROD_DN,
                LeafSpec {
                    not_before: now - Duration::days(30),
                    not_after: now - Duration::days(1),
                    ..LeafSpec::default()
                },
            )
            .unwrap();
        let cert = parse(&expired.cert_der);
        assert!(cert.validity().not_after.timestamp() < now.unix_timestamp());
        assert!(!cert.validity().is_valid());

        let spec = LeafSpec {
            client_auth: false,
            server_auth: true,
            ..LeafSpec::default()
        };
        let server_only = ca.issue_with(&XBS_PROD_DN, spec).unwrap();
        assert_eq!(eku(&parse(&server_only.cert_der)), (false, true));
        assert_eq!(
            server_only.chain_pem(&ca),
            format!("{}{}", server_only.cert_pem, ca.cert_pem())
        );
        assert!(!format!("{server_only:?}").contains("PRIVATE KEY"));
    }
}
