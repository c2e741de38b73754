/*
 * Log output: stderr by default (what journald and a terminal want), or a file
 * given by log_file / --log-file, opened for appending. Reopening (SIGUSR1,
 * `packtrackctl reopen-logs`) is for log rotation and is not a reload: it opens
 * the same path again, so after logrotate moved the file away the next line goes
 * to a new file at the configured path. The new descriptor is dup2()ed onto the
 * one pt_log writes to, so a line written concurrently by the store's writer
 * thread goes whole to the old file or whole to the new one, never to a closed
 * descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "server/pt_config.h"
#include "server/pt_server_int.h"

static int log_fd = -1; /* the descriptor pt_log writes to while a file is in use */

/* Opens path and makes it the log. 0, or PT_ERR_IO with the reason in msg. */
static int logfile_open(const char *path, char *msg, size_t msglen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0) {
        snprintf(msg, msglen, "log file %s: %s", path, strerror(errno));
        return PT_ERR_IO;
    }
    if (log_fd < 0) {
        log_fd = fd;
        pt_log_set_fd(log_fd);
        return 0;
    }
    int rc = dup2(fd, log_fd) < 0 ? PT_ERR_IO : 0;
    if (rc) snprintf(msg, msglen, "log file %s: %s", path, strerror(errno));
    close(fd);
    return rc;
}

static void logfile_close(void)
{
    if (log_fd < 0) return;
    pt_log_set_fd(2);
    close(log_fd);
    log_fd = -1;
}

int pt_srv_logs_start(pt_server *s)
{
    if (!s->cfg.log_file) return 0;
    char msg[1200];
    snprintf(s->log_file, sizeof s->log_file, "%s", s->cfg.log_file);
    s->cfg.log_file = NULL; /* the caller's string; s->log_file is ours */
    if (logfile_open(s->log_file, msg, sizeof msg) != 0) {
        pt_log_error("cannot open the %s", msg);
        s->log_file[0] = 0;
        return PT_ERR_IO;
    }
    return 0;
}

void pt_srv_logs_stop(pt_server *s)
{
    if (!s->log_file[0]) return;
    logfile_close();
    s->log_file[0] = 0;
}

int pt_srv_reopen_logs(pt_server *s, const char *via, char *msg, size_t msglen)
{
    if (!s->log_file[0]) {
        snprintf(msg, msglen, "logging to stderr: no log file to reopen");
        pt_log_info("%s: %s", via, msg);
        return 0;
    }
    int rc = logfile_open(s->log_file, msg, msglen);
    if (rc) {
        pt_log_error("%s: cannot reopen the %s; still writing to the old file", via, msg);
        return rc;
    }
    snprintf(msg, msglen, "reopened %s", s->log_file);
    pt_log_info("%s: log file reopened", via);
    return 0;
}

int pt_srv_reload_log_file(pt_server *s, const char *path, char *msg, size_t msglen)
{
    if (s->cfg.pinned & PT_CFG_BIT(PT_CFG_LOG_FILE)) return 0;
    if (!path || !*path) {
        if (s->log_file[0]) {
            pt_log_info("log_file removed from the configuration: logging to stderr from now on");
            pt_srv_logs_stop(s);
        }
        return 0;
    }
    if (strcmp(path, s->log_file) == 0) return 0;
    if (strlen(path) >= sizeof s->log_file) {
        snprintf(msg, msglen, "log file path too long");
        return PT_ERR_INVAL;
    }
    int rc = logfile_open(path, msg, msglen);
    if (rc) return rc;
    snprintf(s->log_file, sizeof s->log_file, "%s", path);
    pt_log_info("logging to %s", s->log_file);
    return 0;
}

static void on_sigusr1(uv_signal_t *sig, int signum)
{
    (void)signum;
    char msg[1200];
    if (pt_srv_reopen_logs(sig->data, "SIGUSR1", msg, sizeof msg) != 0) return;
}

void pt_srv_logs_signal_start(pt_server *s)
{
    uv_signal_init(&s->loop, &s->sigusr1);
    s->sigusr1.data = s;
    uv_signal_start(&s->sigusr1, on_sigusr1, SIGUSR1);
    s->sigusr1_on = true;
}

void pt_srv_logs_signal_stop(pt_server *s)
{
    if (!s->sigusr1_on) return;
    s->sigusr1_on = false;
    uv_close((uv_handle_t *)&s->sigusr1, NULL);
}
