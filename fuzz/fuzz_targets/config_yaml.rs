//! The config loader over any text: never a panic, always a located error or a config. The
//! files a config names exist (a dev PKI and a JWE key written once into a temp dir, next to
//! where the config claims to live; the secrets' variables set), so mutations get past them to
//! the routes, profiles, secrets and DNs.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pushgate::boot::config::Config;

fn config_path() -> &'static PathBuf {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &P.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        pushgate::boot::devcerts::write_dev_certs(dir.path()).expect("dev certs");
        let key = include_bytes!("../../tests/fixtures/jwe/mastercard_test_key_pkcs8-2048.pem");
        std::fs::write(dir.path().join("decrypt.pem"), key).expect("key file");
        // Only this process's environment, before any other thread exists.
        std::env::set_var("GW_SECRET", "0123456789abcdef0123456789abcdef");
        std::env::set_var("GW_SECRET_NEXT", "fedcba9876543210fedcba9876543210");
        let path = dir.path().join("pushgate.yaml");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Config::from_yaml(text, config_path());
});
