/*
 * Structured key=value log lines on stderr (format in blog.h). Each line is
 * formatted into a local buffer and written with one fputs so lines from the
 * loop and from storage threads never interleave.
 */
#include "broker/blog.h"
#include "storage/slog.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum blog_level min_level = BLOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void blog_set_level(enum blog_level level)
{
    min_level = level;
}

int blog_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void blog(enum blog_level level, const char *event, const char *fmt, ...)
{
    if (level < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    slog_v(level_names[level], event, fmt, ap);
    va_end(ap);
}

const char *blog_q(const char *s, char *buf, size_t cap)
{
    return slog_q(s, buf, cap);
}
