/*
 * wal_id.c - which replica id a node counts under: the meta file (node id, replica id), the
 * run file (this run's boot id), and the rule that keeps the id or mints a new one (see
 * wal.h).
 *
 * Never keeps an id that peers may hold more of than this node's log does: when in doubt,
 * a new incarnation.
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/hash.h"
#include "../base/log.h"
#include "../base/mem.h"

static int read_meta(struct wal *w, char *node, size_t nlen, char *replica, size_t rlen)
{
    unsigned char *data;
    size_t size;
    char err[256];
    if (wal__read_file(w->dir_fd, "meta", &data, &size, err, sizeof err) < 0)
        return -1;
    char *text = xstrndup((const char *)data, size);
    free(data);
    int ok = 0;
    node[0] = replica[0] = '\0';
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strcmp(line, "counterd-data 1"))
            ok = 1;
        else if (!strncmp(line, "node_id=", 8))
            snprintf(node, nlen, "%s", line + 8);
        else if (!strncmp(line, "replica_id=", 11))
            snprintf(replica, rlen, "%s", line + 11);
    }
    free(text);
    return ok && node[0] && replica[0] ? 0 : -1;
}

/*
 * The boot this process runs in: /proc/sys/kernel/random/boot_id, or COUNTERD_BOOT_ID
 * (test-only: a test changes it to simulate a reboot). "" when unknown.
 */
static void read_boot_id(char *out, size_t len)
{
    const char *env = getenv("COUNTERD_BOOT_ID");
    out[0] = '\0';
    if (env && *env) {
        snprintf(out, len, "%s", env);
    } else {
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
        if (f) {
            if (!fgets(out, (int)len, f))
                out[0] = '\0';
            fclose(f);
        }
    }
    out[strcspn(out, "\r\n")] = '\0';
    for (char *p = out; *p; p++)
        if (*p == '=' || (unsigned char)*p < ' ')
            *p = '_';
}

/*
 * Whether the last run's log holds everything it acknowledged or replicated, so its
 * replica id may be kept after an unclean stop (see wal.h). The "run" file is written at
 * every start with the boot id and the replica id, and removed (wal_forget_run) the moment
 * a log write or fsync fails. @return NULL when the id may be kept, or why not.
 */
static const char *run_proves_complete(struct wal *w, const char *replica, const char *boot)
{
    unsigned char *data;
    size_t size;
    char err[256];
    if (!boot[0])
        return "the boot id is unknown";
    if (wal__read_file(w->dir_fd, "run", &data, &size, err, sizeof err) < 0)
        return "the last run recorded a failed log write, or predates the run file";
    char *text = xstrndup((const char *)data, size);
    free(data);
    int ok = 0, same_replica = 0, same_boot = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strcmp(line, "counterd-run 1"))
            ok = 1;
        else if (!strncmp(line, "replica_id=", 11))
            same_replica = !strcmp(line + 11, replica);
        else if (!strncmp(line, "boot_id=", 8))
            same_boot = !strcmp(line + 8, boot);
    }
    free(text);
    if (!ok || !same_replica)
        return "the run file does not match the meta file";
    /* After a reboot, what was written but not fsynced may be gone, and a /sync push does
     * not wait for fsync even under "always": a peer may hold more of the old id than
     * the log does. */
    if (!same_boot)
        return "the machine rebooted since the last run (a /sync push may have carried "
               "changes the reboot lost)";
    return NULL;
}

/* Records this run: boot id and replica id (see run_proves_complete). @return 0 or -1. */
static int write_run(struct wal *w, const char *replica, const char *boot)
{
    char text[512];
    snprintf(text, sizeof text, "counterd-run 1\nreplica_id=%s\nboot_id=%s\n", replica, boot);
    return wal__write_small(w, "run", text);
}

int wal_forget_run(struct wal *w)
{
    if (w->run_forgotten)
        return 0;
    if ((unlinkat(w->dir_fd, "run", 0) < 0 && errno != ENOENT) || wal__fsync_dir(w) < 0) {
        log_error("data directory %s: cannot remove the run file after a failed log write "
                  "(%s); a crash now could make the next start keep a replica id whose "
                  "changes its log does not hold",
                  w->dir, strerror(errno));
        return -1;
    }
    w->run_forgotten = 1;
    log_warn("data directory %s: a log write failed; the next unclean start counts under a "
             "new replica id",
             w->dir);
    return 0;
}

