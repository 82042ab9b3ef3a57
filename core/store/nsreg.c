/*
 * nsreg.c - the namespace register (see nsreg.h): a small table, merged entry by entry,
 * saved whole.
 *
 * The table holds tens of namespaces, so it is an array searched in order; a bare counter
 * name (namespace "default", the common case) is answered without a search. Nothing here
 * may make an entry lose against an older one: every change goes through the same
 * (version, updated_by) order.
 */
#include "nsreg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/json.h"
#include "../base/mem.h"

struct nsreg {
    struct nsreg_entry *e;
    size_t n, cap;
    char *path;
    uint64_t generation;
};

static const char *const type_names[] = {"eventual", "regional", "strong"};

const char *nsreg_type_name(int type)
{
    return type >= 0 && type <= NSREG_STRONG ? type_names[type] : "eventual";
}

int nsreg_type_parse(const char *s, size_t n)
{
    for (int t = 0; t <= NSREG_STRONG; t++)
        if (strlen(type_names[t]) == n && !memcmp(type_names[t], s, n))
            return t;
    return -1;
}

struct nsreg *nsreg_new(const char *path)
{
    struct nsreg *r = xcalloc(1, sizeof *r);
    r->path = path ? xstrdup(path) : NULL;
    struct nsreg_entry d = {.type = NSREG_EVENTUAL, .window_s = NSREG_WINDOW_DEFAULT};
    memcpy(d.name, NSREG_DEFAULT, sizeof NSREG_DEFAULT);
    nsreg_merge(r, &d);
    r->generation = 0;
    return r;
}

void nsreg_free(struct nsreg *r)
{
    if (!r)
        return;
    free(r->e);
    free(r->path);
    free(r);
}

const struct nsreg_entry *nsreg_get(const struct nsreg *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n; i++)
        if (strlen(r->e[i].name) == len && !memcmp(r->e[i].name, name, len))
            return &r->e[i];
    return NULL;
}

const struct nsreg_entry *nsreg_of_key(const struct nsreg *r, const char *key, size_t len)
{
    const char *slash = memchr(key, '/', len);
    if (!slash)
        return &r->e[0]; /* "default" is always the first entry */
    return nsreg_get(r, key, (size_t)(slash - key));
}

size_t nsreg_count(const struct nsreg *r)
{
    return r->n;
}

const struct nsreg_entry *nsreg_at(const struct nsreg *r, size_t i)
{
    return &r->e[i];
}

uint64_t nsreg_max_version(const struct nsreg *r)
{
    uint64_t v = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->e[i].version > v)
            v = r->e[i].version;
    return v;
}

int nsreg_nontrivial(const struct nsreg *r)
{
    return r->n > 1 || r->e[0].version > 0;
}

uint64_t nsreg_generation(const struct nsreg *r)
{
    return r->generation;
}

/* Whether a is newer than b: the greater version, then the greater node id (byte order). */
static int newer(const struct nsreg_entry *a, const struct nsreg_entry *b)
{
    if (a->version != b->version)
        return a->version > b->version;
    return strcmp(a->updated_by, b->updated_by) > 0;
}

int nsreg_merge(struct nsreg *r, const struct nsreg_entry *in)
{
    struct nsreg_entry *have = (struct nsreg_entry *)nsreg_get(r, in->name, strlen(in->name));
    if (have) {
        if (!newer(in, have))
            return 0;
        /* The type of "default" never changes, whatever a peer says. */
        int type = have == &r->e[0] ? NSREG_EVENTUAL : in->type;
        *have = *in;
        have->type = type;
        have->deleted = have == &r->e[0] ? 0 : in->deleted;
        r->generation++;
        return 1;
    }
    if (r->n == NSREG_MAX)
        return -1;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 8;
        r->e = xrealloc(r->e, r->cap * sizeof *r->e);
    }
    r->e[r->n++] = *in;
    r->generation++;
    return 1;
}

/* ---------------------------------------------------------------- JSON */

void nsreg_restore(struct nsreg *r, const char *name, const struct nsreg_entry *old)
{
    struct nsreg_entry *have = (struct nsreg_entry *)nsreg_get(r, name, strlen(name));
    if (!have)
        return;
    if (old)
        *have = *old;
    else
        *have = r->e[--r->n]; /* the last one, or itself */
    r->generation++;
}

void nsreg_put_entry(struct buf *b, const struct nsreg_entry *e)
{
    buf_putc(b, '{');
    nsreg_put_fields(b, e);
    buf_putc(b, '}');
}

void nsreg_put_fields(struct buf *b, const struct nsreg_entry *e)
{
    buf_puts(b, "\"type\":\"");
    buf_puts(b, nsreg_type_name(e->type));
    buf_printf(b, "\",\"ttl_seconds\":%lld,\"idempotency_window_seconds\":%lld,\"version\":%llu,",
               (long long)e->ttl_s, (long long)e->window_s, (unsigned long long)e->version);
    buf_puts(b, "\"updated_by\":");
    buf_json_str(b, e->updated_by, strlen(e->updated_by));
    buf_printf(b, ",\"updated_at\":%.3f,\"deleted\":%s", e->updated_at,
               e->deleted ? "true" : "false");
}

