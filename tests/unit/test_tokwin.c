/*
 * test_tokwin.c - core/store/tokwin.c directly (test_dedup drives it through dedup.c, whose
 * payload is fixed): payloads of any length up to 64 KiB, the key-length bound, a replaced
 * key moving to the tail with a new sequence number, tokwin_foreach after any sequence
 * number, and a random run against a plain model (an array in insertion order) that also
 * exercises the table's growth and the remembered miss of a get followed by its put.
 *
 * Time is passed explicitly. Never include this from core/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/tokwin.h"
#include "unit.h"

static uint64_t put_s(struct tokwin *w, const char *c, const char *t, double now, const char *p)
{
    return tokwin_put(w, c, strlen(c), t, strlen(t), now, p, strlen(p));
}

/* The payload as a string ("" when absent). */
static const char *get_s(struct tokwin *w, const char *c, const char *t, double now)
{
    static char out[256];
    size_t len = 0;
    const void *p = tokwin_get(w, c, strlen(c), t, strlen(t), now, &len, NULL);
    if (!p)
        return "";
    snprintf(out, sizeof out, "%.*s", (int)len, (const char *)p);
    return out;
}

/* tokwin_foreach into a string: "counter/token=payload@seq;" per entry. */
struct walk {
    char s[4096];
    int n;
};

static void on_entry(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
                     double at, const void *payload, size_t len, uint64_t seq)
{
    (void)at;
    struct walk *wk = arg;
    size_t used = strlen(wk->s);
    snprintf(wk->s + used, sizeof wk->s - used, "%.*s/%.*s=%.*s@%llu;", (int)clen, counter,
             (int)tlen, token, (int)len, (const char *)payload, (unsigned long long)seq);
    wk->n++;
}

static const char *walk_after(struct tokwin *w, uint64_t after)
{
    static struct walk wk;
    memset(&wk, 0, sizeof wk);
    tokwin_foreach(w, after, on_entry, &wk);
    return wk.s;
}

static void test_basics(void)
{
    struct tokwin *w = tokwin_new(10, 60);
    CHECK_EQ_U64(tokwin_seq(w), 0);
    CHECK_EQ_DBL(tokwin_oldest_at(w), 0);
    CHECK_STR_EQ(walk_after(w, 0), "");
    CHECK_EQ_U64(put_s(w, "views", "a", 100, "A1"), 1);
    CHECK_EQ_U64(put_s(w, "views", "b", 101, "B1"), 2);
    CHECK_EQ_U64(put_s(w, "clicks", "a", 102, "C1"), 3);
    CHECK_EQ_U64(tokwin_count(w), 3);
    CHECK_STR_EQ(get_s(w, "views", "a", 103), "A1");
    CHECK_STR_EQ(get_s(w, "clicks", "a", 103), "C1");
    CHECK_STR_EQ(get_s(w, "views", "c", 103), "");
    /* The key is (counter, token): no mixing by concatenation. */
    CHECK_EQ_U64(put_s(w, "ab", "c", 103, "X"), 4);
    CHECK_STR_EQ(get_s(w, "a", "bc", 103), "");
    CHECK_STR_EQ(get_s(w, "ab", "c", 103), "X");
    double at = -1;
    size_t len = 99;
    CHECK(tokwin_get(w, "views", 5, "b", 1, 104, &len, &at) != NULL);
    CHECK_EQ_DBL(at, 101);
    CHECK_EQ_U64(len, 2);
    CHECK_EQ_DBL(tokwin_oldest_at(w), 100);

    /* A replaced key: the new payload, a new sequence number, moved to the tail. */
    CHECK_EQ_U64(put_s(w, "views", "a", 105, "A2"), 5);
    CHECK_EQ_U64(tokwin_count(w), 4);
    CHECK_STR_EQ(get_s(w, "views", "a", 105), "A2");
    CHECK_EQ_DBL(tokwin_oldest_at(w), 101);
    CHECK_STR_EQ(walk_after(w, 0), "views/b=B1@2;clicks/a=C1@3;ab/c=X@4;views/a=A2@5;");
    CHECK_STR_EQ(walk_after(w, 2), "clicks/a=C1@3;ab/c=X@4;views/a=A2@5;");
    CHECK_STR_EQ(walk_after(w, 1), "views/b=B1@2;clicks/a=C1@3;ab/c=X@4;views/a=A2@5;");
    CHECK_STR_EQ(walk_after(w, 4), "views/a=A2@5;");
    CHECK_STR_EQ(walk_after(w, 5), "");
    CHECK_STR_EQ(walk_after(w, 99), "");
    CHECK_EQ_U64(tokwin_seq(w), 5);
    tokwin_free(w);
    tokwin_free(NULL);
}

