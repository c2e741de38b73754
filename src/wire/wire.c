/* TL wire runtime: arena, reader and writers (see pt_wire.h). */
#include "wire/pt_wire.h"

/* ---- arena ----------------------------------------------------------------- */

void pt_arena_init(pt_arena *a, void *base, size_t cap)
{
    PT_ASSERT(a && (base || cap == 0));
    a->base = base;
    a->cap = cap;
    a->used = 0;
}

void *pt_arena_alloc(pt_arena *a, size_t n, size_t size)
{
    if (n == 0 || size == 0 || n > SIZE_MAX / size || !a->base) return NULL;
    size_t bytes = n * size;
    /* Align the address, not the offset: base itself need not be aligned. */
    uintptr_t at = (uintptr_t)(a->base + a->used);
    size_t pad = (size_t)(-at & 7u);
    if (a->used > a->cap || pad > a->cap - a->used || bytes > a->cap - a->used - pad) return NULL;
    uint8_t *p = a->base + a->used + pad;
    a->used += pad + bytes;
    memset(p, 0, bytes);
    return p;
}

/* ---- reader ---------------------------------------------------------------- */

void pt_wire_reader_init(pt_wire_reader *r, const uint8_t *buf, size_t len, pt_arena *a)
{
    PT_ASSERT(r && a && (buf || len == 0));
    r->p = buf;
    r->len = len;
    r->pos = 0;
    r->depth = 0;
    r->arena = a;
}

int pt_wire_end(const pt_wire_reader *r) { return r->pos == r->len ? 0 : PT_ERR_DECODE; }

int pt_wire_enter(pt_wire_reader *r)
{
    if (r->depth >= PT_TL_MAX_DEPTH) return PT_ERR_TOO_BIG;
    r->depth++;
    return 0;
}

