/*
 * VSR wire codec (broker/vsr/vsr_wire.c): every message type round-trips
 * with every field it carries; every truncation, a trailing byte, an unknown
 * version or type, counts over their limits, an out-of-range enum and a body
 * that disagrees with its header are refused with a typed error; peer frames
 * round-trip and refuse bad lengths.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdlib.h>
#include <string.h>

#include "broker/vsr/vsr_wire.h"
#include "verity/errors.h"

static uint8_t body[300];

static void fill_header(struct vsr_header *h, uint64_t seed, uint32_t size)
{
    memset(h, 0, sizeof *h);
    for (int i = 0; i < VSR_CHECKSUM_SIZE; i++) {
        h->checksum[i] = (uint8_t)(seed + i);
        h->parent[i] = (uint8_t)(seed * 3 + i);
    }
    h->op = seed + 100;
    h->view = seed + 7;
    h->size = size;
    h->client = seed * 11;
    h->request = seed * 13;
}

/* A message of type t with every field set to something distinct. */
static struct vsr_msg *sample(uint8_t t)
{
    struct vsr_msg *m = calloc(1, sizeof *m);
    m->type = t;
    m->from = 1;
    m->to = t == VSR_MSG_REPLY ? 0xff : 2;
    m->cluster = 0x1122334455667788ull;
    m->view = 42;
    m->commit = 41;
    m->log_view = 40;
    m->op = 77;
    m->op_min = 70;
    for (int i = 0; i < VSR_CHECKSUM_SIZE; i++) {
        m->checksum[i] = (uint8_t)(0xa0 + i);
        m->digest[i] = (uint8_t)(0x10 + i);
    }
    m->client = 5;
    m->request = 6;
    m->body = body;
    m->body_len = sizeof body;
    fill_header(&m->header, 9, sizeof body);
    if (t == VSR_MSG_HEADERS)
        m->body_len = 2 * VSR_HEADER_SIZE; /* whole headers only */
    m->nack_above = true;
    m->faulty_n = 3;
    m->faulty[0] = 4;
    m->faulty[1] = 9;
    m->faulty[2] = 1000;
    m->window_base = 70;
    m->window_len = VSR_WINDOW_MAX;
    for (uint32_t i = 0; i < m->window_len; i++) {
        m->window[i].status = (uint8_t)(i % 4);
        m->window[i].full = i % 2;
        fill_header(&m->window[i].h, i, i);
    }
    return m;
}

