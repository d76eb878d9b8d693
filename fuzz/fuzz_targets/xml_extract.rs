//! Cross-Border XML bodies: any bytes through the `mastercard-xbs` preset read as XML. Beyond
//! "no panic": a DOCTYPE is never accepted (no DTD is read, no entity expanded), and an id the
//! sender named stays within the id limit.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pushgate::profile::{extract, AnswerOverrides, IdSource, Profile, ProfileOverrides};

const MAX_ID_LEN: usize = 256;

fn profile() -> &'static Profile {
    static P: OnceLock<Profile> = OnceLock::new();
    P.get_or_init(|| {
        let events: ProfileOverrides = serde_yaml_ng::from_str("format: xml").expect("overrides");
        Profile::build("mastercard-xbs", events, AnswerOverrides::default()).expect("profile")
    })
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok(x) = extract(&profile().spec, &body, &http::HeaderMap::new()) else {
        return;
    };
    assert_eq!(x.events.len(), 1, "an XML body is one event");
    let e = &x.events[0];
    // quick-xml's own reading of the accepted body holds no DOCTYPE.
    let mut reader = quick_xml::Reader::from_reader(data);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::DocType(_)) => panic!("a DOCTYPE was accepted"),
            Ok(quick_xml::events::Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if e.id_source == IdSource::Sender {
        assert!(e.id.as_str().len() <= MAX_ID_LEN, "id over the limit");
    }
});
