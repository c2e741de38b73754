/*
 * Message codecs of both suites. olm.v1 is libolm's protobuf-style layout
 * (src/message.cpp): a version byte, then (tag, value) fields where a tag is the
 * varint (field << 3 | wire type), wire type 0 a varint and 2 a length-prefixed
 * string; a normal message ends with the 8-byte MAC outside the fields. pt.v1 is
 * a fixed layout. Both decoders are bounded and pure; stricter than libolm in what
 * they refuse (duplicate fields, overlong varints, unknown wire types, a truncated
 * length), never in what libolm itself writes.
 */
#include "e2e/olm_int.h"

/* ---- varints --------------------------------------------------------------------------- */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        n++;
    return n;
}

static size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    for (; v >= 0x80; v >>= 7)
        p[n++] = (uint8_t)(v | 0x80);
    p[n++] = (uint8_t)v;
    return n;
}

/* At most 10 bytes, and the value must fit 64 bits. */
static int varint_get(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (p == end) return PT_ERR_DECODE;
        uint8_t b = *p++;
        if (shift == 63 && (b & 0x7e)) return PT_ERR_DECODE;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return PT_ERR_DECODE;
}

/* ---- protobuf-style fields --------------------------------------------------------------- */

#define WIRE_VARINT 0
#define WIRE_BYTES 2

typedef struct field {
    uint32_t number; /* field number we know */
    uint8_t wire;    /* its wire type */
    bool seen;
    uint64_t value;      /* WIRE_VARINT */
    const uint8_t *data; /* WIRE_BYTES */
    size_t len;
} field;

/* Parses [p, end) into the known fields; skips unknown varint and string fields
 * as libolm does, refuses everything else. */
static int parse_fields(const uint8_t *p, const uint8_t *end, field *f, size_t nf)
{
    while (p < end) {
        uint64_t tag, v;
        if (varint_get(&p, end, &tag) != 0 || tag > UINT32_MAX || (tag >> 3) == 0)
            return PT_ERR_DECODE;
        uint8_t wire = (uint8_t)(tag & 7);
        field *known = NULL;
        for (size_t i = 0; i < nf; i++)
            if (f[i].number == (uint32_t)(tag >> 3)) known = &f[i];
        if (known && (known->wire != wire || known->seen)) return PT_ERR_DECODE;
        if (wire == WIRE_VARINT) {
            if (varint_get(&p, end, &v) != 0) return PT_ERR_DECODE;
            if (known) known->value = v;
        } else if (wire == WIRE_BYTES) {
            if (varint_get(&p, end, &v) != 0 || v > (uint64_t)(end - p)) return PT_ERR_DECODE;
            if (known) {
                known->data = p;
                known->len = (size_t)v;
            }
            p += v;
        } else {
            return PT_ERR_DECODE;
        }
        if (known) known->seen = true;
    }
    return 0;
}

/* ---- olm.v1 ------------------------------------------------------------------------------- */

#define TAG_RATCHET_KEY 0x0a /* field 1, bytes */
#define TAG_COUNTER 0x10     /* field 2, varint */
#define TAG_CIPHERTEXT 0x22  /* field 4, bytes */
#define TAG_ONE_TIME 0x0a    /* pre-key: field 1 */
#define TAG_BASE 0x12        /* field 2 */
#define TAG_IDENTITY 0x1a    /* field 3 */
#define TAG_MESSAGE 0x22     /* field 4 */

size_t olm_v1_header_len(uint32_t counter, size_t ctlen)
{
    return 1 + 2 + OLM_KEY + 1 + varint_len(counter) + 1 + varint_len(ctlen);
}

size_t olm_v1_header_write(uint8_t *p, const uint8_t ratchet_key[static OLM_KEY], uint32_t counter,
                           size_t ctlen)
{
    size_t n = 0;
    p[n++] = PT_OLM_V1_VERSION;
    p[n++] = TAG_RATCHET_KEY;
    p[n++] = OLM_KEY;
    memcpy(p + n, ratchet_key, OLM_KEY);
    n += OLM_KEY;
    p[n++] = TAG_COUNTER;
    n += varint_put(p + n, counter);
    p[n++] = TAG_CIPHERTEXT;
    n += varint_put(p + n, ctlen);
    return n;
}

size_t olm_prekey_header_len(pt_olm_suite suite, size_t inner_len)
{
    if (suite == PT_OLM_SUITE_PT_V1) return PT_OLM_PT1_PREKEY_HEADER_LEN;
    return 1 + 3 * (2 + OLM_KEY) + 1 + varint_len(inner_len);
}

