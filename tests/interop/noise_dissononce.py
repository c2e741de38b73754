#!/usr/bin/python3
"""Noise interop: python3-dissononce (an independent implementation) against
our engine, which runs as tests/tools/noise_peer (see the protocol in its
header comment). tests/interop/test_noise_interop.c runs this script once per
combination and asserts the one-line JSON verdict it prints on stdout.

  /usr/bin/python3 noise_dissononce.py --peer PATH --pattern XX|IK
      --suite ChaChaPoly_BLAKE2b|AESGCM_SHA256 --ours initiator|responder
      [--prologue-mismatch] [--timeout SECONDS]

Normal mode: full handshake with non-empty payloads in every message, then
transport messages both ways (0 bytes, ~60 KB, others), then a tampered one
each way that must be rejected without desynchronising the session. Checks
both handshake hashes and that each side learned the other's static key.

--prologue-mismatch: the two sides get different prologues; the verdict says
which implementation refused the handshake and at which message. It does not
judge where that must happen; the C test does.

Exit status: 0 verdict ok, 1 verdict not ok, 3 dissononce missing.
Keys, prologue and payloads are random per run.
"""
import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time

try:
    from dissononce.processing.impl.handshakestate import HandshakeState
    from dissononce.processing.impl.symmetricstate import SymmetricState
    from dissononce.processing.impl.cipherstate import CipherState
    from dissononce.processing.handshakepatterns.interactive.XX import XXHandshakePattern
    from dissononce.processing.handshakepatterns.interactive.IK import IKHandshakePattern
    from dissononce.cipher.chachapoly import ChaChaPolyCipher
    from dissononce.cipher.aesgcm import AESGCMCipher
    from dissononce.hash.blake2b import Blake2bHash
    from dissononce.hash.sha256 import SHA256Hash
    from dissononce.dh.x25519.x25519 import X25519DH
    from dissononce.dh.x25519.public import PublicKey
except ImportError as exc:  # the C test turns this into a failure, never a skip
    print(json.dumps({"ok": False, "missing_deps": True,
                      "error": "%s cannot import dissononce (%s): run scripts/deps.sh "
                               "(Debian package python3-dissononce)" % (sys.executable, exc)}))
    sys.exit(3)

TAG_LEN = 16
# (direction, size): "o2d" = our engine encrypts, dissononce decrypts; "d2o" the reverse.
TRANSPORT = [("o2d", 0), ("d2o", 0), ("o2d", 60000), ("o2d", 1), ("d2o", 60000),
             ("d2o", 1), ("d2o", 4096), ("o2d", 4096), ("o2d", 65535 - TAG_LEN),
             ("d2o", 65535 - TAG_LEN)]


class PeerError(Exception):
    """noise_peer answered "err CODE TEXT"."""


class Peer:
    """Our engine in a child process; one command line in, one reply line out."""

    def __init__(self, argv, timeout):
        self.timeout = timeout
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""
        first = self._line()
        if first != "ready":
            raise PeerError("noise_peer did not start: %r" % first)

    def _line(self):
        deadline = time.monotonic() + self.timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("noise_peer gave no reply within %gs" % self.timeout)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise PeerError("noise_peer exited (status %s)" % self.proc.poll())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def cmd(self, name, data=b""):
        """Runs a command; returns the reply's arguments or raises PeerError."""
        self.proc.stdin.write(("%s %s\n" % (name, data.hex())).encode())
        self.proc.stdin.flush()
        reply = self._line().split(" ")
        if reply[0] != "ok":
            raise PeerError(" ".join(reply[1:]))
        return reply[1:]

    def cmd_bytes(self, name, data=b""):
        args = self.cmd(name, data)
        return bytes.fromhex(args[0]) if args and args[0] != "-" else b""

    def close(self, force=False):
        """Asks the peer to quit; kills it when force or when it does not exit."""
        if not force and self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def new_handshake(suite):
    cipher, hashfn = {"ChaChaPoly_BLAKE2b": (ChaChaPolyCipher, Blake2bHash),
                      "AESGCM_SHA256": (AESGCMCipher, SHA256Hash)}[suite]
    return HandshakeState(SymmetricState(CipherState(cipher()), hashfn()), X25519DH())


