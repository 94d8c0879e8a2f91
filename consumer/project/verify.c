/*
 * verity-project verify: proves which log prefix the tables were built
 * from. Each stored position (topic, partition, next_offset) carries the
 * chain hash of the log batch that holds next_offset - 1 and that batch's
 * last offset (chain_offset). The chain hash of a batch is
 * SHA-256(previous chain || batch), so it fixes every byte of the log up to
 * chain_offset. verify reads the log at next_offset - 1 and compares: the
 * same hash and the same batch end mean the tables were built from this
 * log's prefix [start, next_offset); anything else means the positions (or
 * the log) were changed after the fact, and the tables cannot be trusted to
 * be that prefix's fold.
 *
 * What this does not do: recompute the rows. A row changed by hand under an
 * unchanged position is not caught here; `rebuild` replaces the tables with
 * a fresh fold of the log.
 *
 * Exit codes: 0 every position matches the log, 5 a position does not (or
 * cannot be checked: no hash stored, offsets trimmed by retention, the log
 * shorter than the position), 1 a database or broker error, 3 broker
 * unreachable.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/worker.h"
#include "verity/verity.h"

#define VERIFY_CONNECT_MS 5000
#define VERIFY_POLL_MS 200

enum vstatus { VS_OK, VS_EMPTY, VS_MISMATCH, VS_UNRECORDED, VS_TRIMMED, VS_BEYOND, VS_ERROR };

static const char *vstatus_name(enum vstatus v)
{
    switch (v) {
    case VS_OK:
        return "ok";
    case VS_EMPTY:
        return "empty";
    case VS_MISMATCH:
        return "mismatch";
    case VS_UNRECORDED:
        return "unrecorded";
    case VS_TRIMMED:
        return "trimmed";
    case VS_BEYOND:
        return "beyond_log";
    default:
        return "error";
    }
}

struct vres {
    enum vstatus st;
    bool have_log;                 /* log_chain / log_chain_offset are set */
    uint8_t log_chain[PRJ_CHAIN_SIZE];
    uint64_t log_chain_offset;
    char reason[300];
    int err;                       /* VS_ERROR: the library error */
};

/* Reads the message at offset (the first one at or after it) of one
 * partition and its batch's chain hash. */
static int read_at(const struct prj_config *cfg, const char *topic, uint32_t partition,
                   uint64_t offset, int timeout_ms, struct vres *r, uint64_t *got_offset)
{
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = cfg->broker;
    cc.fetch_max_wait_ms = VERIFY_POLL_MS;
    cc.partition_max_bytes = 64 * 1024;
    struct verity_consumer *c = NULL;
    int rc = verity_consumer_new(&cc, &c);
    if (rc == 0)
        rc = verity_consumer_assign(c, topic, partition, VERITY_START_OFFSET, (int64_t)offset);
    int64_t deadline = prj_mono_ms() + timeout_ms;
    while (rc == 0) {
        const struct verity_message *m;
        size_t n = 0;
        rc = verity_consumer_poll(c, VERIFY_POLL_MS, &m, &n, NULL);
        if (rc == 0 && n > 0) {
            *got_offset = m[0].offset;
            if (m[0].chain_hash) {
                r->have_log = true;
                memcpy(r->log_chain, m[0].chain_hash, PRJ_CHAIN_SIZE);
                r->log_chain_offset = m[0].batch_last_offset;
            }
            break;
        }
        if (rc == 0 && (prj_stop || prj_mono_ms() > deadline))
            rc = VERITY_ETIMEOUT;
    }
    verity_consumer_free(c);
    return rc;
}

