//! Lets stock gRPC clients talk to the daemons' Unix sockets: a connection
//! adapter that rewrites an HTTP/2 `:authority` that is not a valid URI
//! authority (a socket path such as `/run/trigger-db/trigger.sock`, or its
//! %-encoded form) to `localhost` before hyper/h2 sees it.
//!
//! Why: gRPC C-core (Python's grpcio, Ruby, PHP...) since 1.57, grpc-java
//! and some grpcurl/Go releases send the socket path as `:authority` when
//! they dial `unix:` targets. h2, under tonic and hyper, converts the
//! authority with `http::uri::Authority` and answers a malformed one with
//! `RST_STREAM(PROTOCOL_ERROR)`; h2 has no option to accept it (the upstream
//! change, hyperium/h2#487, is still open). On a Unix socket the authority
//! carries no meaning for the daemons, so a fixed `localhost` loses nothing.
//!
//! What it does: [`AuthorityFix`] wraps an accepted stream. The
//! server-to-client direction passes through untouched. In the
//! client-to-server direction [`Rewriter`] checks the connection preface,
//! walks the frame headers, and passes every frame through unchanged but
//! the header blocks (HEADERS and its CONTINUATIONs): those it
//! HPACK-decodes (padding and priority honoured, the client's dynamic
//! table and its size updates followed by [`loona_hpack::Decoder`]),
//! replaces an invalid `:authority`, and re-encodes as literals without
//! indexing, split into HEADERS + CONTINUATION frames of at most 16,384
//! bytes (the default SETTINGS_MAX_FRAME_SIZE, which the daemons do not
//! raise). Because every block is re-encoded without indexing, h2's own
//! HPACK table stays empty and can never disagree with the client's.
//!
//! What it does not: it does not check anything else of HTTP/2 (h2 does);
//! it drops HEADERS padding (padding is not flow-controlled, so nothing
//! else changes); it leaves PUSH_PROMISE (which a client must not send)
//! to h2 to refuse. A malformed preface, frame sequence or header block
//! ends the connection with an [`AuthorityError`], logged once; so does a
//! header frame over 16,384 bytes (h2 would refuse it the same way).
//!
//! Hand-written parts: the frame walk (9-byte headers; no maintained crate
//! exposes an HTTP/2 frame parser separately from a whole connection
//! state machine) and the literal-without-indexing representation of the
//! re-encoded fields (`loona_hpack::Encoder` always indexes new fields,
//! which would fill h2's table); the HPACK integers and the whole decoder,
//! Huffman included, are `loona_hpack`'s.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload a client may send while the server keeps the
/// default SETTINGS_MAX_FRAME_SIZE; re-encoded blocks are split to it.
pub const MAX_FRAME: usize = 16_384;
/// What replaces an invalid `:authority`.
pub const REPLACEMENT: &[u8] = b"localhost";

const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// What was wrong with a client's byte stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("not an HTTP/2 client connection preface (byte {offset} differs)")]
    BadPreface { offset: usize },
    #[error("HEADERS on stream 0")]
    HeadersOnStreamZero,
    #[error("stream {stream}: a {kind:#x} frame arrived while a header block awaited CONTINUATION")]
    ExpectedContinuation { stream: u32, kind: u8 },
    #[error("stream {stream}: CONTINUATION without a header block in progress")]
    UnexpectedContinuation { stream: u32 },
    #[error("stream {stream}: CONTINUATION for another stream than the header block's ({block})")]
    ContinuationStreamMismatch { stream: u32, block: u32 },
    #[error(
        "stream {stream}: HEADERS frame of {len} bytes too short for its padding/priority fields"
    )]
    HeadersTooShort { stream: u32, len: usize },
    #[error("stream {stream}: padding of {pad} bytes exceeds the HEADERS payload")]
    BadPadding { stream: u32, pad: usize },
    #[error("stream {stream}: header frame of {len} bytes exceeds the maximum frame size (16,384)")]
    FrameTooLarge { stream: u32, len: usize },
    #[error("stream {stream}: header block exceeds {limit} bytes")]
    BlockTooLarge { stream: u32, limit: usize },
    #[error("stream {stream}: decoded header list exceeds {limit} bytes")]
    DecodedTooLarge { stream: u32, limit: usize },
    #[error("stream {stream}: HPACK: {reason}")]
    Hpack { stream: u32, reason: String },
}

