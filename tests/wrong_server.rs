//! A command given `-c FILE` acts on the server that serves FILE, or refuses: several configs
//! may name one admin address (every file in conf/ uses 127.0.0.1:9900), and `pushgate reload`
//! or `pushgate spool` reaching another server must not reload its file or touch its events.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{admin, free_port, metric, Pki, Pushgate, Sender};

fn routes(name: &str) -> String {
    format!(
        "routes:\n  - name: {name}\n    path: /{name}\n    profile: generic\n    allow_unauthenticated: true\n    upstream: {{ url: \"http://127.0.0.1:9/\" }}\n"
    )
}

/// A second, valid config in its own directory whose admin address is the running gate's.
fn other_config(pki: &Pki, gate: &Pushgate, dir: &Path) -> PathBuf {
    let path = dir.join("other.yaml");
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        &path,
        Pushgate::config(pki, addr, gate.admin, &dir.join("other-data"), &routes("other")),
    )
    .unwrap();
    path
}

fn pushgate(args: &[&str], conf: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(args)
        .arg("-c")
        .arg(conf)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn reloads(gate: &Pushgate, result: &str) -> f64 {
    let text = admin(gate.admin, "GET", "/metrics").await.1;
    metric(&text, &format!("pushgate_reloads_total{{result=\"{result}\"}}"))
}

/// Regression (issue: `reload -c b.yaml` validated b.yaml, then the server on its admin
/// address re-read its own a.yaml and the command exited 0 with a.yaml's summary).
#[tokio::test(flavor = "multi_thread")]
async fn reload_with_another_servers_file_is_refused_and_reloads_nothing() {
    let pki = Pki::new();
    let gate = Pushgate::start(&pki, &routes("mine"));
    let dir = tempfile::tempdir().unwrap();
    let other = other_config(&pki, &gate, dir.path());

    let (code, stdout, stderr) = pushgate(&["reload"], &other);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let served = std::fs::canonicalize(&gate.config).unwrap();
    let named = std::fs::canonicalize(&other).unwrap();
    assert!(
        stderr.contains(&format!(
            "serves {}, not {}; nothing was reloaded",
            served.display(),
            named.display()
        )),
        "{stderr}"
    );
    assert_eq!(reloads(&gate, "ok").await, 0.0);
    assert_eq!(reloads(&gate, "error").await, 0.0);

    // Its own file, even through a symlink and a relative path, is reloaded.
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&gate.config, &link).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["reload", "-c", "link.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded 1 route(s): mine"));
    assert_eq!(reloads(&gate, "ok").await, 1.0);

    // The API says the same to a caller naming a file.
    let query = format!("/reload?config={}", named.display());
    let (status, body) = admin(gate.admin, "POST", &query).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(reloads(&gate, "ok").await, 1.0);
}

/// Regression (issue: `spool -c a.yaml stats` printed the routes of whatever server listened
/// on a.yaml's admin address).
#[tokio::test(flavor = "multi_thread")]
async fn spool_reaching_a_server_of_another_store_is_refused() {
    let pki = Pki::new();
    let mut gate = Pushgate::start(&pki, &routes("mine"));
    let r = Sender::new(&pki, gate.addr, None)
        .post("/mine", &[], r#"{"id":"E-1"}"#)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let other = other_config(&pki, &gate, dir.path());

    let theirs = std::fs::canonicalize(gate.dir.join("data")).unwrap();
    for args in [
        &["spool", "stats"][..],
        &["spool", "list"],
        &["spool", "purge", "--state", "dead"],
        &["spool", "replay", "1"],
    ] {
        let (code, stdout, stderr) = pushgate(args, &other);
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("holds the store {}", theirs.display())) && stderr.contains("nothing was done"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stdout.contains("mine"),
            "{args:?} printed the other server's events: {stdout}"
        );
    }
    // Its own config reaches it.
    let (code, stdout, stderr) = pushgate(&["spool", "stats"], &gate.config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("\"mine\""), "{stdout}");

    // With nothing on the admin address, the other config's own store is read directly.
    gate.kill9();
    let (code, stdout, stderr) = pushgate(&["spool", "stats"], &other);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("mine"), "{stdout}");
}