static void check_same(uint8_t t, const struct vsr_msg *a, const struct vsr_msg *b)
{
    CU_ASSERT_EQUAL(a->type, b->type);
    CU_ASSERT_EQUAL(a->from, b->from);
    CU_ASSERT_EQUAL(a->to, b->to);
    CU_ASSERT_EQUAL(a->cluster, b->cluster);
    CU_ASSERT_EQUAL(a->view, b->view);
    CU_ASSERT_EQUAL(a->commit, b->commit);
    switch (t) {
    case VSR_MSG_REQUEST:
        CU_ASSERT_EQUAL(a->client, b->client);
        CU_ASSERT_EQUAL(a->request, b->request);
        CU_ASSERT_EQUAL(a->body_len, b->body_len);
        CU_ASSERT(memcmp(a->body, b->body, a->body_len) == 0);
        break;
    case VSR_MSG_PREPARE:
    case VSR_MSG_REPAIR:
        CU_ASSERT(memcmp(&a->header.checksum, &b->header.checksum, 32) == 0);
        CU_ASSERT(memcmp(&a->header.parent, &b->header.parent, 32) == 0);
        CU_ASSERT_EQUAL(a->header.op, b->header.op);
        CU_ASSERT_EQUAL(a->header.view, b->header.view);
        CU_ASSERT_EQUAL(a->header.size, b->header.size);
        CU_ASSERT_EQUAL(a->header.client, b->header.client);
        CU_ASSERT_EQUAL(a->header.request, b->header.request);
        CU_ASSERT_EQUAL(a->body_len, b->body_len);
        CU_ASSERT(memcmp(a->body, b->body, a->body_len) == 0);
        break;
    case VSR_MSG_DO_VIEW_CHANGE:
        CU_ASSERT_EQUAL(a->log_view, b->log_view);
        CU_ASSERT_EQUAL(a->nack_above, b->nack_above);
        CU_ASSERT_EQUAL(a->faulty_n, b->faulty_n);
        CU_ASSERT(memcmp(a->faulty, b->faulty, a->faulty_n * 4) == 0);
        /* fall through: window and op */
    case VSR_MSG_START_VIEW:
        CU_ASSERT_EQUAL(a->op, b->op);
        CU_ASSERT_EQUAL(a->window_base, b->window_base);
        CU_ASSERT_EQUAL(a->window_len, b->window_len);
        for (uint32_t i = 0; i < a->window_len; i++) {
            CU_ASSERT_EQUAL(a->window[i].status, b->window[i].status);
            CU_ASSERT_EQUAL(a->window[i].full, b->window[i].full);
            CU_ASSERT_EQUAL(a->window[i].h.op, b->window[i].h.op);
            CU_ASSERT(memcmp(a->window[i].h.checksum, b->window[i].h.checksum, 32) == 0);
        }
        break;
    case VSR_MSG_STATE:
        CU_ASSERT(memcmp(a->digest, b->digest, 32) == 0);
        /* fall through */
    case VSR_MSG_PREPARE_OK:
    case VSR_MSG_REQUEST_PREPARE:
    case VSR_MSG_REPLY:
        CU_ASSERT_EQUAL(a->op, b->op);
        CU_ASSERT(memcmp(a->checksum, b->checksum, 32) == 0);
        if (t == VSR_MSG_REPLY) {
            CU_ASSERT_EQUAL(a->client, b->client);
            CU_ASSERT_EQUAL(a->request, b->request);
        }
        break;
    case VSR_MSG_COMMIT:
        CU_ASSERT(memcmp(a->checksum, b->checksum, 32) == 0);
        break;
    case VSR_MSG_REQUEST_HEADERS:
        CU_ASSERT_EQUAL(a->op, b->op);
        CU_ASSERT_EQUAL(a->op_min, b->op_min);
        CU_ASSERT(memcmp(a->checksum, b->checksum, 32) == 0);
        break;
    case VSR_MSG_HEADERS:
        CU_ASSERT_EQUAL(a->op, b->op);
        CU_ASSERT_EQUAL(a->body_len, b->body_len);
        CU_ASSERT(memcmp(a->body, b->body, a->body_len) == 0);
        break;
    case VSR_MSG_REQUEST_STATE:
    case VSR_MSG_REQUEST_VIEW:
    case VSR_MSG_VIEW:
        CU_ASSERT_EQUAL(a->op, b->op);
        break;
    default:
        break;
    }
}

