//! Every config shipped in conf/ passes `pushgate check` against a freshly made development
//! PKI, laid out as the configs expect (conf/ beside dev/certs/), so they cannot rot.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHIPPED: &[&str] = &[
    "dev.yaml",
    "ethoca.yaml",
    "mastercard-cen.yaml",
    "mastercard-gateway.yaml",
    "mastercard-xbs.yaml",
];

fn pushgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(args)
        .env("GW_SECRET", "dev-secret-0123456789abcdef01234")
        .env("GW_SECRET_NEXT", "dev-secret-next-0123456789abcdef")
        .output()
        .unwrap()
}

fn check(config: &Path) -> String {
    let out = pushgate(&["check", "-c", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}: {}{}",
        config.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A temp dir holding dev/certs (made by the binary) and a copy of conf/.
fn layout() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("dev/certs");
    let out = pushgate(&["dev-certs", "--out", certs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let conf = tmp.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, conf.join(path.file_name().unwrap())).unwrap();
        }
    }
    (tmp, conf)
}

#[test]
fn every_shipped_config_passes_check() {
    let (_tmp, conf) = layout();
    let mut found: Vec<String> = std::fs::read_dir(&conf)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    for name in SHIPPED {
        assert!(found.iter().any(|f| f == name), "conf/{name} is missing");
    }
    for name in &found {
        let stdout = check(&conf.join(name));
        assert!(stdout.contains(": ok,"), "{name}: {stdout}");
    }
    let profile_of = |name: &str| check(&conf.join(name));
    assert!(profile_of("mastercard-xbs.yaml").contains("profile=mastercard-xbs"));
    assert!(profile_of("mastercard-cen.yaml").contains("profile=mastercard-cen"));
    assert!(profile_of("mastercard-gateway.yaml").contains("profile=mastercard-gateway"));
    assert!(profile_of("ethoca.yaml").contains("profile=ethoca-alerts"));
}

/// The decrypt block that mastercard-xbs.yaml ships commented out is valid once uncommented
/// and given the key it names.
#[test]
fn xbs_decrypt_block_is_valid_when_enabled() {
    let (tmp, conf) = layout();
    let keys = tmp.path().join("dev/keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwe/mastercard_test_key_pkcs8-2048.pem"),
        keys.join("xbs-encryption.pem"),
    )
    .unwrap();
    let path = conf.join("mastercard-xbs.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let commented = "    # decrypt:\n    #   keys:";
    assert!(text.contains(commented), "the decrypt example moved: update this test");
    std::fs::write(&path, text.replace(commented, "    decrypt:\n      keys:")).unwrap();
    check(&path);
}
