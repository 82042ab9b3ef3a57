/*
 * test_wal.c - the durable log and snapshots: what survives a clean stop, a crash, a
 * torn write and damage, and what wal_open refuses.
 *
 * Each test works in its own temporary data directory; a "crash" is wal_abandon (the
 * process state is thrown away without the final write, fsync or clean marker).
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/base/fault.h"
#include "../../core/store/wal.h"
#include "../../core/store/wal_internal.h" /* the group commit's state, for its test */
#include "unit.h"
#include "unit_fs.h"
#include "unit_crc32c.h"

static char root[256];

static void make_root(void)
{
    snprintf(root, sizeof root, "/tmp/counterd-test-wal-XXXXXX");
    if (!mkdtemp(root))
        abort();
}

/* A node's state: store, dedup window and log, opened on dir. */
struct node {
    struct gstore *st;
    struct dedup *d;
    struct strongrep *sr;
    struct wal *w;
    struct wal_info info;
    int self;
    char err[1024];
};

static int node_open(struct node *n, const char *dir, enum wal_fsync f, size_t snap_bytes)
{
    memset(n, 0, sizeof *n);
    n->st = gstore_new();
    n->d = dedup_new(1000, 600);
    n->sr = strongrep_new();
    struct wal_opts o = {dir, "us-east-1", f, snap_bytes, NULL, n->sr};
    n->w = wal_open(&o, n->st, n->d, &n->info, n->err, sizeof n->err);
    if (!n->w)
        return -1;
    n->self = gstore_replica(n->st, n->info.replica_id, strlen(n->info.replica_id));
    return 0;
}

static void node_free(struct node *n)
{
    gstore_free(n->st);
    dedup_free(n->d);
    strongrep_free(n->sr);
}

static uint64_t incr(struct node *n, const char *name, int64_t amount, const char *token)
{
    uint32_t id = gstore_create(n->st, name, strlen(name));
    CHECK_EQ_I64(gstore_incr(n->st, id, n->self, amount), 0);
    struct dedup_answer a = {amount, 0, gstore_counter_value(gstore_counter(n->st, id))};
    if (token)
        dedup_put(n->d, name, strlen(name), token, strlen(token), 1e9, &a);
    return wal_append(n->w, n->st, id, token, token ? strlen(token) : 0, &a, 1e9);
}

static int64_t value(struct node *n, const char *name)
{
    uint32_t id = gstore_find(n->st, name, strlen(name));
    return id == GSTORE_NONE ? -1 : gstore_counter_value(gstore_counter(n->st, id));
}