static void check_one(const struct prj_config *cfg, struct verity_client *cl,
                      const struct prj_pos *p, int timeout_ms, struct vres *r)
{
    memset(r, 0, sizeof *r);
    if (!p->has_chain) {
        if (p->events == 0) {
            r->st = VS_EMPTY;
            snprintf(r->reason, sizeof r->reason, "no event applied yet");
        } else {
            r->st = VS_UNRECORDED;
            snprintf(r->reason, sizeof r->reason,
                     "no chain hash stored for %" PRIu64 " applied events (a position "
                     "written by verity-project 0.1.0, or altered): run rebuild",
                     p->events);
        }
        return;
    }
    if (p->next_offset == 0 || p->chain_offset < p->next_offset - 1) {
        r->st = VS_MISMATCH;
        snprintf(r->reason, sizeof r->reason,
                 "stored chain offset %" PRIu64 " does not cover the last applied offset "
                 "%" PRId64 ": the position was altered",
                 p->chain_offset, (int64_t)p->next_offset - 1);
        return;
    }
    uint64_t last = p->next_offset - 1;
    struct verity_offsets o;
    int rc = verity_list_offsets(cl, p->topic, p->partition, VERITY_OFFSET_LATEST, 0, &o);
    if (rc) {
        r->st = VS_ERROR;
        r->err = rc;
        snprintf(r->reason, sizeof r->reason, "listing offsets: %s", verity_strerror(rc));
        return;
    }
    if (last >= o.high_watermark) {
        r->st = VS_BEYOND;
        snprintf(r->reason, sizeof r->reason,
                 "the tables claim offsets up to %" PRIu64 " but the log ends before %" PRIu64
                 ": not built from this log",
                 last, o.high_watermark);
        return;
    }
    if (last < o.start_offset) {
        r->st = VS_TRIMMED;
        snprintf(r->reason, sizeof r->reason,
                 "offset %" PRIu64 " is no longer stored (the log starts at %" PRIu64
                 "): cannot be checked",
                 last, o.start_offset);
        return;
    }
    uint64_t got = 0;
    rc = read_at(cfg, p->topic, p->partition, last, timeout_ms, r, &got);
    if (rc == VERITY_EOFFSET) {
        r->st = VS_TRIMMED;
        snprintf(r->reason, sizeof r->reason,
                 "offset %" PRIu64 " is no longer stored: cannot be checked", last);
        return;
    }
    if (rc) {
        r->st = VS_ERROR;
        r->err = rc;
        snprintf(r->reason, sizeof r->reason, "reading offset %" PRIu64 ": %s", last,
                 verity_strerror(rc));
        return;
    }
    if (got != last) {
        r->st = VS_MISMATCH;
        snprintf(r->reason, sizeof r->reason,
                 "offset %" PRIu64 " holds no message (the next is %" PRIu64
                 "): the tables cannot have applied it",
                 last, got);
        return;
    }
    if (!r->have_log) {
        r->st = VS_ERROR;
        snprintf(r->reason, sizeof r->reason, "the library gave no chain hash");
        return;
    }
    if (r->log_chain_offset != p->chain_offset ||
        memcmp(r->log_chain, p->chain, PRJ_CHAIN_SIZE) != 0) {
        char a[2 * PRJ_CHAIN_SIZE + 1], b[2 * PRJ_CHAIN_SIZE + 1];
        prj_hex(p->chain, a);
        prj_hex(r->log_chain, b);
        r->st = VS_MISMATCH;
        snprintf(r->reason, sizeof r->reason,
                 "stored chain hash %.16s... (batch ending at %" PRIu64 ") but the log has "
                 "%.16s... (batch ending at %" PRIu64 ") at offset %" PRIu64
                 ": the tables were not built from this log's prefix",
                 a, p->chain_offset, b, r->log_chain_offset, last);
        return;
    }
    r->st = VS_OK;
    snprintf(r->reason, sizeof r->reason,
             "built from offsets [.., %" PRIu64 "); the chain hash matches the log through "
             "offset %" PRIu64,
             p->next_offset, p->chain_offset);
}

