"""A local unprivileged user flooding trigger-db's socket (run as nobody by
tests/access.rs): opens COUNT connections; on each, one raw HTTP/2 request:
an oversized Query (more than the read verbs' limit) or a Subscribe whose
filter never matches. Prints "ready" once all are sent, holds the
connections until stdin closes, then drops them without a goodbye (the
subscriptions are abandoned). Connections the daemon refuses are counted,
not fatal."""

import socket
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    # HPACK literal header field without indexing, new name, no Huffman.
    name, value = name.encode(), value.encode()
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def headers(path):
    block = b"".join(
        literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "trigger-db"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    return frame(1, 0x4, 1, block)  # HEADERS, END_HEADERS, stream 1


def oversized_query():
    size = 200_000  # past the 64 KiB read limit, within the stream window
    out = [headers("/trigger.v1.TriggerService/Query")]
    body = b"\x00" + struct.pack(">I", size) + b"\x0a" * size
    for at in range(0, 128 * 1024, 16384):
        out.append(frame(0, 0, 1, body[at : at + 16384]))
    return b"".join(out)


def abandoned_subscribe():
    flt = b"\x0a\x07nosuch0"  # TriggerFilter { interfaces: ["nosuch0"] }
    req = b"\x0a" + bytes([len(flt)]) + flt  # SubscribeRequest { filter }
    msg = b"\x00" + struct.pack(">I", len(req)) + req
    return headers("/trigger.v1.TriggerService/Subscribe") + frame(0, 0x1, 1, msg)


def main():
    path, count = sys.argv[1], int(sys.argv[2])
    held, refused = [], 0
    for i in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(path)
            s.sendall(PREFACE + frame(4, 0, 0, b""))
            s.sendall(oversized_query() if i % 2 else abandoned_subscribe())
            held.append(s)
        except OSError:
            refused += 1
            s.close()
    print(f"ready {len(held)} sent {refused} refused", flush=True)
    sys.stdin.read()


main()
