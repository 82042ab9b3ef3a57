/*
 * metrics.c - Prometheus metrics registry and text rendering (see metrics.h).
 */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"

#define MAX_LABELS 8

const double metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const int metrics_latency_nbuckets =
    sizeof metrics_latency_buckets / sizeof *metrics_latency_buckets;

struct metric_series {
    const struct metric *family;
    char *key; /* label values joined by '\xff' */
    char **values;
    double value; /* counter/gauge; histogram sum */
    uint64_t count;
    uint64_t *buckets; /* histogram: per-bucket (not cumulative) counts */
    double (*fn)(void *);
    void *fn_arg;
};

struct metric {
    enum metric_type type;
    char *name, *help;
    char *label_names[MAX_LABELS];
    int nlabels;
    double *bounds;
    int nbounds;
    int max_series, limit_label;
    struct metric_series **series; /* in creation order, for stable output */
    int nseries, series_cap;
    uint32_t *slots; /* index+1 into series, 0 = empty */
    uint32_t mask;
    struct metric *next;
};

struct collector {
    void (*fn)(void *arg);
    void *arg;
    void (*free_arg)(void *arg);
};

struct metrics {
    struct metric *first, *last;
    struct collector *collectors;
    int ncollectors;
};

struct metrics *metrics_new(void)
{
    return xcalloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *reg)
{
    if (!reg)
        return;
    struct metric *m = reg->first;
    while (m) {
        struct metric *next = m->next;
        for (int i = 0; i < m->nseries; i++) {
            struct metric_series *s = m->series[i];
            for (int j = 0; j < m->nlabels; j++)
                free(s->values[j]);
            free(s->values);
            free(s->key);
            free(s->buckets);
            free(s);
        }
        for (int j = 0; j < m->nlabels; j++)
            free(m->label_names[j]);
        free(m->series);
        free(m->slots);
        free(m->bounds);
        free(m->name);
        free(m->help);
        free(m);
        m = next;
    }
    for (int i = 0; i < reg->ncollectors; i++)
        if (reg->collectors[i].free_arg)
            reg->collectors[i].free_arg(reg->collectors[i].arg);
    free(reg->collectors);
    free(reg);
}

struct metric *metrics_add(struct metrics *reg, enum metric_type type, const char *name,
                           const char *help, const char *labels, const double *buckets,
                           int nbuckets)
{
    struct metric *m = xcalloc(1, sizeof *m);
    m->type = type;
    m->name = xstrdup(name);
    m->help = xstrdup(help);
    m->limit_label = -1;
    if (labels && *labels) {
        const char *p = labels;
        while (*p && m->nlabels < MAX_LABELS) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            m->label_names[m->nlabels++] = xstrndup(p, n);
            p += n + (comma ? 1 : 0);
        }
    }
    if (type == METRIC_HISTOGRAM) {
        m->nbounds = nbuckets;
        m->bounds = xmalloc((size_t)(nbuckets ? nbuckets : 1) * sizeof *m->bounds);
        memcpy(m->bounds, buckets, (size_t)nbuckets * sizeof *m->bounds);
    }
    m->mask = 15;
    m->slots = xcalloc(m->mask + 1, sizeof *m->slots);
    if (reg->last)
        reg->last->next = m;
    else
        reg->first = m;
    reg->last = m;
    return m;
}

struct metric *metrics_find(struct metrics *reg, const char *name)
{
    for (struct metric *m = reg->first; m; m = m->next)
        if (!strcmp(m->name, name))
            return m;
    return NULL;
}

enum metric_type metric_type_of(const struct metric *m)
{
    return m->type;
}
int metric_label_count(const struct metric *m)
{
    return m->nlabels;
}

void metric_limit(struct metric *m, int max_series, int label_index)
{
    m->max_series = max_series;
    m->limit_label = label_index;
}

static size_t join_key(const struct metric *m, const char *const *values, char *out, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < m->nlabels; i++) {
        size_t l = strlen(values[i]);
        if (n + l + 1 < cap) {
            memcpy(out + n, values[i], l);
            out[n + l] = '\xff';
        }
        n += l + 1;
    }
    return n;
}

