/*
 * outbox.pml - a Promela model of PackTrack's ack / resend / resume machine,
 * checked with spin by scripts/chaos-model.sh (part of `make chaos`).
 *
 * What is modelled (docs/PROTOCOL.md §5, §6.2, §9):
 *  - Client: pt_send commits a message to the outbox (accepted[e]); the outbox
 *    sends its oldest unacknowledged row (same envelope bytes every time); within
 *    a session a resend reuses the msg_id, a new session (client crash) gives new
 *    msg_ids. messages.sent deletes the row (acked[e]).
 *  - Server: the session's msg_id window deduplicates (code 19 acks again); a
 *    new message is committed (one queue row, a fresh server_id) and only then
 *    acknowledged. A crash loses the in-memory session (window), keeps the queue.
 *  - Receiver: an item whose envelope hash was seen is confirmed and skipped;
 *    otherwise the message, its hash and the confirmation are one commit, then
 *    messages.received deletes the queue row. Its store survives crashes.
 *  - The network: every channel may lose, duplicate or reorder messages, and a
 *    disconnect empties them all: more than TCP + AEAD allow (there a fault
 *    closes the connection), so safety here implies safety there.
 * Sending and pushing happen when nothing is in flight on that path (a timeout,
 * or the next call), which keeps the state space small; the network can still
 * duplicate what is in flight. Faults (loss, duplication, reordering,
 * disconnects, crashes) are bounded by
 * MAXF so that every run can end; at the end, every accepted message must have
 * been delivered exactly once. Delivering twice fails an assertion at once.
 * -DMUTANT_NO_HASH_DEDUP removes the receiver's envelope-hash check: spin must
 * then find a duplicate (a resend after a server crash is stored twice), which
 * shows the model can fail.
 * Not modelled: per-sender order (live pushes racing the queue, defect 2 of
 * docs/RELIABILITY.md), window overflow (1,024 ids), several devices.
 */
#ifndef N
#define N 2            /* messages */
#endif
#ifndef MAXF
#define MAXF 3         /* faults in one run */
#endif
#define QMAX (N * (MAXF + 1))   /* server_ids: one per store, at most once per session */
#define NONE 255

mtype = { DATA, ACK, ITEM, CONFIRM };

chan c2s = [2] of { mtype, byte, byte, byte };  /* DATA session msg_id envelope */
chan s2c = [2] of { mtype, byte, byte, byte };  /* ACK session msg_id 0 */
chan s2r = [2] of { mtype, byte, byte, byte };  /* ITEM 0 server_id envelope */
chan r2s = [2] of { mtype, byte, byte, byte };  /* CONFIRM 0 server_id 0 */

byte faults;
bool accepted[N], acked[N];
byte delivered[N];
byte qenv[QMAX];      /* the server's queue: envelope of each server_id */
bool qlive[QMAX];     /* not yet confirmed */
byte nq;              /* next server_id */

#define FAULT_OK (faults < MAXF)

active proctype Client()
{
    byte sid = 0, nextmid = 0, i, e, s, m, x;
    byte mid[N];
    byte a = 0;
    for (i : 0 .. N - 1) { mid[i] = NONE }
end_client:
    do
    :: a < N -> accepted[a] = true; a++          /* pt_send: committed to the outbox */
    :: atomic { empty(c2s) && empty(s2c) && a > 0 -> /* nothing in flight: (re)send (the guard
                                                        comes first: an atomic must not block inside) */
           /* the oldest unacknowledged row, sent (again) */
           i = 0;
           do
           :: i < a && acked[i] -> i++
           :: else -> break
           od;
           if
           :: i < a ->
                  if
                  :: mid[i] == NONE -> mid[i] = nextmid; nextmid++
                  :: else -> skip
                  fi;
                  c2s!DATA(sid, mid[i], i)
           :: else -> skip
           fi
       }
    :: s2c?ACK(s, m, x) ->
           if
           :: s == sid ->
                  for (e : 0 .. N - 1) {
                      if
                      :: mid[e] == m -> acked[e] = true
                      :: else -> skip
                      fi
                  }
           :: else -> skip                       /* an answer to an older session */
           fi
    :: atomic { FAULT_OK -> faults++;          /* kill -9 of the client: the outbox stays */
           sid++; nextmid = 0;
           for (e : 0 .. N - 1) { mid[e] = NONE } }
    od
}

