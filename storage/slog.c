/* Structured log lines (see slog.h). */
#include "storage/slog.h"

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

void slog_v(const char *level, const char *event, const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level, event);
    if (n < 0)
        return;
    size_t used = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (fmt && fmt[0] && used + 2 < sizeof line) {
        line[used++] = ' ';
        int m = vsnprintf(line + used, sizeof line - used, fmt, ap);
        if (m > 0)
            used += (size_t)m < sizeof line - used ? (size_t)m : sizeof line - used - 1;
    }
    if (used + 2 > sizeof line)
        used = sizeof line - 2;
    line[used++] = '\n';
    line[used] = '\0';
    fputs(line, stderr);
}

void slog(const char *level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    slog_v(level, event, fmt, ap);
    va_end(ap);
}

const char *slog_q(const char *s, char *buf, size_t cap)
{
    if (cap == 0)
        return "";
    if (!s)
        s = "";
    bool quote = s[0] == '\0';
    for (const char *p = s; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20 ||
            *p == 0x7f)
            quote = true;
    size_t o = 0;
    if (quote && o + 1 < cap)
        buf[o++] = '"';
    for (const char *p = s; *p && o + 3 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (quote && (c == '"' || c == '\\')) {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else {
            buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        }
    }
    if (quote && o + 1 < cap)
        buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
