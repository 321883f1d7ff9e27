#!/usr/bin/env python3
"""Fixed test vectors for the derivations ressh and restls define, computed from
the documents' text alone (docs/PROTOCOL.md §3, §5; docs/restls.md §2, §3, §5)
and from RFC 4253 §8 / RFC 8731 for the curve25519-sha256 exchange hash.

Independent of the Rust code on purpose: standard library only, its own SSH
encoders and its own X25519 (RFC 7748 §5, checked against RFC 7748 §6.1).
The Rust tests pin this script's output; regenerate with

    python3 tools/vectors/vectors.py

and compare with the hex constants in the tests of proto/src/kex/mod.rs,
proto/src/resilience.rs and tls/src/secret.rs.
"""

import hashlib
import hmac


def h(x: bytes) -> bytes:
    return hashlib.sha256(x).digest()


def mac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


# RFC 4251 §5 encodings.
def string(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def uint64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def mpint(b: bytes) -> bytes:
    """mpint of the non-negative integer whose unsigned big-endian bytes are b:
    no leading zero bytes, one 0x00 prepended when the top bit is set."""
    b = b.lstrip(b"\0")
    if b and b[0] & 0x80:
        b = b"\0" + b
    return string(b)


# X25519, RFC 7748 §5.
P = 2**255 - 19
A24 = 121665


def x25519(k: bytes, u: bytes) -> bytes:
    k = bytearray(k)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    k = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        kt = (k >> t) & 1
        swap ^= kt
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = kt
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % P, b * b % P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % P, c * b % P
        x3 = (da + cb) ** 2 % P
        z3 = x1 * (da - cb) ** 2 % P
        x2 = aa * bb % P
        z2 = e * (aa + A24 * e) % P
    if swap:
        x2, x3, z2, z3 = x3, x2, z3, z2
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


BASE = (9).to_bytes(32, "little")

# RFC 7748 §6.1, so that this X25519 is known good.
_A = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
_B = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
assert x25519(_A, BASE).hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
assert x25519(_B, BASE).hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
assert x25519(_A, x25519(_B, BASE)).hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


# ---------------------------------------------------------------- docs/PROTOCOL.md


def ssh_rs0(k: bytes, h_: bytes) -> bytes:
    """§3: RS_0 = HASH(mpint K || string H || string "ressh resume secret")."""
    return h(mpint(k) + string(h_) + string(b"ressh resume secret"))


def ssh_token(rs: bytes) -> bytes:
    """§3: T_i = HMAC(RS_i, "ressh resume token")."""
    return mac(rs, b"ressh resume token")


def ssh_mac_c(rs, v_c, i_c, t, q_c, r_c) -> bytes:
    """§5: MAC_C = HMAC(RS_i, "client" || string V_C || string I_C ||
    string T_i || string Q_C || uint64 R_C)."""
    return mac(rs, b"client" + string(v_c) + string(i_c) + string(t) + string(q_c) + uint64(r_c))


def ssh_h_prime(v_c, v_s, i_c, i_s, t, q_c, q_s, r_c, r_s, k2) -> bytes:
    """§5: H' = HASH(string V_C || string V_S || string I_C || string I_S ||
    string T_i || string Q_C || string Q_S || uint64 R_C || uint64 R_S || mpint K')."""
    return h(
        string(v_c) + string(v_s) + string(i_c) + string(i_s) + string(t)
        + string(q_c) + string(q_s) + uint64(r_c) + uint64(r_s) + mpint(k2)
    )


def ssh_mac_s(rs, h2) -> bytes:
    """§5: MAC_S = HMAC(RS_i, "server" || string H')."""
    return mac(rs, b"server" + string(h2))


def ssh_ratchet(rs, h2, k2) -> bytes:
    """§5 step 1: RS_{i+1} = HMAC(RS_i, "ressh ratchet" || string H' || mpint K')."""
    return mac(rs, b"ressh ratchet" + string(h2) + mpint(k2))


def ssh_kex_hash(v_c, v_s, i_c, i_s, k_s, q_c, q_s, k) -> bytes:
    """RFC 8731 §3.1 / RFC 5656 §4 / RFC 4253 §8: H = HASH(string V_C || string V_S ||
    string I_C || string I_S || string K_S || string Q_C || string Q_S || mpint K),
    K being the X25519 output read as an unsigned big-endian integer."""
    return h(
        string(v_c) + string(v_s) + string(i_c) + string(i_s) + string(k_s)
        + string(q_c) + string(q_s) + mpint(k)
    )


def ssh_kex_hash_sha512_string(v_c, v_s, i_c, i_s, k_s, c_init, s_reply, k) -> bytes:
    """The exchange hash of the hybrid methods (sntrup761x25519-sha512,
    draft-ietf-sshm-mlkem-hybrid-kex §2.4): the same fields with the
    client's init and the server's reply bytes as strings, K a string, and
    the method's hash (here SHA-512)."""
    return hashlib.sha512(
        string(v_c) + string(v_s) + string(i_c) + string(i_s) + string(k_s)
        + string(c_init) + string(s_reply) + string(k)
    ).digest()


# ---------------------------------------------------------------- docs/restls.md


def tls_token(rs: bytes) -> bytes:
    """§3: T_i = HMAC(RS_i, "restls token")."""
    return mac(rs, b"restls token")


def tls_hello_mac(rs, t, n) -> bytes:
    """§2: HMAC(RS_i, "restls hello" || T_i || N)."""
    return mac(rs, b"restls hello" + t + n)


def tls_client_resume(rs, e, r_c) -> bytes:
    """§5: HMAC(RS_i, "restls client resume" || E || uint64 R_C)."""
    return mac(rs, b"restls client resume" + e + uint64(r_c))


def tls_server_resume(rs, e, r_s) -> bytes:
    """§5: HMAC(RS_i, "restls server resume" || E || uint64 R_S)."""
    return mac(rs, b"restls server resume" + e + uint64(r_s))


def tls_ratchet(rs, e) -> bytes:
    """§5: RS_{i+1} = HMAC(RS_i, "restls ratchet" || E)."""
    return mac(rs, b"restls ratchet" + e)


# ---------------------------------------------------------------- RFC 4253 §7.2


def ssh_derive(k: bytes, h_: bytes, x: bytes, sid: bytes, n: int) -> bytes:
    """RFC 4253 §7.2: K1 = HASH(K || H || X || session_id), K2 = HASH(K || H || K1),
    ..., K an mpint. After a reconnect: K', H' and the original session id."""
    out = h(mpint(k) + h_ + x + sid)
    while len(out) < n:
        out += h(mpint(k) + h_ + out)
    return out[:n]


def ssh_derive_sha512_string(k: bytes, h_: bytes, x: bytes, sid: bytes, n: int) -> bytes:
    """RFC 4253 §7.2 with SHA-512 and K a string (the hybrid methods)."""
    sha512 = lambda b: hashlib.sha512(b).digest()
    out = sha512(string(k) + h_ + x + sid)
    while len(out) < n:
        out += sha512(string(k) + h_ + out)
    return out[:n]


# ---------------------------------------------------------------- the vectors


def pattern(start: int, n: int = 32) -> bytes:
    return bytes((start + i) & 0xFF for i in range(n))


def main() -> None:
    out = []

    def show(name: str, value) -> None:
        out.append(f"{name} = {value.hex() if isinstance(value, bytes) else value}")

    # Shared secrets of three shapes: a real X25519 output (RFC 7748 §6.1,
    # top bit clear), one with the top bit set (mpint gains a 0x00) and one
    # with leading zero bytes (mpint drops them, then gains a 0x00).
    k_real = x25519(_A, x25519(_B, BASE))
    k_high = pattern(0x80)
    k_zero = b"\0\0" + pattern(0xF0, 30)
    for name, k in (("k_real", k_real), ("k_high", k_high), ("k_zero", k_zero)):
        show(f"{name}", k)
        show(f"{name}.mpint", mpint(k))

    # curve25519-sha256 exchange hash (proto/src/kex/mod.rs).
    v_c = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"
    v_s = b"SSH-2.0-resshd_0.1"
    i_c = b"\x14" + pattern(0x10, 16) + b"client kexinit"
    i_s = b"\x14" + pattern(0x20, 16) + b"server kexinit"
    k_s = string(b"ssh-ed25519") + string(pattern(0x40))
    q_c, q_s = x25519(_A, BASE), x25519(_B, BASE)
    # curve25519-sha256: Q_C and Q_S are RFC 7748 §6.1's public keys.
    show("kex.v_c", v_c.decode())
    show("kex.v_s", v_s.decode())
    show("kex.i_c", i_c)
    show("kex.i_s", i_s)
    show("kex.k_s", k_s)
    show("kex.q_c", q_c)
    show("kex.q_s", q_s)
    for name, k in (("k_real", k_real), ("k_high", k_high), ("k_zero", k_zero)):
        show(f"kex.H({name})", ssh_kex_hash(v_c, v_s, i_c, i_s, k_s, q_c, q_s, k))
    # RFC 4253 §7.2 key derivation, two blocks.
    show("derive(K=01..20, H=11*32, 'C', sid=22*32, 64)",
         ssh_derive(pattern(1), b"\x11" * 32, b"C", b"\x22" * 32, 64))

    # A method with SHA-512 and K as a string (proto/src/kex/mod.rs), the
    # same transcript with longer init and reply bytes; K = k_high, whose
    # string and mpint encodings differ. The derivation takes three blocks.
    c_init, s_reply = pattern(0x90, 64), pattern(0xB0, 48)
    show("kex512.init", c_init)
    show("kex512.reply", s_reply)
    show("kex512.H(k_high)",
         ssh_kex_hash_sha512_string(v_c, v_s, i_c, i_s, k_s, c_init, s_reply, k_high))
    show("derive512(K=string k_high, H=11*64, 'C', sid=22*64, 150)",
         ssh_derive_sha512_string(k_high, b"\x11" * 64, b"C", b"\x22" * 64, 150))

    # docs/PROTOCOL.md §3: RS_0 and T_0 after a first key exchange with
    # exchange hash H.
    h0 = pattern(0x60)
    show("ssh.H", h0)
    for name, k in (("k_real", k_real), ("k_high", k_high), ("k_zero", k_zero)):
        show(f"ssh.RS_0({name})", ssh_rs0(k, h0))
    rs0 = ssh_rs0(k_real, h0)
    t0 = ssh_token(rs0)
    show("ssh.T_0", t0)

    # docs/PROTOCOL.md §5: a reconnect with RS_0.
    e_c, e_s = pattern(0xA0), pattern(0xC0)
    q_c2, q_s2 = x25519(e_c, BASE), x25519(e_s, BASE)
    k2 = x25519(e_s, q_c2)
    assert k2 == x25519(e_c, q_s2)
    r_c, r_s = 0x0102030405060708, 42
    rv_c, rv_s = b"SSH-2.0-ressh_0.1", b"SSH-2.0-resshd_0.1"
    ri_c = b"\x14" + pattern(0x30, 16) + b"reconnect kexinit"
    ri_s = b"\x14" + pattern(0x50, 16) + b"server kexinit"
    show("rc.e_C", e_c)
    show("rc.e_S", e_s)
    show("rc.Q_C", q_c2)
    show("rc.Q_S", q_s2)
    show("rc.K'", k2)
    show("rc.R_C", hex(r_c))
    show("rc.R_S", hex(r_s))
    show("rc.V_C", rv_c.decode())
    show("rc.V_S", rv_s.decode())
    show("rc.I_C", ri_c)
    show("rc.I_S", ri_s)
    show("rc.MAC_C", ssh_mac_c(rs0, rv_c, ri_c, t0, q_c2, r_c))
    h2 = ssh_h_prime(rv_c, rv_s, ri_c, ri_s, t0, q_c2, q_s2, r_c, r_s, k2)
    show("rc.H'", h2)
    show("rc.MAC_S", ssh_mac_s(rs0, h2))
    rs1 = ssh_ratchet(rs0, h2, k2)
    show("rc.RS_1", rs1)
    show("rc.T_1", ssh_token(rs1))
    show("rc.key C->S (K', H', sid = ssh.H, 'C', 32)", ssh_derive(k2, h2, b"C", h0, 32))

    # A first exchange by a hybrid method: K is a hash output (64 bytes for
    # sntrup761x25519-sha512, still an mpint in RS_0), H and so the session
    # id 64 bytes, which the reconnect's derivation takes as they are.
    k64, h64 = pattern(0x80, 64), pattern(0x40, 64)
    show("ssh.RS_0(K = 80..bf, H = 40..7f)", ssh_rs0(k64, h64))
    show("rc.key C->S (K', H', sid = 40..7f, 'C', 32)", ssh_derive(k2, h2, b"C", h64, 32))

    # docs/restls.md: RS_0 stands for Exporter("EXPORTER-restls-secret", 32)
    # of the first connection, E for the binding of the reconnect's one.
    trs0 = pattern(0x00)
    nonce = pattern(0xE0)
    e = pattern(0x80)
    tr_c, tr_s = 0x0102030405060708, 7
    tt0 = tls_token(trs0)
    show("tls.RS_0", trs0)
    show("tls.N", nonce)
    show("tls.E", e)
    show("tls.T_0", tt0)
    show("tls.hello_mac", tls_hello_mac(trs0, tt0, nonce))
    show("tls.client_resume(R_C=0x0102030405060708)", tls_client_resume(trs0, e, tr_c))
    show("tls.server_resume(R_S=7)", tls_server_resume(trs0, e, tr_s))
    trs1 = tls_ratchet(trs0, e)
    show("tls.RS_1", trs1)
    show("tls.T_1", tls_token(trs1))
    print("\n".join(out))


if __name__ == "__main__":
    main()