static void test_roundtrip_every_type(void)
{
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (uint8_t)(i * 7);
    for (uint8_t t = 1; t < VSR_MSG_TYPE_COUNT; t++) {
        struct vsr_msg *m = sample(t), *d = calloc(1, sizeof *d);
        size_t n = vsr_wire_size(m);
        CU_ASSERT_FATAL(n >= VSR_WIRE_FIXED);
        uint8_t *buf = malloc(n + 1), *again = malloc(n);
        CU_ASSERT_EQUAL(vsr_wire_encode(m, buf, n - 1), 0); /* too small */
        CU_ASSERT_EQUAL_FATAL(vsr_wire_encode(m, buf, n + 1), n);
        CU_ASSERT_EQUAL_FATAL(vsr_wire_decode(buf, n, d), 0);
        check_same(t, m, d);
        /* one encoding per message */
        CU_ASSERT_EQUAL(vsr_wire_encode(d, again, n), n);
        CU_ASSERT(memcmp(buf, again, n) == 0);
        /* every truncation and a trailing byte are refused */
        for (size_t k = 0; k < n; k++)
            CU_ASSERT_EQUAL(vsr_wire_decode(buf, k, d), VERITY_EPROTO);
        buf[n] = 0;
        CU_ASSERT_EQUAL(vsr_wire_decode(buf, n + 1, d), VERITY_EPROTO);
        /* version and type */
        buf[0] = 2;
        CU_ASSERT_EQUAL(vsr_wire_decode(buf, n, d), VERITY_EVERSION);
        buf[0] = VSR_WIRE_VERSION;
        buf[1] = VSR_MSG_TYPE_COUNT;
        CU_ASSERT_EQUAL(vsr_wire_decode(buf, n, d), VERITY_EPROTO);
        buf[1] = 0;
        CU_ASSERT_EQUAL(vsr_wire_decode(buf, n, d), VERITY_EPROTO);
        buf[1] = t;
        buf[2] = VSR_REPLICAS_MAX; /* from out of range */
        CU_ASSERT_EQUAL(vsr_wire_decode(buf, n, d), VERITY_EPROTO);
        free(buf);
        free(again);
        free(m);
        free(d);
    }
}

/* Offset of a field in the encoding of m, found by encoding m with and
 * without a change to it. */
static size_t find_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

static void test_limits_refused(void)
{
    struct vsr_msg *m = sample(VSR_MSG_DO_VIEW_CHANGE), *d = calloc(1, sizeof *d);
    size_t n = vsr_wire_size(m);
    uint8_t *a = malloc(n), *b = malloc(n);
    CU_ASSERT_EQUAL_FATAL(vsr_wire_encode(m, a, n), n);

    /* faulty_n over the limit: not encodable, and refused on the wire */
    m->faulty_n = VSR_FAULTY_LIST_MAX + 1;
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    m->faulty_n = 3;
    m->faulty_n = 2;
    struct vsr_msg *m2 = sample(VSR_MSG_DO_VIEW_CHANGE);
    m2->faulty_n = 2;
    /* locate faulty_n: encodings of faulty_n 3 and 2 first differ there */
    size_t n2 = vsr_wire_size(m2);
    uint8_t *c = malloc(n2);
    CU_ASSERT_EQUAL_FATAL(vsr_wire_encode(m2, c, n2), n2);
    size_t at = find_diff(a, c, n2);
    CU_ASSERT_EQUAL(a[at], 3);
    memcpy(b, a, n);
    b[at] = VSR_FAULTY_LIST_MAX + 1;
    CU_ASSERT_EQUAL(vsr_wire_decode(b, n, d), VERITY_EPROTO);
    /* nack_above is the byte before: only 0 or 1 */
    memcpy(b, a, n);
    b[at - 1] = 2;
    CU_ASSERT_EQUAL(vsr_wire_decode(b, n, d), VERITY_EPROTO);

    /* window_len over the limit */
    m->faulty_n = 3;
    m->window_len = VSR_WINDOW_MAX + 1;
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    size_t wl = VSR_WIRE_FIXED + 8 + 8 + 2 + 3 * 4 + 8; /* log_view op faulty window_base */
    CU_ASSERT_EQUAL(a[wl], VSR_WINDOW_MAX);
    memcpy(b, a, n);
    b[wl] = VSR_WINDOW_MAX + 1;
    CU_ASSERT_EQUAL(vsr_wire_decode(b, n, d), VERITY_EPROTO);
    /* window entry status and full out of range */
    memcpy(b, a, n);
    b[wl + 1] = VSR_W_UNKNOWN + 1;
    CU_ASSERT_EQUAL(vsr_wire_decode(b, n, d), VERITY_EPROTO);
    memcpy(b, a, n);
    b[wl + 2] = 2;
    CU_ASSERT_EQUAL(vsr_wire_decode(b, n, d), VERITY_EPROTO);
    m->window_len = 1;
    m->window[0].status = 4;
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    free(a);
    free(b);
    free(c);
    free(m);
    free(m2);
    free(d);
}

