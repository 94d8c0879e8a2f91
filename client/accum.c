/*
 * accum: the producer's record accumulator. Records are encoded straight
 * into a batch_builder per partition (storage/batch.h layout), so the bytes
 * the broker appends are the bytes built here, and a retry resends the very
 * same bytes.
 *
 * Pure: no I/O, no clock, no locks. The producer holds its mutex around every
 * call and passes the monotonic time in.
 *
 * A batch moves through these states (the function that moves it):
 *
 *   OPEN --(full: accum_append / drain)--> CLOSED --(accum_drain: seal)--> SEALED
 *   SEALED --(accum_drain)--> INFLIGHT --(accum_complete ok/fatal)--> DONE
 *   INFLIGHT --(accum_complete retriable)--> SEALED   (same bytes, resent later)
 *   OPEN/CLOSED/SEALED --(accum_expire, accum_fail_all)--> DONE
 *
 * Invariants per partition:
 *   - head..tail holds every batch not yet reported, oldest first; batches
 *     are reported (moved to the done list) only from the head, so delivery
 *     reports keep produce order.
 *   - sequences grow along the list: a batch is sealed only after every
 *     batch before it was sealed, so base sequences are contiguous.
 *   - in-flight batches form a run that no queued batch precedes, except
 *     while `retrying`, when nothing new is sent until inflight is 0; then
 *     sending restarts from the oldest unacknowledged batch. This keeps the
 *     log order equal to produce order across retries.
 *   - the broker deduplicates the last five batches of a producer per
 *     partition, so at most partition_inflight_max (<= 5) are in flight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define PB_CAP_MIN (16u << 10)

static uint32_t parts_total(const struct accum *a)
{
    uint32_t n = 0;
    for (const struct acc_topic *t = a->topics; t; t = t->next)
        n += t->partition_count;
    return n;
}

static bool part_ok(const struct acc_part *p)
{
    if (!p->head)
        return p->tail == NULL && p->open == NULL && p->inflight == 0;
    if (p->open && p->open != p->tail)
        return false;
    return p->tail->next == NULL;
}

void accum_init(struct accum *a, const struct accum_config *cfg)
{
    memset(a, 0, sizeof *a);
    a->cfg = *cfg;
    if (a->cfg.batch_bytes < BATCH_HDR_SIZE + 64)
        a->cfg.batch_bytes = BATCH_HDR_SIZE + 64;
    if (a->cfg.batch_bytes > VERITY_BATCH_BYTES_MAX)
        a->cfg.batch_bytes = VERITY_BATCH_BYTES_MAX;
    if (a->cfg.batch_records == 0 || a->cfg.batch_records > VERITY_BATCH_RECORDS_MAX)
        a->cfg.batch_records = VERITY_BATCH_RECORDS_MAX;
    if (a->cfg.partition_inflight_max == 0 || a->cfg.partition_inflight_max > 5)
        a->cfg.partition_inflight_max = 5;
    a->next_batch_id = 1;
    a->producer_id = -1;
    a->producer_epoch = -1;
}

void pbatch_free(struct pbatch *pb)
{
    if (!pb)
        return;
    batch_builder_deinit(&pb->b);
    free(pb->reports);
    free(pb);
}

static void free_list(struct pbatch *pb)
{
    while (pb) {
        struct pbatch *next = pb->next;
        pbatch_free(pb);
        pb = next;
    }
}

void accum_deinit(struct accum *a)
{
    struct acc_topic *t = a->topics;
    while (t) {
        struct acc_topic *next = t->next;
        for (uint32_t i = 0; i < t->partition_count; i++)
            free_list(t->parts[i].head);
        free(t->parts);
        free(t->name);
        free(t);
        t = next;
    }
    free_list(a->done_head);
    memset(a, 0, sizeof *a);
}

struct acc_topic *accum_topic_find(struct accum *a, const char *name)
{
    for (struct acc_topic *t = a->topics; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

int accum_topic_add(struct accum *a, const char *name, uint32_t partitions,
                    struct acc_topic **out)
{
    if (partitions == 0 || partitions > VERITY_PARTITIONS_MAX)
        return VERITY_EINVAL;
    struct acc_topic *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->name = strdup(name);
    t->parts = calloc(partitions, sizeof *t->parts);
    if (!t->name || !t->parts) {
        free(t->name);
        free(t->parts);
        free(t);
        return -ENOMEM;
    }
    t->partition_count = partitions;
    t->sticky = a->cfg.seed % partitions;
    t->next = a->topics;
    a->topics = t;
    *out = t;
    return 0;
}

/* ---- records ------------------------------------------------------------- */

