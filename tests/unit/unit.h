/*
 * unit.h - the tiny harness every tests/unit/test_<module>.c includes: checks that print
 * file:line and both values, a seeded PRNG, an iteration scale, and a run-all main.
 *
 * No external framework, on purpose: the checks must read like the code they test, and
 * a failing check must say exactly what it compared. A check that fails does not stop
 * the test (the next ones still run) unless it is a REQUIRE, which returns from the test
 * function. Never include this from core/.
 *
 * Environment:
 *   COUNTERD_TEST_SEED=<n>    replay a run (the seed is printed at the start)
 *   COUNTERD_TEST_SCALE=<x>   multiply iteration counts (0.1 under valgrind)
 *   argv[1]                   run only the tests whose name contains it
 */
#ifndef COUNTERD_TESTS_UNIT_H
#define COUNTERD_TESTS_UNIT_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Failures printed per test before the rest are only counted: a broken property test
 * would otherwise print thousands of lines. */
#define UNIT_MAX_PRINTED 25

struct unit_state {
    const char *test;  /* the test running now */
    long fails;        /* failed checks in this test */
    long total_fails;  /* in the whole run */
    long checks;       /* checks made in the whole run */
    uint64_t seed;     /* the run's seed */
    double scale;      /* COUNTERD_TEST_SCALE */
    char context[256]; /* printed with each failure (e.g. "iteration 17") */
};

static struct unit_state unit_g;

static inline void unit_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void unit_context(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(unit_g.context, sizeof unit_g.context, fmt, ap);
    va_end(ap);
}

