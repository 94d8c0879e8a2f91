/*
 * One structured log line format for the whole program (the broker's blog.h
 * uses it too): `ts=<ISO 8601 UTC> level=<level> event=<event> key=value...`
 * on stderr, one line per call, written with one fputs so lines from
 * different threads do not interleave. Storage code logs through slog() so
 * recovery and fsync failures read like every other broker event.
 */
#ifndef VERITY_STORAGE_SLOG_H
#define VERITY_STORAGE_SLOG_H

#include <stdarg.h>
#include <stddef.h>

/* Emits one line; fmt (may be NULL) gives the key=value fields. */
void slog(const char *level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void slog_v(const char *level, const char *event, const char *fmt, va_list ap);

/* s as one value: quoted and escaped when it holds a space, quote, '=' or
 * a control character. Returns buf. */
const char *slog_q(const char *s, char *buf, size_t cap);

#endif
