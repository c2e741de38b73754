/*
 * The control socket: DATA/control.sock, a unix stream socket (mode 0600, in a
 * 0700 directory) served on the event loop, for packtrackctl(8). Only the
 * server's own user and root may connect (SO_PEERCRED).
 *
 * One request per connection: a JSON object on one line ({"cmd":"status"}, at
 * most PT_CTL_REQ_MAX bytes, complete within PT_CTL_TIMEOUT_MS), answered with one
 * JSON object ({"ok":true,...} or {"ok":false,"error":"..."}) and a newline, then
 * the connection closes. Commands: status, users {online}, user {action: ban |
 * unban | delete, name}, reload, reopen-logs, backup {file: absolute path},
 * metrics. Answers that wait for the store (user) or a worker thread (backup)
 * keep the connection (a reference) until they are done, even if the client left.
 *
 * The server also holds DATA/packtrackd.lock (flock) while it runs: a second
 * server on the same directory and an offline `packtrackctl restore` are refused.
 */
#define _GNU_SOURCE /* struct ucred, SO_PEERCRED */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/pt_backup.h"
#include "server/pt_server_int.h"
#include "store/pt_keyfile.h"

#define PT_CTL_REQ_MAX 8192         /* one request line, bytes */
#define PT_CTL_TIMEOUT_MS 10000     /* to send it */
#define PT_CTL_MAX_CONNS 16         /* served at once */

typedef struct pt_ctl_conn pt_ctl_conn;

struct pt_ctl {
    uv_pipe_t listener;
    bool listening;
    int lock_fd;                    /* DATA/packtrackd.lock, held while the server runs */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    pt_ctl_conn *conns;
    size_t nconns;
};

struct pt_ctl_conn {
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_write_t wreq;
    pt_server *srv;
    int refs;                       /* libuv handles not yet closed + answers in progress */
    bool closing, answered;
    size_t len;
    char req[PT_CTL_REQ_MAX];
    char *resp;                     /* the answer being written (cJSON_PrintUnformatted) */
    pt_ctl_conn *prev, *next;
};

typedef struct backup_work {
    uv_work_t work;
    pt_ctl_conn *m;
    char data_dir[1024];
    char file[PT_CTL_PATH_MAX];
    int rc;
    char msg[1200];
    pt_backup_info info;
} backup_work;

static void cc_unref(pt_ctl_conn *m)
{
    if (--m->refs > 0) return;
    free(m->resp);
    free(m);
}

static void cc_closed(uv_handle_t *h) { cc_unref(h->data); }

static void cc_close(pt_ctl_conn *m)
{
    if (m->closing) return;
    m->closing = true;
    pt_ctl *ctl = m->srv->ctl;
    if (ctl) {
        if (m->prev) m->prev->next = m->next;
        else ctl->conns = m->next;
        if (m->next) m->next->prev = m->prev;
        ctl->nconns--;
    }
    uv_close((uv_handle_t *)&m->pipe, cc_closed);
    uv_close((uv_handle_t *)&m->timer, cc_closed);
}

static void cc_written(uv_write_t *req, int status)
{
    (void)status;
    cc_close(req->data);
}

/* Sends the answer (takes ownership of o) and closes. */
static void cc_answer(pt_ctl_conn *m, cJSON *o)
{
    if (m->closing || m->answered) {
        cJSON_Delete(o);
        return;
    }
    m->answered = true;
    uv_read_stop((uv_stream_t *)&m->pipe);
    uv_timer_stop(&m->timer);
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    size_t n = text ? strlen(text) : 0;
    char *resp = text ? realloc(text, n + 2) : NULL;
    if (!resp) {
        free(text);
        cc_close(m);
        return;
    }
    resp[n] = '\n';
    resp[n + 1] = 0;
    m->resp = resp;
    uv_buf_t b = uv_buf_init(m->resp, (unsigned)(n + 1));
    m->wreq.data = m;
    if (uv_write(&m->wreq, (uv_stream_t *)&m->pipe, &b, 1, cc_written) != 0) cc_close(m);
}

static cJSON *ok_obj(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", true);
    return o;
}

