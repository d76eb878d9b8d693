//! Cross-Border payload decryption: the `{"encrypted_payload":{"data":JWE}}` envelope → plaintext and content type.
//!
//! JWE compact serialisation (RFC 7516) with `alg=RSA-OAEP-256` and `enc=A128GCM|A192GCM|A256GCM`,
//! as produced by Mastercard's client-encryption libraries (12- or 16-byte IVs).

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

// JOSE uses unpadded base64url; some senders pad anyway, so accept both.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const DEFAULT_CONTENT_TYPE: &str = "application/json";
const MIN_RSA_BITS: usize = 2048;
const TAG_LEN: usize = 16;

/// An RSA private key that Mastercard encrypts towards, with its kid (SPKI SHA-256 fingerprint).
pub struct DecryptKey {
    key: RsaPrivateKey,
    kid: String,
}

impl DecryptKey {
    /// PEM: PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"; DER PKCS#8 also accepted (detect by content).
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<DecryptKey, JweError> {
        let key = match std::str::from_utf8(bytes).ok().filter(|s| s.contains("-----BEGIN")) {
            Some(text) => {
                if let Some(block) = pem_block(text, "PRIVATE KEY") {
                    RsaPrivateKey::from_pkcs8_pem(block).map_err(|e| JweError::BadKey(format!("PKCS#8 PEM: {e}")))?
                } else if let Some(block) = pem_block(text, "RSA PRIVATE KEY") {
                    RsaPrivateKey::from_pkcs1_pem(block).map_err(|e| JweError::BadKey(format!("PKCS#1 PEM: {e}")))?
                } else {
                    return Err(JweError::BadKey(
                        "no unencrypted PRIVATE KEY or RSA PRIVATE KEY PEM block".into(),
                    ));
                }
            }
            // Binary: PKCS#8 DER as documented; PKCS#1 DER costs nothing to accept too.
            None => RsaPrivateKey::from_pkcs8_der(bytes)
                .or_else(|_| RsaPrivateKey::from_pkcs1_der(bytes))
                .map_err(|_| JweError::BadKey("not a PKCS#8 or PKCS#1 RSA key (DER)".into()))?,
        };
        Self::from_rsa(key)
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<DecryptKey, JweError> {
        key.validate()
            .map_err(|e| JweError::BadKey(format!("inconsistent RSA key: {e}")))?;
        if key.size() * 8 < MIN_RSA_BITS {
            return Err(JweError::BadKey(format!(
                "RSA key is {} bits, need at least {MIN_RSA_BITS}",
                key.size() * 8
            )));
        }
        let spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| JweError::BadKey(format!("cannot encode public key: {e}")))?;
        let kid = hex::encode(Sha256::digest(spki.as_bytes()));
        Ok(DecryptKey { key, kid })
    }

    /// Lower-case hex SHA-256 of the public key's SubjectPublicKeyInfo DER.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl std::fmt::Debug for DecryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The block from `-----BEGIN label-----` through `-----END label-----`, so that preambles such as
/// openssl's "Bag Attributes" or a certificate in the same file do not break the strict PEM parser.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = start + text[start..].find(&end)? + end.len();
    Some(&text[start..stop])
}

#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub plaintext: Vec<u8>,
    pub content_type: String,
    pub kid_used: String,
}

// Plaintext is payment data: show its length only.
impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("plaintext_len", &self.plaintext.len())
            .field("content_type", &self.content_type)
            .field("kid_used", &self.kid_used)
            .finish()
    }
}

/// Why a payload could not be decrypted. Messages carry short reasons, kids and lengths only.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    #[error("x-encrypted is set but the body is not an encrypted_payload envelope")]
    NotAnEnvelope,
    #[error("malformed JWE: {0}")]
    Malformed(&'static str),
    #[error("unsupported JWE alg {0:?}")]
    UnsupportedAlg(String),
    #[error("unsupported JWE enc {0:?}")]
    UnsupportedEnc(String),
    #[error("no configured decryption key has kid {0:?}")]
    UnknownKid(String),
    #[error("no configured decryption key could unwrap the content key")]
    KeyMismatch,
    #[error("JWE IV must be 12 or 16 bytes, got {0}")]
    BadIv(usize),
    #[error("content key length does not match enc")]
    BadCek,
    #[error("JWE authentication tag check failed")]
    Tampered,
    #[error("unusable decryption key: {0}")]
    BadKey(String),
}

