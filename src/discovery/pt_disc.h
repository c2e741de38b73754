/*
 * src/discovery - LAN discovery (S2WMP BSM/BSR/BPM/BPR) and the peer-to-peer record
 * format. Sans-IO: codecs, signatures, freshness and the per-source rate limiter.
 * The sockets live with their users (src/server/lan.c, src/api/lan.c).
 *
 * Wire (docs/PROTOCOL.md §11), all integers little-endian, every packet a fixed size:
 *   header   "PTD" ver=1 type flags u16 reserved(0)                           8 bytes
 *   BSM  1   header nonce[16] zero[40]                                        64 bytes
 *   BSR  2   header nonce[16] server_key[32] port u16 obfs u8 zero[5]         64 bytes
 *   BPM  3   header nonce[16] record[138]  (flags bit0: record present,
 *                                            else record is all zero)         162 bytes
 *   BPR  4   header nonce[16] record[138]                                     162 bytes
 *   record   user_id[16] device[32] addr[16] port u16 ts_ms u64 sig[64]       138 bytes
 * A reply is exactly as long as its request, so a reflected flood is never amplified.
 * sig is Ed25519 under the user's identity key over
 *   "PTD-REC1" type nonce[16] user_id device addr port ts_ms
 * so a BPR is bound to the BPM it answers and a BPM's record to that BPM.
 * addr is IPv6 (IPv4 as ::ffff:a.b.c.d): the address the sender sends from; a
 * receiver ignores a record whose addr differs from the datagram's source.
 */
#ifndef PT_DISC_H
#define PT_DISC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/pt_common.h"

#define PT_DISC_PORT 7001               /* default UDP port */
#define PT_DISC_MCAST6 "ff02::7074"     /* IPv6 link-local multicast group */
#define PT_DISC_VERSION 1
#define PT_DISC_HDR_LEN 8
#define PT_DISC_BSM_LEN 64
#define PT_DISC_BSR_LEN 64
#define PT_DISC_RECORD_LEN 138
#define PT_DISC_BPM_LEN (PT_DISC_HDR_LEN + 16 + PT_DISC_RECORD_LEN) /* 162 */
#define PT_DISC_BPR_LEN PT_DISC_BPM_LEN
#define PT_DISC_MAX_LEN PT_DISC_BPM_LEN
#define PT_DISC_MAX_SKEW_MS (120 * 1000) /* records further from our clock are stale */

enum { PT_DISC_BSM = 1, PT_DISC_BSR = 2, PT_DISC_BPM = 3, PT_DISC_BPR = 4 };
#define PT_DISC_FLAG_RECORD 0x01 /* BPM: the record is present */

/* BSR obfs flags: what the server's listener takes (as MSE's tracker extension says) */
#define PT_DISC_OBFS_PLAIN 0x01    /* plain PackTrack channel accepted */
#define PT_DISC_OBFS_MSE 0x02      /* MSE/PHE supported */
#define PT_DISC_OBFS_REQUIRED 0x04 /* obfuscation required (no plain) */
#define PT_DISC_OBFS_PTOBFS 0x08   /* pt-obfs (network key needed) */

typedef struct pt_disc_record {
    uint8_t user_id[16];
    uint8_t device[32];  /* the Noise static key to pin when connecting */
    uint8_t addr[16];    /* IPv6 or v4-mapped */
    uint16_t port;       /* TCP port of the peer-to-peer listener */
    uint64_t ts_ms;      /* Unix time, ms */
    uint8_t sig[64];
} pt_disc_record;

typedef struct pt_disc_pkt {
    uint8_t type;        /* PT_DISC_* */
    uint8_t flags;
    uint8_t nonce[16];
    /* BSR */
    uint8_t server_key[32];
    uint16_t port;
    uint8_t obfs;
    /* BPM (when flags & PT_DISC_FLAG_RECORD) and BPR */
    pt_disc_record rec;
} pt_disc_pkt;

/* Encodes p into out (cap >= PT_DISC_MAX_LEN); *len is the packet size. */
int pt_disc_encode(const pt_disc_pkt *p, uint8_t *out, size_t cap, size_t *len) PT_WUR;
/* Parses one datagram: exact size for its type, magic, version, reserved zero,
 * zero padding, BPM without the record flag has an all-zero record.
 * PT_ERR_DECODE / PT_ERR_VERSION on anything else. No signature check here. */
int pt_disc_decode(const uint8_t *in, size_t len, pt_disc_pkt *p) PT_WUR;

/* Signs / verifies r for a packet of `type` carrying `nonce` (see the header comment). */
int pt_disc_record_sign(pt_disc_record *r, uint8_t type, const uint8_t nonce[16],
                        const uint8_t id_sk[64]) PT_WUR;
