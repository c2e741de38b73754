/*
 * The routing directory: what a send needs to know, kept in memory so that the
 * send path runs no SQL (three reader queries per send were a third of the
 * server's CPU, docs/BENCHMARKS.md).
 *
 * - The devices of a user, read from the store the first time the user is looked
 *   up and then extended by every binding that commits (bind_done). Devices are
 *   never unbound, so the list only grows; a binding that commits between the read
 *   and its done callback is found twice and kept once.
 * - Every block (contacts rows in state PT_CONTACT_BLOCKED), read once at startup
 *   and then set or cleared by each contact operation after its commit, with the
 *   states that operation's transaction left.
 *
 * Loop thread only. The writer's apply functions keep using the store, inside
 * their transaction.
 */
#include <stdlib.h>

#include "server/pt_cluster.h"
#include "server/pt_server_int.h"

struct pt_dir_user {
    uint8_t user_id[16];
    uint32_t n, cap;                /* devices known (at most PT_SERVER_USER_DEVICES_MAX), room */
    uint8_t (*pk)[32];              /* n keys, malloc'd */
    pt_dir_user *next;              /* hash chain */
};

struct pt_dir_block {
    uint8_t by[16], whom[16];       /* by blocked whom */
    pt_dir_block *next;             /* hash chain */
};

static size_t h16(const uint8_t id[16], size_t nb) { return (size_t)(pt_get_u64le(id) % nb); }

static size_t hblock(const uint8_t by[16], const uint8_t whom[16], size_t nb)
{
    return (size_t)((pt_get_u64le(by) ^ (pt_get_u64le(whom) * 0x9e3779b97f4a7c15ull)) % nb);
}

/* ---- users' devices --------------------------------------------------------------------------- */

static pt_dir_user *user_find(pt_server *s, const uint8_t id[16])
{
    for (pt_dir_user *u = s->dir_users[h16(id, s->dir_nusers_b)]; u; u = u->next)
        if (memcmp(u->user_id, id, 16) == 0) return u;
    return NULL;
}

static void users_grow(pt_server *s)
{
    size_t nb = s->dir_nusers_b * 2;
    pt_dir_user **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < s->dir_nusers_b; i++) {
        for (pt_dir_user *u = s->dir_users[i], *next; u; u = next) {
            next = u->next;
            size_t h = h16(u->user_id, nb);
            u->next = b[h];
            b[h] = u;
        }
    }
    free(s->dir_users);
    s->dir_users = b;
    s->dir_nusers_b = nb;
}

static int user_add_device(pt_dir_user *u, const uint8_t pk[32])
{
    for (uint32_t i = 0; i < u->n; i++)
        if (memcmp(u->pk[i], pk, 32) == 0) return 0;
    if (u->n >= PT_SERVER_USER_DEVICES_MAX) return 0;
    if (u->n == u->cap) {
        uint32_t cap = u->cap ? u->cap * 2 : 2;
        void *p = realloc(u->pk, cap * sizeof *u->pk);
        if (!p) return PT_ERR_NOMEM;
        u->pk = p;
        u->cap = cap;
    }
    memcpy(u->pk[u->n++], pk, 32);
    return 0;
}

/* Cluster mode: adds the devices the cluster directory knows for user id (bound on
 * any node) to *u (allocated when NULL). A blocking JetStream read, once per user
 * per node lifetime; devices the user binds on other nodes later come from the
 * node's watch of the bucket's v.*.* keys (pt_srv_dir_device_bound). */
static int user_load_cluster(pt_server *s, const uint8_t id[16], pt_dir_user **u)
{
    pt_srv_devlist l = {0};
    int r = pt_cluster_user(s->cluster, id, NULL, NULL, &l);
    if (r == PT_ERR_NOT_FOUND) r = 0;
    else if (r < 0) pt_log_warn("directory: the cluster directory did not answer; sends reach this node's devices only");
    if (r < 0) r = 0; /* still route to what this node knows */
    for (size_t i = 0; i < l.n && r == 0; i++) {
        if (!*u && !(*u = calloc(1, sizeof **u))) r = PT_ERR_NOMEM;
        else memcpy((*u)->user_id, id, 16), r = user_add_device(*u, l.pk[i]);
    }
    pt_srv_devlist_free(&l);
    return r;
}

/* The entry of a user with devices, read from the store on first use; NULL when
 * the user has none (not kept: unknown ids must not fill memory) or on error (*rc). */
static pt_dir_user *user_load(pt_server *s, const uint8_t id[16], int *rc)
{
    *rc = 0;
    pt_dir_user *u = user_find(s, id);
    if (u) return u;
    sqlite3_stmt *st;
    if ((*rc = pt_db_stmt(pt_db_reader(s->db), "SELECT device_key FROM devices WHERE user_id = ? LIMIT ?",
                          &st)) != 0)
        return NULL;
    sqlite3_bind_blob(st, 1, id, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, PT_SERVER_USER_DEVICES_MAX);
    int r;
    while ((r = pt_db_step(st)) == 1) {
        if (sqlite3_column_bytes(st, 0) != 32) continue;
        if (!u && !(u = calloc(1, sizeof *u))) {
            r = PT_ERR_NOMEM;
            break;
        }
        memcpy(u->user_id, id, 16);
        if ((r = user_add_device(u, sqlite3_column_blob(st, 0))) != 0) break;
    }
    pt_db_release(st);
    if (r >= 0 && s->cluster) r = user_load_cluster(s, id, &u);
    if (r < 0) {
        if (u) free(u->pk);
        free(u);
        *rc = r;
        return NULL;
    }
    if (!u) return NULL;
    if (s->dir_nusers >= s->dir_nusers_b) users_grow(s);
    size_t h = h16(id, s->dir_nusers_b);
    u->next = s->dir_users[h];
    s->dir_users[h] = u;
    s->dir_nusers++;
    return u;
}

