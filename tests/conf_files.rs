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

/// The README's steps for checking the shipped configs: the shell block that runs
/// `pushgate check -c "$f"` over conf/*.yaml.
fn readme_check_steps(readme: &str) -> String {
    let blocks: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let steps = blocks
        .into_iter()
        .find(|b| b.contains("for f in conf/*.yaml"))
        .expect("README: the block that checks conf/*.yaml is gone; update this test");
    steps.to_string()
}

/// Regression (issue: `pushgate check` failed on every conf/*.yaml of a fresh clone: the
/// certificates' directory and GW_SECRET had to be guessed). In a temporary `git clone`: before
/// the certificates exist, `check` names the command that makes them; then the README's steps,
/// run as written from the clone's root (with this build as target/release/pushgate, which
/// scripts/dev.sh would have built), pass on every file, and so does `check` from elsewhere.
/// A clone holds what is committed: edits to conf/ or the README are seen once committed.
#[test]
fn a_fresh_clone_passes_check_on_every_config_after_the_readme_steps() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    let out = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repo)
        .arg(&clone)
        .output()
        .expect("git (the repository is tested from a clone, as CI does)");
    assert!(
        out.status.success(),
        "git clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let release = clone.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pushgate"), release.join("pushgate")).unwrap();
    let run = |cwd: &Path, program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env_remove("GW_SECRET")
            .env_remove("GW_SECRET_NEXT")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let certs = std::fs::canonicalize(&clone).unwrap().join("dev/certs");
    let (code, _, stderr) = run(
        &clone.join("conf"),
        release.join("pushgate").to_str().unwrap(),
        &["check", "-c", "mastercard-xbs.yaml"],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "hint: the development certificates are made by: pushgate dev-certs --out {}",
            certs.display()
        )),
        "{stderr}"
    );

    let readme = std::fs::read_to_string(clone.join("README.md")).unwrap();
    let steps = readme_check_steps(&readme);
    let (code, stdout, stderr) = run(&clone, "bash", &["-eu", "-c", &steps]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let mut configs: Vec<String> = std::fs::read_dir(clone.join("conf"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= SHIPPED.len());
    for name in &configs {
        assert!(stdout.contains(&format!("conf/{name}: ok,")), "{name}: {stdout}");
    }

    // scripts/dev.sh makes the certificates with the same line.
    let dev = std::fs::read_to_string(clone.join("scripts/dev.sh")).unwrap();
    let make = steps.lines().next().unwrap().split('#').next().unwrap().trim();
    assert!(
        dev.contains(make),
        "scripts/dev.sh and the README make dev/certs differently: {make}"
    );

    // The configs resolve their paths from their own directory, wherever check runs.
    for name in &configs {
        let file = clone.join("conf").join(name);
        let out = Command::new(release.join("pushgate"))
            .args(["check", "-c"])
            .arg(&file)
            .current_dir("/")
            .env("GW_SECRET", "dev-secret-0123456789abcdef01234")
            .env("GW_SECRET_NEXT", "dev-secret-next-0123456789abcdef")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
