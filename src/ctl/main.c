/*
 * packtrackctl: controls a running packtrackd over its control socket
 * (DATA/control.sock; src/server/control.c has the protocol: one JSON request
 * line, one JSON answer line), and restores backups into a stopped server's data
 * directory. docs/man/packtrackctl.8 is the manual; usage() below is its summary.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl/pt_ctl.h"
#include "server/pt_backup.h"
#include "server/pt_config.h"

enum {
    EXIT_OK = PT_CTL_EXIT_OK,
    EXIT_FAILED = PT_CTL_EXIT_FAILED,
    EXIT_USAGE = PT_CTL_EXIT_USAGE,
    EXIT_UNREACHABLE = PT_CTL_EXIT_UNREACHABLE,
};

#define PT_CTL_ANSWER_MAX (256u << 20) /* bytes of an answer read at most */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: packtrackctl [OPTION]... COMMAND [ARG]...\n"
            "Controls a running packtrackd through its control socket.\n"
            "\n"
            "Commands:\n"
            "  status                     version, uptime, listen address, connections, ...\n"
            "  users [--online]           every user (or those with a device connected)\n"
            "  user ban NAME              disconnect NAME's devices and refuse their calls\n"
            "                             (403 USER_BANNED) until unbanned\n"
            "  user unban NAME            lift the ban\n"
            "  user delete NAME           delete the user, its devices and queued messages;\n"
            "                             the name stays reserved (never bound again)\n"
            "  reload                     reread the configuration file; prints OK or FAIL\n"
            "  reopen-logs                reopen the log file (after rotation)\n"
            "  backup FILE                write a consistent backup archive of the running\n"
            "                             server to FILE (written by the server's user)\n"
            "  restore FILE [--dry-run]   check FILE and install it into the data directory\n"
            "                             of a STOPPED server (--dry-run: check only)\n"
            "  metrics                    the Prometheus metrics text\n"
            "\n"
            "Options:\n"
            "  -d, --data DIR             the server's data directory (default %s, or\n"
            "                             the data key of --config)\n"
            "  -c, --config FILE          packtrackd's configuration file, for its data key\n"
            "  -s, --socket PATH          the control socket (default DIR/control.sock)\n"
            "      --json                 print the answer as one JSON object\n"
            "      --timeout S            seconds to wait for an answer (default 120)\n"
            "  -h, --help                 show this help and exit\n"
            "  -V, --version              show the version and exit\n"
            "\n"
            "Exit status: 0 done, 1 the server (or restore) refused or failed, 2 bad\n"
            "command line, 3 the server cannot be reached.\n",
            PT_SERVER_DEFAULT_DATA);
}

static bool json_out;

static int die_usage(const char *fmt, const char *arg) __attribute__((format(printf, 1, 0)));

static int die_usage(const char *fmt, const char *arg)
{
    char text[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(text, sizeof text, fmt, arg);
#pragma GCC diagnostic pop
    fprintf(stderr, "packtrackctl: %s\nTry 'packtrackctl --help'.\n", text);
    return EXIT_USAGE;
}

/* Sends one request; *answer gets the answer's bytes (malloc'd, *len of them, NUL
 * after), up to the server's close. EXIT_OK or EXIT_UNREACHABLE. */
static int transact(const char *sock_path, cJSON *req, int timeout_s, char **answer, size_t *len_out)
{
    *answer = NULL;
    *len_out = 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof sa.sun_path) {
        fprintf(stderr, "packtrackctl: %s: path too long for a unix socket\n", sock_path);
        return EXIT_UNREACHABLE;
    }
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "packtrackctl: cannot reach packtrackd at %s: %s\n", sock_path, strerror(errno));
        if (fd >= 0) close(fd);
        return EXIT_UNREACHABLE;
    }
    char *text = cJSON_PrintUnformatted(req);
    size_t len = strlen(text);
    text[len] = '\n'; /* cJSON's NUL becomes the line end */
    size_t off = 0;
    while (off < len + 1) {
        ssize_t w = write(fd, text + off, len + 1 - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    free(text);
    char *buf = NULL;
    size_t blen = 0, bcap = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = EXIT_UNREACHABLE;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left_ms = (long)timeout_s * 1000 - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left_ms <= 0) {
            fprintf(stderr, "packtrackctl: no answer from packtrackd in %d s\n", timeout_s);
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left_ms > INT_MAX ? INT_MAX : left_ms)) < 0 && errno != EINTR) break;
        if (bcap - blen < 65536) {
            if (bcap >= PT_CTL_ANSWER_MAX) {
                fprintf(stderr, "packtrackctl: packtrackd's answer is over %u MiB\n", PT_CTL_ANSWER_MAX >> 20);
                break;
            }
            size_t ncap = bcap ? bcap * 2 : 131072;
            char *nb = realloc(buf, ncap);
            if (!nb) break;
            buf = nb;
            bcap = ncap;
        }
        ssize_t n = read(fd, buf + blen, bcap - blen - 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) {
            buf[blen] = 0;
            if (blen == 0) {
                fprintf(stderr, "packtrackctl: packtrackd closed the connection without an answer\n");
                break;
            }
            *answer = buf;
            *len_out = blen;
            buf = NULL;
            rc = EXIT_OK;
            break;
        }
        blen += (size_t)n;
    }
    free(buf);
    close(fd);
    return rc;
}

