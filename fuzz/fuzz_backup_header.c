/* Fuzz target for pt_backup_parse_header(): arbitrary bytes as the start of a
 * backup archive, read through fmemopen() as packtrackctl restore reads the file.
 * Properties, each abort()ing when broken:
 *  - the result is 0, PT_ERR_DECODE, PT_ERR_VERSION or PT_ERR_AUTH; an error has a
 *    non-empty sentence, PT_ERR_VERSION a format newer than PT_BACKUP_FORMAT;
 *  - info's strings stay NUL-terminated within their arrays whatever the result;
 *  - success means: the bytes start with the magic line of a format from 1 to
 *    PT_BACKUP_FORMAT; the stream stands just past an "end HEX" line within the
 *    first PT_BACKUP_HEADER_MAX + 600 bytes, and HEX is the SHA-256 of every byte
 *    before that line (at most PT_BACKUP_HEADER_MAX); each entry comes from a
 *    "file NAME SIZE HEX" line of those bytes whose NAME is that entry's fixed name
 *    and whose SIZE is the entry's size in decimal (nothing the archive says picks a
 *    path);
 *  - the bytes after the header never change the result: the header alone, cut
 *    just after its "end" line, gives the same info and entries, and so does
 *    reading through an unbuffered stream. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pt_common.h"
#include "server/pt_backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz_result {
    int rc;
    long pos; /* the stream's position afterwards */
    pt_backup_info info;
    pt_backup_entry e[PT_BACKUP_NFILES];
    char msg[300];
} fz_result;

static void fz_parse(const uint8_t *data, size_t size, bool tiny_buffer, fz_result *r)
{
    static const uint8_t empty[1];
    memset(r, 0, sizeof *r); /* info zeroed, as pt_backup_restore does */
    memset(r->msg, 0x55, sizeof r->msg);
    /* fmemopen() wants a size of at least 1: no bytes is one byte of a stream cut short */
    FILE *f = fmemopen((void *)(size ? data : empty), size ? size : 1, "r");
    if (!f) abort();
    if (tiny_buffer) setvbuf(f, NULL, _IONBF, 0); /* before any other use of the stream */
    if (!size) fgetc(f);
    r->rc = pt_backup_parse_header(f, &r->info, r->e, r->msg, sizeof r->msg);
    r->pos = ftell(f);
    fclose(f);
    if (r->rc != 0 && r->rc != PT_ERR_DECODE && r->rc != PT_ERR_VERSION && r->rc != PT_ERR_AUTH)
        abort();
    if (!memchr(r->info.created, 0, sizeof r->info.created) ||
        !memchr(r->info.version, 0, sizeof r->info.version))
        abort();
    if (r->rc != 0 && (!memchr(r->msg, 0, sizeof r->msg) || !r->msg[0])) abort();
    if (r->rc == PT_ERR_VERSION && r->info.format <= PT_BACKUP_FORMAT) abort();
}

static bool fz_same(const fz_result *a, const fz_result *b)
{
    return a->rc == b->rc && a->pos == b->pos && memcmp(&a->info, &b->info, sizeof a->info) == 0 &&
           memcmp(a->e, b->e, sizeof a->e) == 0 && strcmp(a->msg, b->msg) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_result r, r2;
    fz_parse(data, size, false, &r);
    fz_parse(data, size, true, &r2);
    if (!fz_same(&r, &r2)) abort();
    if (r.rc != 0) return 0;

    if (r.info.format < 1 || r.info.format > PT_BACKUP_FORMAT) abort();
    if (size < sizeof PT_BACKUP_MAGIC ||
        memcmp(data, PT_BACKUP_MAGIC, sizeof PT_BACKUP_MAGIC - 1) != 0)
        abort();
    /* the "end" line: the last line read */
    size_t end = (size_t)r.pos;
    if (r.pos <= 0 || end > size || end > PT_BACKUP_HEADER_MAX + 600 || data[end - 1] != '\n')
        abort();
    size_t start = end - 1;
    while (start > 0 && data[start - 1] != '\n')
        start--;
    if (start > PT_BACKUP_HEADER_MAX || end - start < 5 || memcmp(data + start, "end ", 4) != 0)
        abort();
    uint8_t h[32], want[32];
    char hex[80];
    if (end - start - 5 >= sizeof hex) abort();
    memcpy(hex, data + start + 4, end - start - 5);
    hex[end - start - 5] = 0;
    if (pt_hex_decode(want, 32, hex) != 0) abort();
    crypto_hash_sha256(h, data, start);
    if (memcmp(h, want, 32) != 0) abort();
    /* each file's line */
    char *head = malloc(start + 1);
    if (!head) abort();
    memcpy(head, data, start);
    head[start] = 0;
    for (size_t i = 0; i < PT_BACKUP_NFILES; i++) {
        bool found = false;
        for (const char *l = head; l && *l && !found; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
            /* "file NAME SIZE HEX", tokens compared whole */
            char name[64], sz[32], hx[80];
            char *endp = NULL;
            found = sscanf(l, "file %63s %31s %79s", name, sz, hx) == 3 &&
                    strcmp(name, pt_backup_file_name(i)) == 0 && sz[0] >= '0' && sz[0] <= '9' &&
                    strtoull(sz, &endp, 10) == r.e[i].size && *endp == 0;
        }
        if (!found) abort();
    }
    free(head);
    /* the bytes after the header do not count */
    if (end < size) {
        fz_parse(data, end, false, &r2);
        if (!fz_same(&r, &r2)) abort();
    }
    return 0;
}
