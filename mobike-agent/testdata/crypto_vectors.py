#!/usr/bin/env python3
"""Independent reference for src/crypto/tests.rs: recomputes the expected
values with Python's hmac/hashlib and pyca/cryptography (RFC 7296 §2.13-§2.17,
RFC 5282, RFC 7634).  Run: python3 testdata/crypto_vectors.py"""
import hashlib, hmac, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

def prf(h, k, d): return hmac.new(k, d, h).digest()
def prf_plus(h, k, s, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = prf(h, k, t + s + bytes([i])); out += t; i += 1
    return out[:n]

ni, nr, gir = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32
spii, spir = 0x0102030405060708, 0x1112131415161718
spis = struct.pack(">QQ", spii, spir)
print("prf_plus_sha256_k01_seed_100", prf_plus(hashlib.sha256, bytes(range(1, 33)), b"seed", 100).hex())
# IKE SA: PRF_HMAC_SHA2_256, AES-GCM-16-256 (36 octets key material)
skeyseed = prf(hashlib.sha256, ni + nr, gir)
km = prf_plus(hashlib.sha256, skeyseed, ni + nr + spis, 3 * 32 + 2 * 36)
sk_d, sk_ei, sk_er, sk_pi, sk_pr = km[:32], km[32:68], km[68:104], km[104:136], km[136:168]
for n, v in [("sk_d", sk_d), ("sk_ei", sk_ei), ("sk_er", sk_er), ("sk_pi", sk_pi), ("sk_pr", sk_pr)]:
    print(n, v.hex())
# PSK AUTH of the initiator
idb = b"\x02\x00\x00\x00" + b"a.test"
msg1 = b"\x44" * 50
auth = prf(hashlib.sha256, prf(hashlib.sha256, b"secret", b"Key Pad for IKEv2"), msg1 + nr + prf(hashlib.sha256, sk_pi, idb))
print("auth_i", auth.hex())
# CHILD_SA KEYMAT, ChaCha20-Poly1305 ESP, no PFS
ck = prf_plus(hashlib.sha256, sk_d, ni + nr, 72)
print("child_i_to_r", ck[:36].hex()); print("child_r_to_i", ck[36:].hex())
# IKE rekey: old PRF sha256, new PRF sha384 + AES-GCM-16-128 (20 octets)
ni2, nr2, gir2 = b"\x55" * 32, b"\x66" * 32, b"\x77" * 32
skeyseed2 = prf(hashlib.sha256, sk_d, gir2 + ni2 + nr2)
km2 = prf_plus(hashlib.sha384, skeyseed2, ni2 + nr2 + struct.pack(">QQ", 5, 6), 3 * 48 + 2 * 20)
print("rekey_sk_d", km2[:48].hex()); print("rekey_sk_pr", km2[-48:].hex())
# AEADs: nonce = salt(4) | iv(8)
iv = bytes(range(1, 9))
k128 = bytes(range(20))
print("gcm128", AESGCM(k128[:16]).encrypt(k128[16:] + iv, b"hello ike", b"aad").hex())
k256 = bytes(range(36))
print("chacha", ChaCha20Poly1305(k256[:32]).encrypt(k256[32:] + iv, b"hello ike", b"aad").hex())
print("gcm256", AESGCM(k256[:32]).encrypt(k256[32:] + iv, b"hello ike", b"aad").hex())
