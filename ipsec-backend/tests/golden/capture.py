#!/usr/bin/python3
"""Re-capture the golden netlink bytes used by ipsec-backend's codec tests.

Run as root on a host with iproute2 and strace:  python3 capture.py
SA dump replies with real ESP SAs need a kernel with esp4/esp6 (the VM):
  tests/vm/run.sh ipsec-backend/tests/golden/capture.py --esp --out DIR
(VM_CARGO_PACKAGES= to skip the cargo build), then copy DIR/*.hex here.
Everything happens in a throw-away network namespace `ipsec-golden-<pid>`.
Each output file holds one netlink message per line as hex (full nlmsghdr
included); lines starting with '#' say how the bytes were produced.

Sources: request bytes are what `ip xfrm ...` (iproute2) passes to sendmsg,
as strace prints them (-X raw -xx); reply/event bytes are what the kernel
hands to recvmsg (dump replies, ALLOCSPI reply, XFRM_MSG_MIGRATE multicast).
The host kernel has no esp4/esp6, so `ip xfrm state add` fails, but it still
sends the request bytes we want.  Stdlib only.
"""
import ipaddress, os, re, socket, struct, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = HERE
NS = "ipsec-golden-%d" % os.getpid()
MSG_RE = re.compile(
    r'\{nlmsg_len=(\d+), nlmsg_type=(0x[0-9a-f]+|\d+), nlmsg_flags=(0x[0-9a-f]+|\d+), '
    r'nlmsg_seq=(\d+), nlmsg_pid=(\d+)\}, (?:"((?:\\x[0-9a-f]{2})*)"|(-?\d+)\])')


def nums(s):
    return int(s, 0)


def strace(args, calls):
    out = subprocess.run(["strace", "-X", "raw", "-e", "trace=" + calls, "-xx", "-s", "65536",
                          "ip", "-n", NS] + args, capture_output=True, text=True)
    msgs = []
    for line in out.stderr.splitlines():
        for m in MSG_RE.finditer(line):
            ln, ty, fl, seq, pid, body, num = m.groups()
            if body is None:  # NLMSG_DONE / ACK: strace prints the int
                payload = struct.pack("=i", int(num))
            else:
                payload = bytes(int(x, 16) for x in body.split("\\x")[1:])
            hdr = struct.pack("=IHHII", int(ln), nums(ty), nums(fl), int(seq), int(pid))
            raw = (hdr + payload)[: int(ln)]
            assert len(raw) == int(ln), (args, len(raw), ln)
            msgs.append((line.split("(")[0], raw))
    return msgs


def write(name, how, msgs):
    with open(os.path.join(OUT, name), "w") as f:
        f.write("# " + how + "\n")
        for m in msgs:
            f.write(m.hex() + "\n")
    print("wrote", name, len(msgs), "message(s)")


def req(args):
    return [raw for call, raw in strace(args, "sendmsg") if call == "sendmsg"]


def ip(*args):
    subprocess.run(["ip", "-n", NS] + list(args), check=True)


def main():
    global OUT
    args = sys.argv[1:]
    if "--out" in args:
        OUT = args[args.index("--out") + 1]
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        run_esp() if "--esp" in args else run()
    finally:
        subprocess.run(["ip", "netns", "del", NS])


