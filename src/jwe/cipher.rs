//! Content decryption for each `enc` Mastercard's libraries use (RFC 7518 §5): AES-GCM, and
//! AES-CBC with HMAC-SHA-2, whose tag is checked in constant time before anything is decrypted.

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_128, AES_192, AES_256};
use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

use super::JweError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Enc {
    A128Gcm,
    A192Gcm,
    A256Gcm,
    A128CbcHs256,
    A192CbcHs384,
    A256CbcHs512,
}

impl Enc {
    pub(super) fn parse(enc: &str) -> Option<Enc> {
        Some(match enc {
            "A128GCM" => Enc::A128Gcm,
            "A192GCM" => Enc::A192Gcm,
            "A256GCM" => Enc::A256Gcm,
            "A128CBC-HS256" => Enc::A128CbcHs256,
            "A192CBC-HS384" => Enc::A192CbcHs384,
            "A256CBC-HS512" => Enc::A256CbcHs512,
            _ => return None,
        })
    }

    /// The content encryption key's length: for CBC-HMAC, the MAC key and the AES key together.
    pub(super) fn cek_len(self) -> usize {
        match self {
            Enc::A128Gcm => 16,
            Enc::A192Gcm => 24,
            Enc::A256Gcm | Enc::A128CbcHs256 => 32,
            Enc::A192CbcHs384 => 48,
            Enc::A256CbcHs512 => 64,
        }
    }

    pub(super) fn tag_len(self) -> usize {
        match self {
            Enc::A128Gcm | Enc::A192Gcm | Enc::A256Gcm | Enc::A128CbcHs256 => 16,
            Enc::A192CbcHs384 => 24,
            Enc::A256CbcHs512 => 32,
        }
    }

    /// GCM: the 96-bit IV of RFC 7518 and the 128-bit one Mastercard's Java and Node encryptors
    /// use; CBC: one AES block.
    pub(super) fn iv_ok(self, len: usize) -> bool {
        match self {
            Enc::A128Gcm | Enc::A192Gcm | Enc::A256Gcm => len == 12 || len == 16,
            _ => len == 16,
        }
    }
}

/// Authenticates and decrypts; `aad` is the protected header exactly as received.
pub(super) fn open(enc: Enc, cek: &[u8], iv: &[u8], ct: &[u8], tag: &[u8], aad: &[u8]) -> Result<Vec<u8>, JweError> {
    if cek.len() != enc.cek_len() {
        return Err(JweError::BadCek);
    }
    match (enc, iv.len()) {
        (Enc::A128Gcm, 12) => gcm::<AesGcm<Aes128, U12>>(cek, iv, ct, tag, aad),
        (Enc::A128Gcm, 16) => gcm::<AesGcm<Aes128, U16>>(cek, iv, ct, tag, aad),
        (Enc::A192Gcm, 12) => gcm::<AesGcm<Aes192, U12>>(cek, iv, ct, tag, aad),
        (Enc::A192Gcm, 16) => gcm::<AesGcm<Aes192, U16>>(cek, iv, ct, tag, aad),
        (Enc::A256Gcm, 12) => gcm::<AesGcm<Aes256, U12>>(cek, iv, ct, tag, aad),
        (Enc::A256Gcm, 16) => gcm::<AesGcm<Aes256, U16>>(cek, iv, ct, tag, aad),
        (Enc::A128CbcHs256, 16) => cbc_hmac(hmac::HMAC_SHA256, &AES_128, cek, iv, ct, tag, aad),
        (Enc::A192CbcHs384, 16) => cbc_hmac(hmac::HMAC_SHA384, &AES_192, cek, iv, ct, tag, aad),
        (Enc::A256CbcHs512, 16) => cbc_hmac(hmac::HMAC_SHA512, &AES_256, cek, iv, ct, tag, aad),
        (_, n) => Err(JweError::BadIv(n)),
    }
}

fn gcm<C: Aead + KeyInit>(cek: &[u8], iv: &[u8], ct: &[u8], tag: &[u8], aad: &[u8]) -> Result<Vec<u8>, JweError> {
    let cipher = C::new_from_slice(cek).map_err(|_| JweError::BadCek)?;
    let nonce = aes_gcm::aead::Nonce::<C>::from_exact_iter(iv.iter().copied()).ok_or(JweError::BadIv(iv.len()))?;
    let mut msg = Vec::with_capacity(ct.len() + tag.len());
    msg.extend_from_slice(ct);
    msg.extend_from_slice(tag);
    cipher
        .decrypt(&nonce, Payload { msg: &msg, aad })
        .map_err(|_| JweError::Tampered)
}

/// RFC 7518 §5.2.2.2: MAC key = first half of the CEK, AES key = second half; the tag is the first
/// half of HMAC(AAD || IV || ciphertext || AL), AL = the AAD's length in bits, 64-bit big-endian.
fn cbc_hmac(
    mac: hmac::Algorithm,
    aes: &'static aws_lc_rs::cipher::Algorithm,
    cek: &[u8],
    iv: &[u8],
    ct: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, JweError> {
    let (mac_key, enc_key) = cek.split_at(cek.len() / 2);
    let al = u64::try_from(aad.len())
        .ok()
        .and_then(|n| n.checked_mul(8))
        .ok_or(JweError::Malformed("header too long"))?;
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(mac, mac_key));
    for part in [aad, iv, ct, &al.to_be_bytes()[..]] {
        ctx.update(part);
    }
    let full = ctx.sign();
    // Constant time, and before decrypting: no padding oracle on unauthenticated ciphertext.
    let expected = full.as_ref().get(..tag.len()).ok_or(JweError::Tampered)?;
    if tag.len() != full.as_ref().len() / 2 || !bool::from(expected.ct_eq(tag)) {
        return Err(JweError::Tampered);
    }
    let key = UnboundCipherKey::new(aes, enc_key).map_err(|_| JweError::BadCek)?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| JweError::BadCek)?;
    let iv: [u8; 16] = iv.try_into().map_err(|_| JweError::BadIv(iv.len()))?;
    let mut buf = ct.to_vec();
    let n = key
        .decrypt(&mut buf, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| JweError::Malformed("authenticated CBC ciphertext has bad padding"))?
        .len();
    buf.truncate(n);
    Ok(buf)
}
