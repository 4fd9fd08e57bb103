#!/bin/bash
# Makes the fixed PKI of the `cert` fuzz target once (its DER files are
# committed; run again only to replace them, then commit the new ones and
# the new seeds): a root CA (ECDSA P-256), an intermediate CA (RSA-2048)
# and end entities with ECDSA P-256, RSA-2048 and Ed25519 keys, all valid
# until 2126 (the target validates at a fixed time in 2030), in
# fuzz/pki/*.der; and seeds for fuzz/seeds/cert (the input layout is the
# target's doc): each end entity's chain, AUTH payloads of each method
# over the target's fixed octets, a CERTREQ naming both CAs, a
# certificate with its AUTH. The private keys stay in a temporary
# directory and are deleted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seeds=$here/../seeds/cert
mkdir -p "$seeds"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# The signed octets of fuzz_targets/cert.rs (MSG).
printf 'mobike-agent cert fuzz: signed octets' > msg

cert() { # NAME SUBJECT ISSUER EXT
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%b' "$4" > "$1.ext"
  if [ "$3" = self ]; then
    openssl x509 -req -in "$1.csr" -key "$1.key" -days 36500 -extfile "$1.ext" -out "$1.pem"
  else
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
      -days 36500 -extfile "$1.ext" -out "$1.pem"
  fi
  openssl x509 -in "$1.pem" -outform DER -out "$here/$1.der"
}
ca='basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n'
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out root.key
cert root "/C=CH/O=mobike fuzz/CN=Root CA" self "$ca"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out int.key
cert int "/C=CH/O=mobike fuzz/CN=Intermediate CA" root "$ca"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key
cert ec "/C=CH/O=mobike fuzz/CN=ec.test" int \
  'subjectAltName=DNS:ec.test,email:vpn@ec.test,IP:192.0.2.1\nkeyUsage=critical,digitalSignature\n'
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key
cert rsa "/C=CH/O=mobike fuzz/CN=rsa.test" int \
  'subjectAltName=DNS:rsa.test\nkeyUsage=critical,digitalSignature\n'
openssl genpkey -algorithm ED25519 -out ed.key
cert ed "/C=CH/O=mobike fuzz/CN=ed.test" int \
  'subjectAltName=DNS:ed.test\nkeyUsage=critical,digitalSignature\n'

openssl dgst -sha256 -sign ec.key -out ec.sig msg
openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 \
  -sign rsa.key -out rsa-pss.sig msg
openssl dgst -sha1 -sign rsa.key -out rsa-sha1.sig msg
openssl pkeyutl -sign -rawin -inkey ed.key -in msg -out ed.sig

python3 - "$here" "$seeds" <<'PY'
import hashlib, struct, subprocess, sys
here, seeds = sys.argv[1:]
der = lambda n: open(f"{here}/{n}.der", "rb").read()
sig = lambda n: open(f"{n}.sig", "rb").read()
item = lambda b: struct.pack(">H", len(b)) + b
def auth14(alg, s):
    return bytes([len(alg)]) + alg + s
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
ED25519 = bytes.fromhex("300506032b6570")
PSS_SHA256 = bytes.fromhex(
    "304106092a864886f70d01010a3034a00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120")
def fixed(s):  # ECDSA-Sig-Value DER -> r || s (RFC 4754 §7), 32 octets each
    assert s[0] == 0x30
    i = 2
    out = b""
    for _ in range(2):
        assert s[i] == 0x02
        n = s[i + 1]
        v = s[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out
def spki_sha1(n):
    p = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", f"{here}/{n}.der",
                        "-pubkey", "-noout"], capture_output=True, check=True).stdout
    d = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=p,
                       capture_output=True, check=True).stdout
    return hashlib.sha1(d).digest()
seed = {
    "chain-ec": b"\0" + item(der("ec")) + item(der("int")),
    "chain-rsa": b"\0" + item(der("rsa")) + item(der("int")),
    "chain-ed": b"\0" + item(der("ed")) + item(der("int")),
    "chain-root-only": b"\0" + item(der("root")),
    "auth-14-ecdsa": b"\1\x0e" + auth14(ECDSA_SHA256, sig("ec")),
    "auth-14-pss": b"\1\x0e" + auth14(PSS_SHA256, sig("rsa-pss")),
    "auth-14-ed25519": b"\1\x0e" + auth14(ED25519, sig("ed")),
    "auth-1-rsa-sha1": b"\1\x01" + sig("rsa-sha1"),
    "auth-9-ecdsa": b"\1\x09" + fixed(sig("ec")),
    "certreq": b"\2" + spki_sha1("root") + spki_sha1("int"),
    "cert-auth-ec": b"\3" + item(der("ec")) + b"\x0e" + auth14(ECDSA_SHA256, sig("ec")),
    "cert-auth-rsa": b"\3" + item(der("rsa")) + b"\x01" + sig("rsa-sha1"),
}
for name, data in seed.items():
    open(f"{seeds}/{name}", "wb").write(data)
PY
echo "made $(ls "$here"/*.der | wc -l) certificates and $(ls "$seeds" | wc -l) seeds"
