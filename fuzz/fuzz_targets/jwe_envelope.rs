//! The Cross-Border envelope `{"encrypted_payload":{"data":JWE}}` and the JWE inside it, with
//! Mastercard's published test key (tests/fixtures), whose vectors decrypt.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pushgate::jwe::{decrypt_envelope, DecryptKey};

fn keys() -> &'static [DecryptKey] {
    static K: OnceLock<Vec<DecryptKey>> = OnceLock::new();
    K.get_or_init(|| {
        let pem = include_bytes!("../../tests/fixtures/jwe/mastercard_test_key_pkcs8-2048.pem");
        vec![DecryptKey::from_pem_or_der(pem).expect("the fixture key")]
    })
}

fuzz_target!(|data: &[u8]| {
    // Byte 0 says whether the sender set `x-encrypted: true`.
    let Some((&flag, body)) = data.split_first() else {
        return;
    };
    let _ = decrypt_envelope(body, flag & 1 == 1, keys());
});
