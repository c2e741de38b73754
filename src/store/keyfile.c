#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/pt_crypto.h"
#include "store/pt_keyfile.h"

int pt_keyfile_load_or_create(const char *path, uint8_t sk[static 32], uint8_t pk[static 32])
{
    char hex[66];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) != 0) {
            close(fd);
            return PT_ERR_IO;
        }
        if (st.st_mode & 077) {
            close(fd);
            pt_log_error("key file %s is readable by others (mode %03o); chmod 600 it",
                         path, (unsigned)(st.st_mode & 0777));
            return PT_ERR_INVAL;
        }
        ssize_t n = read(fd, hex, sizeof hex);
        close(fd);
        int rc = PT_ERR_DECODE;
        if (n == 65 && hex[64] == '\n') {
            hex[64] = 0;
            rc = pt_hex_decode(sk, 32, hex);
        }
        pt_wipe(hex, sizeof hex);
        if (rc) {
            pt_log_error("key file %s is malformed (expected 64 hex digits)", path);
            return PT_ERR_DECODE;
        }
        return pt_x25519_base(pk, sk);
    }
    if (errno != ENOENT) {
        pt_log_error("cannot open key file %s: %s", path, strerror(errno));
        return PT_ERR_IO;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        pt_log_error("cannot create key file %s: %s", path, strerror(errno));
        return PT_ERR_IO;
    }
    int rc = pt_x25519_keypair(pk, sk);
    pt_hex_encode(hex, sk, 32);
    hex[64] = '\n';
    if (rc == 0 && (write(fd, hex, 65) != 65 || fsync(fd) != 0)) rc = PT_ERR_IO;
    close(fd);
    pt_wipe(hex, sizeof hex);
    if (rc) unlink(path);
    return rc;
}

void pt_fingerprint(char out[static PT_FINGERPRINT_LEN], const uint8_t pk[static 32])
{
    char hex[65];
    pt_hex_encode(hex, pk, 32);
    size_t o = 0;
    for (int i = 0; i < 64; i++) {
        if (i && i % 8 == 0) out[o++] = ':';
        out[o++] = hex[i];
    }
    out[o] = 0;
}

int pt_fingerprint_parse(uint8_t pk[static 32], const char *fp)
{
    char hex[65];
    size_t n = 0;
    for (const char *p = fp; *p; p++) {
        if (*p == ':' || *p == ' ') continue;
        if (n == 64) return PT_ERR_DECODE;
        hex[n++] = *p;
    }
    hex[n] = 0;
    return n == 64 ? pt_hex_decode(pk, 32, hex) : PT_ERR_DECODE;
}
