//! `AuthorityFix` in front of a real tonic server on a Unix socket, with a
//! client that speaks raw HTTP/2 the way grpcio 1.85 does: `:authority` is
//! the %-encoded socket path. Without the adapter h2 answers
//! RST_STREAM(PROTOCOL_ERROR); with it the Health/Check call succeeds.

use std::time::Duration;

use daemon_support::h2_authority::{AuthorityFix, PREFACE};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
};
use tokio_stream::StreamExt as _;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = len[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// What the server answered on stream 1: `Ok(grpc-status)` from the
/// trailers, or `Err(RST_STREAM error code)`.
async fn health_check(sock: &std::path::Path) -> Result<String, u32> {
    let mut c = UnixStream::connect(sock).await.unwrap();
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/grpc.health.v1.Health/Check"),
        (b":authority", b"tmp%2Frepro%2Fs.sock"),
        (b"te", b"trailers"),
        (b"content-type", b"application/grpc"),
    ];
    let block = loona_hpack::Encoder::new().encode(fields);
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4, 1, &block));
    // An empty HealthCheckRequest: a 5-byte gRPC message header.
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    c.write_all(&out).await.unwrap();

    let mut dec = loona_hpack::Decoder::new();
    let mut status = None;
    loop {
        let mut h = [0u8; 9];
        c.read_exact(&mut h).await.unwrap();
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let mut p = vec![0u8; len];
        c.read_exact(&mut p).await.unwrap();
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        match (h[3], stream) {
            (0x4, 0) if h[4] & 1 == 0 => c.write_all(&frame(0x4, 1, 0, &[])).await.unwrap(),
            (0x1, 1) => {
                for (n, v) in dec.decode(&p).unwrap() {
                    if n == b"grpc-status" {
                        status = Some(String::from_utf8(v).unwrap());
                    }
                }
                if h[4] & 1 != 0 {
                    return Ok(status.unwrap_or_default());
                }
            }
            (0x3, 1) => return Err(u32::from_be_bytes([p[0], p[1], p[2], p[3]])),
            _ => {}
        }
    }
}

async fn serve(sock: &std::path::Path, fix: bool) {
    let listener = UnixListener::bind(sock).unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let router = tonic::transport::Server::builder().add_service(health);
    if fix {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener)
            .map(|s| s.map(|s| AuthorityFix::new(s, "test")));
        tokio::spawn(router.serve_with_incoming(incoming));
    } else {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(router.serve_with_incoming(incoming));
    }
}

#[tokio::test]
async fn a_socket_path_authority_is_refused_by_h2_and_served_through_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.sock");
    let fixed = dir.path().join("fixed.sock");
    serve(&plain, false).await;
    serve(&fixed, true).await;
    let t = Duration::from_secs(10);
    // PROTOCOL_ERROR = 1: the bug the adapter exists for.
    assert_eq!(
        tokio::time::timeout(t, health_check(&plain)).await.unwrap(),
        Err(1)
    );
    assert_eq!(
        tokio::time::timeout(t, health_check(&fixed)).await.unwrap(),
        Ok("0".to_owned())
    );
}
