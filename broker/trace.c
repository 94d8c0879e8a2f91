/*
 * Sampled path trace (trace.h). Rows are looked up from the newest back over
 * at most TRACE_SCAN rows: the rows a commit or a fetch can still complete
 * are the recent ones.
 */
#include "broker/trace.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "broker/broker_int.h"

#define TRACE_SCAN 256

long trace_produce(struct broker *b, const struct partition *p, uint64_t offset, int64_t recv,
                   int64_t append0, int64_t append1)
{
    struct trace *t = b->trace;
    if (!t || (t->seen++ % t->sample) != 0)
        return -1;
    uint64_t i = t->next++;
    struct trace_row *r = &t->rows[i % TRACE_ROWS];
    memset(r, 0, sizeof *r);
    r->part = p;
    snprintf(r->topic, sizeof r->topic, "%s", p->topic->name);
    r->partition = p->id;
    r->offset = offset;
    r->recv = recv;
    r->append0 = append0;
    r->append1 = append1;
    return (long)i;
}

void trace_answer(struct broker *b, long row, int64_t t)
{
    struct trace *tr = b->trace;
    if (!tr || row < 0 || (uint64_t)row + TRACE_ROWS < tr->next)
        return;
    tr->rows[(uint64_t)row % TRACE_ROWS].answer = t;
}

/* Calls fn on the recent rows of p, newest first, until fn returns 0. */
#define RECENT_ROWS(tr, p, r, body)                                                            \
    do {                                                                                       \
        uint64_t lim_ = (tr)->next > TRACE_SCAN ? (tr)->next - TRACE_SCAN : 0;                 \
        for (uint64_t i_ = (tr)->next; i_ > lim_; i_--) {                                      \
            struct trace_row *r = &(tr)->rows[(i_ - 1) % TRACE_ROWS];                          \
            if (r->part != (p))                                                                \
                continue;                                                                      \
            body                                                                               \
        }                                                                                      \
    } while (0)

void trace_commit(struct broker *b, const struct partition *p, uint64_t hw, int64_t sync0,
                  int64_t sync1, int64_t t)
{
    struct trace *tr = b->trace;
    if (!tr)
        return;
    RECENT_ROWS(tr, p, r, {
        if (r->commit)
            break;
        if (r->offset < hw) {
            r->commit = t;
            r->sync0 = sync0;
            r->sync1 = sync1;
        }
    });
}

void trace_deliver(struct broker *b, const char *topic, uint32_t partition, uint64_t from,
                   uint64_t to, int64_t t)
{
    struct trace *tr = b->trace;
    if (!tr || from >= to)
        return;
    uint64_t lim = tr->next > TRACE_SCAN ? tr->next - TRACE_SCAN : 0;
    for (uint64_t i = tr->next; i > lim; i--) {
        struct trace_row *r = &tr->rows[(i - 1) % TRACE_ROWS];
        if (r->partition != partition || strcmp(r->topic, topic) != 0)
            continue;
        if (r->offset < from)
            break;
        if (r->offset < to && r->deliver == 0)
            r->deliver = t;
    }
}

void trace_render(const struct broker *b, struct evbuffer *out)
{
    const struct trace *tr = b->trace;
    if (!tr) {
        evbuffer_add_printf(out, "# trace_sample is 0: no trace\n");
        return;
    }
    uint64_t first = tr->next > TRACE_ROWS ? tr->next - TRACE_ROWS : 0;
    evbuffer_add_printf(out, "# sample=%" PRIu32 " rows=%" PRIu64 "\n", tr->sample, tr->next - first);
    for (uint64_t i = first; i < tr->next; i++) {
        const struct trace_row *r = &tr->rows[i % TRACE_ROWS];
        evbuffer_add_printf(out,
                            "TRACE topic=%s partition=%" PRIu32 " offset=%" PRIu64 " recv=%" PRId64
                            " append0=%" PRId64 " append1=%" PRId64 " sync0=%" PRId64
                            " sync1=%" PRId64 " commit=%" PRId64 " answer=%" PRId64
                            " deliver=%" PRId64 "\n",
                            r->topic, r->partition, r->offset, r->recv, r->append0, r->append1,
                            r->sync0, r->sync1, r->commit, r->answer, r->deliver);
    }
}