static void test_window_and_bound(void)
{
    struct tokwin *w = tokwin_new(3, 10);
    put_s(w, "c", "1", 0, "p1");
    put_s(w, "c", "2", 5, "p2");
    /* Exactly window_s old: still there; a moment later: gone. */
    CHECK_STR_EQ(get_s(w, "c", "1", 10), "p1");
    CHECK_STR_EQ(get_s(w, "c", "1", 10.001), "");
    CHECK_EQ_U64(tokwin_count(w), 1);
    CHECK_EQ_U64(tokwin_evicted_young(w), 0);
    /* Over the bound: the oldest goes, young, and is counted. */
    put_s(w, "c", "3", 11, "p3");
    put_s(w, "c", "4", 12, "p4");
    put_s(w, "c", "5", 13, "p5");
    CHECK_EQ_U64(tokwin_count(w), 3);
    CHECK_EQ_U64(tokwin_evicted_young(w), 1);
    CHECK_STR_EQ(get_s(w, "c", "2", 13), "");
    CHECK_STR_EQ(get_s(w, "c", "3", 13), "p3");
    CHECK_EQ_DBL(tokwin_oldest_at(w), 11);
    CHECK_STR_EQ(walk_after(w, 0), "c/3=p3@3;c/4=p4@4;c/5=p5@5;");
    /* Everything out of time: empty, the sequence goes on. */
    CHECK_STR_EQ(get_s(w, "c", "5", 100), "");
    CHECK_EQ_U64(tokwin_count(w), 0);
    CHECK_EQ_DBL(tokwin_oldest_at(w), 0);
    CHECK_EQ_U64(put_s(w, "c", "6", 100, "p6"), 6);
    tokwin_free(w);

    /* max_entries 0 is taken as 1. */
    w = tokwin_new(0, 10);
    put_s(w, "c", "1", 0, "a");
    put_s(w, "c", "2", 0, "b");
    CHECK_EQ_U64(tokwin_count(w), 1);
    CHECK_STR_EQ(get_s(w, "c", "2", 0), "b");
    tokwin_free(w);
}

static void test_limits(void)
{
    struct tokwin *w = tokwin_new(10, 60);
    char key[TOKWIN_KEY_MAX + 2];
    memset(key, 'k', sizeof key);
    /* counter + 1 + token == TOKWIN_KEY_MAX: taken; one more byte: refused (0, NULL). */
    size_t tlen = TOKWIN_KEY_MAX - 1 - 5;
    CHECK_EQ_U64(tokwin_put(w, "views", 5, key, tlen, 1, "p", 1), 1);
    size_t len = 0;
    CHECK(tokwin_get(w, "views", 5, key, tlen, 1, &len, NULL) != NULL);
    CHECK_EQ_U64(tokwin_put(w, "views", 5, key, tlen + 1, 1, "p", 1), 0);
    CHECK(tokwin_get(w, "views", 5, key, tlen + 1, 1, &len, NULL) == NULL);
    CHECK_EQ_U64(tokwin_count(w), 1);
    CHECK_EQ_U64(tokwin_seq(w), 1);

    /* Payloads: empty, and up to 65535 bytes exactly; 65536 refused. */
    CHECK_EQ_U64(tokwin_put(w, "views", 5, "e", 1, 1, "", 0), 2);
    len = 99;
    CHECK(tokwin_get(w, "views", 5, "e", 1, 1, &len, NULL) != NULL);
    CHECK_EQ_U64(len, 0);
    char *big = malloc(65536);
    REQUIRE(big != NULL);
    for (size_t i = 0; i < 65536; i++)
        big[i] = (char)(i * 7);
    CHECK_EQ_U64(tokwin_put(w, "views", 5, "big", 3, 1, big, 65535), 3);
    const void *p = tokwin_get(w, "views", 5, "big", 3, 1, &len, NULL);
    REQUIRE(p != NULL);
    CHECK_MEM_EQ(p, len, big, 65535);
    CHECK_EQ_U64(tokwin_put(w, "views", 5, "big2", 4, 1, big, 65536), 0);
    CHECK_EQ_U64(tokwin_count(w), 3);
    free(big);
    tokwin_free(w);
}

