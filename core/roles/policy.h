/*
 * policy.h - what the roles ask the Lua policies: where an increment goes
 * (lua/policies/routing.lua), what happens to a replication message
 * (lua/policies/faults.lua), and the lab's regions (lua/conf/lab.lua).
 *
 * The Lua host (core/lua/) only loads files and calls functions under the budget; the
 * names, arguments and answers of these files are known here and nowhere else in C. Every
 * call falls back to a safe answer when the file fails: never raise into the caller.
 */
#ifndef COUNTERD_ROLES_POLICY_H
#define COUNTERD_ROLES_POLICY_H

#include <stddef.h>

struct host;

/*
 * Declares, on a new host, the functions the C roles call (routing.route, faults.decide):
 * a policy file without its function is then refused when loaded or reloaded.
 */
void policy_declare(struct host *h);

/*
 * Asks the routing policy where an increment goes (see lua/policies/routing.lua):
 * routing.route(policy, counter, client_region, names, healthy, token), with names and
 * healthy built from the arguments. client_region and token (the client's idempotency
 * token) may be NULL. The policy answers an index, or nil and a code: "unknown_policy"
 * (with the list of known policies), "no_healthy_region"; err gets the sentence for it.
 * @return the region's index (0-based); -1 for an unknown policy (err says why, for a
 *         400); -2 when no region is healthy; -3 when the policy failed or is missing
 *         (logged and counted; the caller picks a healthy region itself).
 */
int policy_route(struct host *h, const char *policy, const char *counter, const char *client_region,
                 const char *token, const char *const *names, const int *healthy, int n, char *err,
                 size_t errlen);

/*
 * Asks the faults policy what to do with one replication message:
 * faults.decide(dir, from, to, kind, partitioned) -> "deliver" | "drop" | "delay", ms.
 * With --net (counterd.shared "faults.net" = 1) a delay is answered as deliver: the wire
 * delays the packets instead.
 * @return 0 deliver, 1 drop, 2 delay (*delay_ms set), or -1 when there is no faults
 *         policy or it failed (logged with file:line and counted).
 */
int policy_faults_decide(struct host *h, const char *dir, const char *from, const char *to,
                         const char *kind, int partitioned, int *delay_ms);

/*
 * Asks the faults policy about the link from region a to region b when the network is
 * real (the wire role): faults.link(a, b) -> delay_ms, cut.
 * @return 0 with *delay_ms (0..600000) and *cut set, or -1 with a sentence in err (no
 *         faults.link, it failed, or it answered something else; counted).
 */
int policy_faults_link(struct host *h, const char *a, const char *b, int *delay_ms, int *cut,
                       char *err, size_t errlen);

/* The regions of lua/conf/lab.lua (names and URLs). @return how many (0 on error, logged). */
int policy_lab_regions(struct host *h, char names[][64], char urls[][512], int max);

#endif
