/*
 * unit_crc32c.h - CRC-32C one bit at a time, straight from its definition (reflected,
 * polynomial 0x1EDC6F41, whose reflection is 0x82F63B78; initial and final value all
 * ones): the reference test_crc32c checks against published values, and test_wal writes
 * a record's bytes with, so the log's checksum must be the standard one, not merely the
 * one its reader shares with its writer. Never include this from core/.
 */
#ifndef COUNTERD_TESTS_UNIT_CRC32C_H
#define COUNTERD_TESTS_UNIT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t crc32c_bitwise(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
}

#endif