static void test_body_must_match_header(void)
{
    struct vsr_msg *m = sample(VSR_MSG_PREPARE), *d = calloc(1, sizeof *d);
    m->header.size = 10;
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    m->header.size = m->body_len;
    size_t n = vsr_wire_size(m);
    uint8_t *a = malloc(n);
    CU_ASSERT_EQUAL_FATAL(vsr_wire_encode(m, a, n), n);
    /* header.size sits at FIXED + 32 + 32 + 8 + 8 */
    size_t at = VSR_WIRE_FIXED + 80;
    CU_ASSERT_EQUAL(a[at] | a[at + 1] << 8, (int)sizeof body);
    a[at] ^= 1;
    CU_ASSERT_EQUAL(vsr_wire_decode(a, n, d), VERITY_EPROTO);
    a[at] ^= 1;
    /* body_len claims more than there is */
    size_t bl = n - sizeof body - 4;
    a[bl + 3] = 0x7f;
    CU_ASSERT_EQUAL(vsr_wire_decode(a, n, d), VERITY_EPROTO);
    /* a body over the limit cannot be encoded */
    m->body_len = VSR_WIRE_BODY_MAX + 1;
    m->header.size = m->body_len;
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    free(a);
    free(m);
    free(d);
}

/* REQUEST_HEADERS: op_min <= op; HEADERS: 1 to VSR_HEADERS_MAX whole
 * headers. */
static void test_headers_limits(void)
{
    struct vsr_msg *m = sample(VSR_MSG_REQUEST_HEADERS), *d = calloc(1, sizeof *d);
    size_t n = vsr_wire_size(m);
    uint8_t *a = malloc(n);
    CU_ASSERT_EQUAL_FATAL(vsr_wire_encode(m, a, n), n);
    /* op at FIXED, op_min right after */
    size_t at = VSR_WIRE_FIXED + 8;
    CU_ASSERT_EQUAL(a[at], 70);
    a[at] = 78; /* op_min > op */
    CU_ASSERT_EQUAL(vsr_wire_decode(a, n, d), VERITY_EPROTO);
    a[at] = 77; /* op_min == op: one header */
    CU_ASSERT_EQUAL(vsr_wire_decode(a, n, d), 0);
    m->op_min = 78;
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    free(a);
    free(m);

    static uint8_t big[(VSR_HEADERS_MAX + 1) * VSR_HEADER_SIZE];
    m = sample(VSR_MSG_HEADERS);
    m->body = big;
    m->body_len = 0; /* no header */
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    m->body_len = VSR_HEADER_SIZE + 1; /* not whole headers */
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    m->body_len = (VSR_HEADERS_MAX + 1) * VSR_HEADER_SIZE; /* too many */
    CU_ASSERT_EQUAL(vsr_wire_size(m), 0);
    m->body_len = VSR_HEADERS_MAX * VSR_HEADER_SIZE;
    n = vsr_wire_size(m);
    CU_ASSERT_FATAL(n > 0);
    a = malloc(n + VSR_HEADER_SIZE);
    CU_ASSERT_EQUAL_FATAL(vsr_wire_encode(m, a, n), n);
    CU_ASSERT_EQUAL(vsr_wire_decode(a, n, d), 0);
    /* the same bytes claiming one header more (and carrying it) */
    size_t bl = n - m->body_len - 4;
    uint32_t more = m->body_len + VSR_HEADER_SIZE;
    for (int i = 0; i < 4; i++)
        a[bl + i] = (uint8_t)(more >> (8 * i));
    memset(a + n, 0, VSR_HEADER_SIZE);
    CU_ASSERT_EQUAL(vsr_wire_decode(a, n + VSR_HEADER_SIZE, d), VERITY_EPROTO);
    /* or one byte less than a whole header */
    uint32_t less = m->body_len - 1;
    for (int i = 0; i < 4; i++)
        a[bl + i] = (uint8_t)(less >> (8 * i));
    CU_ASSERT_EQUAL(vsr_wire_decode(a, n - 1, d), VERITY_EPROTO);
    free(a);
    free(m);
    free(d);
}

