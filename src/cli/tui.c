/*
 * packtrack chat - the terminal UI, in three parts:
 *   model: conversations and their messages, fed by libpacktrack's events;
 *   view:  draws the whole model on every change (curses sends only the difference);
 *   input: the edit line, keys and /commands.
 * The event callback only touches the model: the library forbids calling back into
 * the pt_ctx from a callback, so what needs the library (read receipts, refreshing the
 * contact list, trust states) is queued there and done after pt_poll() returns.
 * Widths are libutf8proc's, per grapheme cluster (src/cli/text.c); clusters curses
 * cannot measure are drawn by src/cli/screen.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tui.h"

enum {
    HISTORY_LIMIT = 500,    /* messages read from the store when a conversation opens */
    INPUT_MAX = 4000,       /* wide characters in the edit line */
    INPUT_HISTORY = 100,    /* lines remembered for Up/Down */
    MAX_REQUESTS = 16,      /* friend requests waiting for an answer */
    MAX_PENDING_SEEN = 256, /* shown messages waiting for pt_mark_seen() */
    TICK_MS = 200,
    TYPING_SHOWN_MS = 6000, /* "X is typing" lasts this long after their last notice */
    TYPING_EVERY_MS = 3000, /* we repeat ours this often while the input line has text */          /* pt_poll() at least this often: reconnects, retries */
    LIST_WIDTH = 22,        /* the conversation list, columns */
    TRUST_REFRESH_MS = 30000, /* the open conversation's trust state is asked for again */
    SEARCH_LIMIT = 200,     /* results shown by /search */
    MAX_ALERTS = 8,         /* desktop notifications between two loop turns */
};

/* What the title bar says about the keys of a 1:1 conversation's peer. */
typedef enum tui_trust { TRUST_UNKNOWN, TRUST_UNVERIFIED, TRUST_VERIFIED, TRUST_CHANGED } tui_trust;

/* What the message pane shows. */
typedef enum tui_view { VIEW_CHAT, VIEW_VERIFY, VIEW_SEARCH } tui_view;

/* ======================================= model ======================================= */

typedef struct tui_msg {
    char id[PT_ID_HEX_LEN]; /* "" for a local notice line */
    char from[PT_NAME_MAX];
    int64_t time_ms;
    bool outgoing;
    pt_delivery delivery;   /* outgoing only; only moves forward */
    bool undecryptable;     /* a placeholder until the message comes again */
    wchar_t *text;          /* owned; control characters already replaced */
} tui_msg;

typedef struct tui_conv {
    char name[PT_NAME_MAX + 1]; /* a username, or "#group" */
    pt_status status;           /* friends: their presence */
    int unread;                 /* incoming messages not yet shown */
    bool loaded;                /* its history was read from the store */
    tui_msg *msgs;              /* oldest first */
    size_t n, cap;
    int scroll;                 /* screen lines scrolled up from the newest */
    bool dated;                 /* search results: the date before the time */
    tui_trust trust;            /* 1:1: the peer's keys, as last asked */
    int members, unverified;    /* groups: members but us, and how many of them are not verified */
    char changed[PT_NAME_MAX];  /* groups: a member whose keys changed ("" none) */
    bool trust_stale;           /* ask the library again before showing it */
    int64_t trust_at;           /* when it was last asked (monotonic ms) */
} tui_conv;

typedef struct tui_request {
    char name[PT_NAME_MAX];
    char note[256];
} tui_request;

/* A desktop notification waiting to be sent: names only, never message text. */
typedef struct tui_alert {
    char from[PT_NAME_MAX];
    char conv[PT_NAME_MAX + 1];
    bool mention;
} tui_alert;

typedef struct tui_seen {
    char id[PT_ID_HEX_LEN];
    bool outgoing; /* no read receipt for our own messages */
} tui_seen;

typedef struct tui {
    pt_ctx *ctx;
    tui_conv *convs;  /* indices are stable: conversations are only appended */
    size_t nconv, capconv;
    long active;      /* index into convs; -1: none open */
    tui_request req[MAX_REQUESTS];
    size_t nreq;
    bool online;
    bool refresh_contacts;      /* asked for by an event; done after pt_poll() */
    tui_seen seen[MAX_PENDING_SEEN];
    size_t nseen;
    tui_view view;
    char verify_name[PT_NAME_MAX + 1];     /* VIEW_VERIFY: whose safety number is shown */
    char safety[PT_SAFETY_MAX];
    char safety_qr[PT_SAFETY_QR_MAX];
    tui_conv found;                    /* VIEW_SEARCH: the results, oldest first */
    char search_title[PT_NAME_MAX + 320];
    bool notify;                       /* /notify on: desktop notifications */
    char notify_path[512];             /* notify-send, found in $PATH by /notify on */
    bool bell;                         /* ring the bell after the library call */
    tui_alert alerts[MAX_ALERTS];      /* desktop notifications to send after it */
    size_t nalerts;
    char me[PT_NAME_MAX];              /* our username, for mentions */
    char notice[512];           /* the line above the input */
    bool notice_err;
    bool ascii;                 /* no UTF-8 locale: ASCII marks */
    bool dirty;                 /* redraw before waiting again */
    bool quit;
    wchar_t in[INPUT_MAX + 1];  /* the edit line */
    size_t in_len, in_cur, in_off; /* length, cursor, first character shown */
    wchar_t *hist[INPUT_HISTORY];
    size_t nhist, hist_pos;     /* hist_pos == nhist: a new line, saved in draft */
    wchar_t draft[INPUT_MAX + 1];
    char typing_from[PT_NAME_MAX];  /* who is typing to us (shown while typing_until) */
    int64_t typing_until;
    bool typing_sent;               /* we told the open conversation we are typing */
    int64_t typing_sent_ms;
    char typing_to[PT_NAME_MAX + 1]; /* ...and whom */
} tui;

static volatile sig_atomic_t stop_signal; /* SIGTERM / SIGHUP: leave cleanly */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_notice(tui *t, bool err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_notice(tui *t, bool err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->notice, sizeof t->notice, fmt, ap);
    va_end(ap);
    t->notice_err = err;
    t->dirty = true;
}

static long conv_find(const tui *t, const char *name)
{
    for (size_t i = 0; i < t->nconv; i++)
        if (strcasecmp(t->convs[i].name, name) == 0) return (long)i;
    return -1;
}

static long conv_get(tui *t, const char *name)
{
    long i = conv_find(t, name);
    if (i >= 0 || !*name) return i;
    if (t->nconv == t->capconv) {
        size_t cap = t->capconv ? 2 * t->capconv : 16;
        tui_conv *v = realloc(t->convs, cap * sizeof *v);
        if (!v) return -1;
        t->convs = v;
        t->capconv = cap;
    }
    tui_conv *c = &t->convs[t->nconv];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->trust_stale = true;
    t->dirty = true;
    return (long)t->nconv++;
}

/* The conversation a message belongs to: "#group", or the other user. */
static void conv_key(const pt_message *m, char out[PT_NAME_MAX + 1])
{
    if (m->group[0]) snprintf(out, PT_NAME_MAX + 1, "#%s", m->group);
    else snprintf(out, PT_NAME_MAX + 1, "%s", m->outgoing ? m->to : m->from);
}

static void conv_clear(tui_conv *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->msgs[i].text);
    free(c->msgs);
    c->msgs = NULL;
    c->n = c->cap = 0;
}

static tui_msg *conv_append(tui_conv *c)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 32;
        tui_msg *v = realloc(c->msgs, cap * sizeof *v);
        if (!v) return NULL;
        c->msgs = v;
        c->cap = cap;
    }
    tui_msg *m = &c->msgs[c->n];
    memset(m, 0, sizeof *m);
    return m;
}

/* Adds m, or moves its delivery state forward if we have it; 1 when it is new.
 * only_newer: a receipt for a message older than the loaded history is not added at
 * the bottom (our own new message, whose STORED event comes before pt_send() returns,
 * is the newest and is added). */
