/* SPDX-License-Identifier: MIT */
#include "checksum.h"

#include <stdlib.h>
#include <string.h>

uint32_t adler32(const unsigned char* data, size_t len) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < len; ++i) {
        a = (a + data[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (b << 16) | a;
}

char* reverse_words(const char* s) {
    size_t len = strlen(s);
    char* out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0, end = len;
    while (end > 0) {
        size_t start = end;
        while (start > 0 && s[start - 1] != ' ')
            --start;
        memcpy(out + o, s + start, end - start);
        o += end - start;
        if (start > 0)
            out[o++] = ' ';
        end = start > 0 ? start - 1 : 0;
    }
    out[o] = '\0';
    return out;
}