int accum_record_check(const struct verity_record *rec)
{
    if (!rec)
        return VERITY_EINVAL;
    if (rec->key && rec->key_len < 0)
        return VERITY_EINVAL;
    if (rec->key && (uint32_t)rec->key_len > VERITY_KEY_BYTES_MAX)
        return VERITY_ELIMIT;
    if (rec->value && rec->value_len < 0)
        return VERITY_EINVAL;
    if (rec->value && (uint32_t)rec->value_len > VERITY_BATCH_BYTES_MAX)
        return VERITY_ELIMIT;
    if (rec->header_count > VERITY_RECORD_HEADERS_MAX)
        return VERITY_ELIMIT;
    if (rec->header_count && !rec->headers)
        return VERITY_EINVAL;
    uint64_t hbytes = 0;
    for (uint32_t i = 0; i < rec->header_count; i++) {
        const struct verity_header *h = &rec->headers[i];
        if ((h->key_len && !h->key) || (h->value && h->value_len < 0))
            return VERITY_EINVAL;
        hbytes += h->key_len + (h->value ? (uint64_t)h->value_len : 0);
    }
    if (hbytes > VERITY_BATCH_BYTES_MAX)
        return VERITY_ELIMIT;
    return 0;
}

/* Converts the public headers for the builder; kv has room for the maximum. */
static void headers_to_kv(const struct verity_record *rec, struct batch_header_kv *kv)
{
    for (uint32_t i = 0; i < rec->header_count; i++) {
        const struct verity_header *h = &rec->headers[i];
        kv[i].key = (const uint8_t *)h->key;
        kv[i].key_len = h->key_len;
        kv[i].value = h->value;
        kv[i].value_len = h->value ? h->value_len : -1;
    }
}

static size_t record_need(const struct verity_record *rec, const struct batch_header_kv *kv)
{
    return batch_record_size_max(rec->key ? (size_t)rec->key_len : 0,
                                 rec->value ? (size_t)rec->value_len : 0, kv, rec->header_count);
}

/* Room for `need` more bytes in pb, growing its buffer within the limits. */
static int pb_reserve(struct accum *a, struct pbatch *pb, size_t need)
{
    struct batch_builder *b = &pb->b;
    if (need <= b->cap - b->len)
        return 0;
    size_t want = b->len + need;
    size_t limit = a->cfg.batch_bytes > want ? a->cfg.batch_bytes : want;
    size_t cap = b->cap * 2 > want ? b->cap * 2 : want;
    if (cap > limit)
        cap = limit;
    if (cap > VERITY_BATCH_BYTES_MAX)
        return VERITY_ELIMIT;
    if (a->bytes_queued > 0 && a->bytes_queued + (cap - b->cap) > a->cfg.buffer_bytes_max)
        return -ENOBUFS;
    uint8_t *buf = realloc(b->buf, cap);
    if (!buf)
        return -ENOMEM;
    a->bytes_queued += cap - b->cap;
    b->buf = buf;
    b->cap = cap;
    return 0;
}

