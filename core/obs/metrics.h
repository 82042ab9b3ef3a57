/*
 * metrics.h - Prometheus metrics: counters, gauges, histograms with labels, rendered in
 * the text exposition format (`promtool check metrics` clean).
 *
 * A family is registered once with its label names; a series is found by its label
 * values and kept, so a hot path can hold the series pointer, or look it up per event
 * (one hash of the values). A family can bound its cardinality: past max_series distinct
 * series, the value of one chosen label is replaced by "_other", so a client inventing
 * counter names cannot grow /metrics without end.
 *
 * A gauge whose name ends in _count, _sum or _bucket (API.md's counter_local_count,
 * coordinator_global_count, ...) is declared "untyped": the text format reserves those
 * suffixes for the samples of histograms and summaries, and `promtool check metrics`
 * rejects a gauge so named but exempts an untyped family. PromQL does not care; only the
 * type shown in Prometheus' metadata changes (unknown instead of gauge).
 *
 * Plain C: no libevent, Lua or curl.
 */
#ifndef COUNTERD_OBS_METRICS_H
#define COUNTERD_OBS_METRICS_H

#include <stdint.h>

#include "../base/buf.h"

struct metrics;
struct metric;
struct metric_series;

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metrics *metrics_new(void);
void metrics_free(struct metrics *reg);

/*
 * Registers a family. labels is a comma-separated list of label names ("" or NULL for
 * none). buckets (histograms only) are upper bounds in increasing order; +Inf is added.
 * @return the family; the registry owns it.
 */
struct metric *metrics_add(struct metrics *reg, enum metric_type type, const char *name,
                           const char *help, const char *labels, const double *buckets,
                           int nbuckets);

/* The family registered under name, or NULL. */
struct metric *metrics_find(struct metrics *reg, const char *name);
enum metric_type metric_type_of(const struct metric *m);
int metric_label_count(const struct metric *m);

/* Bounds the family to max_series series; beyond, label number label_index becomes "_other". */
void metric_limit(struct metric *m, int max_series, int label_index);

/* The series with these label values (one per label name), created on first use. */
struct metric_series *metric_series(struct metric *m, const char *const *values);
/* Shortcut for families with no labels. */
struct metric_series *metric_only(struct metric *m);

void metric_add(struct metric_series *s, double v);     /* counters and gauges */
void metric_set(struct metric_series *s, double v);     /* gauges; counters kept elsewhere */
void metric_observe(struct metric_series *s, double v); /* histograms */

/*
 * Sets a histogram series from tallies kept elsewhere: counts[i] observations fell in
 * bucket i (not cumulative; counts[nbuckets] are those above the last bound), sum is
 * their total. The family's bounds must be the ones the tallies were kept with.
 */
void metric_load_histogram(struct metric_series *s, const uint64_t *counts, double sum);

/*
 * Registers fn to run at the start of every render, before anything is written: it
 * copies values a hot path keeps in its own plain fields (the HTTP server's tallies)
 * into series, so that path pays nothing for the registry. free_arg (or NULL) is called
 * on arg when the registry is freed.
 */
void metrics_add_collector(struct metrics *reg, void (*fn)(void *arg), void *arg,
                           void (*free_arg)(void *arg));

/* A gauge whose value is read at render time. */
void metric_set_fn(struct metric_series *s, double (*fn)(void *arg), void *arg);

void metrics_render(const struct metrics *reg, struct buf *out);

/* Histogram buckets for latencies in seconds (1 ms .. 10 s). */
extern const double metrics_latency_buckets[];
extern const int metrics_latency_nbuckets;

#endif
