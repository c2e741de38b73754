/* packtrackd: the PackTrack server. Only the command line lives here. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/pt_server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: packtrackd [OPTION]...\n"
            "The PackTrack secure messaging server.\n"
            "\n"
            "  -l, --listen HOST:PORT     address to listen on (default %s:%d;\n"
            "                             IPv6 as [::1]:7000; port 0 picks a free one)\n"
            "  -d, --data DIR             data directory: server.key and packtrack.db (default %s)\n"
            "  -s, --suites LIST          allowed channel suites in preference order, comma\n"
            "                             separated (default: all): PT1-CHACHAPOLY-BLAKE2B,\n"
            "                             PT1-AESGCM-SHA256, ECDHE-AES256_CTR-SHA384,\n"
            "                             ECDHE-AES128_CTR-SHA256, MTPROTO2-AES256IGE\n"
            "      --handshake-timeout S  seconds a client has to finish the handshake (%d)\n"
            "      --idle-timeout S       seconds of silence before a connection is closed (%d)\n"
            "      --session-expiry S     seconds a session outlives its last connection (%d)\n"
            "      --max-connections N    connections accepted at once (%d)\n"
            "      --queue-quota N        undelivered messages kept per device (%d)\n"
            "      --ready-file PATH      write \"HOST:PORT\\nFINGERPRINT\\n\" there once listening\n"
            "      --log-level LEVEL      error, warn, info or debug (default info)\n"
            "  -h, --help                 show this help and exit\n"
            "  -V, --version              show the version and exit\n"
            "\n"
            "Logs go to stderr, one line per event. SIGINT or SIGTERM stop the server\n"
            "cleanly: no new connections, queued replies flushed, connections closed.\n",
            PT_SERVER_DEFAULT_HOST, PT_SERVER_DEFAULT_PORT, PT_SERVER_DEFAULT_DATA,
            PT_SERVER_HANDSHAKE_TIMEOUT_MS / 1000, PT_SERVER_IDLE_TIMEOUT_MS / 1000,
            PT_SERVER_SESSION_EXPIRY_MS / 1000, PT_SERVER_MAX_CONNECTIONS, PT_SERVER_QUEUE_QUOTA);
}

/* "HOST:PORT" or "[V6]:PORT" into host (static storage) and port. */
static int parse_listen(const char *arg, const char **host, uint16_t *port)
{
    static char buf[256];
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg) return -1;
    size_t hl = (size_t)(colon - arg);
    if (arg[0] == '[') {
        if (hl < 3 || arg[hl - 1] != ']') return -1;
        arg++;
        hl -= 2;
    }
    if (hl >= sizeof buf) return -1;
    memcpy(buf, arg, hl);
    buf[hl] = 0;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535) return -1;
    *host = buf;
    *port = (uint16_t)p;
    return 0;
}

static int parse_seconds(const char *opt, const char *arg, uint32_t max_s, uint32_t *out_ms)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*end || end == arg || v < 1 || (unsigned long)v > max_s) {
        fprintf(stderr, "packtrackd: %s: '%s' is not a number of seconds from 1 to %u\n", opt,
                arg, max_s);
        return -1;
    }
    *out_ms = (uint32_t)v * 1000u;
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_HS = 256, OPT_IDLE, OPT_EXPIRY, OPT_MAXC, OPT_READY, OPT_LOG, OPT_QUOTA };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"data", required_argument, NULL, 'd'},
        {"suites", required_argument, NULL, 's'},
        {"handshake-timeout", required_argument, NULL, OPT_HS},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"session-expiry", required_argument, NULL, OPT_EXPIRY},
        {"max-connections", required_argument, NULL, OPT_MAXC},
        {"queue-quota", required_argument, NULL, OPT_QUOTA},
        {"ready-file", required_argument, NULL, OPT_READY},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    pt_server_config cfg = {.port = PT_SERVER_DEFAULT_PORT};
    int o, n;
    while ((o = getopt_long(argc, argv, "l:d:s:hV", opts, NULL)) != -1) {
        switch (o) {
        case 'l':
            if (parse_listen(optarg, &cfg.host, &cfg.port) != 0) {
                fprintf(stderr, "packtrackd: --listen: '%s' is not HOST:PORT\n", optarg);
                return 2;
            }
            break;
        case 'd': cfg.data_dir = optarg; break;
        case 's':
            if ((n = pt_suite_list_parse(optarg, cfg.suites, PT_CHAN_MAX_SUITES)) < 0) {
                fprintf(stderr, "packtrackd: --suites: '%s' is not a list of known suites\n", optarg);
                return 2;
            }
            cfg.nsuites = (size_t)n;
            break;
        case OPT_HS:
            if (parse_seconds("--handshake-timeout", optarg, 3600, &cfg.handshake_timeout_ms)) return 2;
            break;
        case OPT_IDLE:
            if (parse_seconds("--idle-timeout", optarg, 86400, &cfg.idle_timeout_ms)) return 2;
            break;
        case OPT_EXPIRY:
            if (parse_seconds("--session-expiry", optarg, 30 * 86400, &cfg.session_expiry_ms)) return 2;
            break;
        case OPT_MAXC: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1000000) {
                fprintf(stderr, "packtrackd: --max-connections: '%s' is not from 1 to 1000000\n", optarg);
                return 2;
            }
            cfg.max_connections = (uint32_t)v;
            break;
        }
        case OPT_QUOTA: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 100000000) {
                fprintf(stderr, "packtrackd: --queue-quota: '%s' is not from 1 to 100000000\n", optarg);
                return 2;
            }
            cfg.queue_quota = (uint32_t)v;
            break;
        }
        case OPT_READY: cfg.ready_file = optarg; break;
        case OPT_LOG: {
            pt_log_level lvl;
            if (pt_log_parse_level(optarg, &lvl) != 0) {
                fprintf(stderr, "packtrackd: --log-level: '%s' is not error, warn, info or debug\n", optarg);
                return 2;
            }
            pt_log_set_level(lvl);
            break;
        }
        case 'h': usage(stdout); return 0;
        case 'V': printf("packtrackd %s\n", pt_version()); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "packtrackd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (pt_init() != 0) {
        fprintf(stderr, "packtrackd: cannot initialise the crypto libraries\n");
        return 1;
    }
    int err = 0;
    pt_server *s = pt_server_new(&cfg, &err);
    if (!s) {
        pt_log_error("cannot start: %s", pt_strerror(err));
        return 1;
    }
    int rc = pt_server_run(s);
    pt_server_free(s);
    return rc == 0 ? 0 : 1;
}
