/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI,
 * ext4 and Kafka. crc32c() picks the SSE4.2 instruction when the CPU has it
 * (checked once with cpuid) and falls back to a slicing-by-8 table otherwise.
 * The two paths are exported so tests can check each against the published
 * vectors. All functions are pure and thread-safe.
 */
#ifndef VERITY_CRC32C_H
#define VERITY_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over len bytes of buf; returns the new CRC. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* Only valid when crc32c_hw_available() returned 1. */
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len);
int crc32c_hw_available(void);

#endif
