#!/usr/bin/python3
"""MSE interop: packtrack-mse against libtorrent (Debian python3-libtorrent).

    mse_libtorrent.py --tool PATH --case out|in --crypto rc4|plain

Makes a small v1 torrent in a temp dir and a libtorrent session on 127.0.0.1
that allows encrypted connections only (in/out_enc_policy = pe_forced) at one
level (allowed_enc_level = pe_rc4 or pe_plaintext). The MSE SKEY is the torrent's
info-hash.
  out: `packtrack-mse connect` (our initiator) sends a BitTorrent handshake through
       the stream; libtorrent must answer with its own for the same info-hash.
  in:  libtorrent connect_peer()s to `packtrack-mse listen` (our receiver); its
       BitTorrent handshake must come out intact; ours goes back, and libtorrent
       must then list us as a peer connected with the expected encryption.
Prints one JSON line: {"ok": bool, "error": str, ...}. Exit status 0 when ok, 1
when not, 3 when libtorrent cannot be imported. Every wait is bounded; the only
process it kills is the packtrack-mse it started.
"""
import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time

try:
    import libtorrent as lt
except ImportError as e:  # a failure, never a skip: scripts/deps.sh installs it
    print(json.dumps({"ok": False, "error": f"cannot import libtorrent: {e}"}))
    sys.exit(3)

PROTO = b"\x13BitTorrent protocol"
STEP_TIMEOUT = 20.0


def bt_handshake(info_hash, peer_id):
    return PROTO + bytes(8) + info_hash + peer_id


def make_torrent(tmp):
    data_dir = os.path.join(tmp, "seed")
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "payload.bin"), "wb") as f:
        f.write(os.urandom(64 * 1024))
    fs = lt.file_storage()
    lt.add_files(fs, data_dir)
    ct = lt.create_torrent(fs, 16 * 1024, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, tmp)
    ti = lt.torrent_info(ct.generate())
    return ti, tmp


def make_session(level):
    s = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,  # TCP only: MSE runs over TCP
        "enable_incoming_utp": False,
        "out_enc_policy": int(lt.enc_policy.pe_forced),
        "in_enc_policy": int(lt.enc_policy.pe_forced),
        "allowed_enc_level": int(level),
        "prefer_rc4": level == lt.enc_level.pe_rc4,
        "alert_mask": int(lt.alert.category_t.error_notification
                          | lt.alert.category_t.peer_notification
                          | lt.alert.category_t.connect_notification),
    }
    return lt.session(s)


def add_torrent(ses, ti, save_path):
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = save_path
    atp.flags &= ~(lt.torrent_flags.paused | lt.torrent_flags.auto_managed)
    h = ses.add_torrent(atp)
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        st = h.status()
        if st.state in (lt.torrent_status.seeding, lt.torrent_status.downloading,
                        lt.torrent_status.finished):
            return h
        time.sleep(0.05)
    raise RuntimeError(f"torrent stuck in state {h.status().state}")


def read_exact(stream, n, timeout):
    buf = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def read_line(stream, timeout):
    buf = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        c = os.read(fd, 1)
        if not c:
            break
        buf += c
    return buf.decode(errors="replace")


def drain_alerts(ses):
    return [f"{type(a).__name__}: {a.message()}" for a in ses.pop_alerts()]


def wait_peer(h, peer_id, timeout):
    """The peer_info libtorrent keeps for peer_id, once it has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in h.get_peer_info():
            if bytes(p.pid.to_bytes()) == peer_id:
                return p
        time.sleep(0.05)
    return None


def enc_flags(p):
    return {"rc4": bool(p.flags & lt.peer_info.rc4_encrypted),
            "plaintext": bool(p.flags & lt.peer_info.plaintext_encrypted)}


def run(args):
    level = lt.enc_level.pe_rc4 if args.crypto == "rc4" else lt.enc_level.pe_plaintext
    result = {"case": args.case, "crypto": args.crypto, "ok": False}
    proc = None
    with tempfile.TemporaryDirectory(prefix="pt-mse-lt-") as tmp:
        ti, seed_dir = make_torrent(tmp)
        ih = ti.info_hashes().v1.to_bytes()
        ses = make_session(level)
        save = seed_dir if args.case == "out" else os.path.join(tmp, "empty")
        os.makedirs(save, exist_ok=True)
        h = add_torrent(ses, ti, save)
        our_id = b"-PT0001-" + os.urandom(12)
        try:
            if args.case == "out":
                port = ses.listen_port()
                proc = subprocess.Popen(
                    [args.tool, "connect", "127.0.0.1", str(port), "--skey", ih.hex(),
                     "--crypto", args.crypto, "--timeout", "20"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                proc.stdin.write(bt_handshake(ih, our_id))
                proc.stdin.flush()
                reply = read_exact(proc.stdout, 68, STEP_TIMEOUT)
                result["reply_len"] = len(reply)
                if len(reply) < 68 or not reply.startswith(PROTO) or reply[28:48] != ih:
                    raise RuntimeError(f"no BitTorrent handshake back from libtorrent: {reply[:68].hex()}")
            else:
                proc = subprocess.Popen(
                    [args.tool, "listen", "0", "--skey", ih.hex(), "--crypto", args.crypto,
                     "--timeout", "20"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                line = read_line(proc.stderr, STEP_TIMEOUT)
                if "listening on" not in line:
                    raise RuntimeError(f"packtrack-mse did not listen: {line!r}")
                port = int(line.strip().rsplit(":", 1)[1])
                h.connect_peer(("127.0.0.1", port))
                got = read_exact(proc.stdout, 68, STEP_TIMEOUT)
                result["received_len"] = len(got)
                if len(got) < 68 or not got.startswith(PROTO) or got[28:48] != ih:
                    raise RuntimeError(f"libtorrent's BitTorrent handshake not received intact: {got.hex()}")
                proc.stdin.write(bt_handshake(ih, our_id))
                proc.stdin.flush()
            peer = wait_peer(h, our_id, STEP_TIMEOUT)
            if peer is None:
                raise RuntimeError("libtorrent never listed our peer")
            result["libtorrent_sees"] = enc_flags(peer)
            want = "rc4" if args.crypto == "rc4" else "plaintext"
            if not result["libtorrent_sees"][want]:
                raise RuntimeError(f"libtorrent's peer flags do not say {want}: {result['libtorrent_sees']}")
            result["ok"] = True
        except Exception as e:  # reported in the verdict
            result["error"] = str(e)
        finally:
            if proc is not None:
                proc.kill()  # the one process we started, by its handle
                try:
                    _, err = proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    err = b""
                result["tool_stderr"] = err.decode(errors="replace")[-400:]
            result["alerts"] = drain_alerts(ses)[-8:]
            del ses
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--case", choices=["out", "in"], required=True)
    ap.add_argument("--crypto", choices=["rc4", "plain"], required=True)
    args = ap.parse_args()
    res = run(args)
    print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
