/*
 * fuzz_wal.c - libFuzzer target: recovery of a data directory by wal_open
 * (core/store/wal.c: segment and snapshot framing, record decoding, torn tails).
 *
 * An input is three bytes of layout and the file contents:
 *   byte 0    bits 0-1: which files the contents become
 *                 0  wal-00000001.log (the newest segment: a bad tail may be torn)
 *                 1  snapshot-00000001.snap
 *                 2  snapshot-00000001.snap + wal-00000002.log, split at bytes 1-2
 *                 3  wal-00000001.log + wal-00000002.log, split at bytes 1-2
 *             bit 2: a "clean" file is present (the last run stopped gracefully)
 *             bit 3: the contents are written as they are; otherwise each file starts
 *                    with its magic (CNTDLOG1 / CNTDSNP1) and the contents follow
 *             bit 4: the harness rewrites the CRC-32C of every record it can frame, so
 *                    mutated payloads get past the checksum and reach the decoder
 *   bytes 1-2 the split position (little endian, modulo the length + 1)
 * The directory also gets a valid meta file for node fuzz-1.
 *
 * wal_open must then either fail with a sentence, leaving the files as they were, or
 * succeed. After a success the log is closed (wal_close) and opened again: the second
 * start must succeed, find the directory clean with the same replica id, cut nothing, and
 * recover exactly the same counters, idempotency entries, token-set elements and
 * settlements. Anything else aborts as a finding.
 *
 * The directory lives under /dev/shm when it exists (see scratch.h).
 * Never linked into counterd.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/log.h"
#include "store/dedup.h"
#include "store/tokset.h"
#include "store/gstore.h"
#include "store/wal.h"
#include "scratch.h"

#define NODE_ID "fuzz-1"
#define META "counterd-data 1\nnode_id=" NODE_ID "\nreplica_id=" NODE_ID "~0badc0de\n"
#define DEDUP_MAX 200000
#define DEDUP_WINDOW_S 600.0
#define MAX_FILES 4 /* meta, clean and two data files */

struct file {
    char name[32];
    struct buf data;
};

static char dir[PATH_MAX];
static struct file files[MAX_FILES];
static int nfiles;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void __attribute__((format(printf, 1, 2), noreturn)) finding(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\n==fuzz== finding: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Every torn tail is logged as a warning: quiet unless asked (COUNTERD_LOG=info). */
    setenv("COUNTERD_LOG", "error", 0);
    log_init("fuzz_wal");
    snprintf(dir, sizeof dir, "%s/data", scratch_dir("wal"));
    return 0;
}

static void write_file(const char *name, const void *p, size_t n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n)) {
        fprintf(stderr, "fuzz_wal: cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
    close(fd);
}

/* Rewrites the checksum of each [u32 length][u32 CRC-32C][payload] record in d[0..n). */
static void fix_crcs(unsigned char *d, size_t n)
{
    size_t off = 0;
    while (n - off >= 8) {
        uint32_t len = (uint32_t)d[off] | (uint32_t)d[off + 1] << 8 | (uint32_t)d[off + 2] << 16 |
                       (uint32_t)d[off + 3] << 24;
        if (len == 0 || len > n - off - 8)
            return;
        uint32_t crc = crc32c(0, d + off + 8, len);
        for (int i = 0; i < 4; i++)
            d[off + 4 + i] = (unsigned char)(crc >> (8 * i));
        off += 8 + len;
    }
}

static void add_file(const char *name, int magic, int crcs, const uint8_t *p, size_t n)
{
    struct file *f = &files[nfiles++];
    snprintf(f->name, sizeof f->name, "%s", name);
    buf_reset(&f->data);
    if (magic)
        buf_append(&f->data, strstr(name, ".snap") ? "CNTDSNP1" : "CNTDLOG1", 8);
    buf_append(&f->data, p, n);
    /* Records start after the magic, whether the harness or the input wrote it. */
    if (crcs && f->data.len > 8)
        fix_crcs((unsigned char *)f->data.data + 8, f->data.len - 8);
    write_file(f->name, f->data.data, f->data.len);
}

/* After a refusal: every file as written, nothing added but LOCK. */
static void check_unchanged(const char *err)
{
    for (int i = 0; i < nfiles; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        FILE *fp = fopen(path, "rb");
        if (!fp)
            finding("wal_open failed (%s) but removed %s", err, files[i].name);
        struct buf got = BUF_INIT;
        char tmp[4096];
        size_t n;
        while ((n = fread(tmp, 1, sizeof tmp, fp)) > 0)
            buf_append(&got, tmp, n);
        fclose(fp);
        int same = got.len == files[i].data.len &&
                   (got.len == 0 || memcmp(got.data, files[i].data.data, got.len) == 0);
        size_t glen = got.len;
        buf_free(&got);
        if (!same)
            finding("wal_open failed (%s) but changed %s (%zu bytes, was %zu)", err, files[i].name,
                    glen, files[i].data.len);
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "LOCK"))
            continue;
        int known = 0;
        for (int i = 0; i < nfiles; i++)
            known |= !strcmp(e->d_name, files[i].name);
        if (!known)
            finding("wal_open failed (%s) but created %s", err, e->d_name);
    }
    if (d)
        closedir(d);
}

