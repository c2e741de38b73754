/* QR codes in the terminal (libqrencode), two modules per character cell with
 * the half-block characters, dark on light with a quiet zone. */
#include <qrencode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

char *pt_cli_qr_rows(const char *text, int quiet, int *rows, int *cols)
{
    QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (!q) return NULL;
    const int w = q->width, size = w + 2 * quiet;
    *rows = (size + 1) / 2;
    *cols = size;
    char *out = malloc((size_t)*rows * ((size_t)size * 3 + 1) + 1), *p = out;
    if (!out) {
        QRcode_free(q);
        return NULL;
    }
    /* a module is dark when bit 0 is set; outside the code everything is light */
#define DARK(x, y) ((x) >= quiet && (y) >= quiet && (x) < quiet + w && (y) < quiet + w && \
                    (q->data[((y) - quiet) * w + (x) - quiet] & 1))
    for (int y = 0; y < size; y += 2) {
        for (int x = 0; x < size; x++) {
            bool top = DARK(x, y), bottom = y + 1 < size && DARK(x, y + 1);
            /* light modules are drawn (full block), dark ones left blank: works on dark terminals */
            const char *cell = !top && !bottom ? "\u2588" : !top ? "\u2580" : !bottom ? "\u2584" : " ";
            size_t k = strlen(cell);
            memcpy(p, cell, k);
            p += k;
        }
        *p++ = '\n';
    }
#undef DARK
    *p = 0;
    QRcode_free(q);
    return out;
}

int pt_cli_print_qr(FILE *f, const char *text)
{
    int rows, cols;
    char *s = pt_cli_qr_rows(text, 4, &rows, &cols);
    if (!s) return -1;
    fputs(s, f);
    free(s);
    return 0;
}