/* ---------------------------------------------------------------- against a model */

struct mentry {
    char key[24];
    char payload[24];
    double at;
    uint64_t seq;
};

struct model {
    struct mentry *e; /* insertion order, oldest first */
    size_t n, max;
    double window;
    uint64_t seq, young;
};

static void m_expire(struct model *m, double now)
{
    size_t drop = 0;
    while (drop < m->n && (now - m->e[drop].at > m->window || m->n - drop > m->max)) {
        if (now - m->e[drop].at <= m->window)
            m->young++;
        drop++;
    }
    memmove(m->e, m->e + drop, (m->n - drop) * sizeof *m->e);
    m->n -= drop;
}

static struct mentry *m_find(struct model *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->e[i].key, key))
            return &m->e[i];
    return NULL;
}

static void m_put(struct model *m, const char *key, double now, const char *payload)
{
    struct mentry *old = m_find(m, key);
    if (old) {
        size_t i = (size_t)(old - m->e);
        memmove(m->e + i, m->e + i + 1, (m->n - i - 1) * sizeof *m->e);
        m->n--;
    }
    struct mentry *e = &m->e[m->n++];
    snprintf(e->key, sizeof e->key, "%s", key);
    snprintf(e->payload, sizeof e->payload, "%s", payload);
    e->at = now;
    e->seq = ++m->seq;
    m_expire(m, now);
}

/* tokwin_foreach against the model, entry by entry. */
struct mwalk {
    const struct model *m;
    size_t i; /* the model's next entry */
    int bad;
};

static void on_model_entry(void *arg, const char *counter, size_t clen, const char *token,
                           size_t tlen, double at, const void *payload, size_t len, uint64_t seq)
{
    struct mwalk *mw = arg;
    const struct mentry *e = mw->i < mw->m->n ? &mw->m->e[mw->i] : NULL;
    mw->i++;
    if (!e || clen != 5 || memcmp(counter, "views", 5) || tlen != strlen(e->key) ||
        memcmp(token, e->key, tlen) || len != strlen(e->payload) ||
        memcmp(payload, e->payload, len) || at != e->at || seq != e->seq)
        mw->bad++;
}

static void check_walk(struct tokwin *w, struct model *m, uint64_t after)
{
    struct mwalk mw = {m, 0, 0};
    while (mw.i < m->n && m->e[mw.i].seq <= after)
        mw.i++;
    tokwin_foreach(w, after, on_model_entry, &mw);
    CHECK_EQ_I64(mw.bad, 0);
    CHECK_EQ_U64(mw.i, m->n);
}

