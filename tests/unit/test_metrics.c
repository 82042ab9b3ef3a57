/*
 * test_metrics.c - unit tests of the Prometheus registry and its text rendering
 * (core/obs/metrics.c).
 *
 * Small registries are rendered and compared with the exact expected exposition text.
 * Never include this from core/.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/mem.h"
#include "obs/metrics.h"
#include "unit.h"

static const char *render(const struct metrics *reg, struct buf *b)
{
    buf_reset(b);
    metrics_render(reg, b);
    return buf_cstr(b);
}

/* Whether text has line as one whole line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

#define CHECK_LINE(text, line)                                                                     \
    do {                                                                                           \
        unit_g.checks++;                                                                           \
        if (!has_line((text), (line)))                                                             \
            unit_fail(__FILE__, __LINE__, "no line '%s' in:\n%s", (line), (text));                 \
    } while (0)

static void test_render_small(void)
{
    struct metrics *reg = metrics_new();
    struct metric *req =
        metrics_add(reg, METRIC_COUNTER, "req_total", "Requests answered.", "method,code", NULL, 0);
    struct metric *temp = metrics_add(reg, METRIC_GAUGE, "temp", "Temperature.", "", NULL, 0);
    static const double bounds[] = {0.5, 1, 2.5};
    struct metric *lat =
        metrics_add(reg, METRIC_HISTOGRAM, "lat_seconds", "Latency.", "op", bounds, 3);
    struct metric *plain =
        metrics_add(reg, METRIC_HISTOGRAM, "size_bytes", "Sizes.", NULL, bounds, 3);

    const char *get200[] = {"GET", "200"}, *post500[] = {"POST", "500"};
    struct metric_series *s = metric_series(req, get200);
    metric_add(s, 1);
    metric_add(s, 2);
    CHECK(metric_series(req, get200) == s); /* found again, not created twice */
    metric_add(metric_series(req, post500), 1.5);
    metric_set(metric_only(temp), 42);
    const char *get[] = {"get"};
    struct metric_series *h = metric_series(lat, get);
    metric_observe(h, 0.25);
    metric_observe(h, 0.5); /* on a bound: counted in le="0.5" */
    metric_observe(h, 0.75);
    metric_observe(h, 2);
    metric_observe(h, 4);
    metric_only(plain); /* a histogram with no observations */

    struct buf b = BUF_INIT;
    const char *want = "# HELP req_total Requests answered.\n"
                       "# TYPE req_total counter\n"
                       "req_total{method=\"GET\",code=\"200\"} 3\n"
                       "req_total{method=\"POST\",code=\"500\"} 1.5\n"
                       "# HELP temp Temperature.\n"
                       "# TYPE temp gauge\n"
                       "temp 42\n"
                       "# HELP lat_seconds Latency.\n"
                       "# TYPE lat_seconds histogram\n"
                       "lat_seconds_bucket{op=\"get\",le=\"0.5\"} 2\n"
                       "lat_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
                       "lat_seconds_bucket{op=\"get\",le=\"2.5\"} 4\n"
                       "lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 5\n"
                       "lat_seconds_sum{op=\"get\"} 7.5\n"
                       "lat_seconds_count{op=\"get\"} 5\n"
                       "# HELP size_bytes Sizes.\n"
                       "# TYPE size_bytes histogram\n"
                       "size_bytes_bucket{le=\"0.5\"} 0\n"
                       "size_bytes_bucket{le=\"1\"} 0\n"
                       "size_bytes_bucket{le=\"2.5\"} 0\n"
                       "size_bytes_bucket{le=\"+Inf\"} 0\n"
                       "size_bytes_sum 0\n"
                       "size_bytes_count 0\n";
    CHECK_STR_EQ(render(reg, &b), want);

    /* Gauges go down; values that are not integers keep their digits. */
    metric_add(metric_only(temp), -50);
    metric_observe(metric_only(plain), 100);
    render(reg, &b);
    CHECK_LINE(b.data, "temp -8");
    CHECK_LINE(b.data, "size_bytes_bucket{le=\"2.5\"} 0");
    CHECK_LINE(b.data, "size_bytes_bucket{le=\"+Inf\"} 1");
    CHECK_LINE(b.data, "size_bytes_sum 100");
    CHECK_LINE(b.data, "size_bytes_count 1");
    metric_set(metric_only(temp), 0.1);
    CHECK_LINE(render(reg, &b), "temp 0.10000000000000001");
    metric_set(metric_only(temp), NAN);
    CHECK_LINE(render(reg, &b), "temp NaN");
    metric_set(metric_only(temp), -INFINITY);
    CHECK_LINE(render(reg, &b), "temp -Inf");
    metric_set(metric_only(temp), 1e20);
    CHECK_LINE(render(reg, &b), "temp 1e+20");
    buf_free(&b);
    metrics_free(reg);
}

