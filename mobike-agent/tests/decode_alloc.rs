//! Decoding an IKE message allocates at most a small constant times the
//! datagram's size, whatever counts and lengths the sender claims: a
//! counting global allocator measures every byte asked for while
//! `Message::decode` runs, over adversarial datagrams made by proptest
//! (payload chains whose Num Transforms, Num of SPIs, Number of TSs, SPI
//! Size and lengths lie, and plain noise after a valid header).
//! Issue 12: one ~540-byte Delete with SPI Size 0 and 65,535 SPIs had made
//! the agent allocate ~100 MB before any authentication.

use mobike_agent::proto::Message;
use proptest::prelude::*;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocated;

/// Bytes allocated while decoding `data` (whether it decodes or not).
fn decode_cost(data: &[u8]) -> usize {
    let (r, bytes) = allocated(|| Message::decode(data));
    drop(r);
    bytes
}

/// The bound: this many bytes per datagram byte, plus a fixed allowance.
/// Every decoded element is a struct of a few dozen bytes for at least
/// four octets on the wire, and vectors grow by doubling.
const PER_BYTE: usize = 32;
const FIXED: usize = 1024;

fn within_bound(data: &[u8]) -> Result<(), TestCaseError> {
    let cost = decode_cost(data);
    prop_assert!(
        cost <= PER_BYTE * data.len() + FIXED,
        "{} bytes allocated decoding {} bytes",
        cost,
        data.len()
    );
    Ok(())
}

/// A generic payload header (§3.2) around `body`; `len_lie` replaces the
/// Payload Length.
fn payload(next: u8, body: &[u8], len_lie: Option<u16>) -> Vec<u8> {
    let len = len_lie.unwrap_or((body.len() + 4) as u16);
    let mut out = vec![next, 0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An IKE header (§3.1) with the right Length before `chain`.
fn message(first: u8, chain: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(28 + chain.len());
    m.extend_from_slice(&1u64.to_be_bytes());
    m.extend_from_slice(&0u64.to_be_bytes());
    m.extend_from_slice(&[first, 0x20, 37, 0x08]);
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&((28 + chain.len()) as u32).to_be_bytes());
    m.extend_from_slice(chain);
    m
}

/// One payload body of `ty` with claimed counts that may lie.
fn body(ty: u8) -> BoxedStrategy<Vec<u8>> {
    match ty {
        // SA: proposals with a claimed Num Transforms and few real ones.
        33 => (
            any::<u8>(),
            0u8..=8,
            prop::collection::vec((any::<u8>(), any::<u16>(), 0usize..4), 0..6),
        )
            .prop_map(|(claimed, spi_size, transforms)| {
                let mut prop = vec![1, 3, spi_size, claimed];
                prop.extend(std::iter::repeat_n(0xAA, spi_size as usize));
                let count = transforms.len();
                for (i, (tty, id, attrs)) in transforms.into_iter().enumerate() {
                    let last = if i + 1 == count { 0 } else { 3 };
                    let mut t = vec![tty % 6, 0];
                    t.extend_from_slice(&id.to_be_bytes());
                    for _ in 0..attrs {
                        t.extend_from_slice(&[0x80, 14, 0, 128]);
                    }
                    let mut tr = vec![last, 0];
                    tr.extend_from_slice(&((t.len() + 4) as u16).to_be_bytes());
                    tr.extend(t);
                    prop.extend(tr);
                }
                let mut out = vec![0, 0];
                out.extend_from_slice(&((prop.len() + 4) as u16).to_be_bytes());
                out.extend(prop);
                out
            })
            .boxed(),
        // Delete: any protocol, SPI Size and Num of SPIs, few real bytes.
        42 => (
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(proto, size, n, spis)| {
                let mut out = vec![proto % 5, size];
                out.extend_from_slice(&n.to_be_bytes());
                out.extend(spis);
                out
            })
            .boxed(),
        // TSi/TSr: a claimed Number of TSs and a few real selectors.
        44 | 45 => (any::<u8>(), 0usize..4)
            .prop_map(|(claimed, real)| {
                let mut out = vec![claimed, 0, 0, 0];
                for _ in 0..real {
                    out.extend_from_slice(&[7, 0, 0, 16, 0, 0, 255, 255]);
                    out.extend_from_slice(&[10, 0, 0, 0, 10, 0, 0, 255]);
                }
                out
            })
            .boxed(),
        // Notify: protocol, SPI Size and type, then anything.
        41 => (
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(proto, size, ty, rest)| {
                let mut out = vec![proto, size];
                out.extend_from_slice(&ty.to_be_bytes());
                out.extend(rest);
                out
            })
            .boxed(),
        // CP: many zero-length attributes.
        47 => (0usize..64)
            .prop_map(|n| {
                let mut out = vec![1, 0, 0, 0];
                for _ in 0..n {
                    out.extend_from_slice(&[0, 1, 0, 0]);
                }
                out
            })
            .boxed(),
        // Nonce, KE, IDs, AUTH, vendor, unknown: anything.
        _ => prop::collection::vec(any::<u8>(), 0..48).boxed(),
    }
}

const TYPES: &[u8] = &[33, 34, 35, 36, 39, 40, 41, 42, 43, 44, 45, 47, 48, 99];

/// A chain of up to 70 payloads (past the decoder's limit of 64), each of
/// a type above with a body that may lie, and sometimes a Payload Length
/// that lies.
fn chain() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(TYPES).prop_flat_map(|ty| {
            (
                Just(ty),
                body(ty),
                prop::option::weighted(0.05, any::<u16>()),
            )
        }),
        1..70,
    )
    .prop_map(|items| {
        let mut out = Vec::new();
        let first = items[0].0;
        for (i, (_, b, lie)) in items.iter().enumerate() {
            let next = items.get(i + 1).map_or(0, |n| n.0);
            out.extend(payload(next, b, *lie));
        }
        message(first, &out)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoding_structured_lies_allocates_a_bounded_multiple_of_the_datagram(m in chain()) {
        within_bound(&m)?;
    }

    #[test]
    fn decoding_noise_after_a_valid_header_allocates_a_bounded_multiple(
        first in prop::sample::select(TYPES),
        rest in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        within_bound(&message(first, &rest))?;
    }
}

/// The datagram of issue 12's finding, and its neighbours: a Delete of each
/// protocol with a small SPI Size and the most SPIs claimed.
#[test]
fn a_delete_claiming_65535_spis_allocates_next_to_nothing() {
    for (proto, size) in [(1u8, 0u8), (3, 0), (3, 4), (4, 1), (0, 0), (4, 0)] {
        let mut body = vec![proto, size, 0xff, 0xff];
        body.extend(std::iter::repeat_n(0, 500));
        let m = message(42, &payload(0, &body, None));
        let cost = decode_cost(&m);
        assert!(
            cost <= PER_BYTE * m.len() + FIXED,
            "protocol {proto}, SPI Size {size}: {cost} bytes for {}",
            m.len()
        );
    }
}

/// The counting itself: a decode that must allocate is seen to.
#[test]
fn the_counter_sees_the_decoders_allocations() {
    let nonce = payload(0, &[7; 64], None);
    assert!(decode_cost(&message(40, &nonce)) >= 64);
}