/* What a placeholder says: why it could not be read, and that it was asked for again. */
static wchar_t *msg_text(const pt_message *m)
{
    if (!m->undecryptable) return pt_tui_wide(m->text ? m->text : "");
    static const char *const why[] = {"", "unknown session or changed key", "corrupted", "corrupted", "could not decrypt"};
    char line[PT_NAME_MAX + 160];
    snprintf(line, sizeof line, "\u26a0 [could not be read: %s; %s's device was asked to send it again]",
             m->code >= 1 && m->code <= 4 ? why[m->code] : "unreadable", m->from);
    return pt_tui_wide(line);
}

static int conv_upsert(tui_conv *c, const pt_message *m, bool only_newer)
{
    for (size_t i = c->n; i-- > 0;)
        if (strcmp(c->msgs[i].id, m->id) == 0) {
            if (m->delivery > c->msgs[i].delivery) c->msgs[i].delivery = m->delivery;
            if (c->msgs[i].undecryptable && !m->undecryptable) { /* it came again: in place */
                wchar_t *t = msg_text(m);
                if (!t) return -1;
                free(c->msgs[i].text);
                c->msgs[i].text = t;
                c->msgs[i].undecryptable = false;
                return 1;
            }
            return 0;
        }
    if (only_newer && c->n && m->time_ms < c->msgs[c->n - 1].time_ms) return 0;
    tui_msg *x = conv_append(c);
    if (!x || !(x->text = msg_text(m))) return -1;
    x->undecryptable = m->undecryptable;
    snprintf(x->id, sizeof x->id, "%s", m->id);
    snprintf(x->from, sizeof x->from, "%s", m->from);
    x->time_ms = m->time_ms;
    x->outgoing = m->outgoing;
    x->delivery = m->delivery;
    c->n++;
    return 1;
}

/* A local line in a conversation (help, errors); never stored, never sent. */
static void conv_note(tui_conv *c, const char *text)
{
    tui_msg *x = conv_append(c);
    if (x && (x->text = pt_tui_wide(text)) != NULL) {
        x->time_ms = (int64_t)time(NULL) * 1000;
        c->n++;
    }
}

static void queue_seen(tui *t, const char *id, bool outgoing)
{
    if (t->nseen == MAX_PENDING_SEEN) return; /* marked when the conversation is opened again */
    snprintf(t->seen[t->nseen].id, sizeof t->seen[t->nseen].id, "%s", id);
    t->seen[t->nseen++].outgoing = outgoing;
}

static void request_remove(tui *t, const char *name)
{
    for (size_t i = 0; i < t->nreq; i++)
        if (strcasecmp(t->req[i].name, name) == 0) {
            memmove(&t->req[i], &t->req[i + 1], (t->nreq - i - 1) * sizeof t->req[0]);
            t->nreq--;
            t->dirty = true;
            return;
        }
}

static void request_add(tui *t, const char *name, const char *note)
{
    request_remove(t, name);
    if (t->nreq == MAX_REQUESTS) return;
    snprintf(t->req[t->nreq].name, sizeof t->req[0].name, "%s", name);
    snprintf(t->req[t->nreq++].note, sizeof t->req[0].note, "%s", note ? note : "");
    t->dirty = true;
}

/* Whether text mentions @name (not followed by more of a name). */
static bool mentions(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; n && (p = strchr(p, '@')) != NULL; p++)
        if (strncasecmp(p + 1, name, n) == 0) {
            unsigned char next = (unsigned char)p[1 + n];
            if (!(next >= 0x80 || next == '_' || next == '-' || (next >= '0' && next <= '9') ||
                  ((next | 0x20) >= 'a' && (next | 0x20) <= 'z')))
                return true;
        }
    return false;
}

/* A message for a conversation that is not on the screen: the bell for a direct
 * message or a mention, and a desktop notification when /notify is on. */
static void alert(tui *t, const pt_message *m, const char *conv)
{
    bool mention = m->group[0] && mentions(m->text ? m->text : "", t->me);
    if (m->group[0] && !mention) return;
    t->bell = true;
    if (!t->notify || t->nalerts == MAX_ALERTS) return;
    tui_alert *a = &t->alerts[t->nalerts++];
    snprintf(a->from, sizeof a->from, "%s", m->from);
    snprintf(a->conv, sizeof a->conv, "%s", conv);
    a->mention = mention;
}

/* Runs inside pt_poll() and the other library calls: model updates only. */
static void on_event(void *ud, const pt_event *ev)
{
    tui *t = ud;
    t->dirty = true;
    switch (ev->type) {
    case PT_EVENT_TYPING:
        if (ev->typing) {
            snprintf(t->typing_from, sizeof t->typing_from, "%s", ev->user);
            t->typing_until = now_ms() + TYPING_SHOWN_MS;
        } else if (strcasecmp(t->typing_from, ev->user) == 0) {
            t->typing_until = 0;
        }
        break;
    case PT_EVENT_MESSAGE:
    case PT_EVENT_DELIVERY: {
        char key[PT_NAME_MAX + 1];
        conv_key(ev->message, key);
        long i = conv_get(t, key);
        bool delivery = ev->type == PT_EVENT_DELIVERY;
        if (i < 0 || conv_upsert(&t->convs[i], ev->message, delivery) != 1 || delivery) break;
        /* a message may come from a device we have not seen: the title asks again */
        if (!ev->message->outgoing) t->convs[i].trust_stale = true;
        /* seen (and a read receipt) only when it is on the screen: open, not scrolled back */
        if (i == t->active && t->view == VIEW_CHAT && t->convs[i].scroll == 0)
            queue_seen(t, ev->message->id, ev->message->outgoing);
        else if (!ev->message->outgoing) {
            t->convs[i].unread++;
            if (i != t->active || t->view != VIEW_CHAT) alert(t, ev->message, key); /* not when just scrolled back */
        }
        break;
    }
    case PT_EVENT_PRESENCE: {
        long i = conv_find(t, ev->user);
        if (i >= 0) t->convs[i].status = ev->status;
        break;
    }
    case PT_EVENT_FRIEND_REQUEST:
        request_add(t, ev->user, ev->text);
        t->bell = true;
        break;
    case PT_EVENT_FRIEND_ACCEPTED:
        conv_get(t, ev->user);
        request_remove(t, ev->user);
        t->refresh_contacts = true;
        set_notice(t, false, "%s accepted your friend request", ev->user);
        break;
    case PT_EVENT_FRIEND_DENIED: set_notice(t, false, "%s declined your friend request", ev->user); break;
    case PT_EVENT_GROUP: {
        char key[PT_NAME_MAX + 1], line[3 * PT_NAME_MAX];
        snprintf(key, sizeof key, "#%s", ev->group);
        /* an invitation names the group by its id until the group's info arrives,
         * followed by "joined" with the real name: only that one opens a conversation */
        long i = strcmp(ev->text, "joined") == 0 ? conv_get(t, key) : conv_find(t, key);
        snprintf(line, sizeof line, "%s %s", ev->user, ev->text);
        if (i >= 0) {
            conv_note(&t->convs[i], line);
            t->convs[i].trust_stale = true; /* the members changed */
        }
        set_notice(t, false, "#%s: %s", ev->group, line);
        break;
    }
    case PT_EVENT_CONNECTION:
        t->online = ev->status == PT_PRESENCE_ONLINE;
        if (t->online) t->refresh_contacts = true;
        for (size_t k = 0; t->online && k < t->nconv; k++) t->convs[k].trust_stale = true;
        set_notice(t, !t->online, "%s", t->online ? "connected" : "offline: reconnecting; messages are kept and sent later");
        break;
    }
}

/* Friends with their presence, and the requests still waiting for us. */
static void load_contacts(tui *t)
{
    pt_contact *c;
    size_t n;
    if (pt_contacts(t->ctx, &c, &n) != 0) return;
    for (size_t i = 0; i < n; i++) {
        if (c[i].state == PT_CONTACT_STATE_REQUEST_RECEIVED) request_add(t, c[i].name, "");
        if (c[i].state != PT_CONTACT_STATE_FRIEND) continue;
        long k = conv_get(t, c[i].name);
        if (k >= 0) t->convs[k].status = c[i].status;
    }
    pt_free(c);
}