/* Buckets stay cumulative for random observations, _count and +Inf agree. */
static void test_histogram_cumulative(void)
{
    struct unit_rng rng;
    rng_init(&rng, "histogram_cumulative");
    struct metrics *reg = metrics_new();
    struct metric *m = metrics_add(reg, METRIC_HISTOGRAM, "req_seconds", "Request latency.",
                                   "route", metrics_latency_buckets, metrics_latency_nbuckets);
    CHECK_EQ_I64(metrics_latency_nbuckets, 14);
    for (int i = 1; i < metrics_latency_nbuckets; i++)
        CHECK(metrics_latency_buckets[i] > metrics_latency_buckets[i - 1]);
    const char *route[] = {"/increment"};
    struct metric_series *s = metric_series(m, route);
    long n = unit_iters(10000);
    long want[15] = {0};
    for (long i = 0; i < n; i++) {
        /* Multiples of 1/1024 s: exact sums. */
        double v = (double)rng_below(&rng, 20 * 1024) / 1024.0;
        metric_observe(s, v);
        for (int k = 0; k < metrics_latency_nbuckets; k++)
            if (v <= metrics_latency_buckets[k])
                want[k]++;
        want[14]++;
    }
    struct buf b = BUF_INIT;
    render(reg, &b);
    char line[160];
    for (int k = 0; k < metrics_latency_nbuckets; k++) {
        snprintf(line, sizeof line, "req_seconds_bucket{route=\"/increment\",le=\"%g\"} %ld",
                 metrics_latency_buckets[k], want[k]);
        CHECK_LINE(b.data, line);
    }
    snprintf(line, sizeof line, "req_seconds_bucket{route=\"/increment\",le=\"+Inf\"} %ld", n);
    CHECK_LINE(b.data, line);
    snprintf(line, sizeof line, "req_seconds_count{route=\"/increment\"} %ld", n);
    CHECK_LINE(b.data, line);
    CHECK_LINE(b.data, "# TYPE req_seconds histogram");
    buf_free(&b);
    metrics_free(reg);
}

static void test_escaping(void)
{
    struct metrics *reg = metrics_new();
    struct metric *m =
        metrics_add(reg, METRIC_COUNTER, "esc_total", "Help with \\ and\nnewline.", "v", NULL, 0);
    const char *v[] = {"a\\b\"c\nd"};
    metric_add(metric_series(m, v), 1);
    const char *plain[] = {"caf\xc3\xa9 ok"};
    metric_add(metric_series(m, plain), 2);
    struct buf b = BUF_INIT;
    CHECK_STR_EQ(render(reg, &b), "# HELP esc_total Help with \\\\ and\\nnewline.\n"
                                  "# TYPE esc_total counter\n"
                                  "esc_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"
                                  "esc_total{v=\"caf\xc3\xa9 ok\"} 2\n");
    buf_free(&b);
    metrics_free(reg);
}

