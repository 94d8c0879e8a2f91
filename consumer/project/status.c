/*
 * verity-project status and wait: read the positions table (and, for lag,
 * the broker's high watermarks).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer/project/worker.h"
#include "verity/verity.h"

#define WAIT_POLL_MS 5

int prj_wait(const struct prj_config *cfg, const char *topic, uint32_t partition,
             uint64_t offset, int timeout_ms)
{
    char err[512];
    struct sink *s = NULL;
    if (sink_open(cfg, &s, err, sizeof err) != 0) {
        fprintf(stderr, "verity-project wait: %s\n", err);
        return SINK_EDB;
    }
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : prj_mono_ms() + timeout_ms;
    int rc = VERITY_ETIMEOUT;
    bool have_table = false;
    for (;;) {
        if (!have_table && sink_table_exists(s, PRJ_POSITIONS, &have_table) != 0) {
            rc = SINK_EDB;
            break;
        }
        if (have_table) {
            struct prj_pos *p = NULL;
            size_t n = 0;
            if (pos_load(s, &p, &n) != 0) {
                rc = SINK_EDB;
                break;
            }
            bool done = false;
            for (size_t i = 0; i < n; i++)
                if (p[i].partition == partition && strcmp(p[i].topic, topic) == 0)
                    done = p[i].next_offset > offset;
            pos_free(p, n);
            if (done) {
                rc = 0;
                break;
            }
        }
        if (prj_mono_ms() >= deadline || prj_stop)
            break;
        struct timespec ts = {0, WAIT_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc == SINK_EDB)
        fprintf(stderr, "verity-project wait: %s\n", sink_errmsg(s));
    sink_close(s);
    return rc;
}

int prj_status(const struct prj_config *cfg, bool json)
{
    char err[512];
    struct sink *s = NULL;
    if (sink_open(cfg, &s, err, sizeof err) != 0) {
        fprintf(stderr, "verity-project status: %s\n", err);
        return 1;
    }
    struct prj_pos *p = NULL;
    size_t n = 0;
    bool have = false;
    if (sink_table_exists(s, PRJ_POSITIONS, &have) != 0 || (have && pos_load(s, &p, &n) != 0)) {
        fprintf(stderr, "verity-project status: %s\n", sink_errmsg(s));
        sink_close(s);
        return 1;
    }
    sink_close(s);
    /* Lag needs the broker; without it the rest is still shown. */
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = cfg->broker;
    cc.connect_timeout_ms = 2000;
    struct verity_client *c = NULL;
    bool broker_ok = verity_client_new(&cc, &c) == 0 && verity_client_connect(c, 3000) == 0;
    json_t *arr = json_array();
    if (!json)
        printf("%-24s %5s %12s %10s %10s %10s %8s %s\n", "topic", "part", "applied", "lag",
               "events/s", "events", "dead", "last apply (UTC)");
    for (size_t i = 0; i < n; i++) {
        int64_t lag = -1;
        struct verity_offsets o;
        if (broker_ok && verity_list_offsets(c, p[i].topic, p[i].partition,
                                             VERITY_OFFSET_LATEST, 0, &o) == 0)
            lag = o.high_watermark > p[i].next_offset
                      ? (int64_t)(o.high_watermark - p[i].next_offset)
                      : 0;
        char when[40] = "-";
        if (p[i].updated_ms) {
            time_t t = (time_t)(p[i].updated_ms / 1000);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        if (json) {
            json_t *o2 = json_pack("{s:s,s:I,s:I,s:I,s:f,s:I,s:I,s:s,s:I}", "topic", p[i].topic,
                                   "partition", (json_int_t)p[i].partition, "next_offset",
                                   (json_int_t)p[i].next_offset, "applied_events",
                                   (json_int_t)p[i].events, "events_per_s", p[i].rate_eps,
                                   "dead_lettered", (json_int_t)p[i].dead_lettered,
                                   "last_apply_ms", (json_int_t)p[i].updated_ms, "last_apply",
                                   when, "errors", (json_int_t)p[i].dead_lettered);
            json_object_set_new(o2, "lag", lag >= 0 ? json_integer(lag) : json_null());
            json_array_append_new(arr, o2);
        } else {
            char lags[24] = "?";
            if (lag >= 0)
                snprintf(lags, sizeof lags, "%" PRId64, lag);
            printf("%-24s %5u %12" PRIu64 " %10s %10.0f %10" PRIu64 " %8" PRIu64 " %s\n",
                   p[i].topic, p[i].partition, p[i].next_offset, lags, p[i].rate_eps,
                   p[i].events, p[i].dead_lettered, when);
        }
    }
    if (json) {
        json_t *top = json_pack("{s:s,s:s,s:b,s:o}", "group", cfg->group, "sink",
                                cfg->sqlite ? "sqlite" : "postgres", "broker_reachable",
                                broker_ok, "partitions", arr);
        char *txt = json_dumps(top, JSON_INDENT(2));
        puts(txt);
        free(txt);
        json_decref(top);
    } else {
        json_decref(arr);
        if (!broker_ok)
            printf("(broker unreachable: lag unknown)\n");
    }
    verity_client_free(c);
    pos_free(p, n);
    return 0;
}
