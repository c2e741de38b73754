/* packtrackd: the PackTrack server. Only the command line lives here. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "discovery/pt_disc.h"
#include "server/pt_cluster.h"
#include "server/pt_config.h"
#include "server/pt_server.h"

/* The text of --help; docs/man/packtrackd.8 says the same at more length, and
 * tests/ops/check-man.sh checks that every option here is in the page. */
static void usage(FILE *f)
{
    fprintf(f,
            "Usage: packtrackd [OPTION]...\n"
            "The PackTrack secure messaging server.\n"
            "\n"
            "  -c, --config FILE          read settings from FILE (INI; packtrackd.conf(5));\n"
            "                             options given here override it; SIGHUP rereads it\n"
            "      --check-config         check the configuration (file, options, data and key\n"
            "                             files as this user), print it and exit: 0 clean,\n"
            "                             1 errors, 2 warnings only\n"
            "  -l, --listen HOST:PORT     address to listen on (default %s:%d;\n"
            "                             IPv6 as [::1]:7000; port 0 picks a free one);\n"
            "                             again, or comma separated: more addresses (up to 8)\n"
            "  -d, --data DIR             data directory: server.key, packtrack.db and the\n"
            "                             control socket control.sock (default %s)\n"
            "  -s, --suites LIST          allowed channel suites in preference order, comma\n"
            "                             separated (default: all, PT1-AESGCM-SHA256 first\n"
            "                             on CPUs with AES instructions, else\n"
            "                             PT1-CHACHAPOLY-BLAKE2B; then ECDHE-AES256_CTR-SHA384,\n"
            "                             ECDHE-AES128_CTR-SHA256, MTPROTO2-AES256IGE)\n"
            "      --handshake-timeout S  seconds a client has to finish the handshake (%d)\n"
            "      --idle-timeout S       seconds of silence before a connection is closed (%d)\n"
            "      --session-expiry S     seconds a session outlives its last connection (%d)\n"
            "      --max-connections N    connections accepted at once (%d)\n"
            "      --queue-quota N        undelivered messages kept per device (%d)\n"
            "      --confirm-wait MS      longest a message sent live to every recipient device\n"
            "                             waits for their confirmations before it is stored (%d;\n"
            "                             0: never); confirmed by all in time, it is never written\n"
            "      --max-conns-per-ip N   connections from one address (%d)\n"
            "      --rate-limit N         messages/s per connection, bursts of 2N (%d); a\n"
            "                             connection above it is closed and its address banned\n"
            "      --ip-rate-limit N      messages/s from one address, all its connections\n"
            "                             together, bursts of 2N (%d); above it, likewise\n"
            "      --ip-conn-rate N       new connections/s from one address, bursts of 2N\n"
            "                             (%d); more are closed at once\n"
            "      --ban-time S           seconds a flooding address stays banned (%d)\n"
            "      --metrics [HOST:]PORT  serve GET /metrics (Prometheus text) and /healthz\n"
            "                             there (plain HTTP; HOST defaults to 127.0.0.1); off\n"
            "                             by default; keep it on a private address\n"
            "      --ready-file PATH      write \"HOST:PORT\\nFINGERPRINT\\n\" there once listening\n"
            "      --log-level LEVEL      error, warn, info or debug (default info)\n"
            "      --secure-heap KIB|auto|off  locked memory for connection secrets (auto: 4 KiB\n"
            "                             per --max-connections, rounded up to a power of two)\n"
            "      --workers N|auto       worker loops for the connections' sockets and channels\n"
            "                             (auto: one per core, none on a single core; 0: every\n"
            "                             connection on the main loop)\n"
            "      --log-file FILE        append logs to FILE instead of stderr; SIGUSR1 or\n"
            "                             packtrackctl reopen-logs reopen it\n"
            "Obfuscation (the layer under the channel; docs/PROTOCOL.md):\n"
            "      --obfuscation MODE     off (default), accept (plain and MSE on one port, told\n"
            "                             apart by the first bytes), prefer (the same, on a\n"
            "                             server), require (MSE only) or pt-obfs (pt-obfs only;\n"
            "                             probes get silence or the decoy)\n"
            "      --network-key KEY      the network key: hex (16 to 64 bytes; pt-obfs: 32) or\n"
            "                             a file holding it (hex or raw)\n"
            "      --obfs-server-id NAME  MSE: the name mixed into the SKEY (default empty)\n"
            "      --obfs-handshake-timeout S  seconds until the layer is up (%d)\n"
            "      --obfs-decoy HOST:PORT pt-obfs: relay rejected flights there, not silence\n"
            "      --obfs-defer RULES     MSE early-termination rules answered at the deadline\n"
            "                             instead of at once: all, none (default) or a list of\n"
            "                             short,long,sync,skey,vc,provide,select\n"
            "LAN discovery (docs/PROTOCOL.md section 11):\n"
            "      --discovery-port N     answer discovery requests on UDP port N (default %d),\n"
            "                             on 0.0.0.0 and [::] (multicast %s); a port\n"
            "                             that cannot be bound is a warning, not an error\n"
            "      --no-discovery         do not answer discovery requests (no UDP socket)\n"
            "Cluster mode (several nodes over NATS JetStream; docs/ARCHITECTURE.md):\n"
            "      --cluster-nats URLS    join the cluster through these NATS servers\n"
            "                             (nats://HOST:PORT, comma separated); default: off,\n"
            "                             one node on its own store\n"
            "      --cluster-node-id N    this node's id, 1 to 8388607, unique in the cluster\n"
            "                             (required with --cluster-nats)\n"
            "      --cluster-consumer-idle S  delete a device's JetStream consumer after S\n"
            "                             seconds without the device; its queue stays\n"
            "                             (default %d)\n"
            "  -h, --help                 show this help and exit\n"
            "  -V, --version              show the version and exit\n"
            "\n"
            "Logs go to stderr (or --log-file), one line per event; no key and no message\n"
            "content is ever logged. Signals: SIGHUP reloads the configuration file (an\n"
            "invalid one keeps the running configuration; sessions stay up) and reopens the\n"
            "log file, SIGUSR1 reopens the log file, SIGINT or SIGTERM stop the server\n"
            "cleanly. packtrackctl(8) talks to a running server over DIR/control.sock.\n"
            "Exit status: 0 after a clean stop (or a clean --check-config), 1 for a bad\n"
            "command line or configuration or when the server cannot start, 2 when\n"
            "--check-config found warnings only.\n",
            PT_SERVER_DEFAULT_HOST, PT_SERVER_DEFAULT_PORT, PT_SERVER_DEFAULT_DATA,
            PT_SERVER_HANDSHAKE_TIMEOUT_MS / 1000, PT_SERVER_IDLE_TIMEOUT_MS / 1000,
            PT_SERVER_SESSION_EXPIRY_MS / 1000, PT_SERVER_MAX_CONNECTIONS, PT_SERVER_QUEUE_QUOTA,
            PT_SERVER_CONFIRM_WAIT_MS,
            PT_SERVER_MAX_CONNS_PER_IP, PT_SERVER_RATE_LIMIT, PT_SERVER_IP_RATE_LIMIT,
            PT_SERVER_IP_CONN_RATE, PT_SERVER_BAN_S,
            PT_OBFS_HANDSHAKE_TIMEOUT_MS / 1000, PT_DISC_PORT, PT_DISC_MCAST6, PT_CLUSTER_CONSUMER_IDLE_S);
}

