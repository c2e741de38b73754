/* Shared helpers for PackTrack's cmocka tests. */
#ifndef PT_TESTUTIL_H
#define PT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/pt_common.h"

/* Path of ../shared/<rel> next to the source tree, or NULL when absent
 * (people who clone the project alone do not have it). Static storage. */
const char *pt_test_shared_path(const char *rel);
/* Reads a whole file into a malloc'd NUL-terminated buffer; NULL on error. */
char *pt_test_read_file(const char *path, size_t *len);
/* Decodes hex into a malloc'd buffer (len in *out_len); aborts the test on bad hex. */
uint8_t *pt_test_unhex(const char *hex, size_t *out_len);
/* An environment whose randomness replays `script` bytes in order, then a
 * deterministic stream; clocks return the values in the struct. */
typedef struct pt_test_env {
    pt_env env;
    const uint8_t *script;
    size_t script_len, script_pos;
    uint64_t counter;  /* for the deterministic stream after the script */
    uint64_t now_ms, mono_ms;
} pt_test_env;
void pt_test_env_init(pt_test_env *t, const uint8_t *script, size_t script_len);

#endif

/* ---- AES-GCM's implementations --------------------------------------------------- */
/* cmocka setup and teardown: AES-GCM through OpenSSL (the implementation of CPUs
 * without AES instructions; where this one has them, the plain runs test libsodium's),
 * and back to the default. */
int pt_test_gcm_openssl(void **state);
int pt_test_gcm_default(void **state);

/* ---- real packtrackd processes ------------------------------------------------ */
typedef struct pt_test_server {
    int pid;
    uint16_t port;
    char dir[256];         /* data directory (a fresh temp dir unless given) */
    char fingerprint[80];
    char log[300];         /* its stderr */
} pt_test_server;

/* Starts $PT_PACKTRACKD --listen 127.0.0.1:PORT (0 = any) --data DIR plus the
 * NULL-terminated extra args, and waits (10 s at most) until it listens. LAN
 * discovery is off (--no-discovery) unless extra has a --discovery-... option.
 * dir may be NULL for a new temp dir. Fails the test on error. */
void pt_test_server_start(pt_test_server *s, const char *dir, uint16_t port, const char *const *extra);
/* The same with --listen LISTEN (HOST:PORT, an IPv6 host in brackets). */
void pt_test_server_start_at(pt_test_server *s, const char *dir, const char *listen, const char *const *extra);
/* SIGTERM, then waits up to 10 s; returns the exit status (or -1 if it had to be killed). */
int pt_test_server_stop(pt_test_server *s);
/* SIGKILL and reap. */
void pt_test_server_kill(pt_test_server *s);
/* Repeats step while cond holds, for ms milliseconds at most (monotonic clock). Waits
 * for a client are bounded this way, not by a count of pumps: pt_client_pump returns
 * early whenever events came, so under load (ASan, -j2) 500 pumps of "10 ms" can be
 * far less than the 5 s they stand for. */
#define PT_TEST_WHILE_FOR(cond, ms, step)                                                          \
    for (uint64_t pt_t0_ = pt_env_mono_ms(pt_env_default());                                       \
         (cond) && pt_env_mono_ms(pt_env_default()) - pt_t0_ < (uint64_t)(ms);)                    \
    step

/* A fresh temp directory (static storage, overwritten by the next call). */
const char *pt_test_tmpdir(const char *tag);
/* Counts occurrences of needle in the server's log. */
int pt_test_log_count(const pt_test_server *s, const char *needle);
