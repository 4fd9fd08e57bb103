//! Fuzz the netlink/XFRM decoder: any input must parse or fail with an
//! error, never panic; whatever parses must re-emit to bytes that parse to
//! the same message. (Emitting normalizes: padding becomes zero and a last
//! attribute without its alignment padding gets it, so only `nlmsg_len`
//! may grow; the golden tests prove real messages come back byte-identical.)
//! The lenient `parse_each` agrees with `parse_all` where that succeeds.
#![no_main]

use ipsec_backend::netlink::NlMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The lenient parse (one result per message) never panics either, and
    // agrees with the strict one whenever that succeeds.
    let each = NlMessage::parse_each(data);
    if let Ok(msgs) = NlMessage::parse_all(data) {
        let lenient: Vec<NlMessage> = each.into_iter().filter_map(Result::ok).collect();
        assert_eq!(lenient, msgs, "parse_each and parse_all disagree");
    }
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