def run():
    k20 = "0x" + "11" * 20
    k36 = "0x" + "22" * 36
    sa1 = ["xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
           "spi", "0x1001", "reqid", "1", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", k20, "128"]
    write("sa_add_gcm128_tunnel.hex", "ip " + " ".join(sa1), req(sa1))
    sa2 = ["xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
           "spi", "0x2002", "reqid", "7", "mode", "transport",
           "enc", "cbc(aes)", "0x" + "33" * 32, "auth-trunc", "hmac(sha256)", "0x" + "44" * 32, "128",
           "encap", "espinudp", "4500", "4501", "0.0.0.0",
           "mark", "0x10", "mask", "0xff", "if_id", "0x2a", "replay-window", "64", "flag", "esn"]
    write("sa_add_cbc_hmac_transport_encap.hex", "ip " + " ".join(sa2), req(sa2))
    sa3 = ["xfrm", "state", "add", "src", "2001:db8::1", "dst", "2001:db8::2", "proto", "esp",
           "spi", "0x3003", "reqid", "9", "mode", "beet",
           "aead", "rfc7539esp(chacha20,poly1305)", k36, "128",
           "sel", "src", "10.9.0.1/32", "dst", "10.9.0.2/32"]
    write("sa_add_chacha_beet_v6.hex", "ip " + " ".join(sa3), req(sa3))
    pol = ["xfrm", "policy", "add", "src", "10.1.0.0/24", "dst", "10.2.0.0/24", "dir", "out",
           "priority", "100", "mark", "0x10", "mask", "0xff", "if_id", "0x2a",
           "tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "reqid", "1", "mode", "tunnel"]
    write("policy_add_out_tunnel.hex", "ip " + " ".join(pol), req(pol))
    pol6 = ["xfrm", "policy", "add", "src", "fd00:1::/64", "dst", "fd00:2::/64", "dir", "fwd",
            "priority", "2000",
            "tmpl", "src", "2001:db8::2", "dst", "2001:db8::1", "proto", "esp", "reqid", "3", "mode", "tunnel"]
    write("policy_add_fwd_v6.hex", "ip " + " ".join(pol6), req(pol6))
    # policies exist now (pol + pol6 succeed on the host kernel): dump reply
    dump = [raw for call, raw in strace(["xfrm", "policy", "list"], "recvmsg") if call == "recvmsg"]
    write("policy_dump_reply.hex", "kernel reply to `ip xfrm policy list` (recvmsg), NLMSG_DONE included", dump)
    polget = req(["xfrm", "policy", "get", "src", "10.1.0.0/24", "dst", "10.2.0.0/24", "dir", "out",
                  "mark", "0x10", "mask", "0xff", "if_id", "0x2a"])
    write("policy_get_out.hex", "ip xfrm policy get src 10.1.0.0/24 dst 10.2.0.0/24 dir out mark 0x10 mask 0xff if_id 0x2a", polget)
    write("policy_delete_out.hex", "ip xfrm policy delete src 10.1.0.0/24 dst 10.2.0.0/24 dir out mark 0x10 mask 0xff if_id 0x2a",
          req(["xfrm", "policy", "delete", "src", "10.1.0.0/24", "dst", "10.2.0.0/24", "dir", "out",
               "mark", "0x10", "mask", "0xff", "if_id", "0x2a"]))
    allocspi = strace(["xfrm", "state", "allocspi", "src", "192.0.2.1", "dst", "192.0.2.2",
                       "proto", "esp", "reqid", "5", "mode", "tunnel", "min", "0x100", "max", "0x100"],
                      "sendmsg,recvmsg")
    write("allocspi_req_reply.hex", "ip xfrm state allocspi ... min 0x100 max 0x100: request, then kernel reply (larval SA)",
          [raw for _, raw in allocspi if True][:2])
    write("sa_dump_reply_larval.hex", "kernel reply to `ip xfrm state list` (one larval ESP SA from ALLOCSPI)",
          [raw for call, raw in strace(["xfrm", "state", "list"], "recvmsg") if call == "recvmsg"])
    ip("xfrm", "policy", "add", "src", "10.1.0.0/24", "dst", "10.2.0.0/24", "dir", "out",
       "tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "reqid", "1", "mode", "tunnel")
    write("migrate_event.hex", "kernel XFRM_MSG_MIGRATE multicast (XFRMNLGRP_MIGRATE) after a MIGRATE "
          "10.1.0.0/24->10.2.0.0/24 out, 192.0.2.1/.2 -> 2001:db8::1/::2, reqid 1, with XFRMA_KMADDRESS and XFRMA_ENCAP",
          migrate_event())


def run_esp():
    """ESP SAs exist only on a kernel with esp4/esp6: capture their dump."""
    for m in ("xfrm_user", "esp4", "esp6", "gcm", "authenc", "chacha20poly1305", "cbc", "hmac", "sha256_generic"):
        subprocess.run(["modprobe", m], stderr=subprocess.DEVNULL)
    k20 = "0x" + "11" * 20
    ip("xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x1001",
       "reqid", "1", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", k20, "128",
       "sel", "src", "10.1.0.0/24", "dst", "10.2.0.0/24")
    ip("xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x2002",
       "reqid", "7", "mode", "transport", "enc", "cbc(aes)", "0x" + "33" * 32,
       "auth-trunc", "hmac(sha256)", "0x" + "44" * 32, "128",
       "encap", "espinudp", "4500", "4501", "0.0.0.0", "mark", "0x10", "mask", "0xff",
       "if_id", "0x2a", "replay-window", "64", "flag", "esn")
    ip("xfrm", "state", "add", "src", "2001:db8::1", "dst", "2001:db8::2", "proto", "esp", "spi", "0x3003",
       "reqid", "9", "mode", "beet", "aead", "rfc7539esp(chacha20,poly1305)", "0x" + "22" * 36, "128",
       "sel", "src", "10.9.0.1/32", "dst", "10.9.0.2/32")
    write("sa_dump_reply_esp.hex", "kernel reply to `ip xfrm state list` with three ESP SAs (gcm tunnel; "
          "cbc+hmac transport espinudp 4500/4501 mark 0x10/0xff if_id 42 esn window 64; chacha BEET v6), "
          "captured in the VM (Debian kernel)",
          [raw for call, raw in strace(["xfrm", "state", "list"], "recvmsg") if call == "recvmsg"])
    write("sa_get_reply_esp.hex", "`ip xfrm state get dst 192.0.2.2 proto esp spi 0x1001`: request and kernel reply (VM)",
          [raw for _, raw in strace(["xfrm", "state", "get", "dst", "192.0.2.2", "proto", "esp", "spi", "0x1001"],
                                    "sendmsg,recvmsg")][:2])


def migrate_event():
    """Send one MIGRATE (own bytes) inside NS and record the kernel multicast."""
    code = r'''
import ipaddress, socket, struct, sys
def a16(a):
    ip = ipaddress.ip_address(a); return ip.packed.ljust(16, b"\0"), (2 if ip.version == 4 else 10)
lis = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 6); lis.bind((0, 1 << 6))
sel = struct.pack("=16s16sHHHHHBBB3xiI", a16("10.2.0.0")[0], a16("10.1.0.0")[0], 0, 0, 0, 0, 2, 24, 24, 0, 0, 0)
body = sel + struct.pack("=IB3x", 0, 1)
def nla(t, b):
    x = struct.pack("=HH", 4 + len(b), t) + b; return x + b"\0" * ((4 - len(x) % 4) % 4)
m = struct.pack("=16s16s16s16sBBHIHH", a16("192.0.2.2")[0], a16("192.0.2.1")[0], a16("2001:db8::2")[0], a16("2001:db8::1")[0], 50, 1, 0, 1, 2, 10)
km = struct.pack("=16s16sIHH", a16("2001:db8::1")[0], a16("2001:db8::2")[0], 0, 10, 0)
encap = struct.pack("=HHH2x16s", 2, socket.htons(4500), socket.htons(4500), b"\0" * 16)
payload = body + nla(19, km) + nla(17, m) + nla(4, encap)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 6); s.bind((0, 0))
req = struct.pack("=IHHII", 16 + len(payload), 0x21, 5, 1, 0) + payload
print(req.hex())
s.send(req)
r = s.recv(65536); e = struct.unpack_from("=i", r, 16)[0]; assert e == 0, (e, r[-80:])
print(lis.recv(65536).hex())
'''
    out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", code],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    out = out.stdout.split()
    write("migrate_request.hex", "XFRM_MSG_MIGRATE request as encoded by this script with struct.pack "
          "(iproute2 has no migrate): out 10.1.0.0/24->10.2.0.0/24, 192.0.2.1/.2 -> 2001:db8::1/::2, reqid 1, "
          "XFRMA_KMADDRESS 2001:db8::1/::2, XFRMA_ENCAP espinudp 4500/4500", [bytes.fromhex(out[0])])
    return [bytes.fromhex(out[1])]


if __name__ == "__main__":
    main()