/* Groups have no list call: they are found in the history. Unread counts come from
 * the messages nobody has marked seen. */
static void load_groups_and_unread(tui *t)
{
    pt_message *m;
    size_t n;
    char key[PT_NAME_MAX + 1];
    if (pt_history(t->ctx, NULL, 1000, &m, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (!m[i].group[0]) continue;
            conv_key(&m[i], key);
            conv_get(t, key);
        }
        pt_free(m);
    }
    if (pt_unseen(t->ctx, &m, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            conv_key(&m[i], key);
            long k = conv_get(t, key);
            if (k >= 0 && !m[i].outgoing) t->convs[k].unread++;
        }
        pt_free(m);
    }
}

/* Marks what the open conversation showed; the library sends the read receipts. */
static void flush_seen(tui *t)
{
    if (!t->nseen) return;
    pt_message *m = calloc(t->nseen, sizeof *m);
    if (!m) return;
    size_t n = t->nseen;
    for (size_t i = 0; i < n; i++) {
        snprintf(m[i].id, sizeof m[i].id, "%s", t->seen[i].id);
        m[i].outgoing = t->seen[i].outgoing;
    }
    t->nseen = 0; /* pt_mark_seen() may deliver events that queue more */
    pt_mark_seen(t->ctx, m, n);
    free(m);
}

/* Asks the library for conversation i's trust state: the peer's, or each member's.
 * Events may arrive during these calls and append conversations: i, not a pointer. */
static void trust_refresh(tui *t, long i)
{
    t->convs[i].trust_stale = false;
    t->convs[i].trust_at = now_ms();
    t->dirty = true;
    char name[PT_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s", t->convs[i].name);
    pt_contact info;
    if (name[0] != '#') {
        if (pt_contact_info(t->ctx, name, &info) == 0)
            t->convs[i].trust = info.key_changed ? TRUST_CHANGED : info.verified ? TRUST_VERIFIED : TRUST_UNVERIFIED;
        return;
    }
    pt_user *u;
    size_t n;
    if (pt_group_members(t->ctx, name + 1, &u, &n) != 0) return;
    int members = 0, unverified = 0;
    char changed[PT_NAME_MAX] = "";
    for (size_t k = 0; k < n; k++) {
        if (strcasecmp(u[k].name, t->me) == 0) continue;
        members++;
        bool ok = pt_contact_info(t->ctx, u[k].name, &info) == 0;
        if (!ok || !info.verified || info.key_changed) unverified++;
        if (ok && info.key_changed && !changed[0]) snprintf(changed, sizeof changed, "%s", u[k].name);
    }
    pt_free(u);
    t->convs[i].members = members;
    t->convs[i].unverified = unverified;
    snprintf(t->convs[i].changed, sizeof t->convs[i].changed, "%s", changed);
    t->convs[i].trust = changed[0] ? TRUST_CHANGED : unverified ? TRUST_UNVERIFIED : TRUST_VERIFIED;
}

/* A name as it may go into a notification: no controls, no markup, bounded. */
static void clean_name(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p;) {
        size_t len = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : 4, k = 0;
        while (k < len && p[k]) k++;
        if (o + k >= cap || o + k > 64) break;
        bool skip = k < len || (len == 1 && (*p < 0x20 || *p == 0x7f || strchr("<>&\\\"'", *p))) ||
                    (len == 2 && p[0] == 0xC2 && p[1] < 0xA0); /* C1 controls */
        if (!skip) {
            memcpy(out + o, p, k);
            o += k;
        }
        p += k;
    }
    out[o] = 0;
}

/* notify-send SUMMARY BODY, run with fork+exec (no shell) and not waited for: the
 * child forks the notifier and exits at once. Only names are passed, never text. */