/// Ok(None): the body is not an envelope (and header did not claim it is).
pub fn decrypt_envelope(
    body: &[u8],
    header_says_encrypted: bool,
    keys: &[DecryptKey],
) -> Result<Option<Decrypted>, JweError> {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    // `get` on a non-object yields None, so arrays/strings/etc. count as "not an envelope".
    match value.as_ref().and_then(|v| v.get("encrypted_payload")) {
        Some(payload) => match payload.get("data").and_then(serde_json::Value::as_str) {
            Some(jwe) => decrypt_compact(jwe, keys).map(Some),
            // An encrypted_payload key is a clear claim of encryption; never pass it on as plaintext.
            None => Err(JweError::Malformed("encrypted_payload has no string data")),
        },
        None if header_says_encrypted => Err(JweError::NotAnEnvelope),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    enc: String,
    cty: Option<String>,
    kid: Option<String>,
    // Parsed only to reject them: we implement no compression and no critical extensions.
    zip: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Clone, Copy)]
enum Enc {
    A128,
    A192,
    A256,
}

impl Enc {
    fn parse(enc: &str) -> Option<Enc> {
        match enc {
            "A128GCM" => Some(Enc::A128),
            "A192GCM" => Some(Enc::A192),
            "A256GCM" => Some(Enc::A256),
            _ => None,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Enc::A128 => 16,
            Enc::A192 => 24,
            Enc::A256 => 32,
        }
    }
}

/// The compact-serialisation step alone (used by decrypt_envelope; public for fuzzing).
pub fn decrypt_compact(jwe: &str, keys: &[DecryptKey]) -> Result<Decrypted, JweError> {
    // splitn bounds the allocation for inputs with many dots; a 6th item means too many parts.
    let parts: Vec<&str> = jwe.splitn(6, '.').collect();
    let [h, ek, iv, ct, tag] = parts[..] else {
        return Err(JweError::Malformed("expected 5 dot-separated parts"));
    };
    let header_json = b64(h, "header is not base64url")?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|_| JweError::Malformed("header is not a JSON object with string alg and enc"))?;
    if header.alg != "RSA-OAEP-256" {
        return Err(JweError::UnsupportedAlg(short(&header.alg)));
    }
    let enc = Enc::parse(&header.enc).ok_or_else(|| JweError::UnsupportedEnc(short(&header.enc)))?;
    if header.zip.is_some() {
        return Err(JweError::Malformed("zip is not supported"));
    }
    if header.crit.is_some() {
        return Err(JweError::Malformed("crit is not supported"));
    }
    // All cheap structural checks happen before any RSA private-key operation.
    let ek = b64(ek, "encrypted key is not base64url")?;
    let iv = b64(iv, "IV is not base64url")?;
    if iv.len() != 12 && iv.len() != 16 {
        return Err(JweError::BadIv(iv.len()));
    }
    let ct = b64(ct, "ciphertext is not base64url")?;
    let tag = b64(tag, "tag is not base64url")?;
    if tag.len() != TAG_LEN {
        return Err(JweError::Malformed("tag must be 16 bytes"));
    }
    // AAD is the header part exactly as received (RFC 7516 §5.2 step 14), never re-encoded.
    let aad = h.as_bytes();
    let attempt = |key: &DecryptKey| -> Result<Vec<u8>, JweError> {
        // Blinded RSA: this runs on attacker-supplied ciphertext.
        let cek = key
            .key
            .decrypt_blinded(&mut OsRng, Oaep::new::<Sha256>(), &ek)
            .map_err(|_| JweError::KeyMismatch)?;
        if cek.len() != enc.key_len() {
            return Err(JweError::BadCek);
        }
        open_gcm(enc, &cek, &iv, &ct, &tag, aad)
    };

    let (plaintext, kid_used) = match header.kid.as_deref() {
        Some(kid) => {
            let key = keys
                .iter()
                .find(|k| k.kid.eq_ignore_ascii_case(kid))
                .ok_or_else(|| JweError::UnknownKid(short(kid)))?;
            (attempt(key)?, key.kid.clone())
        }
        None => {
            // No kid: first key that fully decrypts wins; otherwise report the most specific failure.
            let mut last = JweError::KeyMismatch;
            let mut found = None;
            for key in keys {
                match attempt(key) {
                    Ok(pt) => {
                        found = Some((pt, key.kid.clone()));
                        break;
                    }
                    Err(JweError::KeyMismatch) => {}
                    Err(e) => last = e,
                }
            }
            found.ok_or(last)?
        }
    };

    // RFC 7515 §4.1.10: a cty without '/' means "application/<cty>".
    let content_type = match header.cty {
        None => DEFAULT_CONTENT_TYPE.to_owned(),
        Some(c) if c.is_empty() => DEFAULT_CONTENT_TYPE.to_owned(),
        Some(c) if c.contains('/') => c,
        Some(c) => format!("application/{c}"),
    };
    Ok(Decrypted {
        plaintext,
        content_type,
        kid_used,
    })
}

