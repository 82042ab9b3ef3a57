/*
 * test_crc32c.c - known-answer tests of CRC-32C (core/base/crc32c.c), the checksum of every
 * log and snapshot record.
 *
 * The log's writer and reader share this function, so a wrong polynomial, table or
 * reflection would pass every round-trip test while making the files unreadable by any
 * other CRC-32C (and the other way round). These checks compare it with published values
 * instead: the CRC catalogue's check value and the test vectors of RFC 3720 (iSCSI),
 * appendix B.4, plus a bit-at-a-time reference over every length and alignment the
 * eight-bytes-a-step loop can see. Never include this from core/.
 */
#include <stdint.h>
#include <string.h>

#include "base/crc32c.h"
#include "unit.h"
#include "unit_crc32c.h"

/* The check value of the CRC catalogue (and of every CRC-32C implementation's tests). */
static void test_check_value(void)
{
    CHECK_EQ_U64(crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_U64(crc32c(0, "", 0), 0);
    CHECK_EQ_U64(crc32c_bitwise((const unsigned char *)"123456789", 9), 0xE3069283u);
}

/*
 * RFC 3720 (iSCSI), B.4 "CRC Examples". The RFC lists each CRC as the bytes sent on the
 * wire, least significant first: "aa 36 91 8a" is 0x8A9136AA.
 */
static void test_rfc3720_vectors(void)
{
    unsigned char b[48];
    memset(b, 0, 32);
    CHECK_EQ_U64(crc32c(0, b, 32), 0x8A9136AAu); /* 32 bytes of zeros */
    memset(b, 0xFF, 32);
    CHECK_EQ_U64(crc32c(0, b, 32), 0x62A8AB43u); /* 32 bytes of ones */
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    CHECK_EQ_U64(crc32c(0, b, 32), 0x46DD794Eu); /* 32 incrementing bytes */
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(31 - i);
    CHECK_EQ_U64(crc32c(0, b, 32), 0x113FDB5Cu); /* 32 decrementing bytes */
    /* An iSCSI read command PDU. */
    static const unsigned char pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    CHECK_EQ_U64(crc32c(0, pdu, sizeof pdu), 0xD9963A56u);
    CHECK_EQ_U64(crc32c_bitwise(pdu, sizeof pdu), 0xD9963A56u);
}

/* Every length from 0 to 200 at every alignment 0..7 (the fast loop reads eight bytes a
 * step, the tail one at a time), and the same data fed in two pieces. */
static void test_lengths_alignments_and_pieces(void)
{
    struct unit_rng r;
    rng_init(&r, "crc32c");
    unsigned char data[216];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)rng_u64(&r);
    for (size_t align = 0; align < 8; align++) {
        for (size_t n = 0; n <= 200; n++) {
            unit_context("alignment %zu, length %zu", align, n);
            const unsigned char *p = data + align;
            uint32_t want = crc32c_bitwise(p, n);
            CHECK_EQ_U64(crc32c(0, p, n), want);
            size_t cut = n ? (size_t)rng_below(&r, n + 1) : 0;
            CHECK_EQ_U64(crc32c(crc32c(0, p, cut), p + cut, n - cut), want);
        }
    }
    unit_context("%s", "");
}

UNIT_MAIN("test_crc32c", UNIT_CASE(test_check_value), UNIT_CASE(test_rfc3720_vectors),
          UNIT_CASE(test_lengths_alignments_and_pieces))