static void notify_desktop(const tui *t, const tui_alert *a)
{
    char from[80], conv[80], body[200];
    clean_name(from, sizeof from, a->from);
    clean_name(conv, sizeof conv, a->conv);
    if (a->mention) snprintf(body, sizeof body, "%s mentioned you in %s", from, conv);
    else snprintf(body, sizeof body, "new message from %s", from);
    pid_t pid = fork();
    if (pid == 0) {
        if (fork() == 0) {
            int fd = open("/dev/null", O_RDWR);
            if (fd >= 0) {
                dup2(fd, STDIN_FILENO);
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
            }
            closefrom(3); /* not the server's socket, not the store */
            char *const argv[] = {"notify-send", "--app-name=PackTrack", "--", "PackTrack", body, NULL};
            execv(t->notify_path, argv);
        }
        _exit(0);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
}

/* Work the event callback asked for: the library may be called here. */
static void after_library(tui *t)
{
    if (t->refresh_contacts) {
        t->refresh_contacts = false;
        load_contacts(t);
    }
    flush_seen(t);
    if (t->active >= 0) {
        int64_t age = now_ms() - t->convs[t->active].trust_at;
        if ((t->convs[t->active].trust_stale && age >= 2000) || age >= TRUST_REFRESH_MS) trust_refresh(t, t->active);
    }
    if (t->bell) {
        t->bell = false;
        beep();
    }
    for (size_t i = 0; i < t->nalerts; i++) notify_desktop(t, &t->alerts[i]);
    t->nalerts = 0;
}

/* Everything of conversation i is on the screen now: mark what is unseen. */
static void conv_seen(tui *t, long i)
{
    pt_message *u;
    size_t n;
    if (pt_unseen(t->ctx, &u, &n) == 0) {
        char key[PT_NAME_MAX + 1];
        for (size_t k = 0; k < n; k++) {
            conv_key(&u[k], key);
            if (strcasecmp(key, t->convs[i].name) == 0) queue_seen(t, u[k].id, u[k].outgoing);
        }
        pt_free(u);
    }
    t->convs[i].unread = 0;
    t->dirty = true;
    after_library(t);
}

static void conv_open(tui *t, long i)
{
    if (i < 0) return;
    t->active = i;
    if (!t->convs[i].loaded) {
        pt_message *m;
        size_t n;
        if (pt_history(t->ctx, t->convs[i].name, HISTORY_LIMIT, &m, &n) == 0) {
            conv_clear(&t->convs[i]);
            for (size_t k = 0; k < n; k++) conv_upsert(&t->convs[i], &m[k], false);
            pt_free(m);
            t->convs[i].loaded = true;
        }
    }
    t->convs[i].scroll = 0;
    conv_seen(t, i);
}

/* ======================================== view ======================================= */

static const char *presence_mark(const tui *t, pt_status s)
{
    if (t->ascii) return s == PT_PRESENCE_ONLINE ? "+" : s == PT_PRESENCE_BUSY ? "!" : s == PT_PRESENCE_AWAY ? "~" : "-";
    return s == PT_PRESENCE_OFFLINE || s == PT_PRESENCE_INVISIBLE ? "○" : "●";
}

static attr_t presence_attr(pt_status s)
{
    switch (s) {
    case PT_PRESENCE_ONLINE: return COLOR_PAIR(C_ONLINE);
    case PT_PRESENCE_BUSY: return COLOR_PAIR(C_BUSY);
    case PT_PRESENCE_AWAY: return COLOR_PAIR(C_AWAY);
    default: return A_DIM;
    }
}

/* What the title says about a conversation's keys; attr gets how to show it. */
static void trust_tag(const tui_conv *c, char *out, size_t cap, attr_t *attr)
{
    *attr = COLOR_PAIR(C_TITLE) | A_REVERSE;
    if (c->trust == TRUST_UNKNOWN) {
        snprintf(out, cap, "%s", "");
    } else if (c->name[0] != '#') {
        snprintf(out, cap, " %s", c->trust == TRUST_CHANGED ? "[KEY CHANGED]" : c->trust == TRUST_VERIFIED ? "[verified]" : "[unverified]");
    } else if (c->changed[0]) {
        snprintf(out, cap, " [KEY CHANGED: %s]", c->changed);
    } else if (!c->members) {
        snprintf(out, cap, "%s", " [no other member yet]");
    } else if (c->unverified) {
        snprintf(out, cap, " [%d of %d unverified]", c->unverified, c->members);
    } else {
        snprintf(out, cap, " [%d verified]", c->members);
    }
    if (c->trust == TRUST_CHANGED) *attr = COLOR_PAIR(C_WARN) | A_REVERSE | A_BOLD;
    else if (c->trust == TRUST_VERIFIED) *attr |= A_BOLD;
}

/* " PackTrack · me (status) │ peer ● online [trust] │ connected │ 1 friend request" */
static void draw_title(const tui *t, int cols)
{
    attr_t title = COLOR_PAIR(C_TITLE) | A_REVERSE, tag_attr = title;
    char head[512], tag[PT_NAME_MAX + 32] = "", tail[128];
    int n = snprintf(head, sizeof head, " PackTrack · %s (%s)", t->me, pt_cli_status_name(pt_get_status(t->ctx)));
    if (t->active >= 0) {
        const tui_conv *c = &t->convs[t->active];
        if (c->name[0] == '#') snprintf(head + n, sizeof head - (size_t)n, " │ %s", c->name);
        else
            snprintf(head + n, sizeof head - (size_t)n, " │ %s %s %s", c->name, presence_mark(t, c->status),
                     pt_cli_status_name(c->status));
        trust_tag(c, tag, sizeof tag, &tag_attr);
    }
    n = snprintf(tail, sizeof tail, " │ %s", t->online ? "connected" : "offline");
    if (t->active >= 0 && t->typing_until > now_ms() && strcasecmp(t->convs[t->active].name, t->typing_from) == 0)
        n += snprintf(tail + n, sizeof tail - (size_t)n, " │ %s is typing…", t->typing_from);
    if (t->nreq) snprintf(tail + n, sizeof tail - (size_t)n, " │ %zu friend request%s", t->nreq, t->nreq == 1 ? "" : "s");
    attron(title);
    mvhline(0, 0, ' ', cols);
    attroff(title);
    int x = pt_tui_put_utf8(0, 0, cols, head, title);
    x += pt_tui_put_utf8(0, x, cols - x, tag, tag_attr);
    pt_tui_put_utf8(0, x, cols - x, tail, t->nreq ? title | A_BOLD : title);
}

static void draw_list(const tui *t, int y0, int h, int w)
{
    int y = y0;
    for (size_t i = 0; i < t->nconv && y < y0 + h; i++, y++) {
        const tui_conv *c = &t->convs[i];
        attr_t sel = (long)i == t->active ? A_REVERSE : 0;
        if (sel) {
            attron(sel);
            mvhline(y, 0, ' ', w);
            attroff(sel);
        }
        int x = 1;
        if (c->name[0] != '#') x += pt_tui_put_utf8(y, x, w - x, presence_mark(t, c->status), presence_attr(c->status) | sel) + 1;
        char unread[24] = "";
        if (c->unread) snprintf(unread, sizeof unread, " (%d)", c->unread > 999 ? 999 : c->unread);
        int uw = (int)strlen(unread);
        x += pt_tui_put_utf8(y, x, w - x - uw, c->name, sel | (c->unread ? A_BOLD : 0));
        pt_tui_put_utf8(y, x, w - x, unread, sel | A_BOLD);
    }
    for (size_t i = 0; i < t->nreq && y < y0 + h; i++, y++) {
        char line[PT_NAME_MAX + 16];
        snprintf(line, sizeof line, "? %s", t->req[i].name);
        pt_tui_put_utf8(y, 1, w - 1, line, COLOR_PAIR(C_NOTICE) | A_BOLD);
    }
}

typedef struct spans {
    size_t (*v)[2]; /* [start, end) of each screen line in the composed message */
    size_t n, cap;
} spans;

/* Breaks s[0..n) into lines of at most w columns, between grapheme clusters, at a
 * space when there is one. */
static int wrap(const wchar_t *s, size_t n, int w, spans *out)
{
    out->n = 0;
    for (size_t a = 0;;) {
        int col = 0, cw;
        size_t i = a, brk = (size_t)-1;
        while (i < n && s[i] != L'\n') {
            size_t j = pt_tui_cluster(s, n, i, &cw);
            if (col + cw > w && i > a) break;
            if (s[i] == L' ') brk = i;
            col += cw;
            i = j;
        }
        size_t end = i, next = i + 1; /* at a newline: skip it */
        if (i < n && s[i] != L'\n') {
            bool at_space = brk != (size_t)-1 && brk > a;
            end = at_space ? brk : i;
            next = at_space ? brk + 1 : i;
        }
        if (out->n == out->cap) {
            size_t cap = out->cap ? 2 * out->cap : 16;
            void *v = realloc(out->v, cap * sizeof *out->v);
            if (!v) return -1;
            out->v = v;
            out->cap = cap;
        }
        out->v[out->n][0] = a;
        out->v[out->n++][1] = end;
        if (i >= n) return 0;
        a = next;
    }
}

static const char *delivery_mark(const tui *t, pt_delivery d)
{
    static const char *const uni[] = {"…", "✓", "✓✓", "✓✓", "!"};
    static const char *const asc[] = {"[q]", "[s]", "[d]", "[r]", "[!]"};
    return (unsigned)d <= PT_DELIVERY_FAILED ? (t->ascii ? asc : uni)[d] : "?";
}

/* "HH:MM name: text ✓" as one wide string; *text_at and *mark_at split it for colour.
 * dated: "YYYY-MM-DD HH:MM" (search results reach back further than today). */
static wchar_t *compose(const tui *t, const tui_msg *m, bool dated, size_t *len, size_t *text_at, size_t *mark_at)
{
    char head[2 * PT_NAME_MAX + 48], tail[16] = "";
    time_t sec = (time_t)(m->time_ms / 1000);
    struct tm tm;
    localtime_r(&sec, &tm);
    size_t k = strftime(head, sizeof head, dated ? "%Y-%m-%d %H:%M " : "%H:%M ", &tm);
    if (m->id[0]) snprintf(head + k, sizeof head - k, "%s: ", m->from);
    else snprintf(head + k, sizeof head - k, "-- ");
    if (m->id[0] && m->outgoing) snprintf(tail, sizeof tail, " %s", delivery_mark(t, m->delivery));
    wchar_t *wh = pt_tui_wide(head), *wt = pt_tui_wide(tail);
    size_t hn = wh ? wcslen(wh) : 0, tn = wcslen(m->text), mn = wt ? wcslen(wt) : 0;
    wchar_t *all = wh && wt ? malloc((hn + tn + mn + 1) * sizeof *all) : NULL;
    if (all) {
        wmemcpy(all, wh, hn);
        wmemcpy(all + hn, m->text, tn);
        wmemcpy(all + hn + tn, wt, mn + 1);
        *len = hn + tn + mn;
        *text_at = hn;
        *mark_at = hn + tn;
    }
    free(wh);
    free(wt);
    return all;
}

static attr_t mark_attr(pt_delivery d)
{
    return d == PT_DELIVERY_READ ? COLOR_PAIR(C_READ) | A_BOLD : d == PT_DELIVERY_FAILED ? COLOR_PAIR(C_FAIL) | A_BOLD
           : d == PT_DELIVERY_DELIVERED ? A_NORMAL : A_DIM;
}

/* One screen line of a composed message, each part in its own attributes. */
static void draw_span(int y, int x, int w, const wchar_t *s, size_t a, size_t b, const size_t cut[2],
                      const attr_t attr[3])
{
    size_t bounds[4] = {0, cut[0], cut[1], (size_t)-1};
    for (int part = 0; part < 3 && x < w; part++) {
        size_t lo = a > bounds[part] ? a : bounds[part], hi = b < bounds[part + 1] ? b : bounds[part + 1];
        if (lo < hi) x += pt_tui_put(y, x, w - x, s + lo, hi - lo, attr[part]);
    }
}

static const char *const help_text[] = {
    "Enter sends to the open conversation; Tab / Shift-Tab: next / previous",
    "PgUp / PgDn: scroll back; Up / Down: input history",
    "Ctrl-Y: accept the oldest friend request",
    "/join NAME | /join #GROUP   open a conversation",
    "/add NAME [NOTE]            send a friend request",
    "/accept NAME | /deny NAME   answer a friend request",
    "/verify [NAME]              compare safety numbers (and QR codes); y marks verified",
    "/trust [NAME]               accept changed keys without verifying (sending resumes)",
    "/search TEXT | /search -a TEXT   search this conversation | all; Esc goes back",
    "/receipts on|off            send read receipts; /notify on|off  desktop notifications",
    "/typing on|off              typing notifications (sent and shown)",
    "/status online|busy|away|invisible",
    "/help   /quit (or Ctrl-C, or Ctrl-D on an empty line)",
    "your messages: … queued  ✓ on the server  ✓✓ delivered  ✓✓ (blue) read  ! failed",
    "title: [unverified] [verified] [KEY CHANGED: sending stops until /trust or /verify]",
};

/* Fills the pane with conversation c from its bottom line up, newest message first,
 * skipping c->scroll lines; returns how many more lines it could have shown (scroll
 * went too far). */
static int draw_conv(const tui *t, const tui_conv *c, int y0, int x0, int h, int w)
{
    spans sp = {0};
    int y = y0 + h - 1, skip = c->scroll;
    for (size_t i = c->n; i-- > 0 && y >= y0;) {
        const tui_msg *m = &c->msgs[i];
        size_t len, cut[2];
        wchar_t *s = compose(t, m, c->dated, &len, &cut[0], &cut[1]);
        if (!s || wrap(s, len, w - 1, &sp) != 0) {
            free(s);
            break;
        }
        attr_t who = !m->id[0] ? COLOR_PAIR(C_NOTICE) : m->outgoing ? COLOR_PAIR(C_ME) | A_BOLD : COLOR_PAIR(C_THEM) | A_BOLD;
        attr_t attr[3] = {who, m->id[0] ? A_NORMAL : A_DIM, mark_attr(m->delivery)};
        for (size_t k = sp.n; k-- > 0 && y >= y0;) {
            if (skip > 0) {
                skip--;
                continue;
            }
            draw_span(y--, x0 + 1, x0 + w, s, sp.v[k][0], sp.v[k][1], cut, attr);
        }
        free(s);
    }
    free(sp.v);
    if (c->scroll > 0) pt_tui_put_utf8(y0, x0 + w - 12, 12, "[PgDn: more]", A_REVERSE);
    return y - y0 + 1;
}

/* /verify: the safety number with both names, the QR code, and the question. */
static void draw_verify(const tui *t, int y0, int x0, int h, int w)
{
    char line[3 * PT_NAME_MAX + 128];
    int y = y0, x = x0 + 1;
    w -= 1;
    snprintf(line, sizeof line, "Safety number of %s (you) and %s — %s sees the same digits:", t->me, t->verify_name,
             t->verify_name);
    pt_tui_put_utf8(y++, x, w, line, A_BOLD);
    /* 12 groups of 5 digits: two rows of six */
    char half[2][40];
    snprintf(half[0], sizeof half[0], "%.35s", t->safety);
    snprintf(half[1], sizeof half[1], "%s", strlen(t->safety) > 36 ? t->safety + 36 : "");
    snprintf(line, sizeof line, "    %s", half[0]);
    pt_tui_put_utf8(y++, x, w, line, COLOR_PAIR(C_NOTICE) | A_BOLD);
    snprintf(line, sizeof line, "    %s", half[1]);
    pt_tui_put_utf8(y++, x, w, line, COLOR_PAIR(C_NOTICE) | A_BOLD);
    const int foot = 3;
    int qr = pt_tui_put_qr(y + 1, x + 2, h - (y + 1 - y0) - foot, w - 2, t->safety_qr);
    if (qr) y += qr + 1;
    else pt_tui_put_utf8(y++, x, w, "(the window is too small for the QR code; 'packtrack verify NAME' prints it)", A_DIM);
    snprintf(line, sizeof line, "Compare with %s in person or on a call you trust, or scan %s's code.", t->verify_name,
             t->verify_name);
    pt_tui_put_utf8(++y, x, w, line, A_NORMAL);
    snprintf(line, sizeof line, "y: the numbers match, mark %s verified    n or Esc: not now", t->verify_name);
    pt_tui_put_utf8(++y, x, w, line, A_BOLD);
}

/* The message pane: what the view says. */
static int draw_messages(tui *t, int y0, int x0, int h, int w)
{
    if (t->view == VIEW_VERIFY) {
        draw_verify(t, y0, x0, h, w);
        return 0;
    }
    if (t->view == VIEW_SEARCH) {
        pt_tui_put_utf8(y0, x0 + 1, w - 1, t->search_title, A_BOLD | A_REVERSE);
        if (!t->found.n) pt_tui_put_utf8(y0 + 1, x0 + 1, w - 1, "nothing found", A_DIM);
        return h > 1 ? draw_conv(t, &t->found, y0 + 1, x0, h - 1, w) : 0;
    }
    if (t->active < 0) {
        int y = y0;
        pt_tui_put_utf8(y++, x0 + 1, w - 1, "No conversation open: /join NAME, or Tab.", A_BOLD);
        for (size_t k = 0; k < sizeof help_text / sizeof *help_text && y < y0 + h; k++)
            pt_tui_put_utf8(y++, x0 + 1, w - 1, help_text[k], A_NORMAL);
        return 0;
    }
    return draw_conv(t, &t->convs[t->active], y0, x0, h, w);
}

static void draw_input(tui *t, int y, int cols)
{
    char prompt[PT_NAME_MAX + 8];
    snprintf(prompt, sizeof prompt, "%s> ", t->active >= 0 ? t->convs[t->active].name : "");
    int px = pt_tui_put_utf8(y, 0, cols / 3, prompt, A_BOLD), room = cols - px - 1;
    if (room < 2) return;
    /* keep the cursor on the screen: the first cluster shown follows it; both stay
     * on cluster boundaries (typing may have joined the cursor's neighbours) */
    t->in_cur = pt_tui_next(t->in, t->in_len, t->in_cur);
    if (t->in_cur < t->in_off) t->in_off = pt_tui_prev(t->in, t->in_len, t->in_cur + 1);
    int cw;
    while (t->in_off < t->in_cur && pt_tui_width(t->in + t->in_off, t->in_cur - t->in_off) >= room)
        t->in_off = pt_tui_cluster(t->in, t->in_len, t->in_off, &cw);
    int cx = pt_tui_put(y, px, room, t->in + t->in_off, t->in_cur - t->in_off, A_NORMAL);
    pt_tui_put(y, px + cx, room - cx, t->in + t->in_cur, t->in_len - t->in_cur, A_NORMAL);
    move(y, px + cx);
}

static void draw(tui *t)
{
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    erase();
    if (rows < 5 || cols < 24) {
        mvaddstr(0, 0, "window too small");
        pt_tui_present();
        return;
    }
    draw_title(t, cols);
    int lw = cols >= 64 ? LIST_WIDTH : 0, h = rows - 3;
    if (lw) {
        draw_list(t, 1, h, lw);
        mvvline(1, lw, ACS_VLINE, h);
    }
    int x0 = lw ? lw + 1 : 0;
    int spare = draw_messages(t, 1, x0, h, cols - x0);
    tui_conv *shown = t->view == VIEW_SEARCH ? &t->found : t->active >= 0 ? &t->convs[t->active] : NULL;
    if (spare > 0 && shown && shown->scroll > 0) {
        /* scrolled past the oldest message: pull back and draw again */
        shown->scroll = spare > shown->scroll ? 0 : shown->scroll - spare;
        draw(t);
        return;
    }
    mvhline(rows - 2, 0, ' ', cols);
    if (t->nreq && !t->notice_err) {
        char line[1024]; /* long enough for three names and the note: never cut */
        snprintf(line, sizeof line, "Friend request from %s%s%s%s: Ctrl-Y or /accept %s, /deny %s", t->req[0].name,
                 t->req[0].note[0] ? " (“" : "", t->req[0].note, t->req[0].note[0] ? "”)" : "", t->req[0].name,
                 t->req[0].name);
        pt_tui_put_utf8(rows - 2, 0, cols - 1, line, COLOR_PAIR(C_NOTICE) | A_BOLD);
    } else {
        pt_tui_put_utf8(rows - 2, 0, cols - 1, t->notice, t->notice_err ? COLOR_PAIR(C_FAIL) : A_DIM);
    }
    draw_input(t, rows - 1, cols);
    pt_tui_present();
    t->dirty = false;
}

/* Shows what is about to block (a call that waits for the server) before it does. */
static void busy(tui *t, const char *what)
{
    set_notice(t, false, "%s", what);
    draw(t);
}

/* ======================================= input ======================================= */

static void input_set(tui *t, const wchar_t *s)
{
    t->in_len = wcslen(s) > INPUT_MAX ? INPUT_MAX : wcslen(s);
    wmemcpy(t->in, s, t->in_len);
    t->in[t->in_len] = 0;
    t->in_cur = t->in_len;
    t->in_off = 0;
}

static void history_push(tui *t)
{
    if (t->nhist && wcscmp(t->hist[t->nhist - 1], t->in) == 0) return;
    wchar_t *copy = malloc((t->in_len + 1) * sizeof *copy);
    if (!copy) return;
    wmemcpy(copy, t->in, t->in_len + 1);
    if (t->nhist == INPUT_HISTORY) {
        free(t->hist[0]);
        memmove(t->hist, t->hist + 1, (INPUT_HISTORY - 1) * sizeof *t->hist);
        t->nhist--;
    }
    t->hist[t->nhist++] = copy;
}

static void history_move(tui *t, int dir)
{
    if (dir < 0 && t->hist_pos == 0) return;
    if (dir > 0 && t->hist_pos >= t->nhist) return;
    if (t->hist_pos == t->nhist) wmemcpy(t->draft, t->in, t->in_len + 1);
    t->hist_pos = (size_t)((long)t->hist_pos + dir);
    input_set(t, t->hist_pos == t->nhist ? t->draft : t->hist[t->hist_pos]);
}

static void send_text(tui *t, const char *text)
{
    if (t->active < 0) {
        set_notice(t, true, "no conversation open: /join NAME or Tab");
        return;
    }
    long ci = t->active;
    char name[PT_NAME_MAX + 1], id[PT_ID_HEX_LEN] = "";
    snprintf(name, sizeof name, "%s", t->convs[ci].name);
    busy(t, "sending…");
    int rc = name[0] == '#' ? pt_group_send(t->ctx, name + 1, text, id) : pt_send(t->ctx, name, text, id);
    if (id[0]) {
        /* usually already here through the STORED event; offline it is only queued */
        pt_message m = {.time_ms = (int64_t)time(NULL) * 1000, .outgoing = 1, .text = text,
                        .delivery = rc == 0 ? PT_DELIVERY_STORED : PT_DELIVERY_QUEUED};
        snprintf(m.id, sizeof m.id, "%s", id);
        snprintf(m.from, sizeof m.from, "%s", pt_username(t->ctx));
        conv_upsert(&t->convs[ci], &m, false);
        t->convs[ci].scroll = 0;
    }
    if (rc == 0) set_notice(t, false, "%s", "");
    else if (rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) set_notice(t, false, "queued, will be sent when the server is back");
    else if (rc == PT_ERR_KEY_MISMATCH) set_notice(t, true, "not sent (/verify or /trust first): %s", pt_last_error(t->ctx));
    else set_notice(t, true, "not sent: %s", pt_last_error(t->ctx));
    if (rc == PT_ERR_KEY_MISMATCH) trust_refresh(t, ci); /* the title says it too */
    if (id[0] || rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) input_set(t, L"");
}

/* Reports a library call's result; 0 on success. */
static int outcome(tui *t, int rc, const char *done)
{
    if (rc == 0) set_notice(t, false, "%s", done);
    else set_notice(t, true, "%s", pt_last_error(t->ctx));
    return rc;
}

static void accept_request(tui *t, const char *name)
{
    char who[PT_NAME_MAX];
    snprintf(who, sizeof who, "%s", name);
    busy(t, "accepting…");
    if (outcome(t, pt_friend_accept(t->ctx, who), "you are now friends") == 0) {
        request_remove(t, who);
        conv_get(t, who);
        t->refresh_contacts = true;
    }
}

/* The peer a trust command is about: the argument, or the open 1:1 conversation. */
static const char *peer_of(tui *t, const char *arg, const char *cmd)
{
    if (arg) return arg;
    if (t->active >= 0 && t->convs[t->active].name[0] != '#') return t->convs[t->active].name;
    set_notice(t, true, "%s NAME: which contact? (in a group, name the member)", cmd);
    return NULL;
}

static void trust_refresh_name(tui *t, const char *name)
{
    long i = conv_find(t, name);
    if (i >= 0) trust_refresh(t, i);
    for (size_t k = 0; k < t->nconv; k++) /* groups with this member count again */
        if (t->convs[k].name[0] == '#') t->convs[k].trust_stale = true;
}

static void verify_start(tui *t, const char *name)
{
    char who[PT_NAME_MAX + 1];
    snprintf(who, sizeof who, "%s", name);
    busy(t, "reading the keys…");
    int rc = pt_contact_safety_number(t->ctx, who, t->safety);
    if (rc == 0) rc = pt_contact_safety_qr(t->ctx, who, t->safety_qr);
    if (rc) {
        set_notice(t, true, "%s", pt_last_error(t->ctx));
        return;
    }
    snprintf(t->verify_name, sizeof t->verify_name, "%s", who);
    t->view = VIEW_VERIFY;
    set_notice(t, false, "compare the safety number with %s; y if it matches", who);
}

/* Back to the open conversation: what arrived meanwhile is on the screen now. */
static void back_to_chat(tui *t)
{
    t->view = VIEW_CHAT;
    if (t->active >= 0 && t->convs[t->active].unread && t->convs[t->active].scroll == 0) conv_seen(t, t->active);
}

static void verify_answer(tui *t, bool yes)
{
    back_to_chat(t);
    if (!yes) {
        set_notice(t, false, "%s is not verified; nothing changed", t->verify_name);
        return;
    }
    busy(t, "recording…");
    char done[PT_NAME_MAX + 32];
    snprintf(done, sizeof done, "%s is verified", t->verify_name);
    outcome(t, pt_contact_verify(t->ctx, t->verify_name), done);
    trust_refresh_name(t, t->verify_name);
}

static void trust_keys(tui *t, const char *name)
{
    char who[PT_NAME_MAX], done[2 * PT_NAME_MAX + 64];
    snprintf(who, sizeof who, "%s", name);
    snprintf(done, sizeof done, "%s's current keys are accepted (unverified: /verify compares them)", who);
    busy(t, "reading the keys…");
    outcome(t, pt_contact_trust(t->ctx, who), done);
    trust_refresh_name(t, who);
}

/* /search [-a] TEXT: the results replace the messages until Esc. */
static void search(tui *t, const char *args)
{
    bool all = strncmp(args, "-a ", 3) == 0;
    const char *text = all ? args + 3 : args;
    while (*text == ' ') text++;
    if (!*text) {
        set_notice(t, true, "/search TEXT searches this conversation, /search -a TEXT all of them");
        return;
    }
    if (!all && t->active < 0) {
        set_notice(t, true, "no conversation open: /search -a TEXT searches all of them");
        return;
    }
    char conv[PT_NAME_MAX + 1] = "";
    if (!all) snprintf(conv, sizeof conv, "%s", t->convs[t->active].name);
    busy(t, "searching…");
    pt_message *m;
    size_t n;
    int rc = pt_search(t->ctx, all ? NULL : conv, text, SEARCH_LIMIT, &m, &n);
    if (rc) {
        set_notice(t, true, "%s", pt_last_error(t->ctx));
        return;
    }
    conv_clear(&t->found);
    t->found.dated = true;
    t->found.scroll = 0;
    for (size_t k = 0; k < n; k++) {
        pt_message x = m[k];
        if (all) { /* where each result was said */
            char key[PT_NAME_MAX + 1];
            conv_key(&m[k], key);
            snprintf(x.from, sizeof x.from, "[%.40s] %.60s", key, m[k].from);
        }
        conv_upsert(&t->found, &x, false);
    }
    pt_free(m);
    snprintf(t->search_title, sizeof t->search_title, " “%.200s” in %s: %zu found%s — Esc: back, PgUp/PgDn: scroll ",
             text, all ? "all conversations" : conv, n, n == SEARCH_LIMIT ? " (the newest)" : "");
    t->view = VIEW_SEARCH;
    set_notice(t, false, "%s", "");
}

static void leave_view(tui *t)
{
    if (t->view == VIEW_VERIFY) {
        verify_answer(t, false);
        return;
    }
    conv_clear(&t->found);
    back_to_chat(t);
}

/* notify-send from $PATH, or false. */
static bool find_notifier(tui *t)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", path && *path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        struct stat st;
        int n = snprintf(t->notify_path, sizeof t->notify_path, "%s/notify-send", *d ? d : ".");
        if (n > 0 && (size_t)n < sizeof t->notify_path && stat(t->notify_path, &st) == 0 && S_ISREG(st.st_mode) &&
            access(t->notify_path, X_OK) == 0)
            return true;
    }
    t->notify_path[0] = 0;
    return false;
}