static void print_json(const cJSON *o)
{
    char *t = cJSON_PrintUnformatted(o);
    printf("%s\n", t);
    free(t);
}

static int do_restore(const char *file, const char *data_dir, bool dry_run)
{
    char msg[1600];
    pt_backup_info info;
    int lock = -1;
    if (!dry_run && (lock = pt_datadir_lock(data_dir, msg, sizeof msg)) < 0) {
        /* the directory may not exist yet: restore creates it */
        if (access(data_dir, F_OK) == 0) goto fail;
    }
    int rc = pt_backup_restore(file, data_dir, dry_run, &info, msg, sizeof msg);
    if (lock >= 0) close(lock);
    if (rc != 0) goto fail;
    if (json_out) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "ok", true);
        cJSON_AddBoolToObject(o, "dry_run", dry_run);
        cJSON_AddStringToObject(o, "file", file);
        cJSON_AddStringToObject(o, "data_dir", data_dir);
        cJSON_AddNumberToObject(o, "format", info.format);
        cJSON_AddNumberToObject(o, "schema", info.schema);
        cJSON_AddStringToObject(o, "created", info.created);
        cJSON_AddStringToObject(o, "packtrackd", info.version);
        cJSON_AddNumberToObject(o, "db_bytes", (double)info.db_bytes);
        cJSON_AddNumberToObject(o, "users", (double)info.users);
        cJSON_AddNumberToObject(o, "queued", (double)info.queued);
        print_json(o);
        cJSON_Delete(o);
    } else {
        printf("%s %s: format %d, schema %d, written %s by packtrackd %s, %lld users, %lld queued messages%s\n",
               dry_run ? "verified" : "restored", file, info.format, info.schema, info.created, info.version,
               (long long)info.users, (long long)info.queued, dry_run ? " (nothing changed)" : "");
        if (!dry_run) printf("into %s; the files it replaced end in .pre-restore-*\n", data_dir);
    }
    return EXIT_OK;
fail:
    if (json_out) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "ok", false);
        cJSON_AddStringToObject(o, "error", msg);
        print_json(o);
        cJSON_Delete(o);
    }
    fprintf(stderr, "packtrackctl: restore: %s\n", msg);
    return EXIT_FAILED;
}

