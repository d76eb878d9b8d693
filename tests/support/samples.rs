//! Sample notifications (examples/samples) and a test-only JWE encryptor that produces what
//! Mastercard's client-encryption libraries send: RSA-OAEP-256 + AES-GCM, 12- or 16-byte IVs.

use std::sync::OnceLock;

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::{Aes128, Aes256};
use aes_gcm::AesGcm;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::STANDARD;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The bytes of `examples/samples/NAME`.
pub fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/examples/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The elements of a JSON array exactly as written (the bytes the app must receive).
pub fn raw_elements(array: &[u8]) -> Vec<String> {
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_slice(array).unwrap();
    raw.iter().map(|r| r.get().to_string()).collect()
}

/// Mastercard's client-encryption-java test key (tests/fixtures) and its published vectors
/// (TestUtils.java), which decrypt to `{"foo":"bar"}`.
pub const MC_KEY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwe/mastercard_test_key_pkcs8-2048.pem"
);
pub const MC_KID: &str = "761b003c1eade3a5490e5000d37887baa5e6ec0e226c07706e599451fc032a79";
pub const MC_A256GCM: &str = "eyJraWQiOiI3NjFiMDAzYzFlYWRlM2E1NDkwZTUwMDBkMzc4ODdiYWE1ZTZlYzBlMjI2YzA3NzA2ZTU5OTQ1MWZjMDMyYTc5IiwiY3R5IjoiYXBwbGljYXRpb25cL2pzb24iLCJlbmMiOiJBMjU2R0NNIiwiYWxnIjoiUlNBLU9BRVAtMjU2In0.8c6vxeZOUBS8A9SXYUSrRnfl1ht9xxciB7TAEv84etZhQQ2civQKso-htpa2DWFBSUm-UYlxb6XtXNXZxuWu-A0WXjwi1K5ZAACc8KUoYnqPldEtC9Q2bhbQgc_qZF_GxeKrOZfuXc9oi45xfVysF_db4RZ6VkLvY2YpPeDGEMX_nLEjzqKaDz_2m0Ae_nknr0p_Nu0m5UJgMzZGR4Sk1DJWa9x-WJLEyo4w_nRDThOjHJshOHaOU6qR5rdEAZr_dwqnTHrjX9Qm9N9gflPGMaJNVa4mvpsjz6LJzjaW3nJ2yCoirbaeJyCrful6cCiwMWMaDMuiBDPKa2ovVTy0Sw.w0Nkjxl0T9HHNu4R.suRZaYu6Ui05Z3-vsw.akknMr3Dl4L0VVTGPUszcA";
pub const MC_A128GCM: &str = "eyJlbmMiOiJBMTI4R0NNIiwiYWxnIjoiUlNBLU9BRVAtMjU2In0.WtvYljbsjdEv-Ttxx1p6PgyIrOsLpj1FMF9NQNhJUAHlKchAo5QImgEgIdgJE7HC2KfpNcHiQVqKKZq_y201FVzpicDkNzlPJr5kIH4Lq-oC5iP0agWeou9yK5vIxFRP__F_B8HSuojBJ3gDYT_KdYffUIHkm_UysNj4PW2RIRlafJ6RKYanVzk74EoKZRG7MIr3pTU6LIkeQUW41qYG8hz6DbGBOh79Nkmq7Oceg0ZwCn1_MruerP-b15SGFkuvOshStT5JJp7OOq82gNAOkMl4fylEj2-vADjP7VSK8GlqrA7u9Tn-a4Q28oy0GOKr1Z-HJgn_CElknwkUTYsWbg.PKl6_kvZ4_4MjmjW.AH6pGFkn7J49hBQcwg.zdyD73TcuveImOy4CRnVpw";

/// A 2048-bit RSA key pair made once per test binary (key generation is the slow part).
pub struct JweKey {
    pub private: PrivateDecryptingKey,
    pub public: PublicEncryptingKey,
    /// Lower-case hex SHA-256 of the public key's SubjectPublicKeyInfo DER.
    pub kid: String,
}

