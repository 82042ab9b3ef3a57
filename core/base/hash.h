/*
 * hash.h - keyed hashing for tables whose keys come from clients.
 *
 * Counter names are chosen by whoever sends requests, so the store's table uses a keyed
 * SipHash with a per-process random key, as Redis does, instead of an unkeyed hash that a
 * client could flood with collisions. The variant is SipHash-1-3 (one compression round,
 * three finalization rounds: Rust's and CPython's choice for hash tables); Redis uses
 * SipHash-1-2. tests/unit/test_hash.c checks it against published SipHash-1-3 values.
 */
#ifndef COUNTERD_BASE_HASH_H
#define COUNTERD_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-1-3 of data[0..len) under key (as the reference implementation reads it: two
 * little-endian 64-bit halves). */
uint64_t siphash13(const void *data, size_t len, const uint8_t key[16]);

/* Fills the process-wide key from the OS' random source (once; later calls do nothing). */
void hash_seed_init(void);
/* SipHash-1-3 of data under the process-wide key. */
uint64_t hash_bytes(const void *data, size_t len);

/* 64 random bits from the OS (getrandom), for incarnation ids and seeds. */
uint64_t hash_random_u64(void);
/* 64 bits from a per-thread xoshiro256** seeded once from the OS: unique tokens on a hot
 * path without a system call each. Not for secrets. */
uint64_t hash_fast_random_u64(void);

#endif
