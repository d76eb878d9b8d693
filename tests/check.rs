//! `pushgate check` on broken configs: each is refused with exit code 1 and one line naming
//! the file and the key to fix.

mod support;

use support::{check_config, Pki};

/// A valid config for `pki`, then `edit` applied to its text.
fn config(pki: &Pki, edit: impl Fn(String) -> String) -> String {
    let good = format!(
        r#"listen:
  addr: "127.0.0.1:8443"
  tls: {{ cert: {cert}, key: {key}, client_ca: {ca} }}
routes:
  - name: xbs
    path: /xbs
    profile: mastercard-xbs
    client_dn: ["CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US"]
    upstream: {{ url: "http://127.0.0.1:8080/xbs", timeout: 10s }}
"#,
        cert = pki.path("server.pem").display(),
        key = pki.path("server.key").display(),
        ca = pki.path("client-ca.pem").display(),
    );
    edit(good)
}

fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, text).unwrap();
    check_config(&file)
}

#[test]
fn the_valid_config_passes_and_prints_its_routes() {
    let pki = Pki::new();
    let (code, stdout, _) = check(&config(&pki, |s| s));
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("xbs") && stdout.contains("/xbs") && stdout.contains("mastercard-xbs"),
        "{stdout}"
    );
}

#[test]
fn each_on_conflict_choice_passes() {
    let pki = Pki::new();
    for choice in ["deliver", "quarantine", "drop"] {
        let text = config(&pki, |s| {
            s.replace("    upstream:", &format!("    on_conflict: {choice}\n    upstream:"))
        });
        let (code, _, stderr) = check(&text);
        assert_eq!(code, Some(0), "{choice}: {stderr}");
    }
}

#[test]
fn each_broken_config_gets_its_own_message() {
    let pki = Pki::new();
    let key = pki.path("server.key").display().to_string();
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        ("bad YAML", Box::new(|s| s.replace("routes:", "routes: [")), "", "line"),
        (
            "unknown key",
            Box::new(|s| s.replace("    profile:", "    profil: x\n    profile:")),
            "routes[0]",
            "unknown field `profil`",
        ),
        (
            "unknown top-level key",
            Box::new(|s| format!("{s}extra: 1\n")),
            "extra",
            "unknown field",
        ),
        (
            "missing cert file",
            Box::new(|s| s.replace("server.pem", "nope.pem")),
            "listen.tls.cert",
            "nope.pem",
        ),
        (
            "unreadable key",
            Box::new(move |s| s.replace(&key, "/dev/null")),
            "listen.tls.key",
            "private key",
        ),
        (
            "a DN that does not parse",
            Box::new(|s| s.replace("CN=Crossborder", "XX=Crossborder")),
            "routes[0].client_dn[0]",
            "XX",
        ),
        (
            "a route with no authentication",
            Box::new(|s| s.replace("    client_dn:", "    # client_dn:")),
            "routes[0].client_dn",
            "allow_unauthenticated",
        ),
        (
            "a duration that is not one",
            Box::new(|s| s.replace("timeout: 10s", "timeout: soon")),
            "routes[0].upstream.timeout",
            "duration",
        ),
        (
            "an unknown profile",
            Box::new(|s| s.replace("mastercard-xbs", "visa")),
            "routes[0].profile",
            "unknown profile",
        ),
        (
            "a secret from an unset variable",
            Box::new(|s| {
                s.replace(
                    "    upstream:",
                    "    secret: { header: X-S, values: [\"env:PUSHGATE_TEST_UNSET\"] }\n    upstream:",
                )
            }),
            "routes[0].secret.values[0]",
            "PUSHGATE_TEST_UNSET",
        ),
        (
            "an https upstream",
            Box::new(|s| s.replace("http://127.0.0.1:8080", "https://127.0.0.1:8080")),
            "routes[0].upstream.url",
            "only http://",
        ),
        (
            "no routes",
            Box::new(|s| s[..s.find("routes:").unwrap()].to_string() + "routes: []\n"),
            "routes",
            "at least one route",
        ),
        (
            "a public admin address without a token",
            Box::new(|s| format!("admin: {{ addr: \"0.0.0.0:9900\" }}\n{s}")),
            "admin.token",
            "bearer token",
        ),
        (
            "an on_conflict that is not a choice",
            Box::new(|s| s.replace("    upstream:", "    on_conflict: ignore\n    upstream:")),
            "routes[0].on_conflict",
            "unknown variant `ignore`",
        ),
        (
            "a bad listen address",
            Box::new(|s| s.replace("127.0.0.1:8443", "localhost")),
            "listen.addr",
            "IP:port",
        ),
    ];
    for (what, edit, key, message) in cases {
        let (code, _, stderr) = check(&config(&pki, edit));
        assert_eq!(code, Some(1), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line, got:\n{stderr}");
        assert!(stderr.contains("broken.yaml"), "{what}: names the file: {stderr}");
        assert!(
            stderr.contains(&format!("{key}:")) || key.is_empty(),
            "{what}: names `{key}`: {stderr}"
        );
        assert!(stderr.contains(message), "{what}: says `{message}`: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}