static char *newest_segment(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char best[256] = "";
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "wal-", 4) && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    if (d)
        closedir(d);
    snprintf(out, cap, "%s/%s", dir, best);
    return out;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void test_clean_stop_keeps_state_and_replica_id(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_EVERYSEC, 0) == 0);
    CHECK_EQ_I64(n.info.new_replica, 1);
    char rid[256];
    snprintf(rid, sizeof rid, "%s", n.info.replica_id);
    CHECK(strncmp(rid, "us-east-1~", 10) == 0);
    for (int i = 0; i < 100; i++)
        incr(&n, i % 2 ? "odd" : "even", i, NULL);
    incr(&n, "down", -7, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    CHECK_EQ_I64(wal_close(n.w), 0);
    node_free(&n);

    REQUIRE(node_open(&n, root, WAL_FSYNC_EVERYSEC, 0) == 0);
    CHECK_EQ_I64(n.info.clean, 1);
    CHECK_EQ_I64(n.info.new_replica, 0);
    CHECK_STR_EQ(n.info.replica_id, rid);
    CHECK_EQ_I64(value(&n, "odd"), 2500);
    CHECK_EQ_I64(value(&n, "even"), 2450);
    CHECK_EQ_I64(value(&n, "down"), -7);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

/* A crash on the same boot: every record written (write(2)) survives, and so does the
 * replica id, since nothing unwritten ever left the process. */
static void test_crash_keeps_written_records_and_replica_id(void)
{
    make_root();
    setenv("COUNTERD_BOOT_ID", "boot-a", 1);
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    char rid[256];
    snprintf(rid, sizeof rid, "%s", n.info.replica_id);
    incr(&n, "a", 5, "tok-1");
    CHECK_EQ_I64(wal_write(n.w), 0);
    incr(&n, "a", 100, NULL); /* buffered, never written: lost with the crash */
    wal_abandon(n.w);
    node_free(&n);

    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    CHECK_EQ_I64(n.info.clean, 0);
    CHECK_EQ_I64(n.info.new_replica, 0);
    CHECK_STR_EQ(n.info.replica_id, rid);
    CHECK(strstr(n.info.id_reason, "kept replica id") != NULL);
    CHECK_EQ_I64(value(&n, "a"), 5);
    struct dedup_answer a;
    CHECK_EQ_I64(dedup_get(n.d, "a", 1, "tok-1", 5, 1e9 + 1, &a), 1);
    CHECK_EQ_I64(a.amount, 5);
    incr(&n, "a", 1, NULL);
    CHECK_EQ_I64(value(&n, "a"), 6);
    CHECK_EQ_I64(gstore_counter_entries(gstore_counter(n.st, gstore_find(n.st, "a", 1))), 1);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
    unsetenv("COUNTERD_BOOT_ID");
}

/* Opens root again after a crash and checks that a new incarnation was minted. */
static void reopen_expect_new_id(struct node *n, const char *old, const char *why)
{
    REQUIRE(node_open(n, root, WAL_FSYNC_NO, 0) == 0);
    CHECK_EQ_I64(n->info.new_replica, 1);
    CHECK(strcmp(n->info.replica_id, old) != 0);
    CHECK(strstr(n->info.id_reason, why) != NULL);
    if (!strstr(n->info.id_reason, why))
        fprintf(stderr, "id_reason: %s\n", n->info.id_reason);
}

/* A reboot, a failed log write, or a directory without a run file: a peer may hold more
 * of the old id than the log, so the next start counts under a new one, beside the old. */
static void test_crash_after_reboot_or_failed_write_changes_replica_id(void)
{
    make_root();
    setenv("COUNTERD_BOOT_ID", "boot-a", 1);
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    char rid[256];
    snprintf(rid, sizeof rid, "%s", n.info.replica_id);
    incr(&n, "a", 5, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);

    setenv("COUNTERD_BOOT_ID", "boot-b", 1); /* a reboot */
    reopen_expect_new_id(&n, rid, "rebooted");
    CHECK_EQ_I64(value(&n, "a"), 5);
    incr(&n, "a", 1, NULL);
    CHECK_EQ_I64(value(&n, "a"), 6);
    CHECK_EQ_I64(gstore_counter_entries(gstore_counter(n.st, gstore_find(n.st, "a", 1))), 2);
    snprintf(rid, sizeof rid, "%s", n.info.replica_id);
    CHECK_EQ_I64(wal_write(n.w), 0);
    CHECK_EQ_I64(wal_forget_run(n.w), 0); /* what a failed write or fsync does */
    CHECK_EQ_I64(wal_forget_run(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);

    reopen_expect_new_id(&n, rid, "failed log write");
    CHECK_EQ_I64(value(&n, "a"), 6);
    snprintf(rid, sizeof rid, "%s", n.info.replica_id);
    wal_abandon(n.w);
    node_free(&n);

    /* The crash itself keeps the id; a run file of another id does not. */
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    CHECK_EQ_I64(n.info.new_replica, 0);
    CHECK_STR_EQ(n.info.replica_id, rid);
    wal_abandon(n.w);
    node_free(&n);
    char path[512];
    snprintf(path, sizeof path, "%s/run", root);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "counterd-run 1\nreplica_id=us-east-1~other\nboot_id=boot-b\n");
    fclose(f);
    reopen_expect_new_id(&n, rid, "does not match");
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
    unsetenv("COUNTERD_BOOT_ID");
}

/* Points the log's open segment at /dev/full: the next write(2) fails with ENOSPC. */
static int break_segment(const char *dir)
{
    char seg[512], fdpath[300], target[512];
    newest_segment(dir, seg, sizeof seg);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int found = -1;
    while (d && (e = readdir(d))) {
        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(fdpath, target, sizeof target - 1);
        if (n > 0) {
            target[n] = '\0';
            if (!strcmp(target, seg))
                found = atoi(e->d_name);
        }
    }
    if (d)
        closedir(d);
    int full = open("/dev/full", O_WRONLY);
    if (found < 0 || full < 0 || dup2(full, found) < 0)
        return -1;
    close(full);
    return 0;
}

/* A real failed write removes the run file at once: a crash after it mints a new id. */
static void test_failed_write_forgets_the_run(void)
{
    make_root();
    setenv("COUNTERD_BOOT_ID", "boot-a", 1);
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    char rid[256], run[512];
    snprintf(rid, sizeof rid, "%s", n.info.replica_id);
    snprintf(run, sizeof run, "%s/run", root);
    incr(&n, "a", 5, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    CHECK_EQ_I64(file_size(run) > 0, 1);
    REQUIRE(break_segment(root) == 0);
    incr(&n, "a", 1, NULL);
    CHECK_EQ_I64(wal_write(n.w), -1);
    CHECK(wal_failed(n.w) != 0);
    CHECK_EQ_I64(file_size(run), -1);
    wal_abandon(n.w);
    node_free(&n);

    reopen_expect_new_id(&n, rid, "failed log write");
    CHECK_EQ_I64(value(&n, "a"), 5);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
    unsetenv("COUNTERD_BOOT_ID");
}

static void test_torn_tail_is_cut(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    for (int i = 0; i < 10; i++)
        incr(&n, "t", 1, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);

    char seg[512];
    newest_segment(root, seg, sizeof seg);
    long before = file_size(seg);
    int fd = open(seg, O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    /* Half a record: a length, a checksum and a few payload bytes. */
    static const unsigned char half[] = {40, 0, 0, 0, 1, 2, 3, 4, 'C', 1, 't'};
    CHECK_EQ_I64(write(fd, half, sizeof half), (int64_t)sizeof half);
    close(fd);

    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    CHECK_EQ_U64(n.info.torn_bytes, sizeof half);
    /* The write that tore never returned, so nothing in it left: same boot, same id. */
    CHECK_EQ_I64(n.info.new_replica, 0);
    CHECK_EQ_I64(file_size(seg), before);
    CHECK_EQ_I64(value(&n, "t"), 10);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

static void test_damage_in_the_middle_is_refused_and_left_alone(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    for (int i = 0; i < 50; i++) {
        incr(&n, "m", 1, NULL);
        CHECK_EQ_I64(wal_write(n.w), 0); /* one write per record */
    }
    wal_abandon(n.w);
    node_free(&n);

    char seg[512];
    newest_segment(root, seg, sizeof seg);
    long size = file_size(seg);
    int fd = open(seg, O_RDWR);
    REQUIRE(fd >= 0);
    unsigned char byte;
    off_t at = size / 2;
    REQUIRE(pread(fd, &byte, 1, at) == 1);
    byte ^= 0x40;
    REQUIRE(pwrite(fd, &byte, 1, at) == 1);
    close(fd);

    CHECK_EQ_I64(node_open(&n, root, WAL_FSYNC_ALWAYS, 0), -1);
    const char *base = strrchr(seg, '/') + 1;
    CHECK(strstr(n.err, base) != NULL);
    CHECK(strstr(n.err, "offset") != NULL);
    CHECK(strstr(n.err, "truncate -s") != NULL);
    CHECK_EQ_I64(file_size(seg), size);
    /* Nothing was written: the directory has no clean marker and the same meta. */
    char path[512];
    snprintf(path, sizeof path, "%s/clean", root);
    CHECK_EQ_I64(file_size(path), -1);
    node_free(&n);
    rm_rf(root);
}

static void test_snapshot_replaces_old_segments(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_EVERYSEC, 4096) == 0);
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "s%d", i % 300);
        char tok[32];
        snprintf(tok, sizeof tok, "k%d", i);
        incr(&n, name, 1, i % 10 == 0 ? tok : NULL);
        if (i % 50 == 0) {
            CHECK_EQ_I64(wal_write(n.w), 0);
            wal_tick(n.w, n.st, n.d);
        }
    }
    CHECK_EQ_I64(wal_write(n.w), 0);
    CHECK_EQ_I64(wal_snapshot(n.w, n.st, n.d) == 0 || wal_snapshot_running(n.w), 1);
    for (int i = 0; i < 500 && wal_snapshot_running(n.w); i++) {
        usleep(10000);
        wal_tick(n.w, n.st, n.d);
    }
    CHECK_EQ_I64(wal_snapshot_running(n.w), 0);
    incr(&n, "after", 3, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);

    /* Only the newest snapshot and the segments after it remain. */
    DIR *d = opendir(root);
    struct dirent *e;
    int snaps = 0, segs = 0;
    while ((e = readdir(d))) {
        snaps += !strncmp(e->d_name, "snapshot-", 9);
        segs += !strncmp(e->d_name, "wal-", 4);
    }
    closedir(d);
    CHECK_EQ_I64(snaps, 1);
    CHECK(segs <= 2);

    REQUIRE(node_open(&n, root, WAL_FSYNC_EVERYSEC, 4096) == 0);
    CHECK(n.info.snapshot_seg > 0);
    CHECK_EQ_U64(gstore_count(n.st), 301);
    int64_t total = 0;
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "s%d", i);
        total += value(&n, name);
    }
    CHECK_EQ_I64(total, 2000);
    CHECK_EQ_I64(value(&n, "after"), 3);
    struct dedup_answer a;
    CHECK_EQ_I64(dedup_get(n.d, "s0", 2, "k0", 2, 1e9 + 1, &a), 1);
    CHECK_EQ_I64(dedup_get(n.d, "s10", 3, "k10", 3, 1e9 + 1, &a), 1);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