/// Bounds on what one connection may make the adapter hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A header block's encoded size (HEADERS + CONTINUATION fragments).
    pub block: usize,
    /// A header list's decoded size, counted as HPACK does (name + value +
    /// 32 per field). hyper's own limit (16 KiB by default) is lower: it
    /// still decides, with its usual per-stream answer.
    pub decoded: usize,
    /// The largest dynamic table the client may ask for: the server's
    /// SETTINGS_HEADER_TABLE_SIZE, 4,096 unless the server changes it (the
    /// daemons do not).
    pub table: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            block: 256 * 1024,
            decoded: 256 * 1024,
            table: 4096,
        }
    }
}

#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server half, without I/O: bytes in, rewritten bytes out.
pub struct Rewriter {
    limits: Limits,
    /// Preface bytes checked so far.
    preface: usize,
    /// A partial frame header, or a whole HEADERS/CONTINUATION frame being
    /// collected (header first).
    pending: Vec<u8>,
    /// The payload length of the header-block frame in `pending`.
    frame_len: Option<usize>,
    /// Payload bytes of a pass-through frame still to copy.
    passthrough: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    rewritten: u64,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("limits", &self.limits)
            .field("preface", &self.preface)
            .field("pending", &self.pending.len())
            .field("passthrough", &self.passthrough)
            .field("block", &self.block.as_ref().map(|b| b.stream))
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Whether h2 would accept `value` as `:authority`.
pub fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

impl Rewriter {
    pub fn new(limits: Limits) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(limits.table);
        Self {
            limits,
            preface: 0,
            pending: Vec::new(),
            frame_len: None,
            passthrough: 0,
            block: None,
            decoder,
            rewritten: 0,
        }
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Consumes `input`, appending what the server is to read to `out`.
    /// Bytes of an incomplete frame are kept for the next call. After an
    /// error the connection must be closed: the state is undefined.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        while !input.is_empty() {
            if self.preface < PREFACE.len() {
                let n = input.len().min(PREFACE.len() - self.preface);
                let want = &PREFACE[self.preface..self.preface + n];
                if let Some(i) = input[..n].iter().zip(want).position(|(a, b)| a != b) {
                    return Err(AuthorityError::BadPreface {
                        offset: self.preface + i,
                    });
                }
                out.extend_from_slice(&input[..n]);
                self.preface += n;
                input = &input[n..];
            } else if self.passthrough > 0 {
                let n = input.len().min(self.passthrough);
                out.extend_from_slice(&input[..n]);
                self.passthrough -= n;
                input = &input[n..];
            } else if let Some(len) = self.frame_len {
                let n = input.len().min(9 + len - self.pending.len());
                self.pending.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.pending.len() == 9 + len {
                    self.frame_len = None;
                    let frame = std::mem::take(&mut self.pending);
                    self.header_frame(&frame, out)?;
                }
            } else {
                let n = input.len().min(9 - self.pending.len());
                self.pending.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.pending.len() == 9 {
                    self.frame_header(out)?;
                }
            }
        }
        Ok(())
    }

    /// A whole 9-byte frame header is in `pending`.
    fn frame_header(&mut self, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let h = &self.pending;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let kind = h[3];
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        match (kind, &self.block) {
            (FRAME_HEADERS | FRAME_CONTINUATION, _) => {
                if kind == FRAME_CONTINUATION && self.block.is_none() {
                    return Err(AuthorityError::UnexpectedContinuation { stream });
                }
                if kind == FRAME_HEADERS
                    && let Some(b) = &self.block
                {
                    return Err(AuthorityError::ExpectedContinuation {
                        stream: b.stream,
                        kind,
                    });
                }
                // h2 would refuse it too (FRAME_SIZE_ERROR): the daemons keep
                // the default SETTINGS_MAX_FRAME_SIZE.
                if len > MAX_FRAME {
                    return Err(AuthorityError::FrameTooLarge { stream, len });
                }
                let so_far = self.block.as_ref().map_or(0, |b| b.fragment.len());
                if so_far + len > self.limits.block {
                    return Err(AuthorityError::BlockTooLarge {
                        stream,
                        limit: self.limits.block,
                    });
                }
                self.frame_len = Some(len);
                if len == 0 {
                    self.frame_len = None;
                    let frame = std::mem::take(&mut self.pending);
                    self.header_frame(&frame, out)?;
                }
            }
            (_, Some(b)) => {
                return Err(AuthorityError::ExpectedContinuation {
                    stream: b.stream,
                    kind,
                });
            }
            (_, None) => {
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                self.passthrough = len;
            }
        }
        Ok(())
    }

    /// `frame` is a whole HEADERS or CONTINUATION frame, header included.
    fn header_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        if kind == FRAME_HEADERS {
            if stream == 0 {
                return Err(AuthorityError::HeadersOnStreamZero);
            }
            let mut rest = payload;
            let mut pad = 0;
            let short = || AuthorityError::HeadersTooShort {
                stream,
                len: payload.len(),
            };
            if flags & FLAG_PADDED != 0 {
                let (&p, r) = rest.split_first().ok_or_else(short)?;
                pad = usize::from(p);
                rest = r;
            }
            let mut priority = None;
            if flags & FLAG_PRIORITY != 0 {
                let (p, r) = rest.split_first_chunk::<5>().ok_or_else(short)?;
                priority = Some(*p);
                rest = r;
            }
            if pad > rest.len() {
                return Err(AuthorityError::BadPadding { stream, pad });
            }
            self.block = Some(Block {
                stream,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                fragment: rest[..rest.len() - pad].to_vec(),
            });
        } else {
            let Some(b) = self.block.as_mut() else {
                return Err(AuthorityError::UnexpectedContinuation { stream });
            };
            if b.stream != stream {
                return Err(AuthorityError::ContinuationStreamMismatch {
                    stream,
                    block: b.stream,
                });
            }
            b.fragment.extend_from_slice(payload);
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.finish(block, out)?;
        }
        Ok(())
    }

    /// Decodes a complete header block, fixes its `:authority` and writes it
    /// out again as HEADERS (+ CONTINUATION).
    fn finish(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let stream = block.stream;
        let limit = self.limits.decoded;
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut over = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > limit {
                    over = true;
                } else {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| AuthorityError::Hpack {
                stream,
                reason: e.to_string(),
            })?;
        if over {
            return Err(AuthorityError::DecodedTooLarge { stream, limit });
        }
        let mut encoded = Vec::with_capacity(size);
        for (name, value) in &fields {
            let value: &[u8] = if name == b":authority" && !is_valid_authority(value) {
                self.rewritten += 1;
                REPLACEMENT
            } else {
                value
            };
            encode_literal(name, value, &mut encoded);
        }
        write_block(stream, block.end_stream, block.priority, &encoded, out);
        Ok(())
    }
}