enum { OPT_HS = 256, OPT_IDLE, OPT_EXPIRY, OPT_MAXC, OPT_READY, OPT_LOG, OPT_QUOTA, OPT_CHECK,
       OPT_PERIP, OPT_RATE, OPT_BAN, OPT_OBFS, OPT_METRICS, OPT_LOGFILE, OPT_DISC_PORT, OPT_NO_DISC,
       OPT_CLUSTER_NATS, OPT_CLUSTER_NODE, OPT_SECURE_HEAP, OPT_WORKERS,
       OPT_CONFIRM_WAIT, OPT_CLUSTER_IDLE, OPT_IP_RATE, OPT_IP_CONN_RATE };

static const struct option opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"check-config", no_argument, NULL, OPT_CHECK},
    {"listen", required_argument, NULL, 'l'},
    {"data", required_argument, NULL, 'd'},
    {"suites", required_argument, NULL, 's'},
    {"handshake-timeout", required_argument, NULL, OPT_HS},
    {"idle-timeout", required_argument, NULL, OPT_IDLE},
    {"session-expiry", required_argument, NULL, OPT_EXPIRY},
    {"max-connections", required_argument, NULL, OPT_MAXC},
    {"queue-quota", required_argument, NULL, OPT_QUOTA},
    {"max-conns-per-ip", required_argument, NULL, OPT_PERIP},
    {"rate-limit", required_argument, NULL, OPT_RATE},
    {"ip-rate-limit", required_argument, NULL, OPT_IP_RATE},
    {"ip-conn-rate", required_argument, NULL, OPT_IP_CONN_RATE},
    {"ban-time", required_argument, NULL, OPT_BAN},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"ready-file", required_argument, NULL, OPT_READY},
    {"log-level", required_argument, NULL, OPT_LOG},
    {"log-file", required_argument, NULL, OPT_LOGFILE},
    {"secure-heap", required_argument, NULL, OPT_SECURE_HEAP},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"confirm-wait", required_argument, NULL, OPT_CONFIRM_WAIT},
    /* obfuscation: each goes to pt_obfs_config_set() under the key named here */
    {"obfuscation", required_argument, NULL, OPT_OBFS},
    {"network-key", required_argument, NULL, OPT_OBFS},
    {"obfs-server-id", required_argument, NULL, OPT_OBFS},
    {"obfs-handshake-timeout", required_argument, NULL, OPT_OBFS},
    {"obfs-decoy", required_argument, NULL, OPT_OBFS},
    {"obfs-defer", required_argument, NULL, OPT_OBFS},
    {"discovery-port", required_argument, NULL, OPT_DISC_PORT},
    {"no-discovery", no_argument, NULL, OPT_NO_DISC},
    {"cluster-nats", required_argument, NULL, OPT_CLUSTER_NATS},
    {"cluster-node-id", required_argument, NULL, OPT_CLUSTER_NODE},
    {"cluster-consumer-idle", required_argument, NULL, OPT_CLUSTER_IDLE},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static int bad(const char *opt, const char *arg, const char *expect)
{
    fprintf(stderr, "packtrackd: %s: '%s' is not %s\n", opt, arg, expect);
    return 1;
}

