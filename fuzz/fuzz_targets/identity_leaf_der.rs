//! A client leaf certificate's DER (as rustls hands it over) → identity: never a panic, and the
//! subject renders to an RFC 4514 string that a config could pin and that matches it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::listener::identity::{ClientDn, ClientIdentity};

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = ClientIdentity::from_leaf_der(data) {
        if let Ok(pinned) = ClientDn::parse(id.dn.as_str()) {
            assert_eq!(pinned, id.dn, "{:?} parses to another DN", id.dn.as_str());
        }
    }
});
