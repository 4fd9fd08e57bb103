use proptest::prelude::*;

use super::*;

const SETTINGS: &[u8] = &[0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x3, 0, 0, 0, 100];
const BAD: &[u8] = b"/run/trigger-db/trigger.sock";

fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/trigger.v1.TriggerService/Query"),
        (b":authority", authority),
        (b"te", b"trailers"),
        (b"content-type", b"application/grpc"),
        (
            b"user-agent",
            b"grpc-python/1.85.4 grpc-c/52.0.0 (linux; chttp2)",
        ),
    ]
    .iter()
    .map(|(n, v)| (n.to_vec(), v.to_vec()))
    .collect()
}

fn encode(enc: &mut loona_hpack::Encoder, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_header(payload.len(), kind, flags, stream, &mut out);
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, PartialEq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Splits the server's view after the preface into frames.
fn frames(mut b: &[u8]) -> Vec<Frame> {
    assert_eq!(&b[..24], PREFACE);
    b = &b[24..];
    let mut v = Vec::new();
    while !b.is_empty() {
        let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
        v.push(Frame {
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
            payload: b[9..9 + len].to_vec(),
        });
        b = &b[9 + len..];
    }
    v
}

/// Decodes one re-encoded block with a decoder whose dynamic table is empty
/// and must stay so (what h2 sees).
fn decode_fresh(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut d = loona_hpack::Decoder::new();
    d.set_max_allowed_table_size(0);
    d.decode(block)
        .expect("re-encoded block decodes without a table")
}

fn rewrite(input: &[u8]) -> Result<Vec<u8>, AuthorityError> {
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    r.feed(input, &mut out)?;
    Ok(out)
}

fn with_authority(fields: &[(Vec<u8>, Vec<u8>)], a: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .iter()
        .map(|(n, v)| {
            if n == b":authority" {
                (n.clone(), a.to_vec())
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect()
}

#[test]
fn what_is_a_valid_authority() {
    assert!(is_valid_authority(b"localhost"));
    assert!(is_valid_authority(b"localhost:50051"));
    assert!(is_valid_authority(b"[::1]:80"));
    assert!(!is_valid_authority(BAD));
    // What grpcio 1.85 sends for unix:///tmp/repro/s.sock (and unix:/...).
    assert!(!is_valid_authority(b"tmp%2Frepro%2Fs.sock"));
    assert!(!is_valid_authority(b"unix:/run/trigger-db/trigger.sock"));
    assert!(!is_valid_authority(b""));
}

#[test]
fn a_bad_authority_split_over_continuation_is_replaced_and_the_rest_passes() {
    let fields = request(BAD);
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let (a, b) = block.split_at(block.len() / 2);
    let (b, c) = b.split_at(b.len() / 2);
    let data = frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\x02\x08\x01");
    let mut input = PREFACE.to_vec();
    input.extend(SETTINGS);
    input.extend(frame(FRAME_HEADERS, 0, 1, a));
    input.extend(frame(FRAME_CONTINUATION, 0, 1, b));
    input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c));
    input.extend(&data);

    let out = rewrite(&input).unwrap();
    let f = frames(&out);
    assert_eq!(f.len(), 3, "{f:?}");
    assert_eq!(f[0].payload, SETTINGS[9..]);
    assert_eq!(
        (f[1].kind, f[1].flags, f[1].stream),
        (FRAME_HEADERS, FLAG_END_HEADERS, 1)
    );
    assert_eq!(
        decode_fresh(&f[1].payload),
        with_authority(&fields, b"localhost")
    );
    assert_eq!(f[2], frames(&[&PREFACE[..], &data].concat())[0]);

    // Byte by byte, the same.
    let mut r = Rewriter::default();
    let mut one = Vec::new();
    for b in &input {
        r.feed(std::slice::from_ref(b), &mut one).unwrap();
    }
    assert_eq!(one, out);
    assert_eq!(r.rewritten(), 1);
}

#[test]
fn a_valid_authority_is_kept() {
    let fields = request(b"localhost:50051");
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        3,
        &block,
    ));
    let out = rewrite(&input).unwrap();
    let f = frames(&out);
    assert_eq!(f[0].flags, FLAG_END_HEADERS | FLAG_END_STREAM);
    assert_eq!(decode_fresh(&f[0].payload), fields);
}