size_t olm_prekey_header_write(uint8_t *p, pt_olm_suite suite,
                               const uint8_t one_time[static OLM_KEY],
                               const uint8_t base[static OLM_KEY],
                               const uint8_t identity[static OLM_KEY], size_t inner_len)
{
    size_t n = 0;
    if (suite == PT_OLM_SUITE_PT_V1) {
        p[n++] = PT_OLM_PT1_PREKEY;
        memcpy(p + n, one_time, OLM_KEY);
        memcpy(p + n + OLM_KEY, base, OLM_KEY);
        memcpy(p + n + 2 * OLM_KEY, identity, OLM_KEY);
        return n + 3 * OLM_KEY;
    }
    /* libolm's order: one-time key, base key, identity key, message */
    const uint8_t tags[3] = {TAG_ONE_TIME, TAG_BASE, TAG_IDENTITY};
    const uint8_t *keys[3] = {one_time, base, identity};
    p[n++] = PT_OLM_V1_VERSION;
    for (int i = 0; i < 3; i++) {
        p[n++] = tags[i];
        p[n++] = OLM_KEY;
        memcpy(p + n, keys[i], OLM_KEY);
        n += OLM_KEY;
    }
    p[n++] = TAG_MESSAGE;
    n += varint_put(p + n, inner_len);
    return n;
}

static int v1_msg_decode(pt_olm_msg *m, const uint8_t *buf, size_t len)
{
    if (len < 1) return PT_ERR_DECODE;
    if (buf[0] != PT_OLM_V1_VERSION) return PT_ERR_VERSION;
    if (len < 1 + PT_OLM_V1_MAC_LEN) return PT_ERR_DECODE;
    field f[3] = {{.number = 1, .wire = WIRE_BYTES},
                  {.number = 2, .wire = WIRE_VARINT},
                  {.number = 4, .wire = WIRE_BYTES}};
    size_t body = len - PT_OLM_V1_MAC_LEN;
    const uint8_t *end = buf + body;
    /* What libolm and we write: key, counter, ciphertext in that order, nothing
     * else. Read directly; anything else goes through the general parser, which
     * accepts the same messages this path does. */
    const uint8_t *p = buf + 1;
    uint64_t ctr, ctlen;
    if (body >= 3 + OLM_KEY + 3 && p[0] == TAG_RATCHET_KEY && p[1] == OLM_KEY &&
        p[2 + OLM_KEY] == TAG_COUNTER && (p += 3 + OLM_KEY, varint_get(&p, end, &ctr) == 0) &&
        p < end && *p++ == TAG_CIPHERTEXT && varint_get(&p, end, &ctlen) == 0 &&
        ctlen == (uint64_t)(end - p)) {
        f[0] = (field){.seen = true, .data = buf + 3, .len = OLM_KEY};
        f[1] = (field){.seen = true, .value = ctr};
        f[2] = (field){.seen = true, .data = p, .len = (size_t)ctlen};
    } else {
        int rc = parse_fields(buf + 1, end, f, 3);
        if (rc != 0) return rc;
    }
    if (!f[0].seen || !f[1].seen || !f[2].seen || f[0].len != OLM_KEY || f[1].value > UINT32_MAX)
        return PT_ERR_DECODE;
    /* AES-CBC with PKCS#7 always yields whole blocks, at least one */
    if (f[2].len == 0 || f[2].len % PT_AES_BLOCK) return PT_ERR_DECODE;
    if (f[2].len > PT_OLM_MAX_PLAINTEXT + PT_AES_BLOCK) return PT_ERR_TOO_BIG;
    m->version = buf[0];
    m->ratchet_key = f[0].data;
    m->counter = (uint32_t)f[1].value;
    m->ciphertext = f[2].data;
    m->ciphertext_len = f[2].len;
    m->mac = buf + body;
    m->authed_len = body;
    return 0;
}

static int v1_prekey_decode(pt_olm_prekey *pk, const uint8_t *buf, size_t len)
{
    if (len < 1) return PT_ERR_DECODE;
    if (buf[0] != PT_OLM_V1_VERSION) return PT_ERR_VERSION;
    field f[4] = {{.number = 1, .wire = WIRE_BYTES},
                  {.number = 2, .wire = WIRE_BYTES},
                  {.number = 3, .wire = WIRE_BYTES},
                  {.number = 4, .wire = WIRE_BYTES}};
    int rc = parse_fields(buf + 1, buf + len, f, 4);
    if (rc != 0) return rc;
    for (int i = 0; i < 4; i++)
        if (!f[i].seen) return PT_ERR_DECODE;
    if (f[0].len != OLM_KEY || f[1].len != OLM_KEY || f[2].len != OLM_KEY || f[3].len == 0)
        return PT_ERR_DECODE;
    pk->version = buf[0];
    pk->one_time_key = f[0].data;
    pk->base_key = f[1].data;
    pk->identity_key = f[2].data;
    pk->message = f[3].data;
    pk->message_len = f[3].len;
    return 0;
}

/* ---- pt.v1 -------------------------------------------------------------------------------- */