/* The two recoveries must agree on every counter, the idempotency entries and the
 * token-set elements. */
static void compare(const struct gstore *a, const struct dedup *da, struct tokset *fa,
                    const struct gstore *b, const struct dedup *db, struct tokset *fb)
{
    if (tokset_count(fa) != tokset_count(fb) ||
        tokset_pending_count(fa) != tokset_pending_count(fb))
        finding("second recovery found %zu token-set elements (%zu pending), the first "
                "%zu (%zu)",
                tokset_count(fb), tokset_pending_count(fb), tokset_count(fa),
                tokset_pending_count(fa));
    if (gstore_count(a) != gstore_count(b))
        finding("second recovery found %u counters, the first %u", gstore_count(b),
                gstore_count(a));
    if (dedup_count(da) != dedup_count(db))
        finding("second recovery found %zu idempotency entries, the first %zu", dedup_count(db),
                dedup_count(da));
    for (uint32_t id = 0; id < gstore_count(a); id++) {
        const struct gcounter *ca = gstore_counter(a, id);
        size_t nlen;
        const char *name = gstore_counter_name(ca, &nlen);
        uint32_t idb = gstore_find(b, name, nlen);
        if (idb == GSTORE_NONE)
            finding("counter %.*s is lost by the second recovery", (int)nlen, name);
        const struct gcounter *cb = gstore_counter(b, idb);
        if (gstore_counter_value(ca) != gstore_counter_value(cb) ||
            gstore_counter_entries(ca) != gstore_counter_entries(cb))
            finding("counter %.*s differs after the second recovery", (int)nlen, name);
        for (unsigned i = 0; i < gstore_counter_entries(ca); i++) {
            struct gentry ea, eb;
            gstore_counter_entry(ca, i, &ea);
            const char *rn = gstore_replica_name(a, ea.rep);
            unsigned j = 0;
            for (; j < gstore_counter_entries(cb); j++) {
                gstore_counter_entry(cb, j, &eb);
                if (!strcmp(gstore_replica_name(b, eb.rep), rn))
                    break;
            }
            if (j == gstore_counter_entries(cb) || ea.pos != eb.pos || ea.neg != eb.neg)
                finding("counter %.*s, replica %s differs after the second recovery", (int)nlen,
                        name, rn);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    unsigned ctl = data[0];
    const uint8_t *p = data + 3;
    size_t n = size - 3;
    size_t split = ((size_t)data[1] | (size_t)data[2] << 8) % (n + 1);
    int magic = !(ctl & 8);

    nfiles = 0;
    mkdir(dir, 0755);
    int crcs = (ctl & 16) != 0;
    add_file("meta", 0, 0, (const uint8_t *)META, strlen(META));
    if (ctl & 4)
        add_file("clean", 0, 0, (const uint8_t *)"", 0);
    switch (ctl & 3) {
    case 0: add_file("wal-00000001.log", magic, crcs, p, n); break;
    case 1: add_file("snapshot-00000001.snap", magic, crcs, p, n); break;
    case 2:
        add_file("snapshot-00000001.snap", magic, crcs, p, split);
        add_file("wal-00000002.log", magic, crcs, p + split, n - split);
        break;
    default:
        add_file("wal-00000001.log", magic, crcs, p, split);
        add_file("wal-00000002.log", magic, crcs, p + split, n - split);
        break;
    }

    struct gstore *st = gstore_new();
    struct dedup *d = dedup_new(DEDUP_MAX, DEDUP_WINDOW_S);
    struct tokset *fo = tokset_new();
    struct wal_opts o = {.dir = dir, .node_id = NODE_ID, .fsync = WAL_FSYNC_NO, .tokset = fo};
    struct wal_info info;
    char err[1024] = "";
    struct wal *w = wal_open(&o, st, d, &info, err, sizeof err);
    if (!w) {
        if (!err[0])
            finding("wal_open failed without a sentence");
        check_unchanged(err);
    } else {
        char replica[sizeof info.replica_id];
        memcpy(replica, info.replica_id, sizeof replica);
        if (wal_close(w) != 0)
            finding("wal_close failed on a recovered directory");
        struct gstore *st2 = gstore_new();
        struct dedup *d2 = dedup_new(DEDUP_MAX, DEDUP_WINDOW_S);
        struct tokset *fo2 = tokset_new();
        o.tokset = fo2;
        struct wal_info info2;
        struct wal *w2 = wal_open(&o, st2, d2, &info2, err, sizeof err);
        if (!w2)
            finding("a directory that wal_open recovered and wal_close closed is refused on "
                    "the next start: %s",
                    err);
        if (!info2.clean || info2.new_replica || strcmp(info2.replica_id, replica) != 0)
            finding("after a clean close the next start is not clean (clean %d, new replica "
                    "%d, replica %s, was %s)",
                    info2.clean, info2.new_replica, info2.replica_id, replica);
        if (info2.torn_bytes)
            finding("the second start cut %llu more torn bytes",
                    (unsigned long long)info2.torn_bytes);
        compare(st, d, fo, st2, d2, fo2);
        wal_abandon(w2);
        gstore_free(st2);
        dedup_free(d2);
        tokset_free(fo2);
    }
    gstore_free(st);
    dedup_free(d);
    tokset_free(fo);
    scratch_empty(dir);
    return 0;
}