static int pb_new(struct accum *a, struct acc_topic *t, uint32_t partition, size_t cap,
                  int64_t now_ms, struct pbatch **out)
{
    if (cap > VERITY_BATCH_BYTES_MAX)
        return VERITY_ELIMIT;
    if (a->bytes_queued > 0 && a->bytes_queued + cap > a->cfg.buffer_bytes_max)
        return -ENOBUFS;
    struct pbatch *pb = calloc(1, sizeof *pb);
    if (!pb)
        return -ENOMEM;
    if (batch_builder_init(&pb->b, cap) != 0) {
        free(pb);
        return -ENOMEM;
    }
    pb->topic = t;
    pb->partition = partition;
    pb->id = a->next_batch_id++;
    pb->state = PB_OPEN;
    pb->created_ms = now_ms;
    pb->deadline_ms = now_ms + a->cfg.delivery_timeout_ms;
    pb->base_sequence = -1;
    a->bytes_queued += pb->b.cap;
    *out = pb;
    return 0;
}

/* Releases a batch that never got a record (after a failed first add). */
static void pb_discard(struct accum *a, struct pbatch *pb)
{
    a->bytes_queued -= pb->b.cap;
    pbatch_free(pb);
}

static void part_link(struct acc_part *part, struct pbatch *pb)
{
    pb->next = NULL;
    if (part->tail)
        part->tail->next = pb;
    else
        part->head = pb;
    part->tail = pb;
}

static int pb_add(struct pbatch *pb, const struct verity_record *rec,
                  const struct batch_header_kv *kv, verity_delivery_cb cb, void *opaque,
                  int64_t wall_ms)
{
    if (pb->b.count == pb->reports_cap) {
        uint32_t ncap = pb->reports_cap ? pb->reports_cap * 2 : 64;
        struct pb_report *r = realloc(pb->reports, ncap * sizeof *r);
        if (!r)
            return -ENOMEM;
        pb->reports = r;
        pb->reports_cap = ncap;
    }
    int64_t ts = rec->timestamp_ms ? rec->timestamp_ms : wall_ms;
    int rc = batch_builder_add(&pb->b, ts, rec->key, rec->key_len, rec->value, rec->value_len, kv,
                               rec->header_count);
    if (rc)
        return rc;
    pb->reports[pb->b.count - 1] = (struct pb_report){cb, opaque, ts};
    return 0;
}

static int resolve_partition(struct acc_topic *t, int32_t partition, const void *key,
                             int32_t key_len, uint32_t *out)
{
    if (partition >= 0) {
        if ((uint32_t)partition >= t->partition_count)
            return VERITY_EINVAL;
        *out = (uint32_t)partition;
    } else if (partition != VERITY_PARTITION_ANY) {
        return VERITY_EINVAL;
    } else if (key) {
        *out = verity_partition_for_key(key, (size_t)key_len, t->partition_count);
    } else {
        /* Sticky: stay while the batch we filled is still open there. */
        if (t->sticky_batch != 0) {
            const struct pbatch *o = t->parts[t->sticky].open;
            if (!o || o->id != t->sticky_batch) {
                t->sticky = (t->sticky + 1) % t->partition_count;
                t->sticky_batch = 0;
            }
        }
        *out = t->sticky;
    }
    return 0;
}