#[test]
fn padded_headers_with_priority_keep_the_priority_and_lose_the_padding() {
    let fields = request(BAD);
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let prio = [0x80, 0, 0, 0, 15];
    let mut payload = vec![7u8];
    payload.extend(prio);
    payload.extend(&block);
    payload.extend([0u8; 7]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS,
        5,
        &payload,
    ));
    let f = frames(&rewrite(&input).unwrap());
    assert_eq!(f[0].flags, FLAG_PRIORITY | FLAG_END_HEADERS);
    assert_eq!(f[0].payload[..5], prio);
    assert_eq!(
        decode_fresh(&f[0].payload[5..]),
        with_authority(&fields, b"localhost")
    );

    // Padding longer than what is left is refused.
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_PADDED | FLAG_END_HEADERS,
        5,
        &[200, 0x82],
    ));
    assert_eq!(
        rewrite(&input).unwrap_err(),
        AuthorityError::BadPadding {
            stream: 5,
            pad: 200
        }
    );
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_PRIORITY | FLAG_END_HEADERS,
        5,
        &[1, 2],
    ));
    assert!(matches!(
        rewrite(&input).unwrap_err(),
        AuthorityError::HeadersTooShort { stream: 5, len: 2 }
    ));
}

#[test]
fn the_clients_dynamic_table_is_followed_across_requests() {
    // The client's encoder indexes the fields of the first request whose
    // names are not in the static table ("te"); the second refers to them in
    // its dynamic table; the third follows a size update that evicts all.
    let mut enc = loona_hpack::Encoder::new();
    let fields = request(BAD);
    let first = encode(&mut enc, &fields);
    let second = encode(&mut enc, &fields);
    assert!(
        second.len() < first.len(),
        "the second block refers to the table"
    );
    let mut third = vec![0x20]; // size update to 0
    third.extend(encode(
        &mut loona_hpack::Encoder::new(),
        &request(b"example.org"),
    ));
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &first));
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &second));
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &third));
    let f = frames(&rewrite(&input).unwrap());
    let fixed = with_authority(&fields, b"localhost");
    assert_eq!(decode_fresh(&f[0].payload), fixed);
    assert_eq!(decode_fresh(&f[1].payload), fixed);
    assert_eq!(decode_fresh(&f[2].payload), request(b"example.org"));

    // A reference past the table is an HPACK error, and so is a size update
    // above the server's table size.
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 70]));
    assert!(matches!(
        rewrite(&input),
        Err(AuthorityError::Hpack { stream: 1, .. })
    ));
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &[0x3f, 0xe1, 0x3f, 0x82],
    ));
    assert!(matches!(
        rewrite(&input),
        Err(AuthorityError::Hpack { stream: 1, .. })
    ));
}

#[test]
fn an_oversized_block_is_split_into_frames_of_16k_and_a_huge_one_refused() {
    let mut fields = request(BAD);
    fields.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let mut input = PREFACE.to_vec();
    let (a, b) = block.split_at(16_000);
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_STREAM | FLAG_PRIORITY,
        1,
        &[&[0, 0, 0, 0, 1][..], a].concat(),
    ));
    let (b, c) = b.split_at(MAX_FRAME);
    input.extend(frame(FRAME_CONTINUATION, 0, 1, b));
    input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c));
    let f = frames(&rewrite(&input).unwrap());
    assert_eq!(f.len(), 3);
    assert_eq!(f[0].flags, FLAG_END_STREAM | FLAG_PRIORITY);
    assert_eq!(f[0].payload.len(), MAX_FRAME);
    assert_eq!(
        (f[1].kind, f[1].flags, f[1].payload.len()),
        (FRAME_CONTINUATION, 0, MAX_FRAME)
    );
    assert_eq!(
        (f[2].kind, f[2].flags),
        (FRAME_CONTINUATION, FLAG_END_HEADERS)
    );
    let joined: Vec<u8> = [&f[0].payload[5..], &f[1].payload, &f[2].payload].concat();
    assert_eq!(decode_fresh(&joined), with_authority(&fields, b"localhost"));

    // Over the encoded limit: refused when the frame header says so.
    let limits = Limits {
        block: 30_000,
        ..Limits::default()
    };
    let mut r = Rewriter::new(limits);
    let mut out = Vec::new();
    assert_eq!(
        r.feed(&input, &mut out).unwrap_err(),
        AuthorityError::BlockTooLarge {
            stream: 1,
            limit: 30_000
        }
    );

    // A header frame over the default maximum frame size.
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &vec![0u8; MAX_FRAME + 1],
    ));
    assert_eq!(
        rewrite(&input).unwrap_err(),
        AuthorityError::FrameTooLarge {
            stream: 1,
            len: MAX_FRAME + 1
        }
    );

    // A small block that references a big table entry many times.
    let mut enc = loona_hpack::Encoder::new();
    let big = vec![(b"x-big".to_vec(), vec![b'b'; 3000])];
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &encode(&mut enc, &big),
    ));
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        3,
        &[0x80 | 62; 1000],
    ));
    assert_eq!(
        rewrite(&input).unwrap_err(),
        AuthorityError::DecodedTooLarge {
            stream: 3,
            limit: 256 * 1024
        }
    );
}