static inline void unit_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void unit_fail(const char *file, int line, const char *fmt, ...)
{
    unit_g.fails++;
    unit_g.total_fails++;
    if (unit_g.fails > UNIT_MAX_PRINTED) {
        if (unit_g.fails == UNIT_MAX_PRINTED + 1)
            fprintf(stderr, "  ... further failures in %s are counted, not printed\n", unit_g.test);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: FAIL in %s: ", file, line, unit_g.test ? unit_g.test : "?");
    vfprintf(stderr, fmt, ap);
    if (unit_g.context[0])
        fprintf(stderr, " [%s]", unit_g.context);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* Prints a byte string readably (for string checks). */
static inline void unit_print_bytes(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    size_t shown = n > 300 ? 300 : n;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            fputc(c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
    fputc('"', f);
    if (shown < n)
        fprintf(f, "...(%zu bytes)", n);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        unit_g.checks++;                                                                           \
        if (!(cond))                                                                               \
            unit_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                     \
    } while (0)

/* Like CHECK, but a failure ends the test function (which must return void). */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        unit_g.checks++;                                                                           \
        if (!(cond)) {                                                                             \
            unit_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);                                   \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_I64(a, b)                                                                         \
    do {                                                                                           \
        int64_t unit_a_ = (int64_t)(a), unit_b_ = (int64_t)(b);                                    \
        unit_g.checks++;                                                                           \
        if (unit_a_ != unit_b_)                                                                    \
            unit_fail(__FILE__, __LINE__, "CHECK_EQ_I64(%s, %s): %" PRId64 " != %" PRId64, #a, #b, \
                      unit_a_, unit_b_);                                                           \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        uint64_t unit_a_ = (uint64_t)(a), unit_b_ = (uint64_t)(b);                                 \
        unit_g.checks++;                                                                           \
        if (unit_a_ != unit_b_)                                                                    \
            unit_fail(__FILE__, __LINE__, "CHECK_EQ_U64(%s, %s): %" PRIu64 " != %" PRIu64, #a, #b, \
                      unit_a_, unit_b_);                                                           \
    } while (0)

/* Exact comparison of doubles (the values compared are exact by construction). */
#define CHECK_EQ_DBL(a, b)                                                                         \
    do {                                                                                           \
        double unit_a_ = (double)(a), unit_b_ = (double)(b);                                       \
        unit_g.checks++;                                                                           \
        if (!(unit_a_ == unit_b_))                                                                 \
            unit_fail(__FILE__, __LINE__, "CHECK_EQ_DBL(%s, %s): %.17g != %.17g", #a, #b, unit_a_, \
                      unit_b_);                                                                    \
    } while (0)

#define CHECK_MEM_EQ(a, alen, b, blen)                                                             \
    do {                                                                                           \
        const char *unit_a_ = (const char *)(a), *unit_b_ = (const char *)(b);                     \
        size_t unit_al_ = (size_t)(alen), unit_bl_ = (size_t)(blen);                               \
        unit_g.checks++;                                                                           \
        if (unit_al_ != unit_bl_ || (unit_al_ && memcmp(unit_a_, unit_b_, unit_al_) != 0)) {       \
            unit_fail(__FILE__, __LINE__, "CHECK_MEM_EQ(%s, %s): values follow", #a, #b);          \
            if (unit_g.fails <= UNIT_MAX_PRINTED) {                                                \
                fprintf(stderr, "    got:      ");                                                 \
                unit_print_bytes(stderr, unit_a_, unit_al_);                                       \
                fprintf(stderr, "\n    expected: ");                                               \
                unit_print_bytes(stderr, unit_b_, unit_bl_);                                       \
                fprintf(stderr, "\n");                                                             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                         \
    do {                                                                                           \
        const char *unit_s_ = (a), *unit_t_ = (b);                                                 \
        if (!unit_s_ || !unit_t_) {                                                                \
            unit_g.checks++;                                                                       \
            if (unit_s_ != unit_t_)                                                                \
                unit_fail(__FILE__, __LINE__, "CHECK_STR_EQ(%s, %s): %s is NULL", #a, #b,          \
                          unit_s_ ? #b : #a);                                                      \
        } else {                                                                                   \
            CHECK_MEM_EQ(unit_s_, strlen(unit_s_), unit_t_, strlen(unit_t_));                      \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------- PRNG and scale */

/* xoshiro256** seeded through splitmix64: fast, good enough, reproducible. */
struct unit_rng {
    uint64_t s[4];
};

static inline uint64_t unit_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t unit_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_u64(struct unit_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = unit_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = unit_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n) (n > 0); the modulo bias is irrelevant at test sizes. */
static inline uint64_t rng_below(struct unit_rng *r, uint64_t n)
{
    return rng_u64(r) % n;
}

/* Uniform in [lo, hi]. */
static inline int64_t rng_range(struct unit_rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)rng_below(r, (uint64_t)(hi - lo) + 1);
}

/* A generator for one test: the run's seed mixed with the test's name, so a test gives
 * the same sequence whether it runs alone (argv filter) or with the others. */
static inline void rng_init(struct unit_rng *r, const char *salt)
{
    uint64_t x = unit_g.seed;
    for (const char *p = salt; *p; p++)
        x = (x ^ (unsigned char)*p) * 0x100000001B3ULL;
    for (int i = 0; i < 4; i++)
        r->s[i] = unit_splitmix(&x);
}

/* n scaled by COUNTERD_TEST_SCALE, at least 1. */
static inline long unit_iters(long n)
{
    double v = (double)n * unit_g.scale;
    return v < 1 ? 1 : (long)v;
}

/* ---------------------------------------------------------------- runner */

struct unit_case {
    const char *name;
    void (*fn)(void);
};

#define UNIT_CASE(fn)                                                                              \
    {                                                                                              \
#fn, fn                                                                                    \
    }

static inline double unit_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int unit_run(const char *suite, const struct unit_case *cases, size_t n, int argc,
                           char **argv)
{
    const char *env = getenv("COUNTERD_TEST_SEED");
    if (env && *env) {
        unit_g.seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec;
        unit_g.seed = unit_splitmix(&x);
    }
    env = getenv("COUNTERD_TEST_SCALE");
    unit_g.scale = env && *env ? strtod(env, NULL) : 1.0;
    if (!(unit_g.scale > 0))
        unit_g.scale = 1.0;
    const char *filter = argc > 1 ? argv[1] : NULL;
    printf("%s: seed %" PRIu64 " (COUNTERD_TEST_SEED=%" PRIu64 " to replay), scale %g\n", suite,
           unit_g.seed, unit_g.seed, unit_g.scale);
    fflush(stdout);

    int failed_tests = 0, ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter && !strstr(cases[i].name, filter))
            continue;
        unit_g.test = cases[i].name;
        unit_g.fails = 0;
        unit_g.context[0] = '\0';
        double t0 = unit_now_s();
        cases[i].fn();
        double dt = unit_now_s() - t0;
        ran++;
        if (unit_g.fails) {
            failed_tests++;
            printf("FAIL %-40s %ld failed check(s), %.2fs\n", cases[i].name, unit_g.fails, dt);
        } else {
            printf("ok   %-40s %.2fs\n", cases[i].name, dt);
        }
        fflush(stdout);
        fflush(stderr);
    }
    printf("%s: %d test(s), %d failed, %ld checks, %ld failed checks (seed %" PRIu64 ")\n", suite,
           ran, failed_tests, unit_g.checks, unit_g.total_fails, unit_g.seed);
    if (ran == 0) {
        printf("%s: no test matches '%s'\n", suite, filter ? filter : "");
        return 1;
    }
    return failed_tests ? 1 : 0;
}

#define UNIT_MAIN(suite, ...)                                                                      \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        static const struct unit_case unit_cases_[] = {__VA_ARGS__};                               \
        return unit_run(suite, unit_cases_, sizeof unit_cases_ / sizeof *unit_cases_, argc, argv); \
    }

#endif