static void test_model(void)
{
    struct unit_rng r;
    rng_init(&r, "tokwin_model");
    long rounds = unit_iters(20);
    for (long round = 0; round < rounds; round++) {
        struct model m = {0};
        /* Small bounds, and some over 1024 entries: the table grows. */
        m.max = (size_t)(round % 3 == 2 ? rng_range(&r, 1100, 2500) : rng_range(&r, 1, 60));
        m.window = round % 3 == 2 ? 1e6 : (double)rng_range(&r, 1, 50);
        m.e = calloc(m.max + 1, sizeof *m.e);
        struct tokwin *w = tokwin_new(m.max, m.window);
        long keys = round % 3 == 2 ? rng_range(&r, 3000, 6000) : rng_range(&r, 1, 3000);
        double now = 1000;
        long ops = unit_iters(4000);
        for (long i = 0; i < ops; i++) {
            unit_context("round %ld op %ld", round, i);
            if (rng_below(&r, 4) == 0)
                now += (double)rng_below(&r, 4) * 0.5;
            char key[24], payload[24];
            snprintf(key, sizeof key, "t%ld", (long)rng_below(&r, (uint64_t)keys));
            uint64_t op = rng_below(&r, 10);
            if (op < 5) { /* get, then (usually) put: the remembered-miss path */
                m_expire(&m, now);
                struct mentry *me = m_find(&m, key);
                CHECK_STR_EQ(get_s(w, "views", key, now), me ? me->payload : "");
                if (!me || rng_below(&r, 2)) {
                    snprintf(payload, sizeof payload, "p%ld", i);
                    m_put(&m, key, now, payload);
                    CHECK_EQ_U64(put_s(w, "views", key, now, payload), m.seq);
                }
            } else if (op < 8) {
                snprintf(payload, sizeof payload, "q%ld", i);
                m_put(&m, key, now, payload);
                CHECK_EQ_U64(put_s(w, "views", key, now, payload), m.seq);
            } else if (op < 9) {
                /* A miss of another key between the get and the put. */
                char other[24];
                snprintf(other, sizeof other, "o%ld", i);
                m_expire(&m, now);
                CHECK_STR_EQ(get_s(w, "views", key, now),
                             m_find(&m, key) ? m_find(&m, key)->payload : "");
                CHECK_STR_EQ(get_s(w, "views", other, now), "");
                snprintf(payload, sizeof payload, "r%ld", i);
                m_put(&m, key, now, payload);
                CHECK_EQ_U64(put_s(w, "views", key, now, payload), m.seq);
            } else {
                m_expire(&m, now);
                tokwin_get(w, "views", 5, "none", 4, now, NULL, NULL); /* expires, as m did */
                uint64_t after = m.seq ? rng_below(&r, m.seq + 1) : 0;
                check_walk(w, &m, after);
            }
            CHECK_EQ_U64(tokwin_count(w), m.n);
            CHECK_EQ_U64(tokwin_seq(w), m.seq);
            CHECK_EQ_U64(tokwin_evicted_young(w), m.young);
            CHECK_EQ_DBL(tokwin_oldest_at(w), m.n ? m.e[0].at : 0);
            if (unit_g.fails)
                break;
        }
        unit_context("%s", "");
        tokwin_free(w);
        free(m.e);
        if (unit_g.fails)
            break;
    }
}

/* A full window reuses its evicted entry for the next put: a bigger entry than the one kept
 * gets memory of its own, a smaller one fits, and every payload reads back whole. */
static void test_reuse(void)
{
    struct tokwin *w = tokwin_new(1, 100);
    static char big[3000];
    memset(big, 'b', sizeof big - 1);
    const char *payloads[] = {"a", big, "c", "dd", big, "e"};
    for (int i = 0; i < 6; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "t%d", i);
        put_s(w, "views", tok, 1000, payloads[i]);
        size_t len = 0;
        const char *p = tokwin_get(w, "views", 5, tok, strlen(tok), 1000, &len, NULL);
        CHECK(p != NULL);
        CHECK_EQ_U64(len, strlen(payloads[i]));
        CHECK(p && memcmp(p, payloads[i], len) == 0);
        CHECK_EQ_U64(tokwin_count(w), 1);
    }
    tokwin_free(w);
}

/* An entry put with its own window (a namespace's) is forgotten after it, whatever the
 * window's default; a short one behind a long one at the head is absent at once. */
static void test_window_per_entry(void)
{
    struct tokwin *w = tokwin_new(100, 600);
    tokwin_put_for(w, "long", 4, "t", 1, 1000, "L", 1, 3600);
    tokwin_put_for(w, "short", 5, "t", 1, 1000, "S", 1, 2);
    put_s(w, "dflt", "t", 1000, "D");
    CHECK_STR_EQ(get_s(w, "short", "t", 1001.5), "S");
    CHECK_STR_EQ(get_s(w, "short", "t", 1002.5), "");
    CHECK_STR_EQ(get_s(w, "dflt", "t", 1599), "D");
    CHECK_STR_EQ(get_s(w, "dflt", "t", 1601), "");
    CHECK_STR_EQ(get_s(w, "long", "t", 4500), "L");
    CHECK_EQ_U64(tokwin_count(w), 1);
    CHECK_STR_EQ(get_s(w, "long", "t", 4601), "");
    CHECK_EQ_U64(tokwin_count(w), 0);
    tokwin_free(w);
}

UNIT_MAIN("tokwin", UNIT_CASE(test_basics), UNIT_CASE(test_window_and_bound),
          UNIT_CASE(test_window_per_entry), UNIT_CASE(test_limits), UNIT_CASE(test_model),
          UNIT_CASE(test_reuse))