enum { OPT_JSON = 256, OPT_ONLINE, OPT_DRY, OPT_TIMEOUT };

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},   {"config", required_argument, NULL, 'c'},
        {"socket", required_argument, NULL, 's'}, {"json", no_argument, NULL, OPT_JSON},
        {"online", no_argument, NULL, OPT_ONLINE}, {"dry-run", no_argument, NULL, OPT_DRY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *config = NULL, *sock = NULL;
    bool online = false, dry_run = false;
    uint32_t timeout_s = 120;
    int o;
    while ((o = getopt_long(argc, argv, "d:c:s:hV", opts, NULL)) != -1) {
        switch (o) {
        case 'd': data = optarg; break;
        case 'c': config = optarg; break;
        case 's': sock = optarg; break;
        case OPT_JSON: json_out = true; break;
        case OPT_ONLINE: online = true; break;
        case OPT_DRY: dry_run = true; break;
        case OPT_TIMEOUT:
            if (pt_parse_uint(optarg, 1, 86400, &timeout_s) != 0)
                return die_usage("--timeout: '%s' is not 1 to 86400 seconds", optarg);
            break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("packtrackctl %s\n", PT_VERSION_STRING); return EXIT_OK;
        default: return die_usage("%s", "bad option");
        }
    }
    if (optind >= argc) return die_usage("%s", "missing COMMAND");
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    static pt_config_file cf;
    if (!data && config) {
        if (pt_config_load(&cf, config) != 0) {
            for (size_t i = 0; i < cf.ndiags; i++) fprintf(stderr, "%s\n", cf.diags[i].text);
            return EXIT_USAGE;
        }
        data = cf.cfg.data_dir;
    }
    if (!data) data = PT_SERVER_DEFAULT_DATA;
    char sock_path[1200];
    snprintf(sock_path, sizeof sock_path, "%s/control.sock", data);
    if (sock) snprintf(sock_path, sizeof sock_path, "%s", sock);
    cJSON *req = NULL;
#define USAGE(fmt, arg)                                                                            \
    do {                                                                                           \
        cJSON_Delete(req);                                                                         \
        return die_usage(fmt, arg);                                                                \
    } while (0)
#define NARGS(n, what)                                                                             \
    if (nargs != (n)) USAGE("%s", what)
    if ((online && strcmp(cmd, "users") != 0) || (dry_run && strcmp(cmd, "restore") != 0))
        return die_usage("%s", online ? "--online goes with users" : "--dry-run goes with restore");
    req = cJSON_CreateObject();
    const char *action = "";
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0 || strcmp(cmd, "reopen-logs") == 0 ||
        strcmp(cmd, "metrics") == 0) {
        NARGS(0, "this command takes no argument");
    } else if (strcmp(cmd, "users") == 0) {
        NARGS(0, "users takes no argument but --online");
        cJSON_AddBoolToObject(req, "online", online);
    } else if (strcmp(cmd, "user") == 0) {
        NARGS(2, "usage: user ban|unban|delete NAME");
        action = args[0];
        if (strcmp(action, "ban") != 0 && strcmp(action, "unban") != 0 && strcmp(action, "delete") != 0)
            USAGE("user: unknown action '%s' (ban, unban, delete)", action);
        cJSON_AddStringToObject(req, "action", action);
        cJSON_AddStringToObject(req, "name", args[1]);
    } else if (strcmp(cmd, "backup") == 0) {
        NARGS(1, "usage: backup FILE");
        char abs[PATH_MAX + 512];
        if (args[0][0] == '/') {
            snprintf(abs, sizeof abs, "%s", args[0]);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd)) USAGE("%s", "cannot find the current directory");
            snprintf(abs, sizeof abs, "%s/%s", cwd, args[0]);
        }
        cJSON_AddStringToObject(req, "file", abs);
    } else if (strcmp(cmd, "restore") == 0) {
        NARGS(1, "usage: restore FILE [--dry-run]");
        cJSON_Delete(req);
        return do_restore(args[0], data, dry_run);
    } else {
        USAGE("unknown command '%s'", cmd);
    }
#undef NARGS
#undef USAGE
    cJSON_AddStringToObject(req, "cmd", cmd);
    char *answer;
    size_t alen;
    int rc = transact(sock_path, req, (int)timeout_s, &answer, &alen);
    cJSON_Delete(req);
    if (rc == EXIT_OK) rc = pt_ctl_show(stdout, stderr, cmd, action, answer, alen, json_out);
    free(answer);
    if (rc == EXIT_UNREACHABLE && strcmp(cmd, "reload") == 0 && !json_out) printf("FAIL\n");
    return rc;
}
