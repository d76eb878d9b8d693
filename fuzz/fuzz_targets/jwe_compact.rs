//! JWE compact serialisation alone (header, key unwrap, IV, tag, AES-GCM), with Mastercard's
//! published test key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pushgate::jwe::{decrypt_compact, DecryptKey};

fn keys() -> &'static [DecryptKey] {
    static K: OnceLock<Vec<DecryptKey>> = OnceLock::new();
    K.get_or_init(|| {
        let pem = include_bytes!("../../tests/fixtures/jwe/mastercard_test_key_pkcs8-2048.pem");
        vec![DecryptKey::from_pem_or_der(pem).expect("the fixture key")]
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(jwe) = std::str::from_utf8(data) {
        let _ = decrypt_compact(jwe, keys());
    }
});