void nsreg_encode(const struct nsreg *r, struct buf *b)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < r->n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_json_str(b, r->e[i].name, strlen(r->e[i].name));
        buf_putc(b, ':');
        nsreg_put_entry(b, &r->e[i]);
    }
    buf_putc(b, '}');
}

/* An integer member in [lo, hi]. @return 0 with *out, or -1. */
static int get_int(const struct json *o, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    const struct json *v = json_get(o, key);
    if (!v || v->type != JSON_INT || v->u.i < lo || v->u.i > hi)
        return -1;
    *out = v->u.i;
    return 0;
}

/* One entry of a table. @return 0 with *e filled, or -1 when it is not a valid one. */
static int decode_entry(const char *name, size_t nlen, const struct json *o, struct nsreg_entry *e)
{
    memset(e, 0, sizeof *e);
    if (!gstore_ns_name_valid(name, nlen) || !o || o->type != JSON_OBJ)
        return -1;
    memcpy(e->name, name, nlen);
    const struct json *t = json_get(o, "type"), *by = json_get(o, "updated_by");
    const struct json *at = json_get(o, "updated_at"), *del = json_get(o, "deleted");
    int64_t version;
    if (!t || t->type != JSON_STR || (e->type = nsreg_type_parse(t->u.s, t->len)) < 0)
        return -1;
    if (get_int(o, "ttl_seconds", 0, NSREG_TTL_MAX, &e->ttl_s) < 0 ||
        get_int(o, "idempotency_window_seconds", 1, NSREG_WINDOW_MAX, &e->window_s) < 0 ||
        get_int(o, "version", 0, INT64_MAX, &version) < 0)
        return -1;
    e->version = (uint64_t)version;
    if (!by || by->type != JSON_STR || by->len > NSREG_NODE_MAX || (by->flags & JSON_F_HAS_NUL))
        return -1;
    memcpy(e->updated_by, by->u.s, by->len);
    if (!at || (at->type != JSON_INT && at->type != JSON_NUM))
        return -1;
    e->updated_at = at->num;
    if (!del || (del->type != JSON_TRUE && del->type != JSON_FALSE))
        return -1;
    e->deleted = del->type == JSON_TRUE;
    return 0;
}

int nsreg_decode(struct nsreg *r, const struct json *obj, int *bad)
{
    int taken = 0;
    if (!obj || obj->type != JSON_OBJ) {
        if (bad)
            (*bad)++;
        return 0;
    }
    for (uint32_t i = 0; i < obj->len; i++) {
        const struct json_member *m = &obj->u.members[i];
        struct nsreg_entry e;
        if (decode_entry(m->key, m->key_len, &m->val, &e) < 0) {
            if (bad)
                (*bad)++;
            continue;
        }
        if (nsreg_merge(r, &e) > 0)
            taken++;
    }
    return taken;
}

/* ---------------------------------------------------------------- the file */

int nsreg_load(struct nsreg *r, char *err, size_t errlen)
{
    if (!r->path)
        return 0;
    FILE *f = fopen(r->path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open %s: %s", r->path, strerror(errno));
        return -1;
    }
    struct buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    int rc = ferror(f) ? -1 : 0;
    fclose(f);
    struct json_parser p;
    json_parser_init(&p);
    const struct json *root = rc == 0 ? json_parse(&p, b.data, b.len) : NULL;
    int bad = 0;
    if (root)
        nsreg_decode(r, json_get(root, "namespaces"), &bad);
    if (!root || bad)
        snprintf(err, errlen, "%s is not a namespace register (%s)", r->path,
                 !root ? (rc < 0 ? "read error" : p.err) : "invalid entries");
    json_parser_free(&p);
    buf_free(&b);
    return root && !bad ? 0 : -1;
}

/* Writes all of data to fd. @return 0, or -1 (errno set). */
static int write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fsyncs the directory holding path, so that a rename in it is durable. */
static int fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int nsreg_save(struct nsreg *r, char *err, size_t errlen)
{
    if (!r->path)
        return 0;
    struct buf b = {0};
    buf_puts(&b, "{\"namespaces\":");
    nsreg_encode(r, &b);
    buf_puts(&b, "}\n");
    size_t plen = strlen(r->path);
    char *tmp = xmalloc(plen + 5);
    memcpy(tmp, r->path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd >= 0 && write_all(fd, b.data, b.len) == 0 && fsync(fd) == 0) {
        close(fd);
        fd = -1;
        rc = rename(tmp, r->path) == 0 && fsync_parent(r->path) == 0 ? 0 : -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "cannot write %s: %s", r->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
    }
    free(tmp);
    buf_free(&b);
    return rc;
}