def run(args, v):
    """Fills the verdict v; returns nothing. Raises on a broken or silent peer."""
    pattern = {"XX": XXHandshakePattern, "IK": IKHandshakePattern}[args.pattern]()
    nmsgs = len(pattern.message_patterns)
    ours_init = args.ours == "initiator"
    dh = X25519DH()
    ours_kp, theirs_kp = dh.generate_keypair(), dh.generate_keypair()
    prologue = b"PackTrack interop " + os.urandom(8)
    their_prologue = prologue[:-1] + bytes([prologue[-1] ^ 1]) if args.prologue_mismatch else prologue

    fail = v["failures"].append

    hs = new_handshake(args.suite)
    hs.initialize(pattern, not ours_init, their_prologue, s=theirs_kp,
                  rs=PublicKey(ours_kp.public.data) if args.pattern == "IK" and not ours_init else None)
    if hs.protocol_name != v["protocol"]:
        fail("dissononce protocol name %s" % hs.protocol_name)

    argv = [args.peer, args.pattern, args.suite, args.ours, prologue.hex(), ours_kp.private.data.hex()]
    if args.pattern == "IK" and ours_init:
        argv.append(theirs_kp.public.data.hex())
    peer = Peer(argv, args.timeout)
    try:
        # ---- handshake -------------------------------------------------------
        split = None
        for i in range(nmsgs):
            ours_writes = (i % 2 == 0) == ours_init
            payload = ("hs%d %s " % (i, "ours" if ours_writes else "dissononce")).encode() \
                + os.urandom(1 + os.urandom(1)[0])
            try:
                if ours_writes:
                    msg = peer.cmd_bytes("write", payload)
                    got = bytearray()
                    try:
                        split = hs.read_message(msg, got)
                    except Exception as exc:  # DecryptFailedException, ValueError, ...
                        v.update(detected_by="dissononce", failed_at=i,
                                 error="%s %s" % (type(exc).__name__, exc))
                        break
                else:
                    msg = bytearray()
                    split = hs.write_message(payload, msg)
                    try:
                        got = peer.cmd_bytes("read", bytes(msg))
                    except PeerError as exc:
                        v.update(detected_by="ours", failed_at=i, error=str(exc))
                        # The engine must now refuse to go on.
                        for c in ("write", "split"):
                            try:
                                peer.cmd(c)
                                fail("ours accepted %r after a failed read" % c)
                            except PeerError:
                                pass
                        break
            except PeerError as exc:
                fail("message %d: ours failed to write: %s" % (i, exc))
                return
            if bytes(got) != payload:
                fail("message %d: payload differs (%d bytes sent, %d received)"
                     % (i, len(payload), len(got)))

        if args.prologue_mismatch:
            if "detected_by" not in v:
                fail("handshake completed despite a prologue mismatch")
            v["ok"] = not v["failures"]
            return
        if "detected_by" in v:
            fail("handshake failed: %s at message %d: %s"
                 % (v["detected_by"], v["failed_at"], v["error"]))
            return
        if split is None:
            fail("dissononce did not split after the last message")
            return
        v["handshake_messages"] = nmsgs

        # ---- handshake results ----------------------------------------------
        if peer.cmd("done") != ["1"]:
            fail("ours does not report the handshake done")
        peer.cmd("split")
        h_ours = peer.cmd_bytes("hash")
        h_theirs = hs.symmetricstate.get_handshake_hash()
        v["hash_ours"], v["hash_dissononce"] = h_ours.hex(), h_theirs.hex()
        if h_ours != h_theirs:
            fail("handshake hashes differ")
        rs_ours = peer.cmd_bytes("remote")
        v["ours_learned_key_ok"] = rs_ours == theirs_kp.public.data
        v["dissononce_learned_key_ok"] = hs.rs is not None and hs.rs.data == ours_kp.public.data
        if not v["ours_learned_key_ok"]:
            fail("ours learned static key %s, dissononce's is %s"
                 % (rs_ours.hex() or "(none)", theirs_kp.public.data.hex()))
        if not v["dissononce_learned_key_ok"]:
            fail("dissononce learned static key %s, ours is %s"
                 % (hs.rs.data.hex() if hs.rs else "(none)", ours_kp.public.data.hex()))

        # ---- transport ------------------------------------------------------
        c1, c2 = split  # c1: initiator -> responder
        d_send, d_recv = (c2, c1) if ours_init else (c1, c2)
        counts = {"o2d": [], "d2o": []}
        for direction, size in TRANSPORT:
            pt = os.urandom(size)
            if direction == "o2d":
                ct = peer.cmd_bytes("encrypt", pt)
                try:
                    got = d_recv.decrypt_with_ad(b"", ct)
                except Exception as exc:
                    fail("o2d %d bytes: dissononce cannot decrypt: %s" % (size, type(exc).__name__))
                    continue
            else:
                ct = d_send.encrypt_with_ad(b"", pt)
                try:
                    got = peer.cmd_bytes("decrypt", ct)
                except PeerError as exc:
                    fail("d2o %d bytes: ours cannot decrypt: %s" % (size, exc))
                    continue
            if len(ct) != size + TAG_LEN or got != pt:
                fail("%s %d bytes: ciphertext %d bytes, plaintext %s"
                     % (direction, size, len(ct), "ok" if got == pt else "differs"))
            counts[direction].append(size)
        v["transport"] = counts

        # ---- a flipped bit each way is rejected; the next message still decrypts
        pt = b"after tamper"
        ct = bytearray(peer.cmd_bytes("encrypt", pt))
        ct[3] ^= 0x40
        try:
            d_recv.decrypt_with_ad(b"", bytes(ct))
            fail("dissononce accepted a tampered message from ours")
        except Exception:
            pass
        ct[3] ^= 0x40
        if d_recv.decrypt_with_ad(b"", bytes(ct)) != pt:
            fail("dissononce: untampered message after a rejected one differs")
        ct = bytearray(d_send.encrypt_with_ad(b"", pt))
        ct[-1] ^= 0x01
        try:
            peer.cmd("decrypt", bytes(ct))
            fail("ours accepted a tampered message from dissononce")
        except PeerError:
            pass
        ct[-1] ^= 0x01
        if peer.cmd_bytes("decrypt", bytes(ct)) != pt:
            fail("ours: untampered message after a rejected one differs")
        v["tamper_checked"] = True
        v["ok"] = not v["failures"]
    except BaseException:  # a timeout or a dead peer: do not wait for it
        peer.close(force=True)
        raise
    finally:
        peer.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer", required=True, help="path of the noise_peer binary")
    ap.add_argument("--pattern", required=True, choices=["XX", "IK"])
    ap.add_argument("--suite", required=True, choices=["ChaChaPoly_BLAKE2b", "AESGCM_SHA256"])
    ap.add_argument("--ours", required=True, choices=["initiator", "responder"])
    ap.add_argument("--prologue-mismatch", action="store_true")
    ap.add_argument("--timeout", type=float, default=30.0, help="per reply, seconds")
    args = ap.parse_args()

    # A backstop for the whole run; each reply also has its own --timeout.
    budget = int(2 * args.timeout) + 5

    def on_alarm(signum, frame):
        raise TimeoutError("whole run exceeded %ds" % budget)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(budget)
    v = {"ok": False, "protocol": "Noise_%s_25519_%s" % (args.pattern, args.suite),
         "ours": args.ours, "mode": "prologue-mismatch" if args.prologue_mismatch else "normal",
         "failures": []}
    try:
        run(args, v)
    except Exception as exc:  # a broken peer, a timeout: still one verdict line
        v["ok"] = False
        v["failures"].append("%s: %s" % (type(exc).__name__, exc))
    signal.alarm(0)
    print(json.dumps(v), flush=True)
    return 0 if v["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
