/*
 * pt-disc-probe: a LAN discovery test tool (docs/PROTOCOL.md §11) for the
 * network-namespace tests. Test-only: built into the build tree, never installed.
 *
 *   pt-disc-probe bsm HOST PORT [--timeout MS]
 *       sends a BSM; prints "server ADDR PORT KEYHEX OBFS" per BSR that echoes its
 *       nonce (ADDR: where it came from; PORT: the server's TCP port; OBFS: 0xNN);
 *       exit 0 when some server answered, 1 when none did
 *   pt-disc-probe flood HOST PORT COUNT [--bpm|--bsm]
 *       sends COUNT BSMs (or BPMs with an anonymous record) from one socket as fast as
 *       it can, listens 1 s more; prints "sent N bytes_out B replies R bytes_in B2"
 *   pt-disc-probe spoof-bpr HOST PORT USER_ID_HEX [--replay FILE]
 *       sends a BPR claiming USER_ID but signed by a fresh random identity key (a
 *       listener must ignore it); with --replay, sends FILE's bytes (a captured BPR)
 *       verbatim instead
 *   pt-disc-probe announce HOST PORT
 *       sends a BPM whose record is signed by a fresh unknown identity (a stranger)
 *
 * HOST may be a broadcast address (SO_BROADCAST is set) or an IPv6 address with a
 * scope ("ff02::7074%eth0"). Exit status 2 on a usage or socket error.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"

static int usage(void)
{
    fprintf(stderr, "usage: pt-disc-probe bsm HOST PORT [--timeout MS]\n"
                    "       pt-disc-probe flood HOST PORT COUNT [--bpm|--bsm]\n"
                    "       pt-disc-probe spoof-bpr HOST PORT USER_ID_HEX [--replay FILE]\n"
                    "       pt-disc-probe announce HOST PORT\n");
    return 2;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

typedef struct probe {
    int fd;
    struct sockaddr_storage dst;
    socklen_t dstlen;
} probe;

/* Resolves HOST PORT and opens a UDP socket that may send broadcasts. 0 or 2. */
static int probe_open(probe *p, const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "pt-disc-probe: %s port %s: %s\n", host, port, gai_strerror(rc));
        return 2;
    }
    memcpy(&p->dst, ai->ai_addr, ai->ai_addrlen);
    p->dstlen = ai->ai_addrlen;
    p->fd = socket(ai->ai_family, SOCK_DGRAM, 0);
    freeaddrinfo(ai);
    int one = 1;
    if (p->fd < 0 || setsockopt(p->fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) != 0) {
        fprintf(stderr, "pt-disc-probe: socket: %s\n", strerror(errno));
        return 2;
    }
    int rcvbuf = 1 << 20;
    (void)setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    return 0;
}

static int probe_send(probe *p, const uint8_t *b, size_t n)
{
    if (sendto(p->fd, b, n, 0, (struct sockaddr *)&p->dst, p->dstlen) != (ssize_t)n) {
        fprintf(stderr, "pt-disc-probe: send: %s\n", strerror(errno));
        return 2;
    }
    return 0;
}

/* The address this socket sends from towards dst (for a record's addr field). */
static void local_addr(probe *p, uint8_t addr[16])
{
    memset(addr, 0, 16);
    int fd = socket(p->dst.ss_family, SOCK_DGRAM, 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&p->dst, p->dstlen) == 0 &&
        getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        pt_disc_addr_from_sockaddr((struct sockaddr *)&ss, addr, NULL) != 0)
        memset(addr, 0, 16);
    if (fd >= 0) close(fd);
}

static size_t encode(const pt_disc_pkt *pkt, uint8_t out[PT_DISC_MAX_LEN])
{
    size_t n = 0;
    if (pt_disc_encode(pkt, out, PT_DISC_MAX_LEN, &n) != 0) abort();
    return n;
}

static int cmd_bsm(probe *p, int timeout_ms)
{
    pt_disc_pkt req = {.type = PT_DISC_BSM};
    pt_random(req.nonce, sizeof req.nonce);
    uint8_t buf[2048];
    size_t n = encode(&req, buf);
    if (probe_send(p, buf, n)) return 2;
    int found = 0;
    uint64_t until = mono_ms() + (uint64_t)timeout_ms;
    for (uint64_t now; (now = mono_ms()) < until;) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(until - now)) <= 0) continue;
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t got = recvfrom(p->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        pt_disc_pkt rep;
        if (got < 0 || pt_disc_decode(buf, (size_t)got, &rep) != 0 || rep.type != PT_DISC_BSR ||
            memcmp(rep.nonce, req.nonce, 16) != 0)
            continue;
        uint8_t a[16];
        char text[64], key[65];
        if (pt_disc_addr_from_sockaddr((struct sockaddr *)&from, a, NULL) != 0) continue;
        pt_disc_addr_format(a, text, sizeof text);
        pt_hex_encode(key, rep.server_key, 32);
        printf("server %s %u %s 0x%02x\n", text, rep.port, key, rep.obfs);
        fflush(stdout);
        found++;
    }
    return found ? 0 : 1;
}

