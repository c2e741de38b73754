/* Fuzz target for the records cluster mode reads from the bucket (cluster_rec.c):
 * what another node wrote is input like any other. The first byte picks the record:
 * 0 a user (u.), 1 a device's prekeys (p.), 2 a group (g.), 3 a relation of two
 * users (k.); the rest is the record. Properties, each abort()ing when broken:
 *  - decoding returns 0 or PT_ERR_DECODE, nothing else, and stays within bounds;
 *  - prekeys (format 2), groups and relations that decode re-encode to exactly the
 *    input (the encoding is canonical);
 *  - prekeys of format 1 (no floor) re-encode as format 2: the same bytes after the
 *    format, then a floor that is the largest id listed (INT32_MIN: none), and that
 *    decodes and re-encodes to itself;
 *  - a user record that decodes re-encodes to a record that decodes and re-encodes
 *    to itself (names are NUL-terminated in memory: a name with a NUL in it comes
 *    back shorter, once). */
#include <stdlib.h>
#include <string.h>

#include "server/pt_cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out[PT_CLUSTER_USER_REC_MAX + PT_CLUSTER_PREKEYS_MAX + PT_CLUSTER_GROUP_REC_MAX];
static uint8_t out2[sizeof out];

static void check_rc(int rc)
{
    if (rc != 0 && rc != PT_ERR_DECODE) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t len = size - 1, n = 0;
    switch (data[0]) {
    case 0: {
        static pt_cluster_user_rec r, r2;
        int rc = pt_cluster_user_rec_decode(&r, p, len);
        check_rc(rc);
        if (rc) return 0;
        n = pt_cluster_user_rec_encode(out, &r);
        if (n > PT_CLUSTER_USER_REC_MAX || pt_cluster_user_rec_decode(&r2, out, n) != 0) abort();
        if (pt_cluster_user_rec_encode(out2, &r2) != n || memcmp(out, out2, n) != 0) abort();
        return 0;
    }
    case 1: {
        static pt_cluster_prekeys r, r2;
        int rc = pt_cluster_prekeys_decode(&r, p, len);
        check_rc(rc);
        if (rc) return 0;
        n = pt_cluster_prekeys_encode(out, &r);
        if (p[0] == 2) break;
        int32_t top = INT32_MIN;
        for (uint32_t i = 0; i < r.n; i++)
            if (r.k[i].id > top) top = r.k[i].id;
        if (p[0] != 1 || out[0] != 2 || n != len + 4 || memcmp(out + 1, p + 1, len - 1) != 0 || r.floor != top)
            abort();
        if (pt_cluster_prekeys_decode(&r2, out, n) != 0 || pt_cluster_prekeys_encode(out2, &r2) != n ||
            memcmp(out, out2, n) != 0)
            abort();
        return 0;
    }
    case 2: {
        static pt_cluster_group g;
        int rc = pt_cluster_group_decode(&g, p, len);
        check_rc(rc);
        if (rc) return 0;
        if (g.nm + g.ni > PT_SERVER_GROUP_MAX_MEMBERS) abort();
        memcpy(out, p, PT_CLUSTER_VREC_HEAD); /* the head is the writer's */
        n = pt_cluster_group_encode(out, &g);
        break;
    }
    case 3: {
        pt_cluster_contact k;
        int rc = pt_cluster_contact_decode(&k, p, len);
        check_rc(rc);
        if (rc) return 0;
        if (k.note_len > PT_SERVER_NOTE_MAX) abort();
        memcpy(out, p, PT_CLUSTER_VREC_HEAD);
        n = pt_cluster_contact_encode(out, &k);
        break;
    }
    default:
        return 0;
    }
    if (n != len || memcmp(out, p, len) != 0) abort();
    return 0;
}
