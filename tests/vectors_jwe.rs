//! Every JWE in Mastercard's seven client-encryption libraries (../shared/vectors/jwe, not in
//! this repository) decrypts to its exact plaintext with Mastercard's test key, Mastercard's
//! other test keys fail cleanly, the unsupported one is refused; and end to end through the real
//! binary, in the JSON and the XML envelope, the app gets exactly those plaintexts.
//! Where the vectors are absent (a user's clone), each test says so and passes.

mod support;

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use pushgate::jwe::{decrypt_compact, decrypt_envelope, DecryptKey, JweError};
use serde_json::Value;
use support::{admin, eventually, metric, App, Pki, Pushgate, Sender};

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";
const TEST_KEY: &str = "keys/mastercard-test-key-2048.pkcs8.pem";
const DECOYS: [&str; 2] = [
    "keys/mastercard-p12-key.pkcs8.pem",
    "keys/mastercard-pkcs1-2048-key.pkcs1.pem",
];

/// The vectors directory and its cases, or None (and a printed reason) where it is absent.
fn vectors(test: &str) -> Option<(PathBuf, Vec<Case>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/jwe");
    let Ok(text) = std::fs::read_to_string(dir.join("cases.json")) else {
        eprintln!(
            "{test}: skipped, {} is absent (Mastercard's vectors are not in this repository)",
            dir.display()
        );
        return None;
    };
    let all: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let cases = all["cases"]
        .as_array()
        .expect("cases[]")
        .iter()
        .map(|c| Case::new(&dir, c))
        .collect();
    Some((dir, cases))
}

struct Case {
    name: String,
    jwe: String,
    /// None: Mastercard expects a refusal (an unsupported enc).
    plaintext: Option<Vec<u8>>,
    cty: Option<String>,
    key: String,
    /// "deliver", "reject" or "decrypt-then-not-json" (cases.json "fields").
    expect: String,
}

impl Case {
    fn new(dir: &Path, c: &Value) -> Case {
        let s = |k: &str| c[k].as_str().map(str::to_owned);
        let name = s("name").unwrap();
        let jwe = std::fs::read_to_string(dir.join(s("file").unwrap())).unwrap();
        let plaintext = s("plaintext_b64").map(|p| STANDARD.decode(p).unwrap());
        let expect = s("expect").unwrap();
        assert_eq!(
            plaintext.is_none(),
            expect == "reject",
            "{name}: a plaintext unless refused"
        );
        Case {
            name,
            jwe,
            plaintext,
            cty: s("cty"),
            key: s("key").unwrap(),
            expect,
        }
    }
}

fn key(dir: &Path, file: &str) -> DecryptKey {
    DecryptKey::from_pem_or_der(&std::fs::read(dir.join(file)).unwrap()).unwrap()
}

#[test]
fn every_vector_decrypts_to_its_exact_plaintext() {
    let Some((dir, cases)) = vectors("every_vector_decrypts_to_its_exact_plaintext") else {
        return;
    };
    assert_eq!(cases.len(), 18, "cases.json lists every JWE in the seven libraries");
    let mut decrypted = 0;
    for c in &cases {
        let keys = [key(&dir, &c.key)];
        match (&c.plaintext, decrypt_compact(&c.jwe, &keys)) {
            (Some(pt), Ok(d)) => {
                assert_eq!(&d.plaintext, pt, "{}", c.name);
                assert_eq!(d.content_type, "application/json", "{}: cty {:?}", c.name, c.cty);
                assert_eq!(d.kid_used, keys[0].kid());
                decrypted += 1;
            }
            (None, Err(JweError::UnsupportedEnc(enc))) => assert_eq!(enc, "XC20P", "{}", c.name),
            (want, got) => panic!(
                "{}: expected {:?}, got {got:?}",
                c.name,
                want.as_ref().map(|_| "plaintext")
            ),
        }
    }
    assert_eq!(decrypted, 17);
}

#[test]
fn the_key_in_each_format_has_the_kid_of_cases_json() {
    let Some((dir, _)) = vectors("the_key_in_each_format_has_the_kid_of_cases_json") else {
        return;
    };
    let all: Value = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let keys = all["keys"].as_object().unwrap();
    assert_eq!(keys.len(), 5);
    for (file, about) in keys {
        assert_eq!(Some(key(&dir, file).kid()), about["spki_sha256"].as_str(), "{file}");
    }
}

#[test]
fn mastercards_other_keys_fail_cleanly_and_are_skipped_when_trying_keys() {
    let Some((dir, cases)) = vectors("mastercards_other_keys_fail_cleanly_and_are_skipped_when_trying_keys") else {
        return;
    };
    let decoys = DECOYS.map(|f| key(&dir, f));
    let [a, b] = DECOYS.map(|f| key(&dir, f));
    let with_test_key = [a, b, key(&dir, TEST_KEY)];
    for c in cases.iter().filter(|c| c.plaintext.is_some()) {
        match decrypt_compact(&c.jwe, &decoys) {
            Err(JweError::KeyMismatch | JweError::UnknownKid(_)) => {}
            other => panic!("{}: the decoys must not decrypt it: {other:?}", c.name),
        }
        // Whatever the kid says, the right key is found after the wrong ones.
        let d = decrypt_compact(&c.jwe, &with_test_key).unwrap();
        assert_eq!(Some(&d.plaintext), c.plaintext.as_ref(), "{}", c.name);
    }
}

