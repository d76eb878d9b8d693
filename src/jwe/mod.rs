//! Cross-Border payload decryption: a JWE envelope → plaintext and content type.
//!
//! JWE compact serialisation (RFC 7516) with `alg=RSA-OAEP-256` and every `enc` Mastercard's
//! client-encryption libraries decrypt: AES-GCM (12- or 16-byte IVs) and AES-CBC-HMAC-SHA2.
//! Like those libraries, a `kid` only orders the keys tried, and base64 in either alphabet,
//! padded or not, is read where base64url is expected.

mod cipher;
mod envelope;
mod key;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Deserialize;

use cipher::Enc;
pub use envelope::decrypt_envelope;
pub use key::DecryptKey;

// JOSE uses unpadded base64url; some senders pad, and Mastercard's Node library emits standard
// base64 ('+', '/') in places: `b64` maps those to base64url first, then decodes either padding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const DEFAULT_CONTENT_TYPE: &str = "application/json";

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
    #[error("kid {0:?} names no configured key, and no configured key could unwrap the content key")]
    UnknownKid(String),
    #[error("no configured decryption key could unwrap the content key")]
    KeyMismatch,
    #[error("JWE IV length {0} does not fit enc")]
    BadIv(usize),
    #[error("content key length does not match enc")]
    BadCek,
    #[error("JWE authentication tag check failed")]
    Tampered,
    #[error("unusable decryption key: {0}")]
    BadKey(String),
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