int pt_srv_dir_user_devices(pt_server *s, const uint8_t user[16], const uint8_t *skip,
                            pt_srv_devlist *out)
{
    int rc;
    pt_dir_user *u = user_load(s, user, &rc);
    for (uint32_t i = 0; u && i < u->n && rc == 0; i++)
        if (!skip || memcmp(u->pk[i], skip, 32) != 0) rc = pt_srv_devlist_add(out, u->pk[i]);
    return rc;
}

void pt_srv_dir_device_bound(pt_server *s, const uint8_t user[16], const uint8_t device[32])
{
    pt_dir_user *u = user_find(s, user); /* not loaded yet: the store has it */
    if (u && user_add_device(u, device) != 0)
        pt_log_error("directory: out of memory; a new device of a user misses live messages");
}

void pt_srv_dir_forget_user(pt_server *s, const uint8_t user[16])
{
    for (pt_dir_user **pp = &s->dir_users[h16(user, s->dir_nusers_b)]; *pp; pp = &(*pp)->next) {
        if (memcmp((*pp)->user_id, user, 16) != 0) continue;
        pt_dir_user *u = *pp;
        *pp = u->next;
        free(u->pk);
        free(u);
        s->dir_nusers--;
        return;
    }
}

/* ---- blocks ----------------------------------------------------------------------------------- */

static pt_dir_block **block_slot(pt_server *s, const uint8_t by[16], const uint8_t whom[16])
{
    pt_dir_block **pp = &s->dir_blocks[hblock(by, whom, s->dir_nblocks_b)];
    while (*pp && (memcmp((*pp)->by, by, 16) != 0 || memcmp((*pp)->whom, whom, 16) != 0))
        pp = &(*pp)->next;
    return pp;
}

static void blocks_grow(pt_server *s)
{
    size_t nb = s->dir_nblocks_b * 2;
    pt_dir_block **b = calloc(nb, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < s->dir_nblocks_b; i++) {
        for (pt_dir_block *e = s->dir_blocks[i], *next; e; e = next) {
            next = e->next;
            size_t h = hblock(e->by, e->whom, nb);
            e->next = b[h];
            b[h] = e;
        }
    }
    free(s->dir_blocks);
    s->dir_blocks = b;
    s->dir_nblocks_b = nb;
}

bool pt_srv_dir_blocked(pt_server *s, const uint8_t by[16], const uint8_t whom[16])
{
    return *block_slot(s, by, whom) != NULL;
}

int pt_srv_dir_set_blocked(pt_server *s, const uint8_t by[16], const uint8_t whom[16], bool blocked)
{
    pt_dir_block **pp = block_slot(s, by, whom);
    if (!blocked && *pp) {
        pt_dir_block *e = *pp;
        *pp = e->next;
        free(e);
        s->dir_nblocks--;
    } else if (blocked && !*pp) {
        pt_dir_block *e = calloc(1, sizeof *e);
        if (!e) {
            pt_log_error("directory: out of memory; a block is not enforced on sends");
            return PT_ERR_NOMEM;
        }
        memcpy(e->by, by, 16);
        memcpy(e->whom, whom, 16);
        *pp = e;
        s->dir_nblocks++;
        if (s->dir_nblocks > s->dir_nblocks_b) blocks_grow(s);
    }
    return 0;
}

/* ---- lifetime --------------------------------------------------------------------------------- */

int pt_srv_dir_init(pt_server *s)
{
    s->dir_nusers_b = s->dir_nblocks_b = 1024;
    s->dir_users = calloc(s->dir_nusers_b, sizeof *s->dir_users);
    s->dir_blocks = calloc(s->dir_nblocks_b, sizeof *s->dir_blocks);
    if (!s->dir_users || !s->dir_blocks) return PT_ERR_NOMEM;
    sqlite3_stmt *st;
    int rc = pt_db_prepare(pt_db_reader(s->db), "SELECT user_id, peer_id FROM contacts WHERE state = ?", &st);
    if (rc) return rc;
    sqlite3_bind_int(st, 1, PT_CONTACT_BLOCKED);
    while ((rc = pt_db_step(st)) == 1) {
        if (sqlite3_column_bytes(st, 0) != 16 || sqlite3_column_bytes(st, 1) != 16) continue;
        if ((rc = pt_srv_dir_set_blocked(s, sqlite3_column_blob(st, 0), sqlite3_column_blob(st, 1), true)))
            break;
    }
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

void pt_srv_dir_free(pt_server *s)
{
    for (size_t i = 0; s->dir_users && i < s->dir_nusers_b; i++) {
        for (pt_dir_user *u = s->dir_users[i], *next; u; u = next) {
            next = u->next;
            free(u->pk);
            free(u);
        }
    }
    for (size_t i = 0; s->dir_blocks && i < s->dir_nblocks_b; i++) {
        for (pt_dir_block *e = s->dir_blocks[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(s->dir_users);
    free(s->dir_blocks);
    s->dir_users = NULL;
    s->dir_blocks = NULL;
    s->dir_nusers = s->dir_nblocks = 0;
}