static int pt1_msg_decode(pt_olm_msg *m, const uint8_t *buf, size_t len)
{
    if (len < 1) return PT_ERR_DECODE;
    if (buf[0] != PT_OLM_PT1_NORMAL) return PT_ERR_VERSION;
    if (len < PT_OLM_PT1_HEADER_LEN + PT_OLM_PT1_TAG_LEN) return PT_ERR_DECODE;
    if (len - PT_OLM_PT1_HEADER_LEN > PT_OLM_MAX_PLAINTEXT + PT_OLM_PT1_TAG_LEN)
        return PT_ERR_TOO_BIG;
    m->version = buf[0];
    m->ratchet_key = buf + 1;
    m->counter = pt_get_u32le(buf + 1 + OLM_KEY);
    m->ciphertext = buf + PT_OLM_PT1_HEADER_LEN;
    m->ciphertext_len = len - PT_OLM_PT1_HEADER_LEN;
    m->mac = NULL;
    m->authed_len = PT_OLM_PT1_HEADER_LEN;
    return 0;
}

static int pt1_prekey_decode(pt_olm_prekey *pk, const uint8_t *buf, size_t len)
{
    if (len < 1) return PT_ERR_DECODE;
    if (buf[0] != PT_OLM_PT1_PREKEY) return PT_ERR_VERSION;
    if (len <= PT_OLM_PT1_PREKEY_HEADER_LEN) return PT_ERR_DECODE;
    pk->version = buf[0];
    pk->one_time_key = buf + 1;
    pk->base_key = buf + 1 + OLM_KEY;
    pk->identity_key = buf + 1 + 2 * OLM_KEY;
    pk->message = buf + PT_OLM_PT1_PREKEY_HEADER_LEN;
    pk->message_len = len - PT_OLM_PT1_PREKEY_HEADER_LEN;
    return 0;
}

/* ---- public codec API ------------------------------------------------------------------- */

int pt_olm_msg_decode(pt_olm_msg *m, pt_olm_suite suite, const uint8_t *buf, size_t len)
{
    switch (suite) {
    case PT_OLM_SUITE_OLM_V1:
        return v1_msg_decode(m, buf, len);
    case PT_OLM_SUITE_PT_V1:
        return pt1_msg_decode(m, buf, len);
    }
    return PT_ERR_INVAL;
}

int pt_olm_prekey_decode(pt_olm_prekey *p, pt_olm_suite suite, const uint8_t *buf, size_t len)
{
    switch (suite) {
    case PT_OLM_SUITE_OLM_V1:
        return v1_prekey_decode(p, buf, len);
    case PT_OLM_SUITE_PT_V1:
        return pt1_prekey_decode(p, buf, len);
    }
    return PT_ERR_INVAL;
}

int pt_olm_prekey_suite(const uint8_t *buf, size_t len)
{
    if (len < 1) return PT_ERR_DECODE;
    if (buf[0] == PT_OLM_V1_VERSION) return PT_OLM_SUITE_OLM_V1;
    if (buf[0] == PT_OLM_PT1_PREKEY) return PT_OLM_SUITE_PT_V1;
    return PT_ERR_VERSION;
}

int pt_olm_msg_encode(pt_buf *out, pt_olm_suite suite, const pt_olm_msg *m)
{
    if (suite == PT_OLM_SUITE_PT_V1) {
        uint8_t *p = pt_buf_extend(out, PT_OLM_PT1_HEADER_LEN + m->ciphertext_len);
        if (!p) return PT_ERR_NOMEM;
        p[0] = PT_OLM_PT1_NORMAL;
        memcpy(p + 1, m->ratchet_key, OLM_KEY);
        pt_put_u32le(p + 1 + OLM_KEY, m->counter);
        memcpy(p + PT_OLM_PT1_HEADER_LEN, m->ciphertext, m->ciphertext_len);
        return 0;
    }
    if (suite != PT_OLM_SUITE_OLM_V1) return PT_ERR_INVAL;
    size_t h = olm_v1_header_len(m->counter, m->ciphertext_len);
    uint8_t *p = pt_buf_extend(out, h + m->ciphertext_len + PT_OLM_V1_MAC_LEN);
    if (!p) return PT_ERR_NOMEM;
    olm_v1_header_write(p, m->ratchet_key, m->counter, m->ciphertext_len);
    memcpy(p + h, m->ciphertext, m->ciphertext_len);
    memcpy(p + h + m->ciphertext_len, m->mac, PT_OLM_V1_MAC_LEN);
    return 0;
}

int pt_olm_prekey_encode(pt_buf *out, pt_olm_suite suite, const pt_olm_prekey *pk)
{
    if (suite != PT_OLM_SUITE_PT_V1 && suite != PT_OLM_SUITE_OLM_V1) return PT_ERR_INVAL;
    size_t h = olm_prekey_header_len(suite, pk->message_len);
    uint8_t *p = pt_buf_extend(out, h + pk->message_len);
    if (!p) return PT_ERR_NOMEM;
    olm_prekey_header_write(p, suite, pk->one_time_key, pk->base_key, pk->identity_key,
                            pk->message_len);
    memcpy(p + h, pk->message, pk->message_len);
    return 0;
}