int pt_disc_record_verify(const pt_disc_record *r, uint8_t type, const uint8_t nonce[16],
                          const uint8_t id_pk[32]) PT_WUR; /* 0 or PT_ERR_AUTH */
/* |ts - now| <= PT_DISC_MAX_SKEW_MS */
bool pt_disc_fresh(uint64_t ts_ms, uint64_t now_ms);

/* Socket addresses <-> the 16-byte form (IPv4 as ::ffff:a.b.c.d). */
int pt_disc_addr_from_sockaddr(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port) PT_WUR;
/* Fills ss (sockaddr_in for v4-mapped, else sockaddr_in6 with scope_id) and its length. */
void pt_disc_addr_to_sockaddr(const uint8_t addr[16], uint16_t port, uint32_t scope_id,
                              struct sockaddr_storage *ss, socklen_t *sslen);
/* "a.b.c.d" or "fe80::1%2"-style text (cap >= 64). */
void pt_disc_addr_format(const uint8_t addr[16], char *out, size_t cap);

/* ---- the per-source limiter of replies ------------------------------------------------------------ */

/* A token bucket per source address (an LRU table of `slots` sources) and one global
 * bucket. allow() takes a token from both or refuses. */
typedef struct pt_disc_limiter pt_disc_limiter;
pt_disc_limiter *pt_disc_limiter_new(unsigned burst, unsigned per_s, unsigned global_per_s,
                                     unsigned slots);
void pt_disc_limiter_free(pt_disc_limiter *l); /* NULL is a no-op */
bool pt_disc_limiter_allow(pt_disc_limiter *l, const uint8_t addr[16], uint64_t now_ms);
/* defaults used by servers and clients */
#define PT_DISC_LIMIT_BURST 4
#define PT_DISC_LIMIT_PER_S 2
#define PT_DISC_LIMIT_GLOBAL_PER_S 50
#define PT_DISC_LIMIT_SLOTS 256

/* ---- peer-to-peer records (inside an established pt_chan) ------------------------------------------ */
/*
 *   HELLO 1  user_id[16]                           who the initiator is (first record)
 *   MSG   2  has_group u8 group_id[16] u32 len env  one end-to-end envelope (<= 64 KiB)
 *   ACK   3  hash[16]                              BLAKE2b-128 of the envelope, once stored
 *   BYE   4                                        closing
 *   PING  5 / PONG 6                               keepalive
 *   INTRO 7  identity_key[32] name_len u8 name key_id u32 signed_key[64] sig[64]
 *                                                  a stranger introducing itself: its
 *            identity, its claimed name (1..PT_P2P_NAME_MAX bytes) and this device's
 *            signed prekey, signed as in the directory (§6.5) over the channel's key
 *   FRIEND_REQ 8  note_len u16 note (<= 512)        a friend request (after INTRO)
 *   FRIEND_ACCEPT 9                                 the request is accepted
 * Each record starts with its type byte; trailing bytes are an error.
 */
enum {
    PT_P2P_HELLO = 1, PT_P2P_MSG = 2, PT_P2P_ACK = 3, PT_P2P_BYE = 4, PT_P2P_PING = 5, PT_P2P_PONG = 6,
    PT_P2P_INTRO = 7, PT_P2P_FRIEND_REQ = 8, PT_P2P_FRIEND_ACCEPT = 9,
};
#define PT_P2P_ENV_MAX (64 * 1024)
#define PT_P2P_NAME_MAX 127
#define PT_P2P_NOTE_MAX 512

typedef struct pt_p2p_rec {
    uint8_t type;
    uint8_t user_id[16]; /* HELLO */
    uint8_t hash[16];    /* ACK */
    bool has_group;      /* MSG */
    uint8_t group_id[16];
    const uint8_t *env;  /* MSG: borrows the decoded bytes; FRIEND_REQ: the note */
    size_t env_len;
    /* INTRO (name borrows the decoded bytes, not NUL-terminated) */
    uint8_t identity_key[32];
    const uint8_t *name;
    size_t name_len;
    uint32_t key_id;
    uint8_t signed_key[64];
    uint8_t sig[64];
} pt_p2p_rec;

/* Appends r. PT_ERR_TOO_BIG when a MSG's env_len > PT_P2P_ENV_MAX, PT_ERR_INVAL for an
 * unknown type; a MSG without a group goes out with a zero group_id. */
int pt_p2p_encode(const pt_p2p_rec *r, pt_buf *out) PT_WUR; /* appends */
/* Exactly one record of n bytes: PT_ERR_DECODE on an unknown type, a wrong length,
 * has_group not 0/1, a group_id without has_group; PT_ERR_TOO_BIG when a MSG
 * declares more than PT_P2P_ENV_MAX. r->env points into p. */
int pt_p2p_decode(const uint8_t *p, size_t n, pt_p2p_rec *r) PT_WUR;

#endif /* PT_DISC_H */