impl JweKey {
    fn generate() -> JweKey {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let public = private.public_key();
        let kid = hex::encode(Sha256::digest(public.as_der().unwrap().as_ref()));
        JweKey { private, public, kid }
    }

    /// Writes the private key as PKCS#8 PEM to `path`.
    pub fn write_pem(&self, path: &std::path::Path) {
        let b64 = STANDARD.encode(self.private.as_der().unwrap().as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        std::fs::write(path, pem).unwrap();
    }
}

/// Two distinct keys: the route's, and one it does not hold.
pub fn jwe_keys() -> &'static [JweKey; 2] {
    static KEYS: OnceLock<[JweKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [JweKey::generate(), JweKey::generate()])
}

/// Content encryption as named in the JOSE header.
#[derive(Clone, Copy, Debug)]
pub enum Enc {
    A128Gcm,
    A256Gcm,
}

impl Enc {
    fn name(self) -> &'static str {
        match self {
            Enc::A128Gcm => "A128GCM",
            Enc::A256Gcm => "A256GCM",
        }
    }
}

/// A compact JWE of `plaintext` for `to`, with a fresh content key and IV.
pub fn seal(to: &JweKey, enc: Enc, iv_len: usize, with_kid: bool, cty: Option<&str>, plaintext: &[u8]) -> String {
    let mut header = serde_json::json!({"alg": "RSA-OAEP-256", "enc": enc.name()});
    if with_kid {
        header["kid"] = to.kid.clone().into();
    }
    if let Some(cty) = cty {
        header["cty"] = cty.into();
    }
    let h = B64URL.encode(header.to_string());
    let cek = random(match enc {
        Enc::A128Gcm => 16,
        Enc::A256Gcm => 32,
    });
    let iv = random(iv_len);
    let payload = Payload {
        msg: plaintext,
        aad: h.as_bytes(),
    };
    let sealed = match (enc, iv_len) {
        (Enc::A128Gcm, 12) => gcm::<AesGcm<Aes128, U12>>(&cek, &iv, payload),
        (Enc::A128Gcm, 16) => gcm::<AesGcm<Aes128, U16>>(&cek, &iv, payload),
        (Enc::A256Gcm, 12) => gcm::<AesGcm<Aes256, U12>>(&cek, &iv, payload),
        (Enc::A256Gcm, 16) => gcm::<AesGcm<Aes256, U16>>(&cek, &iv, payload),
        (_, n) => panic!("IV length {n} is not 12 or 16"),
    };
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    let oaep = OaepPublicEncryptingKey::new(to.public.clone()).unwrap();
    let mut ek = vec![0; oaep.ciphertext_size()];
    oaep.encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut ek, None).unwrap();
    let parts = [ek.as_slice(), &iv, ct, tag].map(|p| B64URL.encode(p));
    format!("{h}.{}", parts.join("."))
}

fn gcm<C: Aead + KeyInit>(cek: &[u8], iv: &[u8], payload: Payload<'_, '_>) -> Vec<u8> {
    let nonce = aes_gcm::aead::Nonce::<C>::from_exact_iter(iv.iter().copied()).unwrap();
    C::new_from_slice(cek).unwrap().encrypt(&nonce, payload).unwrap()
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// The Cross-Border body wrapping a JWE.
pub fn envelope(jwe: &str) -> String {
    serde_json::json!({"encrypted_payload": {"data": jwe}}).to_string()
}

/// The JWE with one bit of its authentication tag flipped.
pub fn tamper_tag(jwe: &str) -> String {
    let (rest, tag) = jwe.rsplit_once('.').unwrap();
    let mut tag = B64URL.decode(tag).unwrap();
    tag[0] ^= 1;
    format!("{rest}.{}", B64URL.encode(tag))
}