static void test_limit(void)
{
    struct metrics *reg = metrics_new();
    struct metric *m = metrics_add(reg, METRIC_COUNTER, "inc_total", "Increments.",
                                   "counter_name,region", NULL, 0);
    metric_limit(m, 2, 0);
    const char *a[] = {"a", "r1"}, *bb[] = {"b", "r1"}, *c[] = {"c", "r1"}, *d[] = {"d", "r1"},
               *e[] = {"e", "r2"};
    struct metric_series *sa = metric_series(m, a), *sb = metric_series(m, bb);
    metric_add(sa, 1);
    metric_add(sb, 2);
    struct metric_series *sc = metric_series(m, c), *sd = metric_series(m, d);
    CHECK(sc == sd); /* both folded into the same "_other" series */
    CHECK(sc != sa && sc != sb);
    metric_add(sc, 3);
    metric_add(sd, 4);
    /* Series that existed before the limit are still their own. */
    CHECK(metric_series(m, a) == sa);
    metric_add(metric_series(m, a), 10);
    /* The other labels are kept. */
    metric_add(metric_series(m, e), 5);
    struct buf b = BUF_INIT;
    CHECK_STR_EQ(render(reg, &b), "# HELP inc_total Increments.\n"
                                  "# TYPE inc_total counter\n"
                                  "inc_total{counter_name=\"a\",region=\"r1\"} 11\n"
                                  "inc_total{counter_name=\"b\",region=\"r1\"} 2\n"
                                  "inc_total{counter_name=\"_other\",region=\"r1\"} 7\n"
                                  "inc_total{counter_name=\"_other\",region=\"r2\"} 5\n");
    /* Many more names add no line. */
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "n%d", i);
        const char *v[] = {name, "r1"};
        metric_add(metric_series(m, v), 1);
    }
    render(reg, &b);
    CHECK_LINE(b.data, "inc_total{counter_name=\"_other\",region=\"r1\"} 1007");
    int lines = 0;
    for (const char *p = b.data; *p; p++)
        lines += *p == '\n';
    CHECK_EQ_I64(lines, 6);
    buf_free(&b);
    metrics_free(reg);
}

static int calls;
static double read_gauge(void *arg)
{
    calls++;
    return *(double *)arg;
}

static void test_set_fn(void)
{
    struct metrics *reg = metrics_new();
    struct metric *m =
        metrics_add(reg, METRIC_GAUGE, "open_conns", "Open connections.", "role", NULL, 0);
    double value = 3;
    const char *role[] = {"region"};
    metric_set_fn(metric_series(m, role), read_gauge, &value);
    struct buf b = BUF_INIT;
    calls = 0;
    CHECK_LINE(render(reg, &b), "open_conns{role=\"region\"} 3");
    CHECK_EQ_I64(calls, 1);
    value = 17;
    CHECK_LINE(render(reg, &b), "open_conns{role=\"region\"} 17"); /* read at render time */
    CHECK_EQ_I64(calls, 2);
    buf_free(&b);
    metrics_free(reg);
}

/* Many series, long label values: each is found again. */
static void test_many_series(void)
{
    struct metrics *reg = metrics_new();
    struct metric *m = metrics_add(reg, METRIC_COUNTER, "many_total", "Many.", "a,b", NULL, 0);
    enum { N = 3000 };
    static struct metric_series *got[N];
    char x[40], y[700];
    for (int i = 0; i < N; i++) {
        snprintf(x, sizeof x, "x%d", i);
        int yl = i % 10 == 0 ? 600 : 3; /* some keys longer than any stack buffer */
        memset(y, 'y', (size_t)yl);
        snprintf(y + yl, sizeof y - (size_t)yl, "%d", i);
        const char *v[] = {x, y};
        got[i] = metric_series(m, v);
        metric_add(got[i], i);
    }
    long bad = 0;
    for (int i = 0; i < N; i++) {
        snprintf(x, sizeof x, "x%d", i);
        int yl = i % 10 == 0 ? 600 : 3;
        memset(y, 'y', (size_t)yl);
        snprintf(y + yl, sizeof y - (size_t)yl, "%d", i);
        const char *v[] = {x, y};
        bad += metric_series(m, v) != got[i];
        /* Label values are separate: ("x1","2y") is not ("x12","y"). */
        if (i > 0)
            bad += got[i] == got[i - 1];
    }
    CHECK_EQ_I64(bad, 0);
    const char *s1[] = {"ab", "c"}, *s2[] = {"a", "bc"};
    CHECK(metric_series(m, s1) != metric_series(m, s2));
    struct buf b = BUF_INIT;
    render(reg, &b);
    CHECK_LINE(b.data, "many_total{a=\"x2999\",b=\"yyy2999\"} 2999");
    buf_free(&b);
    metrics_free(reg);
}