static void cc_error(pt_ctl_conn *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cc_error(pt_ctl_conn *m, const char *fmt, ...)
{
    char text[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", false);
    cJSON_AddStringToObject(o, "error", text);
    cc_answer(m, o);
}

/* ---- commands ----------------------------------------------------------------------------- */

static void cmd_status(pt_ctl_conn *m)
{
    pt_server *s = m->srv;
    static const char *lv[] = {"error", "warn", "info", "debug"};
    char listen[300], fp[PT_FINGERPRINT_LEN];
    snprintf(listen, sizeof listen, strchr(s->host, ':') ? "[%s]:%u" : "%s:%u", s->host, s->port);
    pt_fingerprint(fp, s->static_pk);
    cJSON *o = ok_obj();
    cJSON_AddStringToObject(o, "version", PT_VERSION_STRING);
    cJSON_AddNumberToObject(o, "pid", (double)getpid());
    cJSON_AddNumberToObject(o, "uptime_s", (double)((uv_now(&s->loop) - s->started_ms) / 1000));
    cJSON_AddStringToObject(o, "listen", listen);
    cJSON *all = cJSON_AddArrayToObject(o, "listen_all"); /* the first, then the others */
    for (size_t i = 0; all && i < s->nlisteners; i++) {
        const pt_listener *l = &s->listeners[i];
        snprintf(listen, sizeof listen, strchr(l->host, ':') ? "[%s]:%u" : "%s:%u", l->host, l->port);
        cJSON_AddItemToArray(all, cJSON_CreateString(listen));
    }
    cJSON_AddStringToObject(o, "fingerprint", fp);
    cJSON_AddStringToObject(o, "data_dir", s->data_dir);
    if (s->config_path[0]) cJSON_AddStringToObject(o, "config", s->config_path);
    else cJSON_AddNullToObject(o, "config");
    cJSON_AddStringToObject(o, "log_level", lv[pt_log_get_level()]);
    if (s->log_file[0]) cJSON_AddStringToObject(o, "log_file", s->log_file);
    else cJSON_AddNullToObject(o, "log_file");
    cJSON_AddNumberToObject(o, "connections", (double)s->nconns);
    cJSON_AddNumberToObject(o, "sessions", (double)s->sess_n);
    cJSON_AddNumberToObject(o, "users_online", (double)s->user_n);
    cJSON_AddNumberToObject(o, "queue_rows", (double)(s->queue_rows < 0 ? 0 : s->queue_rows));
    cJSON_AddNumberToObject(o, "banned_users", (double)s->nbanned);
    cJSON_AddNumberToObject(o, "reloads", (double)s->reloads);
    if (s->metrics_on) {
        char ml[300];
        snprintf(ml, sizeof ml, strchr(s->metrics_host, ':') ? "[%s]:%u" : "%s:%u", s->metrics_host, s->metrics_port);
        cJSON_AddStringToObject(o, "metrics", ml);
    }
    cc_answer(m, o);
}

static void cmd_users(pt_ctl_conn *m, bool online_only)
{
    pt_server *s = m->srv;
    sqlite3_stmt *st;
    if (!s->db || pt_db_prepare(pt_db_reader(s->db),
                                "SELECT u.user_id, u.username, u.created_ms, (SELECT count(*) FROM devices d "
                                "WHERE d.user_id = u.user_id) FROM users u ORDER BY u.username_key", &st) != 0) {
        cc_error(m, "cannot read the users (see the server log)");
        return;
    }
    cJSON *o = ok_obj();
    cJSON *arr = cJSON_AddArrayToObject(o, "users");
    int rc;
    while ((rc = pt_db_step(st)) == 1) {
        if (sqlite3_column_bytes(st, 0) != 16) continue;
        const uint8_t *id = sqlite3_column_blob(st, 0);
        bool online = pt_srv_presence_connected(s, id);
        if (online_only && !online) continue;
        char hex[33];
        pt_hex_encode(hex, id, 16);
        cJSON *u = cJSON_CreateObject();
        const unsigned char *name = sqlite3_column_text(st, 1);
        cJSON_AddStringToObject(u, "name", name ? (const char *)name : "");
        cJSON_AddStringToObject(u, "user_id", hex);
        cJSON_AddNumberToObject(u, "devices", (double)sqlite3_column_int64(st, 3));
        cJSON_AddBoolToObject(u, "online", online);
        cJSON_AddBoolToObject(u, "banned", pt_srv_user_banned(s, id));
        cJSON_AddNumberToObject(u, "created_ms", (double)sqlite3_column_int64(st, 2));
        cJSON_AddItemToArray(arr, u);
    }
    sqlite3_finalize(st);
    if (rc < 0) {
        cJSON_Delete(o);
        cc_error(m, "cannot read the users (see the server log)");
        return;
    }
    cc_answer(m, o);
}

static void on_admin_done(void *ud, const pt_srv_admin_result *r)
{
    pt_ctl_conn *m = ud;
    if (r->rc != 0) {
        cc_error(m, "%s", r->error ? r->error : pt_strerror(r->rc));
    } else {
        char hex[33];
        pt_hex_encode(hex, r->user_id, 16);
        cJSON *o = ok_obj();
        cJSON_AddStringToObject(o, "name", r->name);
        cJSON_AddStringToObject(o, "user_id", hex);
        cJSON_AddNumberToObject(o, "connections_closed", (double)r->conns_closed);
        cJSON_AddNumberToObject(o, "devices_deleted", (double)r->devices);
        cJSON_AddNumberToObject(o, "queued_deleted", (double)r->queued);
        cc_answer(m, o);
    }
    cc_unref(m);
}

static void cmd_user(pt_ctl_conn *m, pt_srv_admin_action a, const char *name)
{
    m->refs++; /* until on_admin_done */
    pt_srv_admin_user(m->srv, a, name, on_admin_done, m);
}

static void backup_run(uv_work_t *w)
{
    backup_work *b = w->data;
    b->rc = pt_backup_create(b->data_dir, b->file, &b->info, b->msg, sizeof b->msg);
}

static void backup_after(uv_work_t *w, int status)
{
    backup_work *b = w->data;
    pt_ctl_conn *m = b->m;
    if (status != 0 || b->rc != 0) {
        pt_log_error("control: backup to %s failed: %s", b->file, status ? uv_strerror(status) : b->msg);
        cc_error(m, "backup failed: %s", status ? uv_strerror(status) : b->msg);
    } else {
        pt_log_info("control: backup written to %s (format %d, schema %d, %llu bytes of database, %lld users, "
                    "%lld queued)", b->file, b->info.format, b->info.schema, (unsigned long long)b->info.db_bytes,
                    (long long)b->info.users, (long long)b->info.queued);
        cJSON *o = ok_obj();
        cJSON_AddStringToObject(o, "file", b->file);
        cJSON_AddNumberToObject(o, "format", b->info.format);
        cJSON_AddNumberToObject(o, "schema", b->info.schema);
        cJSON_AddStringToObject(o, "created", b->info.created);
        cJSON_AddNumberToObject(o, "db_bytes", (double)b->info.db_bytes);
        cJSON_AddNumberToObject(o, "users", (double)b->info.users);
        cJSON_AddNumberToObject(o, "queued", (double)b->info.queued);
        cc_answer(m, o);
    }
    free(b);
    cc_unref(m);
}

static void cmd_backup(pt_ctl_conn *m, const char *file)
{
    backup_work *b = calloc(1, sizeof *b);
    if (!b) {
        cc_error(m, "backup: out of memory");
        return;
    }
    b->m = m;
    snprintf(b->data_dir, sizeof b->data_dir, "%s", m->srv->data_dir);
    snprintf(b->file, sizeof b->file, "%s", file);
    b->work.data = b;
    m->refs++; /* until backup_after */
    int rc = uv_queue_work(&m->srv->loop, &b->work, backup_run, backup_after);
    if (rc != 0) {
        free(b);
        m->refs--;
        cc_error(m, "backup: %s", uv_strerror(rc));
    }
}

static void cmd_metrics(pt_ctl_conn *m)
{
    pt_buf body;
    pt_buf_init(&body);
    if (pt_metrics_render(m->srv, &body) != 0 || pt_buf_append(&body, "", 1) != 0) {
        pt_buf_free(&body);
        cc_error(m, "cannot render the metrics");
        return;
    }
    cJSON *o = ok_obj();
    cJSON_AddStringToObject(o, "text", (const char *)body.data);
    pt_buf_free(&body);
    cc_answer(m, o);
}

/* ---- the request ------------------------------------------------------------------------- */

static int req_error(pt_ctl_req *r, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int req_error(pt_ctl_req *r, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    r->user = r->file = NULL;
    return PT_ERR_INVAL;
}

static const char *str_arg(const cJSON *q, const char *key)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(q, key);
    return cJSON_IsString(a) ? a->valuestring : NULL;
}

cJSON *pt_ctl_json_object(const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!cJSON_IsObject(o) || !end) {
        cJSON_Delete(o);
        return NULL;
    }
    for (const char *p = end; p < text + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(o);
            return NULL;
        }
    return o;
}

int pt_ctl_request_parse(pt_ctl_req *out, const char *line, size_t len, char *err, size_t errlen)
{
    PT_ASSERT(out && (line || len == 0) && err && errlen > 0);
    memset(out, 0, sizeof *out);
    err[0] = 0;
    cJSON *q = out->json = pt_ctl_json_object(line, len);
    const cJSON *cmd = q ? cJSON_GetObjectItemCaseSensitive(q, "cmd") : NULL;
    if (!cJSON_IsString(cmd))
        return req_error(out, err, errlen,
                         "malformed request: expected a JSON object with \"cmd\"");
    const char *c = out->name = cmd->valuestring;
    if (strcmp(c, "status") == 0) {
        out->cmd = PT_CTL_STATUS;
    } else if (strcmp(c, "users") == 0) {
        out->cmd = PT_CTL_USERS;
        out->online = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "online"));
    } else if (strcmp(c, "user") == 0) {
        out->cmd = PT_CTL_USER;
        const char *action = str_arg(q, "action");
        out->user = str_arg(q, "name");
        if (!action || !out->user || !*out->user)
            return req_error(out, err, errlen,
                             "user: needs an action (ban, unban, delete) and a NAME");
        if (strcmp(action, "ban") == 0) out->action = PT_ADMIN_BAN;
        else if (strcmp(action, "unban") == 0) out->action = PT_ADMIN_UNBAN;
        else if (strcmp(action, "delete") == 0) out->action = PT_ADMIN_DELETE;
        else
            return req_error(out, err, errlen, "user: unknown action '%.40s' (ban, unban, delete)",
                             action);
    } else if (strcmp(c, "reload") == 0) {
        out->cmd = PT_CTL_RELOAD;
    } else if (strcmp(c, "reopen-logs") == 0) {
        out->cmd = PT_CTL_REOPEN_LOGS;
    } else if (strcmp(c, "backup") == 0) {
        out->cmd = PT_CTL_BACKUP;
        out->file = str_arg(q, "file");
        if (!out->file || out->file[0] != '/')
            return req_error(
                out, err, errlen,
                "backup: needs an absolute FILE path (packtrackctl makes it absolute)");
        if (strlen(out->file) >= PT_CTL_PATH_MAX)
            return req_error(out, err, errlen, "backup: path too long");
    } else if (strcmp(c, "metrics") == 0) {
        out->cmd = PT_CTL_METRICS;
    } else {
        return req_error(out, err, errlen, "unknown command '%.40s'", c);
    }
    return 0;
}

