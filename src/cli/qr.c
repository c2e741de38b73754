/* QR codes in the terminal (libqrencode), two modules per character cell with
 * the half-block characters, dark on light with the 4-module quiet zone. */
#include <qrencode.h>
#include <stdio.h>

#include "cli.h"

int pt_cli_print_qr(FILE *f, const char *text)
{
    QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (!q) return -1;
    const int quiet = 4, w = q->width, size = w + 2 * quiet;
    /* a module is dark when bit 0 is set; outside the code everything is light */
#define DARK(x, y) ((x) >= quiet && (y) >= quiet && (x) < quiet + w && (y) < quiet + w && \
                    (q->data[((y) - quiet) * w + (x) - quiet] & 1))
    for (int y = 0; y < size; y += 2) {
        for (int x = 0; x < size; x++) {
            bool top = DARK(x, y), bottom = y + 1 < size && DARK(x, y + 1);
            /* light modules are drawn (full block), dark ones left blank: works on dark terminals */
            fputs(!top && !bottom ? "\u2588" : !top ? "\u2580" : !bottom ? "\u2584" : " ", f);
        }
        fputc('\n', f);
    }
#undef DARK
    QRcode_free(q);
    return 0;
}