#[test]
fn vectors_in_both_envelopes_and_in_standard_base64() {
    let Some((dir, cases)) = vectors("vectors_in_both_envelopes_and_in_standard_base64") else {
        return;
    };
    let keys = [key(&dir, TEST_KEY)];
    for c in cases.iter().filter(|c| c.plaintext.is_some()) {
        let pt = c.plaintext.as_ref().unwrap();
        for body in [json_envelope(&c.jwe), xml_envelope(&format!("\n  {}\n", c.jwe))] {
            let d = decrypt_envelope(body.as_bytes(), true, &keys).unwrap().unwrap();
            assert_eq!(&d.plaintext, pt, "{}", c.name);
        }
        // The binary parts re-encoded in the standard alphabet with padding (Node's Buffer form).
        let std_form: Vec<String> = c
            .jwe
            .trim()
            .split('.')
            .enumerate()
            .map(|(i, p)| match i {
                0 => p.to_owned(),
                _ => STANDARD.encode(URL_SAFE_NO_PAD.decode(p.replace('+', "-").replace('/', "_")).unwrap()),
            })
            .collect();
        assert_eq!(
            &decrypt_compact(&std_form.join("."), &keys).unwrap().plaintext,
            pt,
            "{}",
            c.name
        );
    }
}

fn json_envelope(jwe: &str) -> String {
    serde_json::json!({"encrypted_payload": {"data": jwe}}).to_string()
}

fn xml_envelope(jwe: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<encrypted_payload><data>{jwe}</data></encrypted_payload>")
}

/// The JWE with one bit of its authentication tag flipped, in the alphabet it came in.
fn tamper_tag(jwe: &str) -> String {
    let (rest, tag) = jwe.trim().rsplit_once('.').unwrap();
    let url = tag.trim_end_matches('=').replace('+', "-").replace('/', "_");
    let mut bytes = URL_SAFE_NO_PAD.decode(url).unwrap();
    bytes[0] ^= 1;
    format!("{rest}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The real binary: one XBS route per envelope form, holding a decoy key and Mastercard's test
/// key. `ack: spool`: a 200 means the plaintext event is on disk.
#[tokio::test(flavor = "multi_thread")]
async fn every_vector_end_to_end_in_json_and_xml_envelopes() {
    let Some((dir, cases)) = vectors("every_vector_end_to_end_in_json_and_xml_envelopes") else {
        return;
    };
    let pki = Pki::new();
    let app = App::start().await;
    let keys = format!(
        "[\"file:{}\", \"file:{}\"]",
        dir.join(DECOYS[0]).display(),
        dir.join(TEST_KEY).display()
    );
    let route = |name: &str| {
        format!(
            "  - name: {name}\n    path: /{name}\n    profile: mastercard-xbs\n    ack: spool\n    client_dn: [\"{PROD_DN}\"]\n    decrypt: {{ keys: {keys} }}\n    upstream: {{ url: \"{}\" }}\n",
            app.url(&format!("/app/{name}"))
        )
    };
    let gate = Pushgate::start(&pki, &format!("routes:\n{}{}", route("json"), route("xml")));
    let sender = Sender::new(&pki, gate.addr, Some("xbs-prod"));

    let mut distinct: Vec<&[u8]> = Vec::new();
    let mut refused = 0;
    for c in &cases {
        let want = if c.expect == "deliver" { 200 } else { 400 };
        for (path, body) in [("/json", json_envelope(&c.jwe)), ("/xml", xml_envelope(&c.jwe))] {
            let r = sender.post(path, &[("x-encrypted", "true")], body).await.unwrap();
            assert_eq!(r.status, want, "{} {path}\n{}", c.name, gate.logs());
            if want == 400 {
                refused += 1;
            }
        }
        if want == 200 {
            let pt = c.plaintext.as_deref().unwrap();
            if !distinct.contains(&pt) {
                distinct.push(pt);
            }
        }
        // Any vector with its tag changed: refused, kept in quarantine, never forwarded.
        if c.plaintext.is_some() {
            let r = sender
                .post("/json", &[], json_envelope(&tamper_tag(&c.jwe)))
                .await
                .unwrap();
            assert_eq!(r.status, 400, "{} tampered", c.name);
            refused += 1;
        }
    }
    // The same plaintext twice (Mastercard reuses `{"foo":"bar"}`) is one event: keyed by its hash.
    for route in ["json", "xml"] {
        let path = format!("/app/{route}");
        let got = || {
            app.received()
                .into_iter()
                .filter(|r| r.path == path)
                .collect::<Vec<_>>()
        };
        eventually(20, "deliveries", || got().len() >= distinct.len()).await;
        let got = got();
        let bodies: Vec<&[u8]> = got.iter().map(|r| r.body.as_ref()).collect();
        assert_eq!(
            bodies, distinct,
            "{route}: the app gets each plaintext, byte for byte, once"
        );
        for r in &got {
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("x-encrypted"), None);
        }
    }

    // Every refusal is in quarantine, raw; the non-JSON plaintexts were decrypted first.
    let (status, text) = admin(gate.admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let quarantined: f64 = ["json", "xml"]
        .iter()
        .map(|r| {
            metric(
                &text,
                &format!(r#"pushgate_events_total{{outcome="quarantined",route="{r}"}}"#),
            )
        })
        .sum();
    assert_eq!(quarantined, f64::from(refused));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["spool", "-c"])
        .arg(&gate.config)
        .args(["list", "--state", "quarantined", "--limit", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reasons: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["quarantine_reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons.len(), refused as usize, "{list}");
    let count = |needle: &str| reasons.iter().filter(|r| r.contains(needle)).count();
    let not_json = cases.iter().filter(|c| c.expect == "decrypt-then-not-json").count();
    assert_eq!(count("undecryptable"), refused as usize - 2 * not_json, "{reasons:?}");
    assert_eq!(count("unsupported JWE enc"), 2, "{reasons:?}");
    assert_eq!(
        count("authentication tag"),
        refused as usize - 2 * not_json - 2,
        "{reasons:?}"
    );
}