static struct metric_series *find(struct metric *m, const char *key, size_t klen, uint32_t h)
{
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint32_t v = m->slots[i];
        if (!v)
            return NULL;
        struct metric_series *s = m->series[v - 1];
        if (strlen(s->key) == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
}

static void insert_slot(struct metric *m, uint32_t h, uint32_t index1)
{
    uint32_t i = h & m->mask;
    while (m->slots[i])
        i = (i + 1) & m->mask;
    m->slots[i] = index1;
}

struct metric_series *metric_series(struct metric *m, const char *const *values)
{
    char stack[512];
    size_t klen = join_key(m, values, stack, sizeof stack);
    char *key = klen < sizeof stack ? stack : xmalloc(klen + 1);
    if (key != stack)
        join_key(m, values, key, klen + 1);
    uint32_t h = (uint32_t)hash_bytes(key, klen);
    struct metric_series *s = find(m, key, klen, h);
    if (s)
        goto out;

    if (m->max_series > 0 && m->nseries >= m->max_series && m->limit_label >= 0 &&
        strcmp(values[m->limit_label], "_other") != 0) {
        const char *v2[MAX_LABELS];
        for (int i = 0; i < m->nlabels; i++)
            v2[i] = values[i];
        v2[m->limit_label] = "_other";
        s = metric_series(m, v2);
        goto out;
    }
    s = xcalloc(1, sizeof *s);
    s->family = m;
    s->key = xstrndup(key, klen);
    s->values = xcalloc((size_t)(m->nlabels ? m->nlabels : 1), sizeof *s->values);
    for (int i = 0; i < m->nlabels; i++)
        s->values[i] = xstrdup(values[i]);
    if (m->type == METRIC_HISTOGRAM)
        s->buckets = xcalloc((size_t)m->nbounds + 1, sizeof *s->buckets);
    if (m->nseries == m->series_cap) {
        m->series_cap = m->series_cap ? m->series_cap * 2 : 8;
        m->series = xrealloc(m->series, (size_t)m->series_cap * sizeof *m->series);
    }
    m->series[m->nseries++] = s;
    if ((uint32_t)m->nseries * 2 > m->mask + 1) {
        free(m->slots);
        m->mask = m->mask * 2 + 1;
        m->slots = xcalloc(m->mask + 1, sizeof *m->slots);
        for (int i = 0; i < m->nseries; i++)
            insert_slot(m, (uint32_t)hash_bytes(m->series[i]->key, strlen(m->series[i]->key)),
                        (uint32_t)i + 1);
    } else {
        insert_slot(m, h, (uint32_t)m->nseries);
    }
out:
    if (key != stack)
        free(key);
    return s;
}

struct metric_series *metric_only(struct metric *m)
{
    static const char *const none[1] = {""};
    return metric_series(m, none);
}

void metric_add(struct metric_series *s, double v)
{
    s->value += v;
}
void metric_set(struct metric_series *s, double v)
{
    s->value = v;
}

void metric_observe(struct metric_series *s, double v)
{
    const struct metric *m = s->family;
    int b = 0;
    while (b < m->nbounds && v > m->bounds[b])
        b++;
    s->buckets[b]++;
    s->value += v;
    s->count++;
}

void metric_load_histogram(struct metric_series *s, const uint64_t *counts, double sum)
{
    const struct metric *m = s->family;
    uint64_t n = 0;
    for (int b = 0; b <= m->nbounds; b++) {
        s->buckets[b] = counts[b];
        n += counts[b];
    }
    s->count = n;
    s->value = sum;
}

void metrics_add_collector(struct metrics *reg, void (*fn)(void *arg), void *arg,
                           void (*free_arg)(void *arg))
{
    reg->collectors =
        xrealloc(reg->collectors, (size_t)(reg->ncollectors + 1) * sizeof *reg->collectors);
    reg->collectors[reg->ncollectors++] = (struct collector){fn, arg, free_arg};
}

void metric_set_fn(struct metric_series *s, double (*fn)(void *arg), void *arg)
{
    s->fn = fn;
    s->fn_arg = arg;
}

static void put_value(struct buf *out, double v)
{
    if (isnan(v))
        buf_puts(out, "NaN");
    else if (isinf(v))
        buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        buf_i64(out, (int64_t)v);
    else
        buf_printf(out, "%.17g", v);
}

static void put_label_value(struct buf *out, const char *v)
{
    buf_putc(out, '"');
    for (; *v; v++) {
        if (*v == '\\')
            buf_puts(out, "\\\\");
        else if (*v == '"')
            buf_puts(out, "\\\"");
        else if (*v == '\n')
            buf_puts(out, "\\n");
        else
            buf_putc(out, *v);
    }
    buf_putc(out, '"');
}

static void put_labels(struct buf *out, const struct metric *m, const struct metric_series *s,
                       const char *le)
{
    if (m->nlabels == 0 && !le)
        return;
    buf_putc(out, '{');
    for (int i = 0; i < m->nlabels; i++) {
        if (i)
            buf_putc(out, ',');
        buf_puts(out, m->label_names[i]);
        buf_putc(out, '=');
        put_label_value(out, s->values[i]);
    }
    if (le) {
        if (m->nlabels)
            buf_putc(out, ',');
        buf_puts(out, "le=");
        put_label_value(out, le);
    }
    buf_putc(out, '}');
}

static void put_help(struct buf *out, const char *help)
{
    for (; *help; help++) {
        if (*help == '\\')
            buf_puts(out, "\\\\");
        else if (*help == '\n')
            buf_puts(out, "\\n");
        else
            buf_putc(out, *help);
    }
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

/* The TYPE a family declares (see metrics.h for the untyped gauges). */
static const char *type_name(const struct metric *m)
{
    if (m->type == METRIC_COUNTER)
        return "counter";
    if (m->type == METRIC_HISTOGRAM)
        return "histogram";
    if (has_suffix(m->name, "_count") || has_suffix(m->name, "_sum") ||
        has_suffix(m->name, "_bucket"))
        return "untyped";
    return "gauge";
}

void metrics_render(const struct metrics *reg, struct buf *out)
{
    for (int i = 0; i < reg->ncollectors; i++)
        reg->collectors[i].fn(reg->collectors[i].arg);
    for (const struct metric *m = reg->first; m; m = m->next) {
        buf_puts(out, "# HELP ");
        buf_puts(out, m->name);
        buf_putc(out, ' ');
        put_help(out, m->help);
        buf_puts(out, "\n# TYPE ");
        buf_puts(out, m->name);
        buf_putc(out, ' ');
        buf_puts(out, type_name(m));
        buf_putc(out, '\n');
        for (int i = 0; i < m->nseries; i++) {
            const struct metric_series *s = m->series[i];
            if (m->type != METRIC_HISTOGRAM) {
                buf_puts(out, m->name);
                put_labels(out, m, s, NULL);
                buf_putc(out, ' ');
                put_value(out, s->fn ? s->fn(s->fn_arg) : s->value);
                buf_putc(out, '\n');
                continue;
            }
            uint64_t cum = 0;
            for (int b = 0; b <= m->nbounds; b++) {
                char le[32];
                cum += s->buckets[b];
                if (b < m->nbounds)
                    snprintf(le, sizeof le, "%g", m->bounds[b]);
                else
                    snprintf(le, sizeof le, "+Inf");
                buf_puts(out, m->name);
                buf_puts(out, "_bucket");
                put_labels(out, m, s, le);
                buf_putc(out, ' ');
                buf_u64(out, cum);
                buf_putc(out, '\n');
            }
            buf_puts(out, m->name);
            buf_puts(out, "_sum");
            put_labels(out, m, s, NULL);
            buf_putc(out, ' ');
            put_value(out, s->value);
            buf_putc(out, '\n');
            buf_puts(out, m->name);
            buf_puts(out, "_count");
            put_labels(out, m, s, NULL);
            buf_putc(out, ' ');
            buf_u64(out, s->count);
            buf_putc(out, '\n');
        }
    }
}