static bool on_off(tui *t, const char *cmd, const char *arg, bool *out)
{
    if (arg && (strcmp(arg, "on") == 0 || strcmp(arg, "off") == 0)) {
        *out = strcmp(arg, "on") == 0;
        return true;
    }
    set_notice(t, true, "%s on|off", cmd);
    return false;
}

static void run_command(tui *t, char *line)
{
    if (strncmp(line, "/search ", 8) == 0 || strcmp(line, "/search") == 0) {
        search(t, line + (line[7] ? 8 : 7));
        return;
    }
    char *save = NULL, *cmd = strtok_r(line, " ", &save), *arg = strtok_r(NULL, " ", &save);
    char *rest = arg ? strtok_r(NULL, "", &save) : NULL;
    if (strcmp(cmd, "/quit") == 0 || strcmp(cmd, "/q") == 0) {
        t->quit = true;
    } else if (strcmp(cmd, "/help") == 0) {
        long i = t->active;
        if (i < 0) {
            set_notice(t, false, "the commands are listed above");
            return;
        }
        for (size_t k = 0; k < sizeof help_text / sizeof *help_text; k++) conv_note(&t->convs[i], help_text[k]);
        t->convs[i].scroll = 0;
    } else if (strcmp(cmd, "/join") == 0 && arg) {
        conv_open(t, conv_get(t, arg));
        set_notice(t, false, "%s", "");
    } else if (strcmp(cmd, "/accept") == 0 && arg) {
        accept_request(t, arg);
    } else if (strcmp(cmd, "/deny") == 0 && arg) {
        busy(t, "declining…");
        if (outcome(t, pt_friend_deny(t->ctx, arg), "request declined") == 0) request_remove(t, arg);
    } else if (strcmp(cmd, "/add") == 0 && arg) {
        busy(t, "sending the friend request…");
        outcome(t, pt_friend_add(t->ctx, arg, rest), "friend request sent");
    } else if (strcmp(cmd, "/status") == 0 && arg) {
        static const char *const names[] = {"", "online", "busy", "away", "invisible"};
        for (int s = 1; s <= 4; s++)
            if (strcmp(arg, names[s]) == 0) {
                busy(t, "changing status…");
                int rc = pt_set_status(t->ctx, (pt_status)s);
                if (rc == PT_ERR_OFFLINE) set_notice(t, false, "status %s, sent when the server is back", names[s]);
                else outcome(t, rc, names[s]);
                return;
            }
        set_notice(t, true, "status '%s' is not one of online, busy, away, invisible", arg);
    } else if (strcmp(cmd, "/verify") == 0) {
        const char *who = peer_of(t, arg, cmd);
        if (who) verify_start(t, who);
    } else if (strcmp(cmd, "/trust") == 0) {
        const char *who = peer_of(t, arg, cmd);
        if (who) trust_keys(t, who);
    } else if (strcmp(cmd, "/receipts") == 0) {
        bool on;
        if (!arg) set_notice(t, false, "read receipts are %s", pt_get_read_receipts(t->ctx) ? "on" : "off");
        else if (on_off(t, cmd, arg, &on))
            outcome(t, pt_set_read_receipts(t->ctx, on),
                    on ? "read receipts on: others see when you have read their messages"
                       : "read receipts off: others do not see when you read their messages");
    } else if (strcmp(cmd, "/typing") == 0) {
        bool on;
        if (!arg) set_notice(t, false, "typing notifications are %s", pt_get_typing_notifications(t->ctx) ? "on" : "off");
        else if (on_off(t, cmd, arg, &on))
            outcome(t, pt_set_typing_notifications(t->ctx, on),
                    on ? "typing notifications on: friends see when you type to them, and you see theirs"
                       : "typing notifications off: none sent, none shown");
    } else if (strcmp(cmd, "/notify") == 0) {
        bool on;
        if (!on_off(t, cmd, arg, &on)) return;
        if (on && !find_notifier(t)) {
            set_notice(t, true, "notify-send is not in $PATH: only the terminal bell rings");
            return;
        }
        t->notify = on;
        set_notice(t, false, on ? "desktop notifications on (the sender's name only, never the text)"
                                : "desktop notifications off");
    } else {
        set_notice(t, true, "unknown command or missing name: %s (try /help)", cmd);
    }
}