int prj_verify(const struct prj_config *cfg, bool json, int timeout_ms)
{
    if (timeout_ms < 0)
        timeout_ms = 10000;
    char err[512];
    struct sink *s = NULL;
    if (sink_open(cfg, &s, err, sizeof err) != 0) {
        fprintf(stderr, "verity-project verify: %s\n", err);
        return 1;
    }
    struct prj_pos *p = NULL;
    size_t n = 0;
    bool have = false;
    if (sink_table_exists(s, PRJ_POSITIONS, &have) != 0 || (have && pos_load(s, &p, &n) != 0)) {
        fprintf(stderr, "verity-project verify: %s\n", sink_errmsg(s));
        sink_close(s);
        return 1;
    }
    sink_close(s);
    if (!have) {
        fprintf(stderr, "verity-project verify: the sink holds no %s table: nothing has been "
                        "projected into it\n",
                PRJ_POSITIONS);
        return 1;
    }
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = cfg->broker;
    struct verity_client *cl = NULL;
    int rc = verity_client_new(&cc, &cl);
    if (rc == 0)
        rc = verity_client_connect(cl, VERIFY_CONNECT_MS);
    if (rc) {
        fprintf(stderr, "verity-project verify: broker: %s\n", verity_strerror(rc));
        verity_client_free(cl);
        pos_free(p, n);
        return verity_err_unreachable(rc) ? 3 : 1;
    }
    json_t *arr = json_array();
    size_t bad = 0, errors = 0, unreachable = 0;
    for (size_t i = 0; i < n; i++) {
        struct vres r;
        check_one(cfg, cl, &p[i], timeout_ms, &r);
        if (r.st == VS_ERROR) {
            errors++;
            unreachable += verity_err_unreachable(r.err);
        } else if (r.st != VS_OK && r.st != VS_EMPTY) {
            bad++;
        }
        char a[2 * PRJ_CHAIN_SIZE + 1] = "", b[2 * PRJ_CHAIN_SIZE + 1] = "";
        if (p[i].has_chain)
            prj_hex(p[i].chain, a);
        if (r.have_log)
            prj_hex(r.log_chain, b);
        if (json) {
            json_t *o = json_pack("{s:s,s:I,s:I,s:s,s:s}", "topic", p[i].topic, "partition",
                                  (json_int_t)p[i].partition, "next_offset",
                                  (json_int_t)p[i].next_offset, "status", vstatus_name(r.st),
                                  "reason", r.reason);
            json_object_set_new(o, "chain_hash", p[i].has_chain ? json_string(a) : json_null());
            json_object_set_new(o, "chain_offset", p[i].has_chain
                                                       ? json_integer((json_int_t)p[i].chain_offset)
                                                       : json_null());
            json_object_set_new(o, "log_chain_hash", r.have_log ? json_string(b) : json_null());
            json_object_set_new(o, "log_chain_offset",
                                r.have_log ? json_integer((json_int_t)r.log_chain_offset)
                                           : json_null());
            json_array_append_new(arr, o);
        } else {
            printf("%s/%u: %s: %s\n", p[i].topic, p[i].partition,
                   r.st == VS_OK ? "ok" : r.st == VS_EMPTY ? "empty" : "FAILED", r.reason);
            if (r.st == VS_OK)
                printf("  chain %s\n", a);
        }
    }
    verity_client_free(cl);
    int code = errors ? (unreachable == errors ? 3 : 1) : bad ? 5 : 0;
    if (json) {
        json_t *top = json_pack("{s:b,s:I,s:I,s:o}", "ok", code == 0, "failed", (json_int_t)bad,
                                "errors", (json_int_t)errors, "partitions", arr);
        char *txt = json_dumps(top, JSON_INDENT(2));
        puts(txt);
        free(txt);
        json_decref(top);
    } else {
        json_decref(arr);
        if (code == 0)
            printf("verified: %zu partitions match the log\n", n);
        else if (bad)
            printf("verify FAILED: %zu of %zu partitions do not match the log\n", bad, n);
    }
    pos_free(p, n);
    return code;
}
