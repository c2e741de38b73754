/*
 * Test networks made of network namespaces (root only): one namespace holding a
 * bridge, and hosts h1..hN each joined to it by a veth pair, with SUBNET.i/24
 * (or, for the hosts in v6only_mask, IPv6 link-local addresses only). Everything
 * is removed by pt_netns_destroy(); names carry the test's pid, so parallel runs
 * do not meet.
 */
#ifndef PT_TEST_NETNS_H
#define PT_TEST_NETNS_H

#include <stdbool.h>

#define PT_NETNS_MAX_HOSTS 8

typedef struct pt_netns {
    char name[PT_NETNS_MAX_HOSTS + 1][32]; /* [0] the bridge's namespace, [i] host i */
    char dev[PT_NETNS_MAX_HOSTS + 1][32];  /* [i] host i's interface ([0] unused) */
    int hosts;
    bool up;
} pt_netns;

/* Whether this process may build namespaces (root and iproute2); why not in *why. */
bool pt_netns_possible(const char **why);
/* Builds the network; false (after removing what was made) on any failure. */
bool pt_netns_make(pt_netns *net, const char *tag, int hosts, const char *subnet, unsigned v6only_mask);
/* In a child process: moves it into host h's namespace (_exit(126) on failure). */
void pt_netns_enter(const pt_netns *net, int host);
void pt_netns_destroy(pt_netns *net);
/* Adds subnet.first .. subnet.(first+count-1) (/24) to host h's interface, so a
 * process there can bind() to any of them (a botnet in one namespace). */
bool pt_netns_add_addrs(const pt_netns *net, int host, const char *subnet, int first, int count);
/* Runs a shell command; its exit status (-1 when it did not exit). */
int pt_netns_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
