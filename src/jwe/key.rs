//! Decryption keys: PEM or DER read once into aws-lc-rs's constant-time RSA-OAEP, named by kid.
//!
//! aws-lc-rs rather than the `rsa` crate: the latter's decryption has a timing side channel
//! (Marvin, RUSTSEC-2023-0071, no fixed release); AWS-LC's RSA is constant-time.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use super::JweError;

const MIN_RSA_BITS: usize = 2048;

/// An RSA private key that Mastercard encrypts towards, with its kid (SPKI SHA-256 fingerprint).
pub struct DecryptKey {
    oaep: OaepPrivateDecryptingKey,
    kid: String,
    #[cfg(test)]
    pub(super) public: aws_lc_rs::rsa::PublicEncryptingKey,
}

impl DecryptKey {
    /// PEM: PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"; DER PKCS#8 also accepted (detect by content).
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<DecryptKey, JweError> {
        if bytes.windows(10).any(|w| w == b"-----BEGIN") {
            // The PEM reader skips text outside its block (openssl's "Bag Attributes", a certificate).
            if let Ok(der) = PrivatePkcs8KeyDer::from_pem_slice(bytes) {
                return Self::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| bad("PKCS#8 PEM", e));
            }
            if let Ok(der) = PrivatePkcs1KeyDer::from_pem_slice(bytes) {
                return Self::from_pkcs1(der.secret_pkcs1_der()).map_err(|e| bad("PKCS#1 PEM", e));
            }
            return Err(JweError::BadKey(
                "no unencrypted PRIVATE KEY or RSA PRIVATE KEY PEM block".into(),
            ));
        }
        // Binary: PKCS#8 DER as documented; PKCS#1 DER costs nothing to accept too.
        Self::from_pkcs8(bytes)
            .or_else(|_| Self::from_pkcs1(bytes))
            .map_err(|_| JweError::BadKey("not a PKCS#8 or PKCS#1 RSA key (DER)".into()))
    }

    fn from_pkcs8(der: &[u8]) -> Result<DecryptKey, String> {
        // AWS-LC checks the key's consistency (RSA_check_key) and its size (2048..=8192 bits).
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|e| e.to_string())?;
        Self::from_private(key)
    }

    fn from_pkcs1(der: &[u8]) -> Result<DecryptKey, String> {
        // aws-lc-rs reads PKCS#1 only as a KeyPair; its PKCS#8 form is the same key.
        let pair = KeyPair::from_der(der).map_err(|e| e.to_string())?;
        let pkcs8 = pair.as_der().map_err(|e| e.to_string())?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    pub(super) fn from_private(key: PrivateDecryptingKey) -> Result<DecryptKey, String> {
        if key.key_size_bits() < MIN_RSA_BITS {
            return Err(format!(
                "RSA key is {} bits, need at least {MIN_RSA_BITS}",
                key.key_size_bits()
            ));
        }
        let public = key.public_key();
        let spki = public
            .as_der()
            .map_err(|_| "cannot encode the public key".to_string())?;
        let kid = hex::encode(Sha256::digest(spki.as_ref()));
        let oaep = OaepPrivateDecryptingKey::new(key).map_err(|_| "not an RSA-OAEP key".to_string())?;
        Ok(DecryptKey {
            oaep,
            kid,
            #[cfg(test)]
            public,
        })
    }

    /// Lower-case hex SHA-256 of the public key's SubjectPublicKeyInfo DER.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// RSA-OAEP-256 (SHA-256, MGF1-SHA-256, no label) of the JWE's encrypted key; None when this
    /// key did not wrap it. One undistinguished failure, in constant time inside AWS-LC.
    pub(super) fn unwrap_cek(&self, encrypted_key: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0; self.oaep.min_output_size()];
        let n = self
            .oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, encrypted_key, &mut out, None)
            .ok()?
            .len();
        out.truncate(n);
        Some(out)
    }
}

fn bad(what: &str, why: String) -> JweError {
    JweError::BadKey(format!("{what}: {why}"))
}

impl std::fmt::Debug for DecryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
