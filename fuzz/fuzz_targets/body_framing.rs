//! The raw request header's framing check (pushgate's own, before any body byte is read).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pushgate::ingress::body::check_framing(data);
});