void pt_ctl_req_free(pt_ctl_req *r)
{
    if (!r) return;
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

static void cc_request(pt_ctl_conn *m, size_t line_len)
{
    pt_ctl_req r;
    char msg[1600];
    int rc = pt_ctl_request_parse(&r, m->req, line_len, msg, sizeof msg);
    if (r.name) pt_log_debug("control: %s", r.name);
    if (rc != 0) {
        cc_error(m, "%s", msg);
        pt_ctl_req_free(&r);
        return;
    }
    switch (r.cmd) {
    case PT_CTL_STATUS:
        cmd_status(m);
        break;
    case PT_CTL_USERS:
        cmd_users(m, r.online);
        break;
    case PT_CTL_USER:
        cmd_user(m, r.action, r.user);
        break;
    case PT_CTL_RELOAD:
    case PT_CTL_REOPEN_LOGS:
        rc = r.cmd == PT_CTL_RELOAD ? pt_srv_reload(m->srv, "control", msg, sizeof msg)
                                    : pt_srv_reopen_logs(m->srv, "control", msg, sizeof msg);
        if (rc) {
            cc_error(m, "%s", msg);
        } else {
            cJSON *o = ok_obj();
            cJSON_AddStringToObject(o, "message", msg);
            cc_answer(m, o);
        }
        break;
    case PT_CTL_BACKUP:
        cmd_backup(m, r.file);
        break;
    case PT_CTL_METRICS:
        cmd_metrics(m);
        break;
    }
    pt_ctl_req_free(&r);
}

static void cc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    pt_ctl_conn *m = h->data;
    buf->base = m->req + m->len;
    buf->len = sizeof m->req - 1 - m->len; /* never 0: a full buffer is answered at once */
}

