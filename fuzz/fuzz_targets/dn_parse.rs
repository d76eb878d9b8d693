//! DNs as written in a config (RFC 4514 or OpenSSL's slash form): never a panic, and what
//! parses renders to an RFC 4514 string that parses back to the same DN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::listener::identity::ClientDn;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(dn) = ClientDn::parse(text) {
        let again = ClientDn::parse(dn.as_str())
            .unwrap_or_else(|e| panic!("{text:?} rendered as {:?}, which does not parse: {e}", dn.as_str()));
        assert_eq!(again, dn, "{text:?} → {:?} is another DN", dn.as_str());
    }
});
