/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every log and snapshot record.
 */
#ifndef COUNTERD_BASE_CRC32C_H
#define COUNTERD_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over data[0..len). */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
