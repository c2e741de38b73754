/* Fuzz target for pt_known_servers_find(): arbitrary bytes as HOME/known_servers.
 * Looked up for two names: the first line's text before its first space (when it is
 * a name pt_known_servers_line accepts) and a fixed "127.0.0.1:7000". Properties, each
 * abort()ing when broken:
 *  - the answer (found or not, and the key) is the one a separate reading gives: the
 *    first line that is exactly NAME, a space and 64 hex digits (one trailing CR
 *    allowed) holds the key;
 *  - a line for a name not yet found, appended as pt_known_servers_add writes it, is
 *    then found with exactly its key;
 *  - a line appended for a name already found changes nothing (the first counts). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "client/pt_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The reference reading: line by line, from the end of the last line found. */
static bool ref_find(const char *buf, size_t len, const char *name, uint8_t key[32])
{
    size_t nl = strlen(name);
    size_t start = 0;
    while (start < len) {
        size_t end = start;
        while (end < len && buf[end] != '\n') end++;
        size_t n = end - start;
        if (n > 0 && buf[start + n - 1] == '\r') n--;
        const char *l = buf + start;
        bool ok = n == nl + 65 && memcmp(l, name, nl) == 0 && l[nl] == ' ';
        for (size_t i = 0; ok && i < 64; i++) ok = hexval((unsigned char)l[nl + 1 + i]) >= 0;
        if (ok) {
            for (size_t i = 0; i < 32; i++)
                key[i] = (uint8_t)(hexval((unsigned char)l[nl + 1 + 2 * i]) << 4 |
                                   hexval((unsigned char)l[nl + 2 + 2 * i]));
            return true;
        }
        start = end + 1;
    }
    return false;
}

static void check(const char *buf, size_t len, const char *name, const uint8_t other[32])
{
    uint8_t got[32], want[32];
    memset(got, 0xa5, sizeof got);
    bool found = pt_known_servers_find(buf, len, name, got);
    if (found != ref_find(buf, len, name, want)) abort();
    if (found && memcmp(got, want, 32) != 0) abort();

    /* append a line for the name, as pt_known_servers_add writes it */
    char line[400];
    int n = pt_known_servers_line(line, sizeof line, name, other);
    if (n <= 0) abort(); /* the names given here are all acceptable */
    char *more = malloc(len + 1 + (size_t)n);
    if (!more) return;
    if (len) memcpy(more, buf, len);
    size_t m = len;
    if (m && more[m - 1] != '\n') more[m++] = '\n';
    memcpy(more + m, line, (size_t)n);
    m += (size_t)n;
    uint8_t after[32];
    if (!pt_known_servers_find(more, m, name, after)) abort();
    if (memcmp(after, found ? want : other, 32) != 0) abort();
    free(more);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    uint8_t other[32];
    for (size_t i = 0; i < sizeof other; i++) other[i] = (uint8_t)(size * 31 + i * 7);

    check(buf, size, "127.0.0.1:7000", other);

    /* the first line's name, when pt_known_servers_line takes it */
    char name[300];
    size_t k = 0;
    while (k < size && k < sizeof name - 1 && buf[k] != ' ' && buf[k] != '\n' && buf[k] != '\r' &&
           buf[k] != '\0')
        k++;
    memcpy(name, buf, k);
    name[k] = 0;
    char line[400];
    if (k > 0 && pt_known_servers_line(line, sizeof line, name, other) > 0)
        check(buf, size, name, other);
    return 0;
}
