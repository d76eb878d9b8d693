//! Every preset's event extraction over any body, with the headers that steer it, then the
//! answer rendered from the events (Ethoca's per-event acknowledgement reads them).
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pushgate::profile::{extract, AnswerOverrides, IdSource, Profile, ProfileOverrides, PROFILES};

const MAX_ID_LEN: usize = 256;

fn profiles() -> &'static [Profile] {
    static P: OnceLock<Vec<Profile>> = OnceLock::new();
    P.get_or_init(|| {
        PROFILES
            .iter()
            .map(|name| Profile::build(name, ProfileOverrides::default(), AnswerOverrides::default()).expect(name))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // Byte 0 picks the profile and the headers; the rest is the body.
    let Some((&sel, body)) = data.split_first() else { return };
    let profiles = profiles();
    let profile = &profiles[usize::from(sel) % profiles.len()];
    let mut headers = http::HeaderMap::new();
    match (sel >> 4) & 3 {
        0 => {}
        1 => {
            headers.insert("content-type", http::HeaderValue::from_static("application/json"));
        }
        2 => {
            headers.insert(
                "content-type",
                http::HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        _ => {
            headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
        }
    }
    if sel & 0x40 != 0 {
        headers.insert("x-notification-id", http::HeaderValue::from_static("N-1"));
    }
    let body = Bytes::copy_from_slice(body);
    if let Ok(x) = extract(&profile.spec, &body, &headers) {
        assert!(!x.events.is_empty(), "{}: Ok with no event", profile.name);
        for e in &x.events {
            if e.id_source == IdSource::Sender {
                assert!(e.id.as_str().len() <= MAX_ID_LEN, "{}: id over the limit", profile.name);
            }
        }
        let _ = profile.answer.render(&x.events);
    }
});