static void test_frames(void)
{
    uint8_t buf[512];
    const char *g = "orders";
    uint8_t payload[5] = {1, 2, 3, 4, 5};
    size_t h = vsr_wire_frame_header(VSR_WIRE_MSG, g, strlen(g), 7, sizeof payload, buf, sizeof buf);
    CU_ASSERT_EQUAL_FATAL(h, 8 + strlen(g) + 4);
    memcpy(buf + h, payload, sizeof payload);
    size_t total = h + sizeof payload;
    for (size_t k = 0; k < total; k++)
        CU_ASSERT_EQUAL(vsr_wire_frame_len(buf, k), 0); /* needs more */
    CU_ASSERT_EQUAL(vsr_wire_frame_len(buf, total + 10), (long)total);
    struct vsr_wire_frame f;
    CU_ASSERT_EQUAL_FATAL(vsr_wire_frame_decode(buf, total, &f), 0);
    CU_ASSERT_EQUAL(f.kind, VSR_WIRE_MSG);
    CU_ASSERT_EQUAL(f.group_len, strlen(g));
    CU_ASSERT(memcmp(f.group, g, f.group_len) == 0);
    CU_ASSERT_EQUAL(f.partition, 7);
    CU_ASSERT_EQUAL(f.payload_len, sizeof payload);
    CU_ASSERT(memcmp(f.payload, payload, sizeof payload) == 0);
    /* bad kind, reserved byte, group length past the frame */
    buf[4] = 0;
    CU_ASSERT_EQUAL(vsr_wire_frame_decode(buf, total, &f), VERITY_EPROTO);
    buf[4] = VSR_WIRE_KIND_MAX + 1;
    CU_ASSERT_EQUAL(vsr_wire_frame_decode(buf, total, &f), VERITY_EPROTO);
    buf[4] = VSR_WIRE_MSG;
    buf[5] = 1;
    CU_ASSERT_EQUAL(vsr_wire_frame_decode(buf, total, &f), VERITY_EPROTO);
    buf[5] = 0;
    buf[6] = 200;
    CU_ASSERT_EQUAL(vsr_wire_frame_decode(buf, total, &f), VERITY_EPROTO);
    buf[6] = (uint8_t)strlen(g);
    /* a length field out of range */
    uint8_t big[4] = {0xff, 0xff, 0xff, 0x7f};
    CU_ASSERT(vsr_wire_frame_len(big, 4) < 0);
    uint8_t small[4] = {3, 0, 0, 0};
    CU_ASSERT(vsr_wire_frame_len(small, 4) < 0);
    /* a frame length that disagrees with the bytes given */
    CU_ASSERT_EQUAL(vsr_wire_frame_decode(buf, total - 1, &f), VERITY_EPROTO);
    /* a group name too long to encode */
    char longname[300];
    memset(longname, 'a', sizeof longname);
    CU_ASSERT_EQUAL(vsr_wire_frame_header(VSR_WIRE_MSG, longname, sizeof longname, 0, 0, buf,
                                          sizeof buf),
                    0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vsr_wire", NULL, NULL);
    CU_add_test(s, "round trip of every message type, truncations refused",
                test_roundtrip_every_type);
    CU_add_test(s, "counts and enums over their limits refused", test_limits_refused);
    CU_add_test(s, "body must match its header", test_body_must_match_header);
    CU_add_test(s, "REQUEST_HEADERS / HEADERS limits", test_headers_limits);
    CU_add_test(s, "peer frames", test_frames);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