fn b64(part: &str, why: &'static str) -> Result<Vec<u8>, JweError> {
    B64URL.decode(part).map_err(|_| JweError::Malformed(why))
}

// Attacker-chosen strings end up in logs via errors: cap their length.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

fn open_gcm(enc: Enc, cek: &[u8], iv: &[u8], ct: &[u8], tag: &[u8], aad: &[u8]) -> Result<Vec<u8>, JweError> {
    match (enc, iv.len()) {
        (Enc::A128, 12) => open::<AesGcm<Aes128, U12>>(cek, iv, ct, tag, aad),
        (Enc::A128, 16) => open::<AesGcm<Aes128, U16>>(cek, iv, ct, tag, aad),
        (Enc::A192, 12) => open::<AesGcm<Aes192, U12>>(cek, iv, ct, tag, aad),
        (Enc::A192, 16) => open::<AesGcm<Aes192, U16>>(cek, iv, ct, tag, aad),
        (Enc::A256, 12) => open::<AesGcm<Aes256, U12>>(cek, iv, ct, tag, aad),
        (Enc::A256, 16) => open::<AesGcm<Aes256, U16>>(cek, iv, ct, tag, aad),
        (_, n) => Err(JweError::BadIv(n)),
    }
}

fn open<C: Aead + KeyInit>(cek: &[u8], iv: &[u8], ct: &[u8], tag: &[u8], aad: &[u8]) -> Result<Vec<u8>, JweError> {
    let cipher = C::new_from_slice(cek).map_err(|_| JweError::BadCek)?;
    let nonce = aes_gcm::aead::Nonce::<C>::from_exact_iter(iv.iter().copied()).ok_or(JweError::BadIv(iv.len()))?;
    let mut msg = Vec::with_capacity(ct.len() + tag.len());
    msg.extend_from_slice(ct);
    msg.extend_from_slice(tag);
    cipher
        .decrypt(&nonce, Payload { msg: &msg, aad })
        .map_err(|_| JweError::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use std::sync::OnceLock;

    const MC_KEY_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwe/mastercard_test_key_pkcs8-2048.pem"
    ));
    const MC_KID: &str = "761b003c1eade3a5490e5000d37887baa5e6ec0e226c07706e599451fc032a79";
    // Mastercard/client-encryption-java, src/test/java/com/mastercard/developer/test/TestUtils.java.
    const MC_A256GCM: &str = "eyJraWQiOiI3NjFiMDAzYzFlYWRlM2E1NDkwZTUwMDBkMzc4ODdiYWE1ZTZlYzBlMjI2YzA3NzA2ZTU5OTQ1MWZjMDMyYTc5IiwiY3R5IjoiYXBwbGljYXRpb25cL2pzb24iLCJlbmMiOiJBMjU2R0NNIiwiYWxnIjoiUlNBLU9BRVAtMjU2In0.8c6vxeZOUBS8A9SXYUSrRnfl1ht9xxciB7TAEv84etZhQQ2civQKso-htpa2DWFBSUm-UYlxb6XtXNXZxuWu-A0WXjwi1K5ZAACc8KUoYnqPldEtC9Q2bhbQgc_qZF_GxeKrOZfuXc9oi45xfVysF_db4RZ6VkLvY2YpPeDGEMX_nLEjzqKaDz_2m0Ae_nknr0p_Nu0m5UJgMzZGR4Sk1DJWa9x-WJLEyo4w_nRDThOjHJshOHaOU6qR5rdEAZr_dwqnTHrjX9Qm9N9gflPGMaJNVa4mvpsjz6LJzjaW3nJ2yCoirbaeJyCrful6cCiwMWMaDMuiBDPKa2ovVTy0Sw.w0Nkjxl0T9HHNu4R.suRZaYu6Ui05Z3-vsw.akknMr3Dl4L0VVTGPUszcA";
    const MC_A128GCM: &str = "eyJlbmMiOiJBMTI4R0NNIiwiYWxnIjoiUlNBLU9BRVAtMjU2In0.WtvYljbsjdEv-Ttxx1p6PgyIrOsLpj1FMF9NQNhJUAHlKchAo5QImgEgIdgJE7HC2KfpNcHiQVqKKZq_y201FVzpicDkNzlPJr5kIH4Lq-oC5iP0agWeou9yK5vIxFRP__F_B8HSuojBJ3gDYT_KdYffUIHkm_UysNj4PW2RIRlafJ6RKYanVzk74EoKZRG7MIr3pTU6LIkeQUW41qYG8hz6DbGBOh79Nkmq7Oceg0ZwCn1_MruerP-b15SGFkuvOshStT5JJp7OOq82gNAOkMl4fylEj2-vADjP7VSK8GlqrA7u9Tn-a4Q28oy0GOKr1Z-HJgn_CElknwkUTYsWbg.PKl6_kvZ4_4MjmjW.AH6pGFkn7J49hBQcwg.zdyD73TcuveImOy4CRnVpw";
    const MC_A192GCM: &str = "eyJlbmMiOiJBMTkyR0NNIiwiYWxnIjoiUlNBLU9BRVAtMjU2In0.FWC8PVaZoR2TRKwKO4syhSJReezVIvtkxU_yKh4qODNvlVr8t8ttvySJ-AjM8xdI6vNyIg9jBMWASG4cE49jT9FYuQ72fP4R-Td4vX8wpB8GonQj40yLqZyfRLDrMgPR20RcQDW2ThzLXsgI55B5l5fpwQ9Nhmx8irGifrFWOcJ_k1dUSBdlsHsYxkjRKMENu5x4H6h12gGZ21aZSPtwAj9msMYnKLdiUbdGmGG_P8a6gPzc9ih20McxZk8fHzXKujjukr_1p5OO4o1N4d3qa-YI8Sns2fPtf7xPHnwi1wipmCC6ThFLU80r3173RXcpyZkF8Y3UacOS9y1f8eUfVQ.JRE7kZLN4Im1Rtdb.eW_lJ-U330n0QHqZnQ._r5xYVvMCrvICwLz4chjdw";
    const PT: &[u8] = br#"{"eventRef":"e-1","amount":"10.00"}"#;

    fn mc_key() -> DecryptKey {
        DecryptKey::from_pem_or_der(MC_KEY_PEM.as_bytes()).unwrap()
    }

    /// [fresh 2048-bit key, Mastercard test key]; keygen runs once per binary (slow in debug).
    fn test_keys() -> &'static [DecryptKey; 2] {
        static KEYS: OnceLock<[DecryptKey; 2]> = OnceLock::new();
        KEYS.get_or_init(|| {
            let fresh = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
            [DecryptKey::from_rsa(fresh).unwrap(), mc_key()]
        })
    }

    macro_rules! assert_err {
        ($res:expr, $pat:pat $(if $guard:expr)?) => {
            match $res {
                Err($pat) $(if $guard)? => {}
                other => panic!("expected {}, got {other:?}", stringify!($pat)),
            }
        };
    }

    fn header(enc: &str, kid: Option<&str>, cty: Option<&str>) -> String {
        let mut h = serde_json::json!({"alg": "RSA-OAEP-256", "enc": enc});
        if let Some(kid) = kid {
            h["kid"] = kid.into();
        }
        if let Some(cty) = cty {
            h["cty"] = cty.into();
        }
        h.to_string()
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        rand::thread_rng().fill_bytes(&mut v);
        v
    }

    fn seal_with<C: Aead + KeyInit>(cek: &[u8], iv: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
        let nonce = aes_gcm::aead::Nonce::<C>::from_exact_iter(iv.iter().copied()).unwrap();
        let cipher = C::new_from_slice(cek).unwrap();
        cipher.encrypt(&nonce, Payload { msg: pt, aad }).unwrap()
    }

    /// Test-only encryptor with a random CEK and IV; unsupported sizes get a random "ciphertext".
    fn seal_raw(k: &DecryptKey, hdr: &str, cek_len: usize, iv_len: usize, pt: &[u8]) -> String {
        let (cek, iv) = (random(cek_len), random(iv_len));
        let h = B64URL.encode(hdr);
        let pk = k.key.to_public_key();
        let ek = pk.encrypt(&mut rand::thread_rng(), Oaep::new::<Sha256>(), &cek);
        let (aad, cek) = (h.as_bytes(), &cek[..]);
        let sealed = match (cek.len(), iv.len()) {
            (16, 12) => seal_with::<AesGcm<Aes128, U12>>(cek, &iv, aad, pt),
            (16, 16) => seal_with::<AesGcm<Aes128, U16>>(cek, &iv, aad, pt),
            (24, 12) => seal_with::<AesGcm<Aes192, U12>>(cek, &iv, aad, pt),
            (24, 16) => seal_with::<AesGcm<Aes192, U16>>(cek, &iv, aad, pt),
            (32, 12) => seal_with::<AesGcm<Aes256, U12>>(cek, &iv, aad, pt),
            (32, 16) => seal_with::<AesGcm<Aes256, U16>>(cek, &iv, aad, pt),
            _ => random(pt.len() + TAG_LEN),
        };
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let rest = [ek.unwrap(), iv, ct.to_vec(), tag.to_vec()].map(|p| B64URL.encode(p));
        format!("{h}.{}", rest.join("."))
    }

    fn seal(k: &DecryptKey, enc: &str, cek_len: usize, iv_len: usize, kid: Option<&str>) -> String {
        seal_raw(k, &header(enc, kid, None), cek_len, iv_len, PT)
    }

    fn envelope(jwe: &str) -> Vec<u8> {
        let body = serde_json::json!({"encrypted_payload": {"data": jwe}, "other": 1});
        body.to_string().into_bytes()
    }

    fn replace_part(jwe: &str, i: usize, f: impl Fn(Vec<u8>) -> Vec<u8>) -> String {
        let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
        parts[i] = B64URL.encode(f(B64URL.decode(&parts[i]).unwrap()));
        parts.join(".")
    }

    fn flip_first(mut v: Vec<u8>) -> Vec<u8> {
        v[0] ^= 1;
        v
    }

    #[test]
    fn mastercard_vectors_decrypt() {
        let keys = [mc_key()];
        assert_eq!(keys[0].kid(), MC_KID);
        for jwe in [MC_A256GCM, MC_A128GCM, MC_A192GCM] {
            let d = decrypt_compact(jwe, &keys).unwrap();
            assert_eq!(d.plaintext, br#"{"foo":"bar"}"#);
            assert_eq!(
                (d.content_type.as_str(), d.kid_used.as_str()),
                ("application/json", MC_KID)
            );
        }
        // Via the envelope, an unrelated key tried first (the A128GCM vector has no kid).
        let d = decrypt_envelope(&envelope(MC_A128GCM), false, test_keys())
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.plaintext.as_slice(), d.kid_used.as_str()),
            (&br#"{"foo":"bar"}"#[..], MC_KID)
        );
        // Padding on the binary parts is tolerated...
        let padded: Vec<String> = MC_A256GCM
            .split('.')
            .enumerate()
            .map(|(i, p)| match i {
                0 => p.to_owned(),
                _ => format!("{p}{}", "=".repeat((4 - p.len() % 4) % 4)),
            })
            .collect();
        assert!(decrypt_compact(&padded.join("."), &keys).is_ok());
        // ...but padding the header changes the AAD, which is the header exactly as sent.
        assert_err!(
            decrypt_compact(&MC_A256GCM.replacen('.', "=.", 1), &keys),
            JweError::Tampered
        );
    }

    #[test]
    fn key_formats_agree_on_kid() {
        let k = &test_keys()[0];
        let pkcs1 = k.key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let pkcs8_der = k.key.to_pkcs8_der().unwrap();
        let pkcs8 = k.key.to_pkcs8_pem(LineEnding::CRLF).unwrap();
        let with_preamble = format!("Bag Attributes\n    localKeyID: 01\n{}", pkcs8.as_str());
        for bytes in [pkcs1.as_bytes(), pkcs8_der.as_bytes(), with_preamble.as_bytes()] {
            assert_eq!(DecryptKey::from_pem_or_der(bytes).unwrap().kid(), k.kid());
        }
        assert_err!(DecryptKey::from_pem_or_der(b"nope"), JweError::BadKey(_));
        let dbg = format!("{k:?}");
        assert!(dbg.contains(k.kid()) && !dbg.contains("key:"));
    }

    #[test]
    fn all_enc_and_iv_sizes_roundtrip() {
        let k = &test_keys()[0];
        for (enc, len) in [("A128GCM", 16), ("A192GCM", 24), ("A256GCM", 32)] {
            for iv_len in [12, 16] {
                let jwe = seal(k, enc, len, iv_len, Some(k.kid()));
                let d = decrypt_compact(&jwe, std::slice::from_ref(k)).unwrap();
                assert_eq!(d.plaintext, PT, "{enc} iv={iv_len}");
                assert_eq!(d.kid_used, k.kid());
            }
        }
    }

    #[test]
    fn kid_selects_key_and_no_kid_tries_all() {
        let both = test_keys();
        // Rotation: each kid picks its own key.
        for k in both {
            let d = decrypt_compact(&seal(k, "A256GCM", 32, 12, Some(k.kid())), both).unwrap();
            assert_eq!(d.kid_used, k.kid());
        }
        // No kid, the right key second.
        let b = &both[1];
        let d = decrypt_compact(&seal(b, "A128GCM", 16, 16, None), both).unwrap();
        assert_eq!((d.plaintext.as_slice(), d.kid_used.as_str()), (PT, b.kid()));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let [a, b] = test_keys();
        let only_a = std::slice::from_ref(a);
        let jwe = seal(b, "A256GCM", 32, 12, Some(b.kid()));
        assert_err!(decrypt_compact(&jwe, only_a), JweError::UnknownKid(k) if k == b.kid());
        assert_err!(
            decrypt_compact(&seal(b, "A256GCM", 32, 12, None), only_a),
            JweError::KeyMismatch
        );
        // kid names key a but the CEK was wrapped for b.
        let jwe = seal(b, "A256GCM", 32, 12, Some(a.kid()));
        assert_err!(decrypt_compact(&jwe, only_a), JweError::KeyMismatch);
    }

    #[test]
    fn tampering_is_detected() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        let jwe = seal(k, "A256GCM", 32, 16, Some(k.kid()));
        for part in [4, 3, 2] {
            assert_err!(
                decrypt_compact(&replace_part(&jwe, part, flip_first), ks),
                JweError::Tampered
            );
        }
        // Header changed but still valid JSON: the AAD no longer matches.
        let hdr = header("A256GCM", Some(k.kid()), Some("application/jsoN"));
        let swapped = replace_part(&jwe, 0, |_| hdr.clone().into_bytes());
        assert_err!(decrypt_compact(&swapped, ks), JweError::Tampered);
        assert_err!(
            decrypt_compact(&replace_part(&jwe, 0, flip_first), ks),
            JweError::Malformed(_)
        );
        let short_tag = replace_part(&jwe, 4, |v| v[..12].to_vec());
        assert_err!(decrypt_compact(&short_tag, ks), JweError::Malformed(_));
    }

    #[test]
    fn structural_and_algorithm_errors() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        let jwe = seal(k, "A128GCM", 16, 12, None);
        assert_err!(
            decrypt_compact(jwe.rsplit_once('.').unwrap().0, ks),
            JweError::Malformed(_)
        );
        assert_err!(decrypt_compact(&format!("{jwe}.x"), ks), JweError::Malformed(_));
        let rsa15 = seal_raw(k, r#"{"alg":"RSA1_5","enc":"A128GCM"}"#, 16, 12, PT);
        assert_err!(decrypt_compact(&rsa15, ks), JweError::UnsupportedAlg(a) if a == "RSA1_5");
        let cbc = seal_raw(k, &header("A128CBC-HS256", None, None), 32, 16, PT);
        assert_err!(decrypt_compact(&cbc, ks), JweError::UnsupportedEnc(e) if e == "A128CBC-HS256");
        assert_err!(
            decrypt_compact(&seal(k, "A128GCM", 16, 8, None), ks),
            JweError::BadIv(8)
        );
        let cek_mismatch = seal(k, "A256GCM", 16, 12, Some(k.kid()));
        assert_err!(decrypt_compact(&cek_mismatch, ks), JweError::BadCek);
        let zip = seal_raw(k, r#"{"alg":"RSA-OAEP-256","enc":"A128GCM","zip":"DEF"}"#, 16, 12, PT);
        assert_err!(decrypt_compact(&zip, ks), JweError::Malformed(_));
    }

    #[test]
    fn envelope_detection_and_content_type() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        let not_envelopes: [&[u8]; 5] = [
            br#"{"eventRef":"x"}"#,
            b"[1,2]",
            b"",
            b"<xml/>",
            b"\"encrypted_payload\"",
        ];
        for body in not_envelopes {
            assert!(decrypt_envelope(body, false, ks).unwrap().is_none());
            assert_err!(decrypt_envelope(body, true, ks), JweError::NotAnEnvelope);
        }
        let bad = br#"{"encrypted_payload":{"data":42}}"#;
        assert_err!(decrypt_envelope(bad, false, ks), JweError::Malformed(_));

        let xml = seal_raw(k, &header("A256GCM", None, Some("application/xml")), 32, 12, b"<a/>");
        let d = decrypt_envelope(&envelope(&xml), true, ks).unwrap().unwrap();
        assert_eq!(
            (d.plaintext.as_slice(), d.content_type.as_str()),
            (&b"<a/>"[..], "application/xml")
        );
        assert!(!format!("{d:?}").contains("<a/>"), "Debug must not print plaintext");
        let short_cty = seal_raw(k, &header("A256GCM", None, Some("json")), 32, 12, PT);
        assert_eq!(
            decrypt_compact(&short_cty, ks).unwrap().content_type,
            "application/json"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        let mut rng = rand::thread_rng();
        let alphabet = b"AZaz09-_.=\"{}:\\ \x00\xff";
        for _ in 0..500 {
            let _ = decrypt_envelope(&random(rng.gen_range(0..300)), rng.gen(), ks);
            let s: String = (0..rng.gen_range(0..200))
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect();
            let _ = decrypt_compact(&s, ks);
            let _ = decrypt_envelope(&envelope(&s), false, ks);
        }
        let jwe = seal(k, "A192GCM", 24, 12, Some(k.kid()));
        for cut in (0..jwe.len()).step_by(11) {
            assert!(decrypt_compact(&jwe[..cut], ks).is_err());
        }
        for _ in 0..40 {
            let mut bytes = jwe.clone().into_bytes();
            let i = rng.gen_range(0..bytes.len());
            bytes[i] = alphabet[rng.gen_range(0..alphabet.len())];
            if let Ok(Err(e)) = String::from_utf8(bytes).map(|s| decrypt_compact(&s, ks)) {
                // Errors describe, never echo, the input.
                assert!(e.to_string().len() < 200, "{e}");
            }
        }
    }
}