/* A fold is one record (the folded entry and the tombstone together): replayed from the
 * log after a crash and from a snapshot, R stays out and the total is exact; records of
 * R written before the fold do not bring it back. */
static void test_fold_replays(void)
{
    make_root();
    setenv("COUNTERD_BOOT_ID", "boot-fold", 1);
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    int r = gstore_replica(n.st, "us-east-1~old", 13), y = gstore_replica(n.st, "eu-west-1", 9);
    uint32_t id = gstore_create(n.st, "f", 1);
    CHECK_EQ_I64(gstore_incr(n.st, id, r, 40), 0);
    CHECK_EQ_I64(gstore_incr(n.st, id, r, -5), 0);
    CHECK_EQ_I64(gstore_incr(n.st, id, y, 2), 0);
    wal_append(n.w, n.st, id, NULL, 0, NULL, 0);
    incr(&n, "f", 1, NULL);
    CHECK_EQ_I64(gstore_fold(n.st, id, r, n.self), 1);
    wal_append(n.w, n.st, id, NULL, 0, NULL, 0);
    incr(&n, "f", 1, "tok-f"); /* a later record with a token carries the tombstone too */
    CHECK_EQ_I64(wal_write(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);

    for (int pass = 0; pass < 2; pass++) {
        REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 4096) == 0);
        id = gstore_find(n.st, "f", 1);
        REQUIRE(id != GSTORE_NONE);
        r = gstore_replica(n.st, "us-east-1~old", 13);
        CHECK_EQ_I64(value(&n, "f"), 39);
        CHECK(gstore_folded(n.st, id, r));
        CHECK_EQ_I64(gstore_counter_net(gstore_counter(n.st, id), r), 0);
        CHECK_EQ_U64(gstore_counter_entries(gstore_counter(n.st, id)), 2);
        if (pass == 0) {
            CHECK_EQ_I64(wal_snapshot(n.w, n.st, n.d) == 0 || wal_snapshot_running(n.w), 1);
            for (int i = 0; i < 500 && wal_snapshot_running(n.w); i++) {
                usleep(10000);
                wal_tick(n.w, n.st, n.d);
            }
            CHECK_EQ_I64(wal_snapshot_running(n.w), 0);
        }
        CHECK_EQ_I64(wal_close(n.w), 0);
        node_free(&n);
    }
    rm_rf(root);
    unsetenv("COUNTERD_BOOT_ID");
}

