/* The TL wire runtime the generated codecs (gen/pt_tl.[ch]) are built on: a
 * bump arena for decoded values, a bounds-checked reader and append-only
 * writers for the TL primitives. Little-endian throughout.
 *
 * Error convention (internal layer): 0 or a negative pt_err. Readers return
 * PT_ERR_DECODE for malformed bytes and PT_ERR_TOO_BIG when the arena is full
 * or a limit is hit; bytes read from a peer never reach an assert. */
#ifndef PT_WIRE_H
#define PT_WIRE_H

#include "common/pt_common.h"

#define PT_WIRE_VECTOR_ID 0x1cb5c415u     /* vector#1cb5c415, boxes every Vector<T> */
#define PT_WIRE_BOOL_TRUE_ID 0x997275b5u  /* boolTrue = Bool */
#define PT_WIRE_BOOL_FALSE_ID 0xbc799737u /* boolFalse = Bool */
/* Longest bytes/string TL can carry: the long form has a 3-byte length. */
#define PT_WIRE_BYTES_MAX 0xffffffu
/* How deep boxed values may nest inside one message. The schema may be
 * recursive, so without this a peer could drive the decoder's recursion. */
#define PT_TL_MAX_DEPTH 8

/* A bump allocator over caller memory. Decoders allocate only from here, never
 * from the heap, so one reset frees a whole decoded message. */
typedef struct pt_arena {
    uint8_t *base; /* caller-owned memory, borrowed for the arena's lifetime */
    size_t cap;    /* bytes at base */
    size_t used;   /* bytes handed out, including alignment padding */
} pt_arena;

/* Points the arena at base[0..cap). */
void pt_arena_init(pt_arena *a, void *base, size_t cap);
/* Frees everything allocated so far. Pointers into the arena become invalid. */
static inline void pt_arena_reset(pt_arena *a) { a->used = 0; }
/* Zeroed room for n objects of size bytes, aligned to 8; NULL when the arena
 * is full, n * size overflows, or n * size is 0. */
void *pt_arena_alloc(pt_arena *a, size_t n, size_t size);

/* A TL bytes/string/Object value. Zero-copy: after a decode, data points into
 * the input buffer, which must outlive the decoded value. */
typedef struct pt_tl_bytes {
    const uint8_t *data; /* len bytes; may be NULL only when len == 0 */
    uint32_t len;        /* < 2^24 for bytes and string */
} pt_tl_bytes;

/* A cursor over one input buffer. */
typedef struct pt_wire_reader {
    const uint8_t *p; /* the input, borrowed */
    size_t len;       /* bytes at p */
    size_t pos;       /* next byte to read; always <= len */
    unsigned depth;   /* boxed values currently open, see pt_wire_enter() */
    pt_arena *arena;  /* where decoded vectors and nested values go */
} pt_wire_reader;

void pt_wire_reader_init(pt_wire_reader *r, const uint8_t *buf, size_t len, pt_arena *a);
static inline size_t pt_wire_left(const pt_wire_reader *r) { return r->len - r->pos; }
/* PT_ERR_DECODE when unread bytes remain (trailing garbage), else 0. */
PT_WUR int pt_wire_end(const pt_wire_reader *r);
/* Opens one more level of nesting; PT_ERR_TOO_BIG beyond PT_TL_MAX_DEPTH. */
PT_WUR int pt_wire_enter(pt_wire_reader *r);
static inline void pt_wire_leave(pt_wire_reader *r) { r->depth--; }

PT_WUR int pt_wire_get_u32(pt_wire_reader *r, uint32_t *v);
PT_WUR int pt_wire_get_i32(pt_wire_reader *r, int32_t *v);
PT_WUR int pt_wire_get_i64(pt_wire_reader *r, int64_t *v);
/* The 8 bytes are taken bit for bit, NaN payloads included, so re-encoding
 * reproduces the input. */
PT_WUR int pt_wire_get_double(pt_wire_reader *r, double *v);
PT_WUR int pt_wire_get_raw(pt_wire_reader *r, uint8_t *dst, size_t n);
/* A boxed Bool: boolTrue or boolFalse, nothing else. */
PT_WUR int pt_wire_get_bool(pt_wire_reader *r, bool *v);
/* TL bytes: only the canonical length form, zero padding. */
PT_WUR int pt_wire_get_bytes(pt_wire_reader *r, pt_tl_bytes *v);
/* As pt_wire_get_bytes(), and the content must be valid UTF-8. */
PT_WUR int pt_wire_get_string(pt_wire_reader *r, pt_tl_bytes *v);
/* Object: the rest of the input, which must look like an encoded boxed value
 * (a constructor id at least, and a multiple of 4 bytes like every TL value). */
PT_WUR int pt_wire_get_object(pt_wire_reader *r, pt_tl_bytes *v);
/* A Vector header: the vector id and the count, checked against the input left
 * (each item needs at least min_item bytes) so a forged count cannot make the
 * caller allocate. */
PT_WUR int pt_wire_get_vector(pt_wire_reader *r, uint32_t *n, size_t min_item);

/* Writers append to out; PT_ERR_NOMEM when out cannot grow. */
PT_WUR int pt_wire_put_u32(pt_buf *out, uint32_t v);
PT_WUR int pt_wire_put_i32(pt_buf *out, int32_t v);
PT_WUR int pt_wire_put_i64(pt_buf *out, int64_t v);
PT_WUR int pt_wire_put_double(pt_buf *out, double v);
PT_WUR int pt_wire_put_raw(pt_buf *out, const uint8_t *p, size_t n);
PT_WUR int pt_wire_put_bool(pt_buf *out, bool v);
/* PT_ERR_TOO_BIG above PT_WIRE_BYTES_MAX. */
PT_WUR int pt_wire_put_bytes(pt_buf *out, const pt_tl_bytes *v);
/* As pt_wire_put_bytes(); PT_ERR_INVAL when v is not valid UTF-8, so that
 * whatever we send, our own decoder accepts. */
PT_WUR int pt_wire_put_string(pt_buf *out, const pt_tl_bytes *v);
/* Appends v verbatim; PT_ERR_INVAL unless it is shaped like a boxed value
 * (see pt_wire_get_object()). */
PT_WUR int pt_wire_put_object(pt_buf *out, const pt_tl_bytes *v);
PT_WUR int pt_wire_put_vector(pt_buf *out, uint32_t n);

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool pt_wire_utf8_valid(const uint8_t *s, size_t n);

#endif /* PT_WIRE_H */