/// The compact-serialisation step alone (used by decrypt_envelope; public for fuzzing).
pub fn decrypt_compact(jwe: &str, keys: &[DecryptKey]) -> Result<Decrypted, JweError> {
    // Envelopes wrap the JWE in whitespace at times (XML indentation, a trailing newline).
    let jwe = jwe.trim();
    // splitn bounds the allocation for inputs with many dots; a 6th item means too many parts.
    let parts: Vec<&str> = jwe.splitn(6, '.').collect();
    let [h, ek, iv, ct, tag] = parts[..] else {
        return Err(JweError::Malformed("expected 5 dot-separated parts"));
    };
    let header_json = b64(h, "header is not base64")?;
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
    let ek = b64(ek, "encrypted key is not base64")?;
    let iv = b64(iv, "IV is not base64")?;
    if !enc.iv_ok(iv.len()) {
        return Err(JweError::BadIv(iv.len()));
    }
    let ct = b64(ct, "ciphertext is not base64")?;
    let tag = b64(tag, "tag is not base64")?;
    if tag.len() != enc.tag_len() {
        return Err(JweError::Malformed("tag length does not fit enc"));
    }
    // AAD is the header part exactly as received (RFC 7516 §5.2 step 14), never re-encoded.
    let aad = h.as_bytes();
    let attempt = |key: &DecryptKey| -> Result<Vec<u8>, JweError> {
        let cek = key.unwrap_cek(&ek).ok_or(JweError::KeyMismatch)?;
        cipher::open(enc, &cek, &iv, &ct, &tag, aad)
    };

    // Mastercard's libraries ignore kid when decrypting, and its Node library writes a base64
    // certificate hash there: a matching kid only puts its key first.
    let kid = header.kid.as_deref();
    let named = |k: &&DecryptKey| kid.is_some_and(|kid| k.kid().eq_ignore_ascii_case(kid));
    let order = keys.iter().filter(named).chain(keys.iter().filter(|k| !named(k)));
    // The first key that fully decrypts wins; otherwise report the most specific failure.
    let mut last = match kid {
        Some(kid) if !keys.iter().any(|k| named(&k)) => JweError::UnknownKid(short(kid)),
        _ => JweError::KeyMismatch,
    };
    let mut found = None;
    for key in order {
        match attempt(key) {
            Ok(pt) => {
                found = Some((pt, key.kid().to_owned()));
                break;
            }
            Err(JweError::KeyMismatch) => {}
            Err(e) => last = e,
        }
    }
    let (plaintext, kid_used) = found.ok_or(last)?;

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

/// base64url, padded or not; standard-alphabet characters read as their base64url twins.
fn b64(part: &str, why: &'static str) -> Result<Vec<u8>, JweError> {
    let decoded = if part.contains(['+', '/']) {
        B64URL.decode(part.replace('+', "-").replace('/', "_"))
    } else {
        B64URL.decode(part)
    };
    decoded.map_err(|_| JweError::Malformed(why))
}

// Attacker-chosen strings end up in logs via errors: cap their length.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::consts::{U12, U16};
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::aes::{Aes128, Aes192, Aes256};
    use aes_gcm::AesGcm;
    use aws_lc_rs::cipher::{EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey, AES_128, AES_192, AES_256};
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::hmac;
    use aws_lc_rs::rsa::{KeySize, OaepPublicEncryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256};
    use base64::engine::general_purpose::STANDARD;
    use rand::{Rng, RngCore};
    use std::sync::OnceLock;

    const MC_KEY_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwe/mastercard_test_key_pkcs8-2048.pem"
    ));
    // The same key, converted with `openssl rsa -traditional`.
    const MC_KEY_PKCS1_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwe/mastercard_test_key_pkcs1-2048.pem"
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
            let fresh = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
            [DecryptKey::from_private(fresh).unwrap(), mc_key()]
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

    /// RFC 7518 §5.2.2.1, test side: ciphertext || full-length tag.
    fn seal_cbc(cek: &[u8], iv: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
        let (mac, aes) = match cek.len() {
            32 => (hmac::HMAC_SHA256, &AES_128),
            48 => (hmac::HMAC_SHA384, &AES_192),
            _ => (hmac::HMAC_SHA512, &AES_256),
        };
        let (mac_key, enc_key) = cek.split_at(cek.len() / 2);
        let key = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(aes, enc_key).unwrap()).unwrap();
        let mut ct = pt.to_vec();
        let iv: [u8; 16] = iv.try_into().unwrap();
        key.less_safe_encrypt(&mut ct, EncryptionContext::Iv128(iv.into()))
            .unwrap();
        let al = (aad.len() as u64 * 8).to_be_bytes();
        let m = hmac::sign(&hmac::Key::new(mac, mac_key), &[aad, &iv, &ct, &al].concat());
        [&ct[..], &m.as_ref()[..cek.len() / 2]].concat()
    }

    /// Test-only encryptor with a random CEK and IV; unsupported sizes get a random "ciphertext".
    fn seal_raw(k: &DecryptKey, hdr: &str, cek_len: usize, iv_len: usize, pt: &[u8]) -> String {
        let (cek, iv) = (random(cek_len), random(iv_len));
        let h = B64URL.encode(hdr);
        let cbc = hdr.contains("CBC-HS");
        let oaep = OaepPublicEncryptingKey::new(k.public.clone()).unwrap();
        let mut ek = vec![0; oaep.ciphertext_size()];
        oaep.encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut ek, None).unwrap();
        let (aad, cek) = (h.as_bytes(), &cek[..]);
        let sealed = match (cek.len(), iv.len()) {
            (32 | 48 | 64, 16) if cbc => seal_cbc(cek, &iv, aad, pt),
            (16, 12) => seal_with::<AesGcm<Aes128, U12>>(cek, &iv, aad, pt),
            (16, 16) => seal_with::<AesGcm<Aes128, U16>>(cek, &iv, aad, pt),
            (24, 12) => seal_with::<AesGcm<Aes192, U12>>(cek, &iv, aad, pt),
            (24, 16) => seal_with::<AesGcm<Aes192, U16>>(cek, &iv, aad, pt),
            (32, 12) => seal_with::<AesGcm<Aes256, U12>>(cek, &iv, aad, pt),
            (32, 16) => seal_with::<AesGcm<Aes256, U16>>(cek, &iv, aad, pt),
            _ => random(pt.len() + 16),
        };
        let tag_len = if cbc { cek.len() / 2 } else { 16 };
        let (ct, tag) = sealed.split_at(sealed.len() - tag_len);
        let rest = [ek, iv, ct.to_vec(), tag.to_vec()].map(|p| B64URL.encode(p));
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

    /// PEM of DER as openssl writes it (64-column lines), with `eol` line endings.
    fn pem(label: &str, der: &[u8], eol: &str) -> String {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----{eol}{}{eol}-----END {label}-----{eol}",
            lines.join(eol)
        )
    }

    #[test]
    fn key_formats_agree_on_kid() {
        let fresh = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let kid = DecryptKey::from_private(fresh.clone()).unwrap().kid().to_owned();
        let der = fresh.as_der().unwrap();
        let pkcs8 = pem("PRIVATE KEY", der.as_ref(), "\r\n");
        let with_preamble = format!("Bag Attributes\n    localKeyID: 01\n{pkcs8}");
        for bytes in [der.as_ref(), pkcs8.as_bytes(), with_preamble.as_bytes()] {
            assert_eq!(DecryptKey::from_pem_or_der(bytes).unwrap().kid(), kid);
        }
        // PKCS#1, PEM and DER, of Mastercard's key: the kid Mastercard's vectors carry.
        let pkcs1 = DecryptKey::from_pem_or_der(MC_KEY_PKCS1_PEM.as_bytes()).unwrap();
        assert_eq!(pkcs1.kid(), MC_KID);
        let body: String = MC_KEY_PKCS1_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        let pkcs1_der = STANDARD.decode(body).unwrap();
        assert_eq!(DecryptKey::from_pem_or_der(&pkcs1_der).unwrap().kid(), MC_KID);
        assert_err!(DecryptKey::from_pem_or_der(b"nope"), JweError::BadKey(_));
        let truncated = pem("PRIVATE KEY", &der.as_ref()[..600], "\n");
        assert_err!(DecryptKey::from_pem_or_der(truncated.as_bytes()), JweError::BadKey(_));
        let encrypted = pem("ENCRYPTED PRIVATE KEY", der.as_ref(), "\n");
        assert_err!(DecryptKey::from_pem_or_der(encrypted.as_bytes()), JweError::BadKey(_));
        let dbg = format!("{:?}", mc_key());
        assert!(dbg.contains(MC_KID) && !dbg.contains("oaep"), "{dbg}");
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
        let xc20p = seal_raw(k, &header("XC20P", None, None), 32, 24, PT);
        assert_err!(decrypt_compact(&xc20p, ks), JweError::UnsupportedEnc(e) if e == "XC20P");
        // CBC takes one AES block of IV, never a GCM-sized one.
        let cbc_iv12 = seal_raw(k, &header("A128CBC-HS256", None, None), 32, 12, PT);
        assert_err!(decrypt_compact(&cbc_iv12, ks), JweError::BadIv(12));
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

    #[test]
    fn cbc_hmac_roundtrips_and_checks_its_tag_first() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        for (enc, cek_len) in [("A128CBC-HS256", 32), ("A192CBC-HS384", 48), ("A256CBC-HS512", 64)] {
            for pt in [PT, b"", b"0123456789abcdef"] {
                let jwe = seal_raw(k, &header(enc, Some(k.kid()), None), cek_len, 16, pt);
                assert_eq!(decrypt_compact(&jwe, ks).unwrap().plaintext, pt, "{enc}");
            }
            let jwe = seal_raw(k, &header(enc, None, None), cek_len, 16, PT);
            // Any change to what the HMAC covers (AAD, IV, ciphertext) or the tag itself.
            for part in [4, 3, 2] {
                assert_err!(
                    decrypt_compact(&replace_part(&jwe, part, flip_first), ks),
                    JweError::Tampered
                );
            }
            let hdr = header(enc, None, Some("json"));
            assert_err!(
                decrypt_compact(&replace_part(&jwe, 0, |_| hdr.clone().into_bytes()), ks),
                JweError::Tampered
            );
            // A full-length HMAC where the truncated one belongs is not a tag.
            let long_tag = replace_part(&jwe, 4, |mut v| {
                v.extend_from_slice(&v.clone());
                v
            });
            assert_err!(decrypt_compact(&long_tag, ks), JweError::Malformed(_));
            // A CEK of the GCM size for a CBC enc.
            let short_cek = seal_raw(k, &header(enc, None, None), cek_len / 2, 16, PT);
            assert!(decrypt_compact(&short_cek, ks).is_err());
        }
    }

    #[test]
    fn unknown_kid_tries_every_key_and_a_matching_kid_goes_first() {
        let both = test_keys();
        let [a, b] = both;
        // Mastercard's Node library: base64 SHA-256 of the certificate as kid.
        let jwe = seal(
            b,
            "A256GCM",
            32,
            16,
            Some("gIEPwTqDGfzw4uwyLIKkwwS3gsw85nEXY0PP6BYMInk="),
        );
        assert_eq!(decrypt_compact(&jwe, both).unwrap().kid_used, b.kid());
        // A kid naming the other configured key: that key first, then this one.
        let jwe = seal(b, "A256GCM", 32, 12, Some(a.kid()));
        assert_eq!(decrypt_compact(&jwe, both).unwrap().kid_used, b.kid());
        // Upper-case hex kids are the same kid.
        let jwe = seal(a, "A128GCM", 16, 12, Some(&a.kid().to_uppercase()));
        assert_eq!(decrypt_compact(&jwe, both).unwrap().kid_used, a.kid());
        // A tampered JWE with an unknown kid reports the tag, not the kid.
        let jwe = seal(b, "A256GCM", 32, 12, Some("other"));
        assert_err!(
            decrypt_compact(&replace_part(&jwe, 4, flip_first), both),
            JweError::Tampered
        );
    }

    #[test]
    fn standard_base64_padding_and_whitespace_are_read() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        // Find an encryption whose binary parts hold '-' or '_' so the alphabet really differs.
        let jwe = (0..50)
            .map(|_| seal(k, "A256GCM", 32, 16, None))
            .find(|j| j.split('.').skip(1).any(|p| p.contains(['-', '_'])))
            .unwrap();
        let std_parts: Vec<String> = jwe
            .split('.')
            .enumerate()
            .map(|(i, p)| match i {
                0 => p.to_owned(),
                _ => STANDARD.encode(B64URL.decode(p).unwrap()),
            })
            .collect();
        let std_jwe = std_parts.join(".");
        assert!(std_jwe.contains(['+', '/']));
        for variant in [std_jwe.clone(), format!(" \r\n\t{std_jwe}\n "), format!("\n{jwe}\n")] {
            let d = decrypt_compact(&variant, ks).unwrap();
            assert_eq!(d.plaintext, PT);
        }
        // Whitespace inside a part is not base64.
        assert_err!(decrypt_compact(&jwe.replacen('.', ". ", 2), ks), JweError::Malformed(_));
    }

    fn xml_envelope(jwe: &str) -> Vec<u8> {
        format!("<encrypted_payload><data>{jwe}</data></encrypted_payload>").into_bytes()
    }

    #[test]
    fn xml_envelopes_decrypt_like_json_ones() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        let jwe = seal(k, "A128GCM", 16, 12, Some(k.kid()));
        let (half_a, half_b) = jwe.split_at(jwe.len() / 2);
        let bodies = [
            String::from_utf8(xml_envelope(&jwe)).unwrap(),
            format!("\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- push -->\n<encrypted_payload>\n  <data>\n    {jwe}\n  </data>\n</encrypted_payload>\n"),
            format!("<x:encrypted_payload xmlns:x=\"urn:mc\"><x:data>{jwe}</x:data><other a=\"1\"/></x:encrypted_payload>"),
            format!("<encrypted_payload><data>{half_a}<![CDATA[{half_b}]]></data></encrypted_payload>"),
        ];
        for body in &bodies {
            let d = decrypt_envelope(body.as_bytes(), false, ks).unwrap().unwrap();
            assert_eq!((d.plaintext.as_slice(), d.kid_used.as_str()), (PT, k.kid()), "{body}");
        }
        assert_err!(
            decrypt_envelope(&xml_envelope(&replace_part(&jwe, 4, flip_first)), true, ks),
            JweError::Tampered
        );
        // Other XML is no envelope: the profile reads it (or refuses it when x-encrypted says so).
        for other in [
            &b"<statusChange><eventRef>1</eventRef></statusChange>"[..],
            b"<a",
            b"<?xml version=\"1.0\"?>",
        ] {
            assert!(decrypt_envelope(other, false, ks).unwrap().is_none());
            assert_err!(decrypt_envelope(other, true, ks), JweError::NotAnEnvelope);
        }
    }

    #[test]
    fn xml_envelopes_refuse_dtds_and_odd_shapes() {
        let k = &test_keys()[0];
        let ks = std::slice::from_ref(k);
        let jwe = seal(k, "A128GCM", 16, 12, None);
        let refused = [
            format!("<!DOCTYPE e [<!ENTITY j \"{jwe}\">]><encrypted_payload><data>&j;</data></encrypted_payload>"),
            format!("<encrypted_payload><!DOCTYPE x><data>{jwe}</data></encrypted_payload>"),
            format!("<encrypted_payload><data>&amp;{jwe}</data></encrypted_payload>"),
            format!("<encrypted_payload><data>{jwe}</data><data>{jwe}</data></encrypted_payload>"),
            format!("<encrypted_payload><data><b>{jwe}</b></data></encrypted_payload>"),
            format!("<encrypted_payload><data>{jwe}</data></encrypted_payload><encrypted_payload/>"),
            format!("<encrypted_payload><data>{jwe}</data>"),
            format!("<encrypted_payload><data>{jwe}</wrong></encrypted_payload>"),
            "<encrypted_payload/>".to_owned(),
            "<encrypted_payload><data/></encrypted_payload>".to_owned(),
            "<encrypted_payload><other>x</other></encrypted_payload>".to_owned(),
        ];
        for body in refused {
            assert_err!(decrypt_envelope(body.as_bytes(), false, ks), JweError::Malformed(_));
        }
        // Only the root's own <data> counts.
        let nested = format!("<encrypted_payload><x><data>{jwe}</data></x></encrypted_payload>");
        assert_err!(decrypt_envelope(nested.as_bytes(), false, ks), JweError::Malformed(_));
    }
}