/* Snapshots pass 0 (pass 1 replays it) until every check is made in both. */
static void snapshot_now(struct node *n)
{
    CHECK_EQ_I64(wal_snapshot(n->w, n->st, n->d) == 0 || wal_snapshot_running(n->w), 1);
    for (int i = 0; i < 500 && wal_snapshot_running(n->w); i++) {
        usleep(10000);
        wal_tick(n->w, n->st, n->d);
    }
    CHECK_EQ_I64(wal_snapshot_running(n->w), 0);
}

/* A clear's floor, a deletion and a seal are in the counter's record and replay as merges;
 * a drop record drops the counter at its point of the log, and a later record of the same
 * name is a new life. The same from the log after a crash and from a snapshot. */
static void test_lifecycle_replays(void)
{
    make_root();
    setenv("COUNTERD_BOOT_ID", "boot-life", 1);
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    int y = gstore_replica(n.st, "eu-west-1~x", 11);
    incr(&n, "a", 5, NULL);
    uint32_t a = gstore_find(n.st, "a", 1);
    CHECK_EQ_I64(gstore_clear(n.st, a), 0);
    wal_append(n.w, n.st, a, NULL, 0, NULL, 0);
    incr(&n, "a", 1, NULL); /* above the floor */
    incr(&n, "b", 3, NULL);
    uint32_t b = gstore_find(n.st, "b", 1);
    CHECK_EQ_I64(gstore_incr(n.st, b, y, 2), 0);
    CHECK_EQ_I64(gstore_delete(n.st, b), 0);
    wal_append(n.w, n.st, b, NULL, 0, NULL, 0);
    CHECK_EQ_I64(gstore_seal(n.st, b), 1);
    wal_append(n.w, n.st, b, NULL, 0, NULL, 0);
    wal_append_drop(n.w, n.st, b);
    gstore_drop(n.st, b);
    incr(&n, "b", 4, NULL); /* counted again: a new life */
    incr(&n, "c", 2, NULL);
    uint32_t c = gstore_find(n.st, "c", 1);
    CHECK_EQ_I64(gstore_delete(n.st, c), 0);
    wal_append(n.w, n.st, c, NULL, 0, NULL, 0);
    incr(&n, "logs/x", 7, NULL);
    incr(&n, "gone", 1, NULL);
    uint32_t g = gstore_find(n.st, "gone", 4);
    CHECK_EQ_I64(gstore_delete(n.st, g), 0);
    wal_append(n.w, n.st, g, NULL, 0, NULL, 0);
    wal_append_drop(n.w, n.st, g);
    gstore_drop(n.st, g);
    CHECK_EQ_I64(wal_write(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);

    for (int pass = 0; pass < 2; pass++) {
        REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
        CHECK_EQ_U64(gstore_live(n.st), 4);
        CHECK_EQ_I64(value(&n, "a"), 1); /* above the floor, which holds 5 */
        a = gstore_find(n.st, "a", 1);
        REQUIRE(a != GSTORE_NONE);
        struct glife life;
        CHECK_EQ_I64(gstore_life(n.st, a, &life), 1);
        CHECK_EQ_I64((int64_t)life.flags, 0);
        CHECK_EQ_U64(life.nfloor, 1);
        CHECK_EQ_I64(life.nfloor ? life.floor[0].pos : -1, 5);
        CHECK(gstore_value(n.st, gstore_counter(n.st, a)) == 1);
        b = gstore_find(n.st, "b", 1);
        REQUIRE(b != GSTORE_NONE);
        CHECK_EQ_I64(gstore_life(n.st, b, &life), 0);
        CHECK(gstore_value(n.st, gstore_counter(n.st, b)) == 4);
        CHECK_EQ_U64(gstore_counter_entries(gstore_counter(n.st, b)), 1);
        c = gstore_find(n.st, "c", 1);
        REQUIRE(c != GSTORE_NONE);
        CHECK(gstore_dead(n.st, c));
        CHECK_EQ_I64(gstore_life(n.st, c, &life), 1);
        CHECK_EQ_I64((int64_t)life.flags, GLIFE_DELETED);
        CHECK_EQ_I64(value(&n, "logs/x"), 7);
        CHECK_EQ_I64(gstore_find(n.st, "gone", 4), GSTORE_NONE);
        if (pass == 0)
            snapshot_now(&n);
        CHECK_EQ_I64(wal_close(n.w), 0);
        node_free(&n);
    }
    rm_rf(root);
    unsetenv("COUNTERD_BOOT_ID");
}

static void test_always_reports_durability(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    uint64_t pos = incr(&n, "d", 1, NULL);
    CHECK(wal_durable(n.w) < pos);
    CHECK_EQ_I64(wal_write(n.w), 0);
    struct pollfd p = {wal_notify_fd(n.w), POLLIN, 0};
    for (int i = 0; i < 100 && wal_durable(n.w) < pos; i++) {
        poll(&p, 1, 50);
        if (p.revents)
            wal_notified(n.w);
    }
    CHECK(wal_durable(n.w) >= pos);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

/* Waits up to 2 s for wal_durable() to reach pos, draining the notifications. */
static int durable_within(struct wal *w, uint64_t pos)
{
    struct pollfd p = {wal_notify_fd(w), POLLIN, 0};
    for (int i = 0; i < 200 && wal_durable(w) < pos; i++) {
        p.revents = 0;
        poll(&p, 1, 10);
        if (p.revents)
            wal_notified(w);
    }
    return wal_durable(w) >= pos;
}

/* Under "always", what is written while an fsync runs, or after it and before the loop has
 * answered it (wal_kick), waits to join the next group instead of starting an fsync of its
 * own; wal_kick starts that group, and without it the thread still makes it durable (after
 * WAL_KICK_WAIT_MS). */
static void test_always_group_waits_for_kick(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    struct wal *w = n.w;
    uint64_t a = incr(&n, "g", 1, NULL);
    CHECK_EQ_I64(wal_write(w), 0);
    CHECK(durable_within(w, a)); /* an idle thread starts at once */
    pthread_mutex_lock(&w->mu);
    CHECK_EQ_I64(w->hold, 1);
    pthread_mutex_unlock(&w->mu);

    uint64_t b = incr(&n, "g", 1, NULL);
    CHECK_EQ_I64(wal_write(w), 0);
    pthread_mutex_lock(&w->mu);
    CHECK(w->want < b); /* held for the next group, not an fsync of its own */
    pthread_mutex_unlock(&w->mu);
    CHECK(durable_within(w, b)); /* no wal_kick: the thread stops waiting for it */

    uint64_t c = incr(&n, "g", 1, NULL);
    uint64_t d = incr(&n, "h", 1, NULL); /* buffered, not written: wal_kick writes it */
    CHECK(c < d);
    wal_kick(w);
    pthread_mutex_lock(&w->mu);
    CHECK_EQ_I64(w->hold, 0);
    CHECK(w->want >= d || w->synced >= d); /* one group: c and d */
    pthread_mutex_unlock(&w->mu);
    CHECK(durable_within(w, d));
    CHECK_EQ_I64(wal_close(w), 0);
    node_free(&n);

    /* What the group commit made durable is what a restart reads back. */
    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    CHECK_EQ_I64(value(&n, "g"), 3);
    CHECK_EQ_I64(value(&n, "h"), 1);
    wal_kick(n.w);
    CHECK_EQ_I64(wal_close(n.w), 0);
    node_free(&n);
    rm_rf(root);
}

/* What a strong-counter replica accepted survives a crash, from the log and from a
 * snapshot, and wal_write_sync makes it durable even under fsync=no. */
static void test_strong_replica_records(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 4096) == 0);
    strongrep_promise(n.sr, 3);
    wal_append_promise(n.w, 3);
    struct strongrep_entry e = {3, 1, 10};
    strongrep_accept(n.sr, "s", 1, 3, 1, 10);
    wal_append_strong(n.w, "s", 1, &e);
    e = (struct strongrep_entry){3, 2, 12};
    strongrep_accept(n.sr, "s", 1, 3, 2, 12);
    uint64_t pos = wal_append_strong(n.w, "s", 1, &e);
    CHECK(wal_synced(n.w) < pos);
    CHECK_EQ_I64(wal_write_sync(n.w), 0);
    struct pollfd p = {wal_notify_fd(n.w), POLLIN, 0};
    for (int i = 0; i < 100 && wal_synced(n.w) < pos; i++) {
        poll(&p, 1, 50);
        if (p.revents)
            wal_notified(n.w);
    }
    CHECK(wal_synced(n.w) >= pos);
    wal_abandon(n.w);
    node_free(&n);

    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 4096) == 0);
    CHECK_EQ_U64(strongrep_promised(n.sr), 3);
    const struct strongrep_entry *got = strongrep_get(n.sr, "s", 1);
    REQUIRE(got != NULL);
    CHECK_EQ_I64(got->value, 12);
    CHECK_EQ_U64(got->round, 2);
    /* Into a snapshot, and back. */
    strongrep_promise(n.sr, 4);
    wal_append_promise(n.w, 4);
    CHECK_EQ_I64(wal_write(n.w), 0);
    CHECK_EQ_I64(wal_snapshot(n.w, n.st, n.d), 0);
    for (int i = 0; i < 500 && wal_snapshot_running(n.w); i++) {
        usleep(10000);
        wal_tick(n.w, n.st, n.d);
    }
    wal_close(n.w);
    node_free(&n);
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 4096) == 0);
    CHECK(n.info.snapshot_seg > 0);
    CHECK_EQ_U64(strongrep_promised(n.sr), 4);
    got = strongrep_get(n.sr, "s", 1);
    REQUIRE(got != NULL);
    CHECK_EQ_I64(got->value, 12);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

