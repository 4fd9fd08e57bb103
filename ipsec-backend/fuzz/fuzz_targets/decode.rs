//! Fuzz the netlink/XFRM decoder: any input must parse or fail with an
//! error, never panic; whatever parses must re-emit to bytes that parse to
//! the same message (the codec is lossless).
#![no_main]

use ipsec_backend::netlink::NlMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = NlMessage::parse_all(data) {
        for m in msgs {
            let again = NlMessage::parse_one(&m.emit()).map(|x| x.0);
            assert_eq!(again, Ok(m));
        }
    }
});