int accum_append(struct accum *a, struct acc_topic *t, int32_t partition,
                 const struct verity_record *rec, verity_delivery_cb cb, void *opaque,
                 int64_t now_ms, int64_t wall_ms)
{
    struct batch_header_kv kv[VERITY_RECORD_HEADERS_MAX];
    uint32_t p;
    int rc = accum_record_check(rec);
    if (rc)
        return rc;
    if (a->fatal)
        return a->fatal;
    if ((rc = resolve_partition(t, partition, rec->key, rec->key_len, &p)))
        return rc;
    headers_to_kv(rec, kv);
    size_t need = record_need(rec, kv);
    if (need > VERITY_BATCH_BYTES_MAX - BATCH_HDR_SIZE)
        return VERITY_ELIMIT;

    struct acc_part *part = &t->parts[p];
    struct pbatch *pb = part->open;
    if (pb && (pb->b.count >= a->cfg.batch_records || pb->b.len + need > a->cfg.batch_bytes)) {
        pb->state = PB_CLOSED;
        part->open = NULL;
        pb = NULL;
    }
    if (pb) {
        if ((rc = pb_reserve(a, pb, need)))
            return rc;
        if ((rc = pb_add(pb, rec, kv, cb, opaque, wall_ms)))
            return rc;
    } else {
        size_t cap = BATCH_HDR_SIZE + need;
        size_t pref = a->cfg.batch_bytes < PB_CAP_MIN ? a->cfg.batch_bytes : PB_CAP_MIN;
        if (cap < pref)
            cap = pref;
        if ((rc = pb_new(a, t, p, cap, now_ms, &pb)))
            return rc;
        if ((rc = pb_add(pb, rec, kv, cb, opaque, wall_ms))) {
            pb_discard(a, pb);
            return rc;
        }
        part_link(part, pb);
        part->open = pb;
    }
    if (partition == VERITY_PARTITION_ANY && !rec->key)
        t->sticky_batch = pb->id;
    a->records_queued++;
    VERITY_VERIFY(part_ok(part));
    return 0;
}

