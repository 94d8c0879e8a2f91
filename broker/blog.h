/*
 * blog: the broker's structured log. One line per notable event on stderr,
 * as key=value pairs:
 *
 *   ts=2024-05-01T12:00:00.123Z level=info event=topic_created topic=orders partitions=3
 *
 * Values that contain spaces, quotes or '=' must be passed through blog_q()
 * by the caller. Thread-safe (one fprintf per line).
 */
#ifndef VERITY_BROKER_BLOG_H
#define VERITY_BROKER_BLOG_H

#include <stddef.h>

enum blog_level { BLOG_DEBUG = 0, BLOG_INFO = 1, BLOG_WARN = 2, BLOG_ERROR = 3 };

/* Lines below this level are dropped (default BLOG_INFO). */
void blog_set_level(enum blog_level level);
/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int blog_level_parse(const char *s);

/* Writes "ts=... level=... event=<event> <fmt...>\n" to stderr. */
void blog(enum blog_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Quotes s for a key=value line into buf (cap bytes): wraps it in double
 * quotes when it holds a space, quote, '=' or control byte, escapes quotes
 * and backslashes, replaces control bytes by '?', truncates to fit. Returns
 * buf.
 */
const char *blog_q(const char *s, char *buf, size_t cap);

#endif