static void submit(tui *t)
{
    if (t->in_len == 0) return;
    history_push(t);
    t->hist_pos = t->nhist;
    char *line = pt_tui_utf8(t->in, t->in_len);
    if (!line) {
        set_notice(t, true, "out of memory");
        return;
    }
    if (line[0] == '/' && line[1] != '/') {
        input_set(t, L"");
        run_command(t, line);
    } else {
        send_text(t, line[0] == '/' ? line + 1 : line); /* "//x" sends "/x" */
    }
    free(line);
}

static void switch_conv(tui *t, int dir)
{
    if (!t->nconv) return;
    long n = (long)t->nconv, i = t->active < 0 ? (dir > 0 ? -1 : 0) : t->active;
    conv_open(t, ((i + dir) % n + n) % n);
}

static void scroll_page(tui *t, int dir)
{
    if (t->view == VIEW_VERIFY) return;
    if (t->view == VIEW_CHAT && t->active < 0) return;
    int page = LINES - 5 > 1 ? LINES - 5 : 1;
    int *s = t->view == VIEW_SEARCH ? &t->found.scroll : &t->convs[t->active].scroll;
    *s = *s + dir * page < 0 ? 0 : *s + dir * page;
    if (t->view == VIEW_CHAT && *s == 0 && t->convs[t->active].unread) conv_seen(t, t->active); /* back at the newest */
}