static void print_config(const pt_server_config *c)
{
    char hp[PT_HOSTPORT_LEN];
    printf("[server]\nlisten = %s",
           pt_hostport_format(hp, c->host ? c->host : PT_SERVER_DEFAULT_HOST, c->port));
    if (c->listen_also) printf(", %s", c->listen_also);
    printf("\ndata = %s\nsuites = ", c->data_dir ? c->data_dir : PT_SERVER_DEFAULT_DATA);
    uint8_t defaults[PT_CHAN_MAX_SUITES];
    const uint8_t *suites = c->nsuites ? c->suites : defaults;
    size_t nsuites = c->nsuites ? c->nsuites : pt_suite_defaults(false, defaults);
    for (size_t i = 0; i < nsuites; i++) printf("%s%s", i ? "," : "", pt_suite_name(suites[i]));
    static const char *lv[] = {"error", "warn", "info", "debug"};
    if (c->metrics_host)
        printf("\nmetrics_listen = %s", pt_hostport_format(hp, c->metrics_host, c->metrics_port));
    else printf("\n; metrics_listen: off");
    if (c->log_file) printf("\nlog_file = %s", c->log_file);
    if (c->secure_heap_kib == PT_SECURE_HEAP_AUTO) printf("\nsecure_heap = auto");
    else if (c->secure_heap_kib == PT_SECURE_HEAP_OFF) printf("\nsecure_heap = off");
    else printf("\nsecure_heap = %u", c->secure_heap_kib);
    if (c->workers == 0) printf("\nworkers = auto");
    else printf("\nworkers = %u", c->workers == PT_SERVER_WORKERS_NONE ? 0 : c->workers);
    printf("\nlog_level = %s\n[limits]\nhandshake_timeout = %u\nidle_timeout = %u\n"
           "session_expiry = %u\nmax_connections = %u\nqueue_quota = %u\nconfirm_wait_ms = %u\n"
           "max_conns_per_ip = %u\nrate_limit = %u\nip_rate_limit = %u\nip_conn_rate = %u\n"
           "ban_time = %u\n",
           lv[pt_log_get_level()],
           (c->handshake_timeout_ms ? c->handshake_timeout_ms : PT_SERVER_HANDSHAKE_TIMEOUT_MS) / 1000,
           (c->idle_timeout_ms ? c->idle_timeout_ms : PT_SERVER_IDLE_TIMEOUT_MS) / 1000,
           (c->session_expiry_ms ? c->session_expiry_ms : PT_SERVER_SESSION_EXPIRY_MS) / 1000,
           c->max_connections ? c->max_connections : PT_SERVER_MAX_CONNECTIONS,
           c->queue_quota ? c->queue_quota : PT_SERVER_QUEUE_QUOTA,
           c->confirm_wait_ms == PT_SERVER_CONFIRM_WAIT_OFF ? 0
           : c->confirm_wait_ms                            ? c->confirm_wait_ms
                                                           : PT_SERVER_CONFIRM_WAIT_MS,
           c->max_conns_per_ip ? c->max_conns_per_ip : PT_SERVER_MAX_CONNS_PER_IP,
           c->rate_limit ? c->rate_limit : PT_SERVER_RATE_LIMIT,
           c->ip_rate_limit ? c->ip_rate_limit : PT_SERVER_IP_RATE_LIMIT,
           c->ip_conn_rate ? c->ip_conn_rate : PT_SERVER_IP_CONN_RATE, c->ban_s ? c->ban_s : PT_SERVER_BAN_S);
    pt_obfs_config_print(&c->obfs, stdout);
    printf("[discovery]\nenabled = %s\nport = %u\n", c->discovery_off ? "false" : "true",
           c->discovery_port ? c->discovery_port : PT_DISC_PORT);
    if (!c->cluster.nats_urls) {
        printf("[cluster]\n; nats_urls: off (local mode)\n");
    } else {
        printf("[cluster]\nnats_urls = %s\nnode_id = %u\nreplicas = %u\nconsumer_idle = %u\n", c->cluster.nats_urls,
               c->cluster.node_id, c->cluster.replicas ? c->cluster.replicas : PT_CLUSTER_REPLICAS,
               c->cluster.consumer_idle_s ? c->cluster.consumer_idle_s : PT_CLUSTER_CONSUMER_IDLE_S);
        if (c->cluster.credentials) printf("credentials = %s\n", c->cluster.credentials);
        if (c->cluster.tls_ca) printf("tls_ca = %s\n", c->cluster.tls_ca);
        if (c->cluster.tls_cert) printf("tls_cert = %s\ntls_key = %s\n", c->cluster.tls_cert, c->cluster.tls_key);
    }
}