static void cc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    pt_ctl_conn *m = st->data;
    if (n == 0 || m->answered) return;
    if (n < 0) {
        cc_close(m);
        return;
    }
    size_t old = m->len;
    m->len += (size_t)n;
    char *nl = memchr(m->req + old, '\n', m->len - old);
    if (nl) {
        cc_request(m, (size_t)(nl - m->req));
        return;
    }
    if (m->len == sizeof m->req - 1) cc_error(m, "request over %d bytes", PT_CTL_REQ_MAX - 1);
}

static void cc_timeout(uv_timer_t *t)
{
    pt_ctl_conn *m = t->data;
    pt_log_info("control: request not complete in %d ms; closing", PT_CTL_TIMEOUT_MS);
    cc_close(m);
}

static void on_ctl_connection(uv_stream_t *l, int status)
{
    pt_server *s = l->data;
    pt_ctl *ctl = s->ctl;
    if (status < 0 || s->stopping || !ctl) return;
    pt_ctl_conn *m = calloc(1, sizeof *m);
    if (!m) return;
    m->srv = s;
    uv_pipe_init(&s->loop, &m->pipe, 0);
    uv_timer_init(&s->loop, &m->timer);
    m->pipe.data = m->timer.data = m;
    m->refs = 2;
    m->next = ctl->conns;
    if (ctl->conns) ctl->conns->prev = m;
    ctl->conns = m;
    ctl->nconns++;
    if (uv_accept(l, (uv_stream_t *)&m->pipe) != 0) {
        cc_close(m);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t cl = sizeof cred;
    if (uv_fileno((uv_handle_t *)&m->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
        (cred.uid != 0 && cred.uid != geteuid())) {
        pt_log_warn("control: connection from uid %d refused (only root and uid %u)",
                    cl == sizeof cred ? (int)cred.uid : -1, (unsigned)geteuid());
        cc_close(m);
        return;
    }
    if (ctl->nconns > PT_CTL_MAX_CONNS) {
        pt_log_warn("control: %d requests at once already; closing a new one", PT_CTL_MAX_CONNS);
        cc_close(m);
        return;
    }
    uv_timer_start(&m->timer, cc_timeout, PT_CTL_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&m->pipe, cc_alloc, cc_read);
}

int pt_srv_ctl_lock(pt_server *s)
{
    pt_ctl *ctl = calloc(1, sizeof *ctl);
    if (!ctl) return PT_ERR_NOMEM;
    char msg[1300];
    ctl->lock_fd = pt_datadir_lock(s->data_dir, msg, sizeof msg);
    if (ctl->lock_fd < 0) {
        pt_log_error("%s", msg);
        free(ctl);
        return PT_ERR_STATE;
    }
    s->ctl = ctl;
    return 0;
}

int pt_srv_ctl_start(pt_server *s)
{
    pt_ctl *ctl = s->ctl;
    PT_ASSERT(ctl);
    int n = snprintf(ctl->path, sizeof ctl->path, "%s/control.sock", s->data_dir);
    if (n < 0 || (size_t)n >= sizeof ctl->path) {
        pt_log_warn("control socket: %s/control.sock is longer than a unix socket path may be; "
                    "packtrackctl cannot reach this server", s->data_dir);
        ctl->path[0] = 0;
        return 0;
    }
    unlink(ctl->path); /* a stale one: we hold the lock, so no server uses it */
    uv_pipe_init(&s->loop, &ctl->listener, 0);
    ctl->listener.data = s;
    ctl->listening = true;
    int rc;
    if ((rc = uv_pipe_bind(&ctl->listener, ctl->path)) != 0 || chmod(ctl->path, 0600) != 0 ||
        (rc = uv_listen((uv_stream_t *)&ctl->listener, 16, on_ctl_connection)) != 0) {
        pt_log_error("control socket %s: %s", ctl->path, rc ? uv_strerror(rc) : strerror(errno));
        return PT_ERR_IO;
    }
    pt_log_info("control socket %s", ctl->path);
    return 0;
}

void pt_srv_ctl_stop(pt_server *s)
{
    pt_ctl *ctl = s->ctl;
    if (!ctl) return;
    if (ctl->listening) {
        ctl->listening = false;
        uv_close((uv_handle_t *)&ctl->listener, NULL);
        if (ctl->path[0]) unlink(ctl->path);
    }
    while (ctl->conns) cc_close(ctl->conns); /* answers still pending are dropped */
}

void pt_srv_ctl_free(pt_server *s)
{
    pt_ctl *ctl = s->ctl;
    if (!ctl) return;
    if (ctl->lock_fd >= 0) close(ctl->lock_fd);
    s->ctl = NULL;
    free(ctl);
}