static void test_refusals(void)
{
    make_root();
    struct node a, b;
    REQUIRE(node_open(&a, root, WAL_FSYNC_NO, 0) == 0);
    /* A second process on the same directory. */
    CHECK_EQ_I64(node_open(&b, root, WAL_FSYNC_NO, 0), -1);
    CHECK(strstr(b.err, "in use") != NULL);
    node_free(&b);
    incr(&a, "x", 1, NULL);
    wal_close(a.w);
    node_free(&a);

    /* Another node's directory. */
    struct gstore *st = gstore_new();
    struct dedup *d = dedup_new(10, 60);
    struct wal_info info;
    char err[512];
    struct wal_opts o = {root, "eu-west-1", WAL_FSYNC_NO, 0, NULL, NULL};
    CHECK(wal_open(&o, st, d, &info, err, sizeof err) == NULL);
    CHECK(strstr(err, "belongs to node us-east-1") != NULL);
    gstore_free(st);
    dedup_free(d);

    /* A gap in the segments. */
    char path[512];
    snprintf(path, sizeof path, "%s/wal-00000009.log", root);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    CHECK_EQ_I64(write(fd, "CNTDLOG1", 8), 8);
    close(fd);
    CHECK_EQ_I64(node_open(&a, root, WAL_FSYNC_NO, 0), -1);
    CHECK(strstr(a.err, "missing") != NULL);
    node_free(&a);
    rm_rf(root);
}