int pt_wire_get_raw(pt_wire_reader *r, uint8_t *dst, size_t n)
{
    if (n > pt_wire_left(r)) return PT_ERR_DECODE;
    if (n) memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

int pt_wire_get_u32(pt_wire_reader *r, uint32_t *v)
{
    if (pt_wire_left(r) < 4) return PT_ERR_DECODE;
    *v = pt_get_u32le(r->p + r->pos);
    r->pos += 4;
    return 0;
}

int pt_wire_get_i32(pt_wire_reader *r, int32_t *v)
{
    uint32_t u;
    int rc = pt_wire_get_u32(r, &u);
    if (rc == 0) *v = (int32_t)u; /* two's complement, as TL sends it */
    return rc;
}

static int get_u64(pt_wire_reader *r, uint64_t *v)
{
    if (pt_wire_left(r) < 8) return PT_ERR_DECODE;
    *v = pt_get_u64le(r->p + r->pos);
    r->pos += 8;
    return 0;
}

int pt_wire_get_i64(pt_wire_reader *r, int64_t *v)
{
    uint64_t u;
    int rc = get_u64(r, &u);
    if (rc == 0) *v = (int64_t)u;
    return rc;
}

int pt_wire_get_double(pt_wire_reader *r, double *v)
{
    uint64_t u;
    int rc = get_u64(r, &u);
    if (rc == 0) memcpy(v, &u, sizeof *v);
    return rc;
}

int pt_wire_get_bool(pt_wire_reader *r, bool *v)
{
    uint32_t id;
    int rc = pt_wire_get_u32(r, &id);
    if (rc) return rc;
    if (id == PT_WIRE_BOOL_TRUE_ID) *v = true;
    else if (id == PT_WIRE_BOOL_FALSE_ID) *v = false;
    else return PT_ERR_DECODE;
    return 0;
}

int pt_wire_get_bytes(pt_wire_reader *r, pt_tl_bytes *v)
{
    size_t left = pt_wire_left(r);
    if (left < 1) return PT_ERR_DECODE;
    const uint8_t *p = r->p + r->pos; /* after the check: p may be NULL when len is 0 */
    size_t n, head;
    if (p[0] <= 253) {
        n = p[0];
        head = 1;
    } else if (p[0] == 254) {
        if (left < 4) return PT_ERR_DECODE;
        n = (size_t)p[1] | (size_t)p[2] << 8 | (size_t)p[3] << 16;
        head = 4;
        /* Two encodings of one value would break re-encoding and signatures. */
        if (n <= 253) return PT_ERR_DECODE;
    } else {
        return PT_ERR_DECODE; /* 255 is not a length marker in TL */
    }
    size_t total = (head + n + 3) & ~(size_t)3;
    if (total > left) return PT_ERR_DECODE;
    for (size_t i = head + n; i < total; i++)
        if (p[i] != 0) return PT_ERR_DECODE;
    v->data = p + head;
    v->len = (uint32_t)n;
    r->pos += total;
    return 0;
}

int pt_wire_get_string(pt_wire_reader *r, pt_tl_bytes *v)
{
    size_t mark = r->pos;
    int rc = pt_wire_get_bytes(r, v);
    if (rc) return rc;
    if (!pt_wire_utf8_valid(v->data, v->len)) {
        r->pos = mark;
        return PT_ERR_DECODE;
    }
    return 0;
}

int pt_wire_get_object(pt_wire_reader *r, pt_tl_bytes *v)
{
    size_t left = pt_wire_left(r);
    if (left < 4 || left % 4 != 0 || left > UINT32_MAX) return PT_ERR_DECODE;
    v->data = r->p + r->pos;
    v->len = (uint32_t)left;
    r->pos = r->len;
    return 0;
}

int pt_wire_get_vector(pt_wire_reader *r, uint32_t *n, size_t min_item)
{
    uint32_t id, count;
    int rc = pt_wire_get_u32(r, &id);
    if (rc) return rc;
    if (id != PT_WIRE_VECTOR_ID) return PT_ERR_DECODE;
    rc = pt_wire_get_u32(r, &count);
    if (rc) return rc;
    /* Division, not multiplication: count * min_item may overflow. */
    if (min_item == 0 || count > pt_wire_left(r) / min_item) return PT_ERR_DECODE;
    *n = count;
    return 0;
}

/* ---- writers --------------------------------------------------------------- */

int pt_wire_put_raw(pt_buf *out, const uint8_t *p, size_t n) { return pt_buf_append(out, p, n); }

int pt_wire_put_u32(pt_buf *out, uint32_t v)
{
    uint8_t b[4];
    pt_put_u32le(b, v);
    return pt_buf_append(out, b, sizeof b);
}

int pt_wire_put_i32(pt_buf *out, int32_t v) { return pt_wire_put_u32(out, (uint32_t)v); }

int pt_wire_put_i64(pt_buf *out, int64_t v)
{
    uint8_t b[8];
    pt_put_u64le(b, (uint64_t)v);
    return pt_buf_append(out, b, sizeof b);
}

int pt_wire_put_double(pt_buf *out, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return pt_wire_put_i64(out, (int64_t)u);
}

int pt_wire_put_bool(pt_buf *out, bool v)
{
    return pt_wire_put_u32(out, v ? PT_WIRE_BOOL_TRUE_ID : PT_WIRE_BOOL_FALSE_ID);
}

int pt_wire_put_bytes(pt_buf *out, const pt_tl_bytes *v)
{
    PT_ASSERT(v->data || v->len == 0);
    if (v->len > PT_WIRE_BYTES_MAX) return PT_ERR_TOO_BIG;
    size_t head = v->len <= 253 ? 1 : 4;
    size_t total = (head + v->len + 3) & ~(size_t)3;
    uint8_t *p = pt_buf_extend(out, total);
    if (!p) return PT_ERR_NOMEM;
    if (head == 1) {
        p[0] = (uint8_t)v->len;
    } else {
        p[0] = 254;
        p[1] = (uint8_t)v->len;
        p[2] = (uint8_t)(v->len >> 8);
        p[3] = (uint8_t)(v->len >> 16);
    }
    if (v->len) memcpy(p + head, v->data, v->len);
    memset(p + head + v->len, 0, total - head - v->len);
    return 0;
}

int pt_wire_put_string(pt_buf *out, const pt_tl_bytes *v)
{
    PT_ASSERT(v->data || v->len == 0);
    if (!pt_wire_utf8_valid(v->data, v->len)) return PT_ERR_INVAL;
    return pt_wire_put_bytes(out, v);
}

int pt_wire_put_object(pt_buf *out, const pt_tl_bytes *v)
{
    PT_ASSERT(v->data || v->len == 0);
    if (v->len < 4 || v->len % 4 != 0) return PT_ERR_INVAL;
    return pt_buf_append(out, v->data, v->len);
}

int pt_wire_put_vector(pt_buf *out, uint32_t n)
{
    int rc = pt_wire_put_u32(out, PT_WIRE_VECTOR_ID);
    return rc ? rc : pt_wire_put_u32(out, n);
}

/* ---- UTF-8 ----------------------------------------------------------------- */

bool pt_wire_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t more;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            more = 1, cp = c & 0x1fu, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2, cp = c & 0x0fu, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            return false; /* stray continuation byte, 0xc0/0xc1, or > U+10FFFF lead */
        }
        if (more > n - i - 1) return false;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += more + 1;
    }
    return true;
}
