/*
 * The lexical pieces of JSON (RFC 8259) that the two single-pass scanners
 * share: the projection worker's pointer scanner (consumer/project/scan.c)
 * and the sharing gateway's line scanner (consumer/share/share_line.c).
 * Each scanner keeps its own grammar walk (one builds values for the
 * pointers it wants, the other only locates members); these are the parts
 * that must agree byte for byte: what is whitespace, what a \u escape's
 * four hex digits are, and which UTF-8 sequences are well formed.
 *
 * Header-only and inline: they sit in the scanners' innermost loops.
 */
#ifndef VERITY_CONSUMER_JSONLEX_H
#define VERITY_CONSUMER_JSONLEX_H

#include <stddef.h>

/* Advances *p past JSON whitespace (space, tab, LF, CR), not past end. */
static inline void jlex_ws(const unsigned char **p, const unsigned char *end)
{
    const unsigned char *q = *p;
    while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
        q++;
    *p = q;
}

/* The four hex digits at p (the caller checked that four bytes are there)
 * as *out. 0, or -1 when one is not a hex digit. */
static inline int jlex_hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 32) >= 'a' && (c | 32) <= 'f')
            d = (c | 32) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Length of the well-formed UTF-8 sequence at p (lead byte >= 0x80, p < end),
 * or 0: overlong forms, surrogates, values past U+10FFFF and truncated
 * sequences are not well formed (RFC 3629). */
static inline size_t jlex_utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], v, min;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80, v = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800, v = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000, v = c & 0x07;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    return n;
}

#endif