/* Removes in[a..b) from the edit line; the cursor goes to a. */
static void input_cut(tui *t, size_t a, size_t b)
{
    wmemmove(t->in + a, t->in + b, t->in_len - b + 1);
    t->in_len -= b - a;
    t->in_cur = a;
}

static void on_key(tui *t, int kind, wint_t k)
{
    t->dirty = true;
    int cw;
    if (t->view == VIEW_VERIFY && kind != KEY_CODE_YES) {
        if (k == L'y' || k == L'Y') verify_answer(t, true);
        else if (k == L'n' || k == L'N' || k == 27 || k == 3) verify_answer(t, false);
        return;
    }
    if (kind == KEY_CODE_YES) {
        switch (k) {
        case KEY_LEFT: t->in_cur = pt_tui_prev(t->in, t->in_len, t->in_cur); break;
        case KEY_RIGHT: if (t->in_cur < t->in_len) t->in_cur = pt_tui_cluster(t->in, t->in_len, t->in_cur, &cw); break;
        case KEY_HOME: t->in_cur = 0; break;
        case KEY_END: t->in_cur = t->in_len; break;
        case KEY_UP: history_move(t, -1); break;
        case KEY_DOWN: history_move(t, +1); break;
        case KEY_PPAGE: scroll_page(t, +1); break;
        case KEY_NPAGE: scroll_page(t, -1); break;
        case KEY_BTAB: switch_conv(t, -1); break;
        case KEY_ENTER: submit(t); break;
        case KEY_RESIZE: clearok(curscr, TRUE); break; /* draw() lays out for the new size */
        case KEY_BACKSPACE: goto backspace;
        case KEY_DC: goto delete;
        default: break;
        }
        return;
    }
    switch (k) {
    case 27:                                          /* Esc: back from search */
        if (t->view != VIEW_CHAT) leave_view(t);
        return;
    case 3: t->quit = true; return;                   /* Ctrl-C */
    case 4:                                           /* Ctrl-D */
        if (t->in_len == 0) t->quit = true;
        else goto delete;
        return;
    case 1: t->in_cur = 0; return;                    /* Ctrl-A */
    case 5: t->in_cur = t->in_len; return;            /* Ctrl-E */
    case 21: input_set(t, L""); return;               /* Ctrl-U */
    case 12: clearok(curscr, TRUE); return;           /* Ctrl-L */
    case 25:                                          /* Ctrl-Y */
        if (t->nreq) accept_request(t, t->req[0].name);
        return;
    case L'\t': switch_conv(t, +1); return;
    case L'\r':
    case L'\n': submit(t); return;
    case 8:
    case 127: goto backspace;
    default: break;
    }
    if (!pt_tui_typable(k) || t->in_len == INPUT_MAX) return;
    wmemmove(t->in + t->in_cur + 1, t->in + t->in_cur, t->in_len - t->in_cur);
    t->in[t->in_cur++] = (wchar_t)k;
    t->in[++t->in_len] = 0;
    return;
backspace: /* and delete: a whole grapheme cluster, as the cursor moves */
    if (t->in_cur > 0) input_cut(t, pt_tui_prev(t->in, t->in_len, t->in_cur), t->in_cur);
    return;
delete:
    if (t->in_cur < t->in_len) input_cut(t, t->in_cur, pt_tui_cluster(t->in, t->in_len, t->in_cur, &cw));
}