/* The [obfuscation] key behind a command-line option. */
static const char *obfs_key(const char *opt)
{
    static const char *const map[][2] = {
        {"obfuscation", "mode"}, {"network-key", "network_key"}, {"obfs-server-id", "server_id"},
        {"obfs-handshake-timeout", "handshake_timeout"}, {"obfs-decoy", "decoy"},
        {"obfs-defer", "defer_rules"}};
    for (size_t i = 0; i < PT_ARRAY_LEN(map); i++)
        if (strcmp(opt, map[i][0]) == 0) return map[i][1];
    return opt;
}

static void print_diags(const pt_config_file *f)
{
    for (size_t i = 0; i < f->ndiags; i++) fprintf(stderr, "%s\n", f->diags[i].text);
    size_t more = f->nerrors + f->nwarnings - f->ndiags;
    if (more) fprintf(stderr, "packtrackd: ... and %zu more problems\n", more);
}

int main(int argc, char **argv)
{
    static pt_config_file file; /* static: cfg's strings point into it */
    static char host[256], metrics_host[256], listen_arg[1024], listen_also[1024];
    pt_server_config cfg = {.port = PT_SERVER_DEFAULT_PORT};
    const char *config_path = NULL;
    bool check = false;
    int o, li;
    /* pass 1: help, version, the configuration file */
    opterr = 0;
    while ((o = getopt_long(argc, argv, "c:l:d:s:hV", opts, NULL)) != -1) {
        if (o == 'h') { usage(stdout); return 0; }
        if (o == 'V') { printf("packtrackd %s\n", pt_version()); return 0; }
        if (o == 'c') config_path = optarg;
        if (o == OPT_CHECK) check = true;
    }
    if (config_path) {
        int lrc = pt_config_load(&file, config_path);
        if (lrc != 0 && !check) {
            print_diags(&file);
            return 1;
        }
        cfg = file.cfg;
        if (!(file.set & PT_CFG_BIT(PT_CFG_LISTEN))) cfg.port = PT_SERVER_DEFAULT_PORT;
        if (file.set & PT_CFG_BIT(PT_CFG_LOG_LEVEL)) pt_log_set_level((pt_log_level)file.log_level);
        cfg.config_path = config_path;
    }
    /* pass 2: options override the file */
    optind = 1;
    opterr = 1;
    int n;
    uint32_t v;
#define PIN(k) cfg.pinned |= PT_CFG_BIT(k)
    while ((o = getopt_long(argc, argv, "c:l:d:s:hV", opts, &li)) != -1) {
        switch (o) {
        case 'c': case OPT_CHECK: break;
        case 'l': {
            /* the first --listen replaces the file's addresses; more add to it: the
             * values joined are one list, checked whole */
            size_t used = (cfg.pinned & PT_CFG_BIT(PT_CFG_LISTEN)) ? strlen(listen_arg) : 0;
            int w = snprintf(listen_arg + used, sizeof listen_arg - used, "%s%s", used ? "," : "", optarg);
            if (w < 0 || (size_t)w >= sizeof listen_arg - used ||
                pt_parse_listen_list(listen_arg, host, sizeof host, &cfg.port, listen_also,
                                     sizeof listen_also) != 0)
                return bad("--listen", optarg, "HOST:PORT (or several, comma separated; 8 in all)");
            cfg.host = host;
            cfg.listen_also = listen_also[0] ? listen_also : NULL;
            PIN(PT_CFG_LISTEN);
            break;
        }
        case 'd': cfg.data_dir = optarg; PIN(PT_CFG_DATA); break;
        case OPT_METRICS:
            if (pt_parse_listen_local(optarg, metrics_host, sizeof metrics_host, &cfg.metrics_port) != 0)
                return bad("--metrics", optarg, "[HOST:]PORT");
            cfg.metrics_host = metrics_host;
            PIN(PT_CFG_METRICS);
            break;
        case 's':
            if ((n = pt_suite_list_parse(optarg, cfg.suites, PT_CHAN_MAX_SUITES)) < 0)
                return bad("--suites", optarg, "a list of known suites");
            cfg.nsuites = (size_t)n;
            PIN(PT_CFG_SUITES);
            break;
        case OPT_HS:
            if (pt_parse_seconds(optarg, 3600, &cfg.handshake_timeout_ms))
                return bad("--handshake-timeout", optarg, "1 to 3600 seconds");
            PIN(PT_CFG_HANDSHAKE_TIMEOUT);
            break;
        case OPT_IDLE:
            if (pt_parse_seconds(optarg, 86400, &cfg.idle_timeout_ms))
                return bad("--idle-timeout", optarg, "1 to 86400 seconds");
            PIN(PT_CFG_IDLE_TIMEOUT);
            break;
        case OPT_EXPIRY:
            if (pt_parse_seconds(optarg, 30 * 86400, &cfg.session_expiry_ms))
                return bad("--session-expiry", optarg, "1 to 2592000 seconds");
            PIN(PT_CFG_SESSION_EXPIRY);
            break;
        case OPT_SECURE_HEAP:
            if (pt_parse_secure_heap(optarg, &cfg.secure_heap_kib))
                return bad("--secure-heap", optarg, "auto, off or KiB from 64 to 4194304");
            PIN(PT_CFG_SECURE_HEAP);
            break;
        case OPT_CONFIRM_WAIT:
            if (pt_parse_uint(optarg, 0, 1000, &v)) return bad("--confirm-wait", optarg, "from 0 to 1000");
            cfg.confirm_wait_ms = v ? v : PT_SERVER_CONFIRM_WAIT_OFF;
            PIN(PT_CFG_CONFIRM_WAIT);
            break;
        case OPT_WORKERS:
            if (pt_parse_workers(optarg, &cfg.workers))
                return bad("--workers", optarg, "auto or 0 to 64");
            PIN(PT_CFG_WORKERS);
            break;
        case OPT_MAXC:
            if (pt_parse_uint(optarg, 1, 1000000, &v)) return bad("--max-connections", optarg, "from 1 to 1000000");
            cfg.max_connections = v;
            PIN(PT_CFG_MAX_CONNECTIONS);
            break;
        case OPT_QUOTA:
            if (pt_parse_uint(optarg, 1, 100000000, &v)) return bad("--queue-quota", optarg, "from 1 to 100000000");
            cfg.queue_quota = v;
            PIN(PT_CFG_QUEUE_QUOTA);
            break;
        case OPT_PERIP:
            if (pt_parse_uint(optarg, 1, 1000000, &v)) return bad("--max-conns-per-ip", optarg, "from 1 to 1000000");
            cfg.max_conns_per_ip = v;
            PIN(PT_CFG_MAX_CONNS_PER_IP);
            break;
        case OPT_RATE:
            if (pt_parse_uint(optarg, 1, 10000000, &v)) return bad("--rate-limit", optarg, "from 1 to 10000000");
            cfg.rate_limit = v;
            PIN(PT_CFG_RATE_LIMIT);
            break;
        case OPT_IP_RATE:
            if (pt_parse_uint(optarg, 1, 100000000, &v))
                return bad("--ip-rate-limit", optarg, "from 1 to 100000000");
            cfg.ip_rate_limit = v;
            PIN(PT_CFG_IP_RATE_LIMIT);
            break;
        case OPT_IP_CONN_RATE:
            if (pt_parse_uint(optarg, 1, 1000000, &v)) return bad("--ip-conn-rate", optarg, "from 1 to 1000000");
            cfg.ip_conn_rate = v;
            PIN(PT_CFG_IP_CONN_RATE);
            break;
        case OPT_BAN:
            if (pt_parse_uint(optarg, 1, 30 * 86400, &v)) return bad("--ban-time", optarg, "1 to 2592000 seconds");
            cfg.ban_s = v;
            PIN(PT_CFG_BAN_TIME);
            break;
        case OPT_DISC_PORT:
            if (pt_parse_uint(optarg, 1, 65535, &v)) return bad("--discovery-port", optarg, "a UDP port (1 to 65535)");
            cfg.discovery_port = (uint16_t)v;
            cfg.discovery_off = false;
            PIN(PT_CFG_DISC_PORT);
            PIN(PT_CFG_DISC_ENABLED);
            break;
        case OPT_NO_DISC:
            cfg.discovery_off = true;
            PIN(PT_CFG_DISC_ENABLED);
            break;
        case OPT_CLUSTER_NATS:
            if (pt_cluster_urls_check(optarg) != 0)
                return bad("--cluster-nats", optarg, "a list of nats://HOST:PORT URLs");
            cfg.cluster.nats_urls = optarg;
            PIN(PT_CFG_CLUSTER_NATS_URLS);
            break;
        case OPT_CLUSTER_NODE:
            if (pt_parse_uint(optarg, 1, PT_CLUSTER_NODE_ID_MAX, &v))
                return bad("--cluster-node-id", optarg, "from 1 to 8388607");
            cfg.cluster.node_id = v;
            PIN(PT_CFG_CLUSTER_NODE_ID);
            break;
        case OPT_CLUSTER_IDLE:
            if (pt_parse_uint(optarg, 1, 31536000, &v))
                return bad("--cluster-consumer-idle", optarg, "from 1 to 31536000 seconds");
            cfg.cluster.consumer_idle_s = v;
            PIN(PT_CFG_CLUSTER_CONSUMER_IDLE);
            break;
        case OPT_READY: cfg.ready_file = optarg; break;
        case OPT_LOG: {
            pt_log_level lvl;
            if (pt_log_parse_level(optarg, &lvl) != 0)
                return bad("--log-level", optarg, "error, warn, info or debug");
            pt_log_set_level(lvl);
            PIN(PT_CFG_LOG_LEVEL);
            break;
        }
        case OPT_LOGFILE:
            if (!*optarg) return bad("--log-file", optarg, "a file name");
            cfg.log_file = optarg;
            PIN(PT_CFG_LOG_FILE);
            break;
        case OPT_OBFS: {
            const char *why = pt_obfs_config_set(&cfg.obfs, obfs_key(opts[li].name), optarg);
            if (why) {
                fprintf(stderr, "packtrackd: --%s: %s (got '%s')\n", opts[li].name, why,
                        strcmp(opts[li].name, "network-key") == 0 ? "..." : optarg);
                return 1;
            }
            for (int k = PT_CFG_OBFS_MODE; k <= PT_CFG_OBFS_DEFER_RULES; k++)
                if (strcmp(pt_config_key_get(k)->name, obfs_key(opts[li].name)) == 0) PIN(k);
            break;
        }
        default: usage(stderr); return 1;
        }
    }
#undef PIN
    if (optind < argc) {
        fprintf(stderr, "packtrackd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (check) {
        pt_config_check_env(&file, config_path, &cfg);
        print_diags(&file);
        if (file.nerrors == 0) print_config(&cfg);
        fprintf(stderr, "packtrackd: %s: %zu error%s, %zu warning%s\n", config_path ? config_path : "(no file)",
                file.nerrors, file.nerrors == 1 ? "" : "s", file.nwarnings, file.nwarnings == 1 ? "" : "s");
        if (file.nerrors) return 1;
        if (file.nwarnings) return 2;
        printf("configuration OK\n");
        return 0;
    }
    char obfs_err[300];
    if (pt_obfs_config_check(&cfg.obfs, obfs_err, sizeof obfs_err) != 0) {
        fprintf(stderr, "packtrackd: %s\n", obfs_err);
        return 1;
    }
    const char *cluster_err = pt_cluster_config_error(&cfg.cluster);
    if (cluster_err) {
        fprintf(stderr, "packtrackd: %s\n", cluster_err);
        return 1;
    }
    if (file.nwarnings) print_diags(&file);
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
