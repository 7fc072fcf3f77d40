/* SPDX-License-Identifier: MIT */
/* A C library target, so the case builds both languages and links them together. */
#ifndef PRELOAD_DEMO_CHECKSUM_H
#define PRELOAD_DEMO_CHECKSUM_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
uint32_t adler32(const unsigned char* data, size_t len);
/* Returns a malloc'ed copy of s with the words in reverse order; the caller frees it. */
char* reverse_words(const char* s);
#ifdef __cplusplus
}
#endif
#endif