/* ======================================== loop ======================================= */

static void on_stop_signal(int sig) { stop_signal = sig; }


/* Typing notifications for the open 1:1 conversation: on while the input line has
 * text (repeated every few seconds), off when it is empty again or sent. */
static void typing_tick(tui *t)
{
    const char *peer = t->active >= 0 && t->convs[t->active].name[0] != '#' ? t->convs[t->active].name : NULL;
    bool want = peer && t->in_len > 0 && t->in[0] != L'/' && t->online;
    int64_t now = now_ms();
    if (t->typing_sent && (!want || strcasecmp(peer, t->typing_to) != 0)) {
        (void)pt_send_typing(t->ctx, t->typing_to, 0); /* best effort: it also runs out by itself */
        t->typing_sent = false;
    }
    if (want && (!t->typing_sent || now - t->typing_sent_ms >= TYPING_EVERY_MS)) {
        snprintf(t->typing_to, sizeof t->typing_to, "%s", peer);
        t->typing_sent = pt_send_typing(t->ctx, peer, 1) == 0;
        t->typing_sent_ms = now;
    }
    if (t->typing_until && t->typing_until <= now) { /* their notice ran out */
        t->typing_until = 0;
        t->dirty = true;
    }
}

static void run(tui *t)
{
    int64_t last_poll = now_ms();
    while (!t->quit && !stop_signal) {
        typing_tick(t);
        if (t->dirty) draw(t);
        int fd = pt_fd(t->ctx);
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        if (poll(p, fd >= 0 ? 2 : 1, TICK_MS) < 0 && errno != EINTR) break;
        if (p[0].revents & (POLLHUP | POLLERR)) break; /* the terminal went away */
        bool readable = fd >= 0 && p[1].revents;
        if (readable || now_ms() - last_poll >= TICK_MS) {
            /* pt_poll(ctx, 0) returns before reading the socket (the library's pump
             * checks its deadline before it polls), so a readable socket gets a few ms */
            int rc = pt_poll(t->ctx, readable ? 10 : 0);
            last_poll = now_ms();
            if (rc) set_notice(t, true, "%s", pt_last_error(t->ctx));
            after_library(t);
        }
        /* curses may hold several keys read at once: take them all before waiting */
        wint_t k;
        int kind;
        while (!t->quit && (kind = get_wch(&k)) != ERR) on_key(t, kind, k);
        after_library(t);
    }
}

/* The chat on a started screen: ctx is open, or NULL with first_run set (no profile
 * yet: created first). Returns the exit code; closes nothing it did not open. */
static int chat(tui *t, pt_ctx *ctx, const pt_options *first_run, const char *password, const char *name)
{
    if (!ctx && !(ctx = pt_tui_first_run(first_run, password))) return PT_EXIT_PROFILE;
    t->ctx = ctx;
    snprintf(t->me, sizeof t->me, "%s", pt_username(ctx));
    pt_set_event_cb(ctx, on_event, t);
    busy(t, "connecting to the server…");
    int rc = pt_connect(ctx);
    t->online = pt_connected(ctx);
    if (rc == PT_ERR_OFFLINE) set_notice(t, true, "offline: %s; messages are kept and sent later", pt_last_error(ctx));
    else if (rc) set_notice(t, true, "%s", pt_last_error(ctx));
    else set_notice(t, false, "connected; /help lists the commands");
    load_contacts(t);
    load_groups_and_unread(t);
    if (name) conv_open(t, conv_get(t, name));
    after_library(t);
    t->dirty = true;
    run(t);
    pt_set_event_cb(ctx, NULL, NULL);
    if (first_run) pt_close(ctx);
    return PT_EXIT_OK;
}

static int chat_on_terminal(pt_ctx *ctx, const pt_options *first_run, const char *password, const char *name)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        return pt_cli_fail(PT_EXIT_USAGE, "chat needs a terminal; use send and recv in scripts");
    tui *t = calloc(1, sizeof *t);
    if (!t) return pt_cli_fail(PT_EXIT_FAIL, "out of memory");
    t->active = -1;
    t->ascii = !pt_tui_utf8_locale();
    SCREEN *scr = pt_tui_screen_start();
    if (!scr) {
        free(t);
        return pt_cli_fail(PT_EXIT_FAIL, "cannot use this terminal (TERM=%s)", getenv("TERM") ? getenv("TERM") : "");
    }
    struct sigaction sa = {.sa_handler = on_stop_signal}; /* no SA_RESTART: poll() returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int code = chat(t, ctx, first_run, password, name);
    endwin();
    delscreen(scr);
    if (code == PT_EXIT_PROFILE) pt_cli_fail(0, "no profile was created");
    for (size_t i = 0; i < t->nconv; i++) conv_clear(&t->convs[i]);
    conv_clear(&t->found);
    free(t->convs);
    for (size_t i = 0; i < t->nhist; i++) free(t->hist[i]);
    free(t);
    return code;
}

int pt_cli_chat(pt_ctx *ctx, const char *name) { return chat_on_terminal(ctx, NULL, NULL, name); }

int pt_cli_chat_first_run(const pt_options *o, const char *password, const char *name)
{
    return chat_on_terminal(NULL, o, password, name);
}