/* Gauges named like a histogram's samples are declared untyped (promtool's lint). */
static void test_reserved_suffixes(void)
{
    struct metrics *reg = metrics_new();
    metric_set(metric_only(metrics_add(reg, METRIC_GAUGE, "local_count", "A gauge.", "", NULL, 0)),
               3);
    metric_only(metrics_add(reg, METRIC_GAUGE, "x_sum", "A gauge.", "", NULL, 0));
    metric_only(metrics_add(reg, METRIC_GAUGE, "x_bucket", "A gauge.", "", NULL, 0));
    metric_only(metrics_add(reg, METRIC_GAUGE, "x_counted", "A gauge.", "", NULL, 0));
    metric_only(metrics_add(reg, METRIC_COUNTER, "x_count_total", "A counter.", "", NULL, 0));
    struct buf b = BUF_INIT;
    render(reg, &b);
    CHECK_LINE(b.data, "# TYPE local_count untyped");
    CHECK_LINE(b.data, "local_count 3");
    CHECK_LINE(b.data, "# TYPE x_sum untyped");
    CHECK_LINE(b.data, "# TYPE x_bucket untyped");
    CHECK_LINE(b.data, "# TYPE x_counted gauge");
    CHECK_LINE(b.data, "# TYPE x_count_total counter");
    buf_free(&b);
    metrics_free(reg);
}

/* A collector runs before each render; a loaded histogram renders like an observed one. */
struct tallies {
    int runs;
    uint64_t hits;
    uint64_t counts[4];
    double sum;
    struct metric_series *hits_s, *hist_s;
};

static void collect(void *arg)
{
    struct tallies *t = arg;
    t->runs++;
    metric_set(t->hits_s, (double)t->hits);
    metric_load_histogram(t->hist_s, t->counts, t->sum);
}

static void test_collector(void)
{
    struct metrics *reg = metrics_new();
    static const double bounds[] = {0.5, 1, 2.5};
    struct tallies *t = xcalloc(1, sizeof *t);
    t->hits_s = metric_only(metrics_add(reg, METRIC_COUNTER, "hits_total", "Hits.", "", NULL, 0));
    t->hist_s =
        metric_only(metrics_add(reg, METRIC_HISTOGRAM, "lat_seconds", "Latency.", "", bounds, 3));
    metrics_add_collector(reg, collect, t, free); /* the registry frees t */
    struct buf b = BUF_INIT;
    render(reg, &b);
    CHECK_EQ_I64(t->runs, 1);
    CHECK_LINE(b.data, "hits_total 0");
    CHECK_LINE(b.data, "lat_seconds_count 0");
    t->hits = 7;
    t->counts[0] = 2; /* <= 0.5 */
    t->counts[2] = 1; /* <= 2.5 */
    t->counts[3] = 4; /* above */
    t->sum = 25.5;
    CHECK_STR_EQ(render(reg, &b), "# HELP hits_total Hits.\n"
                                  "# TYPE hits_total counter\n"
                                  "hits_total 7\n"
                                  "# HELP lat_seconds Latency.\n"
                                  "# TYPE lat_seconds histogram\n"
                                  "lat_seconds_bucket{le=\"0.5\"} 2\n"
                                  "lat_seconds_bucket{le=\"1\"} 2\n"
                                  "lat_seconds_bucket{le=\"2.5\"} 3\n"
                                  "lat_seconds_bucket{le=\"+Inf\"} 7\n"
                                  "lat_seconds_sum 25.5\n"
                                  "lat_seconds_count 7\n");
    CHECK_EQ_I64(t->runs, 2);
    buf_free(&b);
    metrics_free(reg);
}

UNIT_MAIN("test_metrics", UNIT_CASE(test_render_small), UNIT_CASE(test_histogram_cumulative),
          UNIT_CASE(test_escaping), UNIT_CASE(test_limit), UNIT_CASE(test_set_fn),
          UNIT_CASE(test_many_series), UNIT_CASE(test_reserved_suffixes), UNIT_CASE(test_collector))
