/*
 * test_base64.c - base64 (core/base/base64.c): RFC 4648's test vectors both ways, round
 * trips of random bytes, and the non-canonical inputs the strict decoder refuses.
 * Never include this from core/.
 */
#include <string.h>

#include "base/base64.h"
#include "unit.h"

static const char *const vectors[][2] = {{"", ""},
                                         {"f", "Zg=="},
                                         {"fo", "Zm8="},
                                         {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="},
                                         {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};

static void test_rfc4648_vectors(void)
{
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        unit_context("vector %zu", i);
        buf_reset(&b);
        base64_encode(&b, vectors[i][0], strlen(vectors[i][0]));
        CHECK_MEM_EQ(b.data, b.len, vectors[i][1], strlen(vectors[i][1]));
        char out[16];
        long n = base64_decode(vectors[i][1], strlen(vectors[i][1]), out, sizeof out);
        CHECK_EQ_I64(n, (long)strlen(vectors[i][0]));
        if (n >= 0)
            CHECK_MEM_EQ(out, (size_t)n, vectors[i][0], strlen(vectors[i][0]));
    }
    buf_free(&b);
}

static void test_random_round_trips(void)
{
    struct buf b = BUF_INIT;
    unsigned char in[300], out[300];
    struct unit_rng rng;
    rng_init(&rng, "base64_round_trips");
    long iters = unit_iters(2000);
    for (long it = 0; it < iters; it++) {
        size_t n = (size_t)rng_below(&rng, sizeof in);
        for (size_t i = 0; i < n; i++)
            in[i] = (unsigned char)rng_u64(&rng);
        buf_reset(&b);
        base64_encode(&b, in, n);
        unit_context("iteration %ld, %zu bytes", it, n);
        CHECK_EQ_I64((long)b.len, (long)((n + 2) / 3 * 4));
        long m = base64_decode(b.data, b.len, out, sizeof out);
        CHECK_EQ_I64(m, (long)n);
        if (m == (long)n)
            CHECK_MEM_EQ(out, n, in, n);
    }
    buf_free(&b);
}

static void test_refuses_what_is_not_canonical(void)
{
    static const char *const bad[] = {"Zg",   "Zg=",      "Zh==", "Zm9=", "Z===", "Zm9v\n",
                                      "Zm 9", "Zg==Zg==", "=Zg=", "Zm-v", "Zm_v", "@@@@"};
    char out[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unit_context("input '%s'", bad[i]);
        CHECK_EQ_I64(base64_decode(bad[i], strlen(bad[i]), out, sizeof out), -1);
    }
    /* Too small an output is an error, never an overrun. */
    CHECK_EQ_I64(base64_decode("Zm9vYmFy", 8, out, 5), -1);
    CHECK_EQ_I64(base64_decode("Zm9vYmFy", 8, out, 6), 6);
}

UNIT_MAIN("test_base64", UNIT_CASE(test_rfc4648_vectors), UNIT_CASE(test_random_round_trips),
          UNIT_CASE(test_refuses_what_is_not_canonical))
