/*
 * bench/loadgen - the load generator of issue 3, shared between its drivers.
 *
 * loadgen.c owns the clients, the event loop, the clocks and the statistics;
 * each lg_<target>.c is one driver that speaks one server's protocol (PackTrack
 * through src/client, the raw relay, NATS, MQTT 3.1.1) and reports back through
 * lg_delivered() and lg_acked(). One process, one thread, one epoll set.
 */
#ifndef LG_H
#define LG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_SLOTS 4096        /* per client: messages in flight at most (a ring) */
#define LG_MAGIC 0x3130474cu /* "LG01": first bytes of every payload */
#define LG_HDR 24            /* magic u32, sender u32, seq u64, intended send time u64 (ns) */
#define LG_PAYLOAD_MAX 4096

enum { LG_SENT = 1, LG_DELIVERED = 2, LG_ACKED = 4 };

typedef struct lg_slot {
    uint64_t seq;   /* which message occupies the slot */
    uint64_t tag;   /* the driver's handle for the sender ack (msg_id, packet id) */
    uint64_t t_ns;  /* intended send time (open loop) or send time (closed loop) */
    uint8_t flags;  /* LG_SENT | LG_DELIVERED | LG_ACKED */
} lg_slot;

typedef struct lg_client {
    uint32_t idx;          /* position in the run; also its name (lg<idx>) */
    uint32_t peer;         /* the client it sends to (idx ^ 1) */
    int fd;                /* -1 until connected */
    int stage;             /* setup progress, advanced by the driver */
    bool want_out;         /* the driver has bytes the socket did not take */
    bool epoll_out;        /* EPOLLOUT is currently requested */
    bool dirty;            /* input() queued output that no flush() has written yet */
    void *drv;             /* the driver's per-client state */
    uint64_t next_seq;     /* sequence number of the next message */
    uint64_t ack_scan;     /* no slot below this waits for an ack */
    uint32_t outstanding;  /* sent, not yet complete */
    uint64_t next_due_ns;  /* open loop: intended time of the next send */
    lg_slot *slots;        /* LG_SLOTS, only for clients that send */
} lg_client;

typedef struct lg_run lg_run;

/* One target protocol. Every function returns 0 or a negative value (the run
 * stops with a message naming the client). */
typedef struct lg_driver {
    const char *name;
    bool acks;  /* the protocol acknowledges each message to its sender */
    int stages; /* setup stages; a client is ready at c->stage == stages */
    /* Global setup (once, before any client). */
    int (*init)(lg_run *r);
    /* Connects c (blocking is fine) and starts stage 1: sends what it needs and
     * returns; input() advances c->stage when the answers arrive. */
    int (*connect)(lg_run *r, lg_client *c);
    /* Starts stage k > 1 (every client finished stage k-1 before). */
    int (*start_stage)(lg_run *r, lg_client *c, int k);
    /* Reads what the socket has and handles it. What that produces (acks, PONGs)
     * stays queued: the core calls flush() once it has added c's own sends, so
     * that both go out in one write. */
    int (*input)(lg_run *r, lg_client *c);
    /* Queues one message for c's peer; *tag identifies its ack. */
    int (*send)(lg_run *r, lg_client *c, const uint8_t *payload, size_t len, uint64_t *tag);
    /* Writes what is queued; sets c->want_out when the socket is full. */
    int (*flush)(lg_run *r, lg_client *c);
    /* Periodic work (confirmations): force = end of a phase. */
    int (*tick)(lg_run *r, lg_client *c, bool force);
    void (*close)(lg_run *r, lg_client *c);
} lg_driver;

extern const lg_driver lg_driver_pt, lg_driver_raw, lg_driver_nats, lg_driver_mqtt;
#ifdef LG_HAVE_JETSTREAM
extern const lg_driver lg_driver_jetstream;
#endif

#define LG_PORTS_MAX 16

/* The run's settings, as the drivers need them. */
typedef struct lg_opts {
    const char *host;
    uint16_t ports[LG_PORTS_MAX]; /* the servers (several nodes of one cluster) */
    uint32_t nports;              /* at least 1; client i connects to ports[i % nports] */
    const char *fingerprints[LG_PORTS_MAX]; /* pt: each server's key (pinned: IK), as ports */
    uint32_t nfingerprints;
    const char *home_dir;    /* pt: parent of the per-client homes */
    size_t payload;          /* bytes per message */
    int confirm_batch;       /* pt: server ids per messages.received */
} lg_opts;

const lg_opts *lg_options(const lg_run *r);
/* The port client idx connects to: with n >= 2 servers, i and its peer i ^ 1
 * (consecutive numbers) always land on two different servers. */
uint16_t lg_port_of(const lg_opts *o, uint32_t idx);
lg_client *lg_client_at(lg_run *r, uint32_t idx);

/* A message arrived at receiver (payload as sent). */
void lg_delivered(lg_run *r, lg_client *receiver, const uint8_t *payload, size_t len);
/* The server acknowledged sender's message tagged tag; ok = false for an error. */
void lg_acked(lg_run *r, lg_client *sender, uint64_t tag, bool ok);
/* Counts a protocol oddity worth reporting (duplicates, errors). */
void lg_note_error(lg_run *r, const char *what);

/* Plain-socket helpers for the peers' drivers (lg_net.c). */
typedef struct lg_io {
    uint8_t *in;  /* unparsed input */
    size_t in_len, in_cap;
    uint8_t *out; /* not yet written */
    size_t out_len, out_cap;
} lg_io;

int lg_tcp_connect(const char *host, uint16_t port);
int lg_io_append(lg_io *io, const void *p, size_t n);
/* Reads once into io->in; 0 on data or EAGAIN, negative on EOF or error. */
int lg_io_read(lg_io *io, int fd);
/* Writes io->out; sets c->want_out if something is left. */
int lg_io_flush(lg_io *io, lg_client *c);
void lg_io_consume_in(lg_io *io, size_t n);
void lg_io_free(lg_io *io);

#endif