active proctype Server()
{
    byte ssid = NONE, s, m, e, k, x;
    bool seen[N * (MAXF + 1)];
end_server:
    do
    :: c2s?DATA(s, m, e) ->
           if
           :: s != ssid ->                       /* another session (or ours, forgotten) */
                  ssid = s;
                  for (k : 0 .. N * (MAXF + 1) - 1) { seen[k] = false }
           :: else -> skip
           fi;
           if
           :: seen[m] -> skip                    /* code 19: already received; acked again */
           :: else -> atomic { seen[m] = true; qenv[nq] = e; qlive[nq] = true; nq++ }
           fi;
           s2c!ACK(s, m, 0)                      /* messages.sent, after the commit */
    :: atomic { empty(s2r) && empty(r2s) && nq > 0 -> /* push or messages.sync: the oldest live row */
           k = 0;
           do
           :: k < nq && !qlive[k] -> k++
           :: else -> break
           od;
           if
           :: k < nq -> s2r!ITEM(0, k, qenv[k])
           :: else -> skip
           fi }
    :: r2s?CONFIRM(_, k, _) -> qlive[k] = false
    :: atomic { FAULT_OK -> faults++; ssid = NONE }   /* kill -9: sessions are in memory */
    od
}

active proctype Receiver()
{
    byte k, e, x;
    bool seen_env[N];
end_receiver:
    do
    :: s2r?ITEM(x, k, e) ->
           atomic {
               if
#ifndef MUTANT_NO_HASH_DEDUP
               :: seen_env[e] -> skip            /* delivered before: confirm only */
#endif
               :: else ->
                      assert(delivered[e] == 0); /* never twice */
                      delivered[e]++;
                      seen_env[e] = true
               fi
           };
           r2s!CONFIRM(0, k, 0)
    od
}

/* loss, duplication, reordering and disconnects, on any channel */
inline mangle(ch) {
    if
    :: nempty(ch) -> ch?t, p1, p2, p3                            /* lose the oldest */
    :: nempty(ch) && nfull(ch) -> ch?<t, p1, p2, p3>; ch!t, p1, p2, p3   /* duplicate it */
    :: nempty(ch) -> ch?t, p1, p2, p3; ch!t, p1, p2, p3          /* move it behind the others */
    fi
}

active proctype Network()
{
    mtype t;
    byte p1, p2, p3;
end_network:
    do
    :: atomic { FAULT_OK && nempty(c2s) -> faults++; mangle(c2s) }
    :: atomic { FAULT_OK && nempty(s2c) -> faults++; mangle(s2c) }
    :: atomic { FAULT_OK && nempty(s2r) -> faults++; mangle(s2r) }
    :: atomic { FAULT_OK && nempty(r2s) -> faults++; mangle(r2s) }
    :: atomic { FAULT_OK -> faults++;            /* disconnect: everything in flight is gone */
           do :: c2s?_, _, _, _ :: empty(c2s) -> break od;
           do :: s2c?_, _, _, _ :: empty(s2c) -> break od;
           do :: s2r?_, _, _, _ :: empty(s2r) -> break od;
           do :: r2s?_, _, _, _ :: empty(r2s) -> break od }
    od
}

/* When nothing can move any more, every accepted message arrived exactly once. */
active proctype Check()
{
    byte e;
    timeout ->
        for (e : 0 .. N - 1) {
            assert(!accepted[e] || delivered[e] == 1)
        }
}
