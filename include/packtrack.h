/*
 * packtrack.h - the public API of libpacktrack.
 *
 * Contract, stated once for the whole header:
 *  - Errors: functions return 0 on success and a negative pt_err code on failure;
 *    pt_strerror() names every code. No function prints or calls exit().
 *  - Threads: a handle is used by one thread at a time; distinct handles are
 *    independent. pt_init() must be called once before any other function.
 *  - Memory: buffers passed in are borrowed for the duration of the call unless a
 *    comment says otherwise.
 *  - ABI: handles are opaque; only the functions and enums below are stable.
 */
#ifndef PACKTRACK_H
#define PACKTRACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PT_API __attribute__((visibility("default")))
#else
#define PT_API
#endif

#define PT_VERSION_STRING "0.1.0"

/* Error codes, shared by every layer. Always negative; 0 is success. */
typedef enum pt_err {
    PT_OK = 0,
    PT_ERR_NOMEM = -1,        /* allocation failed */
    PT_ERR_INVAL = -2,        /* invalid argument or configuration */
    PT_ERR_DECODE = -3,       /* malformed bytes from a peer, file or user */
    PT_ERR_TOO_BIG = -4,      /* a length exceeds its named limit */
    PT_ERR_AUTH = -5,         /* authentication / decryption failed */
    PT_ERR_CRYPTO = -6,       /* the crypto library reported an internal failure */
    PT_ERR_PROTO = -7,        /* the peer broke the protocol */
    PT_ERR_AGAIN = -8,        /* more input is needed */
    PT_ERR_KEY_MISMATCH = -9, /* the server key differs from the pinned one */
    PT_ERR_NO_SUITE = -10,    /* no common channel-cipher suite */
    PT_ERR_IO = -11,          /* socket or file error */
    PT_ERR_TIMEOUT = -12,     /* the operation timed out */
    PT_ERR_CLOSED = -13,      /* the connection is closed */
    PT_ERR_REPLAY = -14,      /* replayed, duplicate or out-of-order message */
    PT_ERR_VERSION = -15,     /* unsupported protocol version */
    PT_ERR_STATE = -16,       /* call not valid in the current state */
    PT_ERR_WEAK_KEY = -17,    /* low-order / all-zero Diffie-Hellman result */
    PT_ERR_NOT_FOUND = -18,   /* no such object */
} pt_err;

/* Initialises the crypto libraries. Idempotent; returns 0 or PT_ERR_CRYPTO. */
PT_API int pt_init(void);

/* A static English description of an error code; never NULL. */
PT_API const char *pt_strerror(int err);

/* The library version, e.g. "0.1.0". */
PT_API const char *pt_version(void);

#ifdef __cplusplus
}
#endif
#endif /* PACKTRACK_H */