#[test]
fn broken_streams_are_named() {
    assert_eq!(
        rewrite(b"GET / HTTP/1.1\r\n").unwrap_err(),
        AuthorityError::BadPreface { offset: 0 }
    );
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
    assert_eq!(
        rewrite(&input).unwrap_err(),
        AuthorityError::UnexpectedContinuation { stream: 1 }
    );
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
    input.extend(SETTINGS);
    assert_eq!(
        rewrite(&input).unwrap_err(),
        AuthorityError::ExpectedContinuation {
            stream: 1,
            kind: 0x4
        }
    );
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
    input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &[0x82]));
    assert_eq!(
        rewrite(&input).unwrap_err(),
        AuthorityError::ContinuationStreamMismatch {
            stream: 3,
            block: 1
        }
    );
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 0, &[0x82]));
    assert_eq!(
        rewrite(&input).unwrap_err(),
        AuthorityError::HeadersOnStreamZero
    );
}

#[tokio::test]
async fn the_stream_rewrites_reads_passes_writes_and_forwards_connect_info() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tonic::transport::server::Connected as _;

    let (a, mut client) = tokio::net::UnixStream::pair().unwrap();
    let mut s = AuthorityFix::new(a, "test");
    let info = s.connect_info();
    // SAFETY: trivial libc getter.
    let uid = unsafe { libc::getuid() };
    assert_eq!(info.peer_cred.map(|c| c.uid()), Some(uid));

    let fields = request(BAD);
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
    let expected = rewrite(&input).unwrap();
    // In two writes, the second mid-frame.
    client.write_all(&input[..30]).await.unwrap();
    client.write_all(&input[30..]).await.unwrap();
    drop(client.shutdown().await);
    let mut got = Vec::new();
    s.write_all(b"server bytes").await.unwrap();
    let mut reply = [0u8; 12];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"server bytes");
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, expected);

    // Garbage ends the connection with an error naming it.
    let (a, mut client) = tokio::net::UnixStream::pair().unwrap();
    let mut s = AuthorityFix::new(a, "test");
    client.write_all(b"PRI * HTTP/1.1\r\n").await.unwrap();
    let e = s.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("preface"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes, raw or after a valid preface, never panic.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        preface in any::<bool>(),
        cut in 0usize..4096,
    ) {
        let mut r = Rewriter::new(Limits { block: 2048, decoded: 4096, table: 4096 });
        let mut out = Vec::new();
        let input = if preface { [&PREFACE[..], &bytes].concat() } else { bytes };
        let (a, b) = input.split_at(cut.min(input.len()));
        let _ = r.feed(a, &mut out).and_then(|()| r.feed(b, &mut out));
    }

    /// Frame-shaped input (valid headers, arbitrary kinds, flags and
    /// payloads, header blocks of random HPACK bytes) never panics either,
    /// and whatever succeeds comes out as whole frames.
    #[test]
    fn arbitrary_frames_never_panic(
        frames_in in proptest::collection::vec(
            (prop_oneof![Just(0x0u8), Just(0x1), Just(0x4), Just(0x9), any::<u8>()],
             any::<u8>(), 0u32..4, proptest::collection::vec(any::<u8>(), 0..300)),
            0..12),
    ) {
        let mut input = PREFACE.to_vec();
        for (kind, flags, stream, payload) in &frames_in {
            input.extend(frame(*kind, *flags, *stream, payload));
        }
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        if r.feed(&input, &mut out).is_ok() {
            let _ = frames(&out);
        }
    }
}
