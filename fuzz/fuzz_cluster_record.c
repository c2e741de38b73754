/* Fuzz target for the records cluster mode reads from the bucket (cluster_rec.c):
 * what another node wrote is input like any other. The first byte picks the record:
 * 0 a user (u.), 1 a device's prekeys (p.), 2 a group (g.), 3 a relation of two
 * users (k.); the rest is the record. Properties, each abort()ing when broken:
 *  - decoding returns 0 or PT_ERR_DECODE, nothing else, and stays within bounds;
 *  - prekeys, groups and relations that decode re-encode to exactly the input (the
 *    encoding is canonical);
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
        static pt_cluster_prekeys r;
        int rc = pt_cluster_prekeys_decode(&r, p, len);
        check_rc(rc);
        if (rc) return 0;
        n = pt_cluster_prekeys_encode(out, &r);
        break;
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