/* Space reserved ahead of the log does not change its size: a crash leaves no zeros. */
static void test_reserved_room_is_not_log(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_EVERYSEC, 0) == 0);
    CHECK_EQ_I64(wal_reserve(n.w, 1000), 0);
    uint64_t pos = incr(&n, "r", 2, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    char seg[512];
    newest_segment(root, seg, sizeof seg);
    CHECK_EQ_I64(file_size(seg), 8 + (long)pos);
    CHECK_EQ_I64(wal_failed(n.w), 0);
    CHECK(wal_status(n.w) == NULL);
    wal_abandon(n.w);
    node_free(&n);
    REQUIRE(node_open(&n, root, WAL_FSYNC_EVERYSEC, 0) == 0);
    CHECK_EQ_U64(n.info.torn_bytes, 0);
    CHECK_EQ_I64(value(&n, "r"), 2);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

/* What a snapshot child that died left behind is removed at the next start. */
static void test_stale_snapshot_tmp_is_removed(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    incr(&n, "s", 1, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);
    char path[512];
    snprintf(path, sizeof path, "%s/snapshot-00000001.snap.tmp", root);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    CHECK_EQ_I64(write(fd, "CNTDSNP1partial", 15), 15);
    close(fd);
    REQUIRE(node_open(&n, root, WAL_FSYNC_NO, 0) == 0);
    CHECK_EQ_I64(file_size(path), -1);
    CHECK_EQ_I64(value(&n, "s"), 1);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

/*
 * A failed fdatasync: what it covered may not be on disk, so the log takes no writes
 * until a fresh segment and a snapshot of the memory are; then everything is there.
 * Arms a fault point for the rest of the process: keep it the last case.
 */
static void test_fsync_error_recovers_through_a_snapshot(void)
{
    setenv("COUNTERD_FAULTS", "wal_fsync=eio@2", 1);
    char ferr[256];
    REQUIRE(fault_init(ferr, sizeof ferr) == 0);
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    uint64_t pos = incr(&n, "f", 1, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    for (int i = 0; i < 500 && wal_durable(n.w) < pos; i++)
        usleep(2000);
    CHECK(wal_durable(n.w) >= pos);
    pos = incr(&n, "f", 1, NULL); /* its fdatasync fails */
    CHECK_EQ_I64(wal_write(n.w), 0);
    for (int i = 0; i < 500 && !wal_failed(n.w); i++) {
        usleep(2000);
        wal_synced(n.w);
    }
    CHECK_EQ_I64(wal_sync_failed(n.w), 1);
    CHECK(wal_durable(n.w) < pos);
    CHECK(wal_status(n.w) && !strncmp(wal_status(n.w), "fsync: ", 7));
    CHECK_EQ_I64(wal_reserve(n.w, 100), -1);
    CHECK_EQ_U64(wal_errors(n.w, WAL_ERR_FSYNC), 1);
    /* The recovery starts within a second or so, and takes a snapshot. */
    for (int i = 0; i < 400 && wal_failed(n.w); i++) {
        usleep(10000);
        wal_tick(n.w, n.st, n.d);
    }
    CHECK_EQ_I64(wal_failed(n.w), 0);
    CHECK(wal_durable(n.w) >= pos);
    CHECK_EQ_I64(wal_reserve(n.w, 100), 0);
    pos = incr(&n, "f", 1, NULL);
    CHECK_EQ_I64(wal_write(n.w), 0);
    for (int i = 0; i < 500 && wal_durable(n.w) < pos; i++)
        usleep(2000);
    CHECK(wal_durable(n.w) >= pos);
    wal_abandon(n.w);
    node_free(&n);
    REQUIRE(node_open(&n, root, WAL_FSYNC_ALWAYS, 0) == 0);
    CHECK(n.info.snapshot_seg > 0);
    CHECK_EQ_I64(value(&n, "f"), 3);
    wal_close(n.w);
    node_free(&n);
    rm_rf(root);
}

static void put_le(unsigned char **p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        *(*p)++ = (unsigned char)(v >> (8 * i));
}

static void put_s8(unsigned char **p, const char *s)
{
    size_t n = strlen(s);
    *(*p)++ = (unsigned char)n;
    memcpy(*p, s, n);
    *p += n;
}

/* The bytes of one counter record on disk, written out by hand from wal.h's format: a
 * change of the format or of its checksum shows here first (old logs must stay readable). */
static void test_record_format_on_disk(void)
{
    make_root();
    struct node n;
    REQUIRE(node_open(&n, root, WAL_FSYNC_EVERYSEC, 0) == 0);
    uint32_t id = gstore_create(n.st, "c", 1);
    CHECK_EQ_I64(gstore_incr(n.st, id, n.self, 5), 0);
    CHECK_EQ_I64(gstore_incr(n.st, id, n.self, -2), 0);
    struct dedup_answer a = {-2, 0, 3};
    wal_append(n.w, n.st, id, "t1", 2, &a, 1e9);
    CHECK_EQ_I64(wal_write(n.w), 0);

    unsigned char want[256], *p = want + 16; /* magic and frame first */
    *p++ = 'C';
    put_s8(&p, "c");
    *p++ = 1; /* one replica entry */
    put_s8(&p, n.info.replica_id);
    put_le(&p, 5, 8); /* increments */
    put_le(&p, 2, 8); /* decrements */
    *p++ = 1;         /* flags: a token follows */
    put_s8(&p, "t1");
    put_le(&p, (uint64_t)-2, 8); /* the first answer: amount, local count, total */
    put_le(&p, 0, 8);
    put_le(&p, 3, 8);
    put_le(&p, 0x41CDCD6500000000ULL, 8); /* 1e9 as an IEEE 754 double */
    size_t plen = (size_t)(p - want) - 16;
    memcpy(want, "CNTDLOG1", 8);
    unsigned char *h = want + 8;
    put_le(&h, plen, 4);
    put_le(&h, crc32c_bitwise(want + 16, plen), 4);

    char path[512], got[256];
    newest_segment(root, path, sizeof path);
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    size_t got_len = fread(got, 1, sizeof got, f);
    fclose(f);
    CHECK_MEM_EQ(got, got_len, want, 16 + plen);
    CHECK_EQ_I64(wal_close(n.w), 0);
    node_free(&n);
    rm_rf(root);
}

UNIT_MAIN("test_wal", UNIT_CASE(test_clean_stop_keeps_state_and_replica_id),
          UNIT_CASE(test_crash_keeps_written_records_and_replica_id),
          UNIT_CASE(test_crash_after_reboot_or_failed_write_changes_replica_id),
          UNIT_CASE(test_failed_write_forgets_the_run), UNIT_CASE(test_torn_tail_is_cut),
          UNIT_CASE(test_damage_in_the_middle_is_refused_and_left_alone),
          UNIT_CASE(test_snapshot_replaces_old_segments), UNIT_CASE(test_fold_replays),
          UNIT_CASE(test_lifecycle_replays), UNIT_CASE(test_always_reports_durability),
          UNIT_CASE(test_always_group_waits_for_kick), UNIT_CASE(test_strong_replica_records),
          UNIT_CASE(test_refusals), UNIT_CASE(test_reserved_room_is_not_log),
          UNIT_CASE(test_stale_snapshot_tmp_is_removed), UNIT_CASE(test_record_format_on_disk),
          UNIT_CASE(test_fsync_error_recovers_through_a_snapshot))
