/* Test networks of network namespaces: see netns.h. */
#define _GNU_SOURCE
#include "netns.h"

#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int pt_netns_sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool pt_netns_possible(const char **why)
{
    if (geteuid() != 0) {
        *why = "needs root";
        return false;
    }
    if (pt_netns_sh("ip netns list >/dev/null 2>&1") != 0) {
        *why = "needs iproute2 (ip netns)";
        return false;
    }
    return true;
}

void pt_netns_destroy(pt_netns *net)
{
    for (int i = 0; i <= net->hosts; i++)
        if (net->name[i][0]) pt_netns_sh("ip netns del %s 2>/dev/null", net->name[i]);
    net->up = false;
}

bool pt_netns_make(pt_netns *net, const char *tag, int hosts, const char *subnet, unsigned v6only_mask)
{
    memset(net, 0, sizeof *net);
    if (hosts < 1 || hosts > PT_NETNS_MAX_HOSTS) return false;
    net->hosts = hosts;
    int id = (int)getpid() % 100000;
    snprintf(net->name[0], sizeof net->name[0], "%s%dsw", tag, id);
    for (int i = 1; i <= hosts; i++) snprintf(net->name[i], sizeof net->name[i], "%s%dh%d", tag, id, i);
    bool ok = pt_netns_sh("ip netns add %s", net->name[0]) == 0 &&
              pt_netns_sh("ip -n %s link add br0 type bridge", net->name[0]) == 0 &&
              pt_netns_sh("ip -n %s link set br0 up", net->name[0]) == 0;
    for (int i = 1; ok && i <= hosts; i++) {
        char a[20], b[20];
        snprintf(a, sizeof a, "%s%da%d", tag, id, i);
        snprintf(b, sizeof b, "%s%db%d", tag, id, i);
        snprintf(net->dev[i], sizeof net->dev[i], "%s", b);
        bool v6only = v6only_mask & (1u << i);
        ok = pt_netns_sh("ip netns add %s", net->name[i]) == 0 &&
             pt_netns_sh("ip link add %s type veth peer name %s", a, b) == 0 &&
             pt_netns_sh("ip link set %s netns %s", a, net->name[0]) == 0 &&
             pt_netns_sh("ip link set %s netns %s", b, net->name[i]) == 0 &&
             pt_netns_sh("ip -n %s link set %s master br0", net->name[0], a) == 0 &&
             pt_netns_sh("ip -n %s link set %s up", net->name[0], a) == 0 &&
             pt_netns_sh("ip -n %s link set lo up", net->name[i]) == 0 &&
             (v6only || pt_netns_sh("ip -n %s addr add %s%d/24 dev %s", net->name[i], subnet, i, b) == 0) &&
             /* link-local IPv6 usable at once: no duplicate address detection */
             (!v6only || pt_netns_sh("ip netns exec %s sysctl -qw net.ipv6.conf.%s.accept_dad=0", net->name[i], b) == 0) &&
             pt_netns_sh("ip -n %s link set %s up", net->name[i], b) == 0;
    }
    if (!ok) {
        pt_netns_destroy(net);
        return false;
    }
    net->up = true;
    return true;
}

bool pt_netns_add_addrs(const pt_netns *net, int host, const char *subnet, int first, int count)
{
    if (!net->up || host < 1 || host > net->hosts || first < 1 || count < 0 || first + count > 255) return false;
    for (int a = first; a < first + count; a++)
        if (pt_netns_sh("ip -n %s addr add %s%d/24 dev %s", net->name[host], subnet, a, net->dev[host]) != 0)
            return false;
    return true;
}

void pt_netns_enter(const pt_netns *net, int host)
{
    char path[128];
    snprintf(path, sizeof path, "/run/netns/%s", net->name[host]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) _exit(126);
    close(fd);
}