void wal_new_replica_id(char *out, size_t len, const char *node_id)
{
    snprintf(out, len, "%s~%08" PRIx32, node_id, (uint32_t)hash_random_u64());
}

static int replica_known(const struct gstore *st, const char *id)
{
    for (int r = 0; r < gstore_replica_count(st); r++)
        if (!strcmp(gstore_replica_name(st, r), id))
            return 1;
    return 0;
}

int wal__check_meta(struct wal *w, const struct wal_listing *l, char *meta_replica, size_t rlen,
                    char *err, size_t errlen)
{
    char meta_node[256];
    if (l->has_meta) {
        if (read_meta(w, meta_node, sizeof meta_node, meta_replica, rlen) < 0) {
            snprintf(err, errlen,
                     "%s/meta is damaged; move the directory aside to start afresh "
                     "(the node then counts under a new replica id)",
                     w->dir);
            return -1;
        }
        if (strcmp(meta_node, w->node_id) != 0) {
            snprintf(err, errlen, "data directory %s belongs to node %s, not %s", w->dir, meta_node,
                     w->node_id);
            return -1;
        }
    } else if (l->nsegs || l->nsnaps) {
        snprintf(err, errlen,
                 "data directory %s has log files but no meta file; it is "
                 "damaged or not counterd's",
                 w->dir);
        return -1;
    }
    return 0;
}

/* A fresh incarnation, distinct from every replica id the store already knows, written to
 * the meta file. @return 0, or -1 with err. */
static int mint_replica_id(struct wal *w, const struct gstore *st, struct wal_info *info,
                           const char *why, char *err, size_t errlen)
{
    do {
        wal_new_replica_id(info->replica_id, sizeof info->replica_id, w->node_id);
    } while (replica_known(st, info->replica_id));
    info->new_replica = 1;
    char text[512];
    snprintf(text, sizeof text, "counterd-data 1\nnode_id=%s\nreplica_id=%s\n", w->node_id,
             info->replica_id);
    if (wal__write_small(w, "meta", text) < 0) {
        snprintf(err, errlen, "cannot write %s/meta: %s", w->dir, strerror(errno));
        return -1;
    }
    snprintf(info->id_reason, sizeof info->id_reason, "new replica id %s: %s", info->replica_id,
             why);
    return 0;
}

/*
 * A stop that was clean, or a crash whose log provably holds everything the run
 * acknowledged or sent to a peer, keeps the replica id: every change is written (write(2))
 * before its answer or any /sync carrying it leaves, and a process crash loses nothing the
 * kernel has. A torn tail on the same boot is no exception: the write that tore had not
 * returned, so nothing in it had left. Otherwise a peer may hold more of the old id than
 * this log, and its max-merge would swallow new increments: mint a new incarnation.
 */
int wal__settle_replica_id(struct wal *w, const struct wal_listing *l, const char *meta_replica,
                           const struct gstore *st, struct wal_info *info, char *err, size_t errlen)
{
    info->clean = l->has_meta && l->has_clean;
    char boot[128];
    read_boot_id(boot, sizeof boot);
    const char *mint_why = !l->has_meta ? "a new data directory" : NULL;
    if (l->has_meta && !info->clean)
        mint_why = run_proves_complete(w, meta_replica, boot);
    if (!mint_why) {
        snprintf(info->replica_id, sizeof info->replica_id, "%s", meta_replica);
        snprintf(info->id_reason, sizeof info->id_reason, "kept replica id %s: %s", meta_replica,
                 info->clean ? "the last stop was clean"
                             : "the last stop was a crash on the same boot, and its log holds "
                               "everything it acknowledged or replicated");
    } else if (mint_replica_id(w, st, info, mint_why, err, errlen) < 0) {
        return -1;
    }
    if (write_run(w, info->replica_id, boot) < 0) {
        log_warn("cannot write %s/run (%s): the next unclean start will count under a new "
                 "replica id",
                 w->dir, strerror(errno));
        if (unlinkat(w->dir_fd, "run", 0) < 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot replace %s/run: %s", w->dir, strerror(errno));
            return -1;
        }
        w->run_forgotten = 1;
    }
    return 0;
}
