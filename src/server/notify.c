/*
 * systemd's readiness protocol (Type=notify): READY=1 once listening, RELOADING=1
 * then READY=1 around a reload, STOPPING=1 when the stop begins. libsystemd's
 * sd_notify() does nothing when NOTIFY_SOCKET is unset (not under systemd), and a
 * build without libsystemd (PT_HAVE_SYSTEMD undefined) does nothing at all.
 */
#include <stdio.h>
#include <time.h>

#include "server/pt_server_int.h"

#ifdef PT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

void pt_srv_notify(pt_server *s, pt_srv_notify_state st)
{
#ifdef PT_HAVE_SYSTEMD
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u;
    int rc = 0;
    switch (st) {
    case PT_SRV_NOTIFY_READY: {
        char hp[PT_HOSTPORT_LEN];
        rc = sd_notifyf(0, "READY=1\nSTATUS=listening on %s, %zu connections",
                        pt_hostport_format(hp, s->host, s->port), s->nconns);
        break;
    }
    case PT_SRV_NOTIFY_RELOADING:
        /* MONOTONIC_USEC: systemd 253's Type=notify-reload wants it; older ones ignore it */
        rc = sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration", usec);
        break;
    case PT_SRV_NOTIFY_STOPPING:
        rc = sd_notify(0, "STOPPING=1\nSTATUS=stopping");
        break;
    }
    if (rc < 0) pt_log_warn("sd_notify: %s", strerror(-rc));
#else
    (void)s;
    (void)st;
#endif
}