/// A field as "literal header field without indexing, new name" (RFC 7541
/// §6.2.2), strings without Huffman coding.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        // Writing to a Vec cannot fail.
        let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Writes `block` as one HEADERS frame and as many CONTINUATION frames as
/// it needs, none with a payload over [`MAX_FRAME`].
fn write_block(
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: &[u8],
    out: &mut Vec<u8>,
) {
    let first_room = MAX_FRAME - priority.map_or(0, |p| p.len());
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut flags = 0;
    if end_stream {
        flags |= FLAG_END_STREAM;
    }
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let plen = first.len() + priority.map_or(0, |p| p.len());
    frame_header(plen, FRAME_HEADERS, flags, stream, out);
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, r) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = r;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        frame_header(chunk.len(), FRAME_CONTINUATION, flags, stream, out);
        out.extend_from_slice(chunk);
    }
}

/// An accepted stream whose client-to-server HTTP/2 bytes go through a
/// [`Rewriter`]; writes pass straight through. It forwards tonic's
/// `Connected`, so the connect info (e.g. peer credentials) is the inner
/// stream's.
#[derive(Debug)]
pub struct AuthorityFix<S> {
    inner: S,
    peer: String,
    rewriter: Rewriter,
    /// Rewritten bytes not yet read by the server, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    failed: Option<AuthorityError>,
    eof: bool,
}

const READ_CHUNK: usize = 16 * 1024;

impl<S> AuthorityFix<S> {
    /// Wraps `inner`; `peer` names the client in log lines.
    pub fn new(inner: S, peer: impl Into<String>) -> Self {
        Self::with_limits(inner, peer, Limits::default())
    }

    pub fn with_limits(inner: S, peer: impl Into<String>, limits: Limits) -> Self {
        Self {
            inner,
            peer: peer.into(),
            rewriter: Rewriter::new(limits),
            out: Vec::new(),
            out_pos: 0,
            failed: None,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> S::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Uninitialised: h2 polls its reader until it is Pending, so
            // most reads find nothing, and zeroing 16 KiB for each was a
            // measurable share of a busy server's CPU.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => {
                    let before = this.rewriter.rewritten();
                    if let Err(e) = this.rewriter.feed(rb.filled(), &mut this.out) {
                        tracing::warn!(peer = %this.peer, error = %e,
                            "malformed HTTP/2 from a client; connection closed");
                        this.out.clear();
                        this.out_pos = 0;
                        this.failed = Some(e);
                    } else if before == 0 && this.rewriter.rewritten() > 0 {
                        tracing::debug!(peer = %this.peer,
                            "client sent an invalid :authority (a socket path?); read as localhost");
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