static int cmd_flood(probe *p, unsigned long count, bool bpm)
{
    pt_disc_pkt req = {.type = bpm ? PT_DISC_BPM : PT_DISC_BSM}; /* a BPM: anonymous, no record */
    pt_random(req.nonce, sizeof req.nonce);
    uint8_t buf[2048];
    size_t n = encode(&req, buf);
    unsigned long sent = 0, replies = 0;
    unsigned long long out = 0, in = 0;
    for (unsigned long i = 0; i < count; i++) {
        if (sendto(p->fd, buf, n, 0, (struct sockaddr *)&p->dst, p->dstlen) == (ssize_t)n) {
            sent++;
            out += n;
        }
        ssize_t got; /* drain what came back meanwhile, so the socket buffer cannot overflow */
        while ((got = recv(p->fd, buf + PT_DISC_MAX_LEN, sizeof buf - PT_DISC_MAX_LEN, MSG_DONTWAIT)) >= 0) {
            replies++;
            in += (unsigned long long)got;
        }
    }
    uint64_t until = mono_ms() + 1000;
    for (uint64_t now; (now = mono_ms()) < until;) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(until - now)) <= 0) continue;
        ssize_t got = recv(p->fd, buf, sizeof buf, 0);
        if (got < 0) continue;
        replies++;
        in += (unsigned long long)got;
    }
    printf("sent %lu bytes_out %llu replies %lu bytes_in %llu\n", sent, out, replies, in);
    return 0;
}

/* A record for user_id from a fresh random identity (so its signature is wrong
 * for any real user), sent from here. */
static void stranger_record(probe *p, pt_disc_pkt *pkt)
{
    uint8_t pk[32], sk[64];
    pt_ed25519_keypair(pk, sk);
    pt_random(pkt->rec.device, 32);
    local_addr(p, pkt->rec.addr);
    pkt->rec.port = 7002;
    pkt->rec.ts_ms = wall_ms();
    if (pt_disc_record_sign(&pkt->rec, pkt->type, pkt->nonce, sk) != 0) abort();
    pt_wipe(sk, sizeof sk);
}

static int cmd_spoof_bpr(probe *p, const char *user_hex, const char *replay)
{
    uint8_t buf[2048];
    size_t n;
    if (replay) {
        FILE *f = fopen(replay, "rb");
        if (!f) {
            fprintf(stderr, "pt-disc-probe: %s: %s\n", replay, strerror(errno));
            return 2;
        }
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        pt_disc_pkt chk;
        if (pt_disc_decode(buf, n, &chk) != 0 || chk.type != PT_DISC_BPR) {
            fprintf(stderr, "pt-disc-probe: %s is not a BPR (%zu bytes)\n", replay, n);
            return 2;
        }
    } else {
        pt_disc_pkt pkt = {.type = PT_DISC_BPR};
        if (pt_hex_decode(pkt.rec.user_id, 16, user_hex) != 0) {
            fprintf(stderr, "pt-disc-probe: '%s' is not a 32-digit hex user id\n", user_hex);
            return 2;
        }
        pt_random(pkt.nonce, sizeof pkt.nonce);
        stranger_record(p, &pkt);
        n = encode(&pkt, buf);
    }
    if (probe_send(p, buf, n)) return 2;
    printf("sent bpr %zu bytes\n", n);
    return 0;
}

static int cmd_announce(probe *p)
{
    pt_disc_pkt pkt = {.type = PT_DISC_BPM, .flags = PT_DISC_FLAG_RECORD};
    pt_random(pkt.nonce, sizeof pkt.nonce);
    pt_random(pkt.rec.user_id, sizeof pkt.rec.user_id);
    stranger_record(p, &pkt);
    uint8_t buf[PT_DISC_MAX_LEN];
    size_t n = encode(&pkt, buf);
    if (probe_send(p, buf, n)) return 2;
    char uid[33];
    pt_hex_encode(uid, pkt.rec.user_id, 16);
    printf("sent bpm %zu bytes user %s\n", n, uid);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || pt_crypto_init() != 0) return usage();
    const char *cmd = argv[1];
    probe p;
    if (strcmp(cmd, "bsm") == 0) {
        int timeout = 1000;
        if (argc == 6 && strcmp(argv[4], "--timeout") == 0) timeout = atoi(argv[5]);
        else if (argc != 4) return usage();
        if (timeout <= 0) return usage();
        return probe_open(&p, argv[2], argv[3]) ? 2 : cmd_bsm(&p, timeout);
    }
    if (strcmp(cmd, "flood") == 0) {
        if (argc < 5 || argc > 6) return usage();
        bool bpm = false;
        if (argc == 6 && strcmp(argv[5], "--bpm") == 0) bpm = true;
        else if (argc == 6 && strcmp(argv[5], "--bsm") != 0) return usage();
        char *end;
        unsigned long count = strtoul(argv[4], &end, 10);
        if (*end || !*argv[4]) return usage();
        return probe_open(&p, argv[2], argv[3]) ? 2 : cmd_flood(&p, count, bpm);
    }
    if (strcmp(cmd, "spoof-bpr") == 0) {
        const char *replay = NULL;
        if (argc == 7 && strcmp(argv[5], "--replay") == 0) replay = argv[6];
        else if (argc != 5) return usage();
        return probe_open(&p, argv[2], argv[3]) ? 2 : cmd_spoof_bpr(&p, argv[4], replay);
    }
    if (strcmp(cmd, "announce") == 0) {
        if (argc != 4) return usage();
        return probe_open(&p, argv[2], argv[3]) ? 2 : cmd_announce(&p);
    }
    return usage();
}