int accum_append_batch(struct accum *a, struct acc_topic *t, int32_t partition,
                       const struct verity_record *recs, size_t n, const uint8_t *idem_key,
                       verity_delivery_cb cb, void *opaque, int64_t now_ms, int64_t wall_ms)
{
    struct batch_header_kv kv[VERITY_RECORD_HEADERS_MAX];
    uint32_t p;
    int rc;
    if (n == 0 || !recs)
        return VERITY_EINVAL;
    if (n > VERITY_BATCH_RECORDS_MAX)
        return VERITY_ELIMIT;
    if (a->fatal)
        return a->fatal;
    size_t total = BATCH_HDR_SIZE;
    for (size_t i = 0; i < n; i++) {
        if ((rc = accum_record_check(&recs[i])))
            return rc;
        headers_to_kv(&recs[i], kv);
        total += record_need(&recs[i], kv);
        if (total > VERITY_BATCH_BYTES_MAX)
            return VERITY_ELIMIT;
    }
    if ((rc = resolve_partition(t, partition, recs[0].key, recs[0].key_len, &p)))
        return rc;

    struct pbatch *pb;
    if ((rc = pb_new(a, t, p, total, now_ms, &pb)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        headers_to_kv(&recs[i], kv);
        if ((rc = pb_add(pb, &recs[i], kv, cb, opaque, wall_ms))) {
            pb_discard(a, pb);
            return rc;
        }
    }
    if (idem_key) {
        pb->has_idem_key = true;
        memcpy(pb->idem_key, idem_key, BATCH_IDEM_KEY_SIZE);
    }
    struct acc_part *part = &t->parts[p];
    if (part->open) {
        part->open->state = PB_CLOSED;
        part->open = NULL;
    }
    pb->state = PB_CLOSED;
    part_link(part, pb);
    if (partition == VERITY_PARTITION_ANY && !recs[0].key)
        t->sticky_batch = pb->id; /* never open: the next null key moves on */
    a->records_queued += n;
    VERITY_VERIFY(part_ok(part));
    return 0;
}

/* ---- sequences and sealing ----------------------------------------------- */

/* Sequences count records. The broker refuses a batch whose last sequence
 * would pass INT32_MAX; such a batch waits for a new epoch (sequence 0). */
static bool seq_overflows(int32_t seq, uint32_t count)
{
    return (int64_t)seq + count - 1 > INT32_MAX;
}

static void pb_seal(struct accum *a, struct acc_part *part, struct pbatch *pb)
{
    VERITY_VERIFY(pb->state == PB_CLOSED || pb->state == PB_SEALED);
    VERITY_VERIFY(pb->b.count > 0);
    struct batch_meta meta = {
        .attributes = 0,
        .producer_id = -1,
        .producer_epoch = -1,
        .base_sequence = -1,
        .idem_key = pb->has_idem_key ? pb->idem_key : NULL,
    };
    /* A batch with an idempotency key is deduplicated by that key, which
     * the broker honours only for batches without a producer id; it takes
     * no sequence numbers. */
    if (a->cfg.idempotence && !pb->has_idem_key) {
        VERITY_VERIFY(a->producer_id >= 0);
        VERITY_VERIFY(!seq_overflows(part->next_sequence, pb->b.count));
        pb->base_sequence = part->next_sequence;
        part->next_sequence = (int32_t)((int64_t)part->next_sequence + pb->b.count);
        meta.producer_id = a->producer_id;
        meta.producer_epoch = a->producer_epoch;
        meta.base_sequence = pb->base_sequence;
    }
    VERITY_VERIFY(batch_builder_finish(&pb->b, &meta) == 0);
    pb->state = PB_SEALED;
}

void accum_set_identity(struct accum *a, int64_t producer_id, int16_t epoch)
{
    VERITY_VERIFY(a->inflight == 0);
    a->producer_id = producer_id;
    a->producer_epoch = epoch;
    a->need_reinit = false;
    for (struct acc_topic *t = a->topics; t; t = t->next) {
        for (uint32_t i = 0; i < t->partition_count; i++) {
            struct acc_part *part = &t->parts[i];
            part->next_sequence = 0;
            for (struct pbatch *pb = part->head; pb; pb = pb->next)
                if (pb->state == PB_SEALED)
                    pb_seal(a, part, pb);
        }
    }
}

/* ---- draining ------------------------------------------------------------ */

static struct acc_part *part_at(struct accum *a, uint32_t idx)
{
    for (struct acc_topic *t = a->topics; t; t = t->next) {
        if (idx < t->partition_count)
            return &t->parts[idx];
        idx -= t->partition_count;
    }
    return NULL;
}

static bool can_send(const struct accum *a)
{
    return !a->fatal && !a->need_reinit && (!a->cfg.idempotence || a->producer_id >= 0);
}

size_t accum_drain(struct accum *a, int64_t now_ms, bool flush, struct pbatch **out, size_t max,
                   size_t bytes_max)
{
    return accum_drain_node(a, now_ms, flush, ACCUM_NODE_ANY, out, max, bytes_max);
}

size_t accum_drain_node(struct accum *a, int64_t now_ms, bool flush, uint32_t node,
                        struct pbatch **out, size_t max, size_t bytes_max)
{
    size_t n = 0, bytes = 0;
    uint32_t total = parts_total(a);
    if (!can_send(a) || total == 0 || max == 0)
        return 0;
    a->rr++;
    for (uint32_t k = 0; k < total && n < max; k++) {
        struct acc_part *part = part_at(a, (a->rr + k) % total);
        if (node != ACCUM_NODE_ANY && part->leader != node)
            continue;
        if (part->retrying) {
            if (part->inflight > 0 || now_ms < part->retry_at_ms)
                continue;
            part->retrying = false;
        }
        for (struct pbatch *pb = part->head; pb && n < max; pb = pb->next) {
            if (pb->state == PB_DONE || pb->state == PB_INFLIGHT)
                continue;
            if (part->inflight >= a->cfg.partition_inflight_max)
                break;
            if (pb->state == PB_OPEN) {
                if (pb->b.count == 0)
                    break;
                if (!flush && now_ms - pb->created_ms < a->cfg.linger_ms)
                    break;
                pb->state = PB_CLOSED;
                part->open = NULL;
            }
            if (n > 0 && bytes + pb->b.len > bytes_max)
                return n;
            if (pb->state == PB_CLOSED && a->cfg.idempotence && !pb->has_idem_key &&
                seq_overflows(part->next_sequence, pb->b.count)) {
                a->need_reinit = true;
                return n;
            }
            if (pb->state == PB_CLOSED)
                pb_seal(a, part, pb);
            pb->state = PB_INFLIGHT;
            pb->attempts++;
            part->inflight++;
            a->inflight++;
            out[n++] = pb;
            bytes += pb->b.len;
        }
        VERITY_VERIFY(part_ok(part));
    }
    return n;
}

int64_t accum_next_deadline(const struct accum *a, int64_t now_ms, bool flush)
{
    int64_t next = INT64_MAX;
    bool sendable = can_send(a);
    for (const struct acc_topic *t = a->topics; t; t = t->next) {
        for (uint32_t i = 0; i < t->partition_count; i++) {
            const struct acc_part *part = &t->parts[i];
            bool first = true;
            for (const struct pbatch *pb = part->head; pb; pb = pb->next) {
                if (pb->state == PB_DONE || pb->state == PB_INFLIGHT)
                    continue;
                if (pb->deadline_ms < next)
                    next = pb->deadline_ms;
                if (!first || !sendable || part->inflight >= a->cfg.partition_inflight_max)
                    continue;
                first = false;
                int64_t when = now_ms;
                if (part->retrying)
                    when = part->inflight > 0 ? INT64_MAX : part->retry_at_ms;
                else if (pb->state == PB_OPEN && !flush)
                    when = pb->created_ms + a->cfg.linger_ms;
                if (when < next)
                    next = when;
            }
        }
    }
    return next;
}

/* ---- completion ----------------------------------------------------------- */

bool accum_err_retriable(int err)
{
    switch (err) {
    case VERITY_EOUTOFORDER:
    case VERITY_ECLOSED:
    case VERITY_ETIMEOUT:
    case VERITY_ENOTLEADER:
    case VERITY_EREADONLY:
        return true;
    default:
        /* -errno: connection loss, ENOSPC, EIO, ENOMEM on the broker. */
        return err < 0 && err > VERITY_EBASE;
    }
}

static struct acc_part *part_of(struct pbatch *pb)
{
    return &pb->topic->parts[pb->partition];
}

static void pb_finish(struct pbatch *pb, int err, uint64_t base_offset, bool duplicate)
{
    pb->state = PB_DONE;
    pb->err = err;
    pb->base_offset = err ? 0 : base_offset;
    pb->duplicate = duplicate;
}

/* Moves finished batches from the head of the partition to the done list. */
static void part_pop_done(struct accum *a, struct acc_part *part)
{
    while (part->head && part->head->state == PB_DONE) {
        struct pbatch *pb = part->head;
        part->head = pb->next;
        if (!part->head)
            part->tail = NULL;
        if (part->open == pb)
            part->open = NULL;
        pb->next = NULL;
        a->bytes_queued -= pb->b.cap;
        if (a->done_tail)
            a->done_tail->next = pb;
        else
            a->done_head = pb;
        a->done_tail = pb;
    }
    VERITY_VERIFY(part_ok(part));
}

static int64_t backoff_ms(const struct accum *a, uint32_t retries)
{
    int64_t ms = a->cfg.retry_backoff_ms > 0 ? a->cfg.retry_backoff_ms : 1;
    for (uint32_t i = 1; i < retries && ms < a->cfg.retry_backoff_max_ms; i++)
        ms *= 2;
    return ms < a->cfg.retry_backoff_max_ms ? ms : a->cfg.retry_backoff_max_ms;
}

/* True when every batch before pb in its partition is acknowledged. */
static bool pb_is_oldest(const struct acc_part *part, const struct pbatch *pb)
{
    for (const struct pbatch *q = part->head; q && q != pb; q = q->next)
        if (q->state != PB_DONE || (q->err != 0 && q->err != VERITY_EDUPLICATE))
            return false;
    return true;
}

void accum_complete(struct accum *a, struct pbatch *pb, int err, uint64_t base_offset,
                    bool duplicate, int64_t now_ms)
{
    struct acc_part *part = part_of(pb);
    VERITY_VERIFY(pb->state == PB_INFLIGHT);
    VERITY_VERIFY(part->inflight > 0 && a->inflight > 0);
    part->inflight--;
    a->inflight--;

    if (err == 0) {
        pb_finish(pb, 0, base_offset, duplicate);
        part->retry_count = 0;
    } else if (err == VERITY_EDUPLICATE) {
        /* Written before, too long ago for the broker to name its offsets;
         * the sequence state is consistent. */
        pb_finish(pb, err, 0, true);
        part->retry_count = 0;
    } else if (err == VERITY_EFENCED) {
        /* A newer epoch of this producer exists: nothing may be sent again. */
        pb_finish(pb, err, 0, false);
        accum_fail_all(a, err, true);
    } else if ((accum_err_retriable(err) || (err == VERITY_ENOTFOUND && a->retry_notfound)) &&
               now_ms < pb->deadline_ms && !a->fatal) {
        /* A gap at the oldest unacknowledged batch means the broker's
         * sequence state differs from ours: start a new epoch. Behind an
         * unanswered or failed batch, a gap is just the echo of that one. */
        if (err == VERITY_EOUTOFORDER && a->cfg.idempotence && pb_is_oldest(part, pb))
            a->need_reinit = true;
        pb->state = PB_SEALED;
        part->retrying = true;
        part->retry_count++;
        part->retry_at_ms = now_ms + backoff_ms(a, part->retry_count);
    } else {
        /* Finished with an error; whether it was written is unknown for a
         * timeout, so the sequence state is resynchronised by a new epoch. */
        pb_finish(pb, err, 0, false);
        if (a->cfg.idempotence && !a->fatal)
            a->need_reinit = true;
    }
    part_pop_done(a, part);
}

void accum_expire(struct accum *a, int64_t now_ms)
{
    for (struct acc_topic *t = a->topics; t; t = t->next) {
        for (uint32_t i = 0; i < t->partition_count; i++) {
            struct acc_part *part = &t->parts[i];
            for (struct pbatch *pb = part->head; pb; pb = pb->next) {
                if (pb->state == PB_DONE || pb->state == PB_INFLIGHT || pb->deadline_ms > now_ms)
                    continue;
                if (pb->state == PB_SEALED && a->cfg.idempotence)
                    a->need_reinit = true;
                if (part->open == pb)
                    part->open = NULL;
                pb_finish(pb, VERITY_ETIMEOUT, 0, false);
            }
            part_pop_done(a, part);
        }
    }
}

void accum_fail_all(struct accum *a, int err, bool fatal)
{
    if (fatal && !a->fatal)
        a->fatal = err;
    for (struct acc_topic *t = a->topics; t; t = t->next) {
        for (uint32_t i = 0; i < t->partition_count; i++) {
            struct acc_part *part = &t->parts[i];
            for (struct pbatch *pb = part->head; pb; pb = pb->next) {
                if (pb->state == PB_DONE || pb->state == PB_INFLIGHT)
                    continue;
                if (part->open == pb)
                    part->open = NULL;
                pb_finish(pb, err, 0, false);
            }
            part_pop_done(a, part);
        }
    }
}

struct pbatch *accum_take_done(struct accum *a)
{
    struct pbatch *pb = a->done_head;
    a->done_head = a->done_tail = NULL;
    return pb;
}

void pbatch_report(const struct pbatch *pb)
{
    struct verity_delivery d = {
        .topic = pb->topic->name,
        .partition = pb->partition,
        .duplicate = pb->duplicate,
    };
    for (uint32_t i = 0; i < pb->b.count; i++) {
        const struct pb_report *r = &pb->reports[i];
        if (!r->cb)
            continue;
        d.offset = pb->err ? 0 : pb->base_offset + i;
        d.timestamp_ms = r->timestamp_ms;
        r->cb(r->opaque, pb->err, &d);
    }
}
