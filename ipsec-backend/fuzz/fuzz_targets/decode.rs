//! Fuzz the netlink/XFRM decoder: any input must parse or fail with an
//! error, never panic; whatever parses must re-emit to bytes that parse to
//! the same message. (Emitting normalizes: padding becomes zero and a last
//! attribute without its alignment padding gets it, so only `nlmsg_len`
//! may grow; the golden tests prove real messages come back byte-identical.)
#![no_main]

use ipsec_backend::netlink::NlMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = NlMessage::parse_all(data) {
        for m in msgs {
            let bytes = m.emit();
            let (again, _) = NlMessage::parse_one(&bytes).expect("emitted message must parse");
            assert_eq!(again.body, m.body);
            assert_eq!(again.header.flags, m.header.flags);
            assert_eq!(
                (again.header.seq, again.header.pid),
                (m.header.seq, m.header.pid)
            );
            assert_eq!(bytes, again.emit(), "emit is not a fixed point");
        }
    }
});
