/*
 * libFuzzer target over the replication core's decoders and inputs:
 *   - the input as a superblock copy (vsr_sb_decode), as is and with its
 *     checksum fixed up so the field rules are reached;
 *   - the input as an entry (vsr_entry_check / vsr_header_decode), as is and
 *     with hcheck and checksum fixed up;
 *   - the input as a replica's whole disk (superblock copies, prepares,
 *     header marks): vsr_init must classify any bytes without crashing and
 *     keep its invariants (vsr_verify), then take messages whose fields come
 *     from the rest of the input (HEADERS with headers that chain to what
 *     the replica trusts, or not; the peer-lost hint); some inputs start it
 *     in rejoin mode (fresh with cfg.rejoin, or the superblock's rejoining
 *     flag).
 * The hash is a cheap 256-bit mix (the core takes any hash through cfg.hash).
 * Built and run by tests/fuzz/run.sh.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/vsr/superblock.h"
#include "broker/vsr/vsr.h"

#define SLOTS    8
#define BODY_MAX 32
#define PSIZE    (VSR_HEADER_SIZE + BODY_MAX)

static void mix(void *ctx, const void *a, size_t alen, const void *b, size_t blen, uint8_t out[32])
{
    uint64_t h[4] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull,
                     0x082EFA98EC4E6C89ull};
    const uint8_t *parts[2] = {a, b};
    size_t lens[2] = {alen, blen};
    (void)ctx;
    for (int p = 0; p < 2; p++)
        for (size_t i = 0; i < lens[p]; i++) {
            h[i & 3] ^= parts[p][i];
            h[i & 3] *= 0x100000001B3ull;
            h[(i + 1) & 3] += h[i & 3] >> 29;
        }
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 4; i++) {
            h[i] ^= h[(i + 1) & 3] >> 31;
            h[i] *= 0x9E3779B97F4A7C15ull;
        }
    memcpy(out, h, 32);
}

struct disk {
    uint8_t sb[VSR_SB_COPIES][VSR_SB_SIZE];
    uint8_t prep[SLOTS][PSIZE];
    uint32_t prep_len[SLOTS];
    uint8_t hdr[SLOTS][VSR_HEADER_SIZE];
};

static int rd(const uint8_t *src, uint32_t len, uint8_t *buf, uint32_t cap, uint32_t *out)
{
    if (len > cap)
        return -1;
    memcpy(buf, src, len);
    *out = len;
    return 0;
}
static int rd_p(void *c, uint32_t s, uint8_t *b, uint32_t cap, uint32_t *l)
{
    struct disk *d = c;
    return rd(d->prep[s], d->prep_len[s], b, cap, l);
}
static int rd_h(void *c, uint32_t s, uint8_t *b, uint32_t cap, uint32_t *l)
{
    struct disk *d = c;
    return rd(d->hdr[s], VSR_HEADER_SIZE, b, cap, l);
}
static int rd_s(void *c, uint32_t s, uint8_t *b, uint32_t cap, uint32_t *l)
{
    struct disk *d = c;
    return rd(d->sb[s], VSR_SB_SIZE, b, cap, l);
}

static size_t take(const uint8_t **p, size_t *n, void *dst, size_t want)
{
    size_t k = want < *n ? want : *n;
    memset(dst, 0, want);
    memcpy(dst, *p, k);
    *p += k;
    *n -= k;
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vsr_superblock sb;
    uint8_t buf[VSR_SB_SIZE];
    (void)vsr_sb_decode(mix, NULL, data, size, &sb);
    if (size >= VSR_SB_SIZE) {
        memcpy(buf, data, VSR_SB_SIZE);
        mix(NULL, buf, 96, NULL, 0, buf + 96);
        (void)vsr_sb_decode(mix, NULL, buf, VSR_SB_SIZE, &sb);
    }

    struct vsr_config cfg = {0};
    static struct disk d;
    cfg.cluster = 7;
    cfg.replica = 1;
    cfg.replica_count = 3;
    cfg.slots = SLOTS;
    cfg.pipeline = 2;
    cfg.body_max = BODY_MAX;
    cfg.heartbeat_ticks = 2;
    cfg.retry_ticks = 3;
    cfg.timeout_ticks = 5;
    cfg.hash = mix;
    cfg.read_prepare = rd_p;
    cfg.read_header = rd_h;
    cfg.read_superblock = rd_s;
    cfg.ctx = &d;

    struct vsr_header h;
    if (size >= VSR_HEADER_SIZE && size <= PSIZE) {
        uint8_t e[PSIZE];
        (void)vsr_entry_check(&cfg, data, (uint32_t)size, &h);
        memcpy(e, data, size);
        /* fix up size, checksum and hcheck so the field rules are reached */
        uint32_t body = (uint32_t)size - VSR_HEADER_SIZE;
        memcpy(e + 112, &body, 4);
        mix(NULL, e + 64, VSR_HEADER_SIZE - 64, e + VSR_HEADER_SIZE, body, e + 32);
        mix(NULL, e + 32, VSR_HEADER_SIZE - 32, NULL, 0, e);
        (void)vsr_header_decode(&cfg, e, &h);
        (void)vsr_entry_check(&cfg, e, (uint32_t)size, &h);
    }

    /* The input as a disk: one valid superblock (fields from the input),
     * then raw slots; a slot's bytes are sometimes sealed so that valid
     * entries with arbitrary fields are reached. */
    const uint8_t *p = data;
    size_t n = size;
    memset(&d, 0, sizeof d);
    struct vsr_superblock s = {0};
    take(&p, &n, &s.view, 8);
    take(&p, &n, &s.log_view, 8);
    take(&p, &n, &s.commit_max, 8);
    take(&p, &n, &s.sv_op, 8);
    /* rejoin (a wiped disk): the superblock's flag, or a fresh start with
     * cfg.rejoin and no superblock at all; the nonce is small so that VIEW
     * answers from the input match it */
    uint8_t rj = (uint8_t)(s.sv_op >> 56);
    cfg.rejoin = (rj & 1) != 0;
    cfg.rejoin_nonce = rj >> 4;
    s.flags = (rj & 2) ? VSR_SB_REJOINING : 0;
    s.view %= 64;
    s.log_view = s.view ? s.log_view % (s.view + 1) : 0;
    s.commit_max %= 64;
    s.sv_op %= 64;
    s.sequence = 1;
    s.cluster = 7;
    s.replica = 1;
    s.replica_count = 3;
    for (int i = 0; i < VSR_SB_COPIES && !(rj & 4); i++)
        vsr_sb_encode(mix, NULL, &s, d.sb[i]);
    for (int i = 0; i < SLOTS && n; i++) {
        uint8_t flags = 0;
        take(&p, &n, &flags, 1);
        d.prep_len[i] = VSR_HEADER_SIZE + (flags % (BODY_MAX + 1));
        take(&p, &n, d.prep[i], d.prep_len[i]);
        if (flags & 0x40) {
            uint64_t op = (uint64_t)i + SLOTS * ((flags >> 1) & 3);
            uint32_t body = d.prep_len[i] - VSR_HEADER_SIZE;
            memcpy(d.prep[i] + 96, &op, 8);
            memcpy(d.prep[i] + 112, &body, 4);
            memset(d.prep[i] + 116, 0, 4);
            memset(d.prep[i] + 136, 0, 8);
            mix(NULL, d.prep[i] + 64, VSR_HEADER_SIZE - 64, d.prep[i] + VSR_HEADER_SIZE, body,
                d.prep[i] + 32);
            mix(NULL, d.prep[i] + 32, VSR_HEADER_SIZE - 32, NULL, 0, d.prep[i]);
            if (flags & 0x80)
                memcpy(d.hdr[i], d.prep[i], VSR_HEADER_SIZE);
        }
        if (!(flags & 0x80))
            take(&p, &n, d.hdr[i], VSR_HEADER_SIZE);
    }

    static uint8_t mem[1 << 16];
    static struct vsr_msg msgs[256];
    static struct vsr_write writes[64];
    static struct vsr_commit commits[64];
    static uint8_t arena[1 << 17];
    struct vsr_outbox ob;
    if (vsr_size(&cfg) > sizeof mem || vsr_outbox_arena_size(&cfg) > sizeof arena)
        abort();
    vsr_outbox_init(&ob, msgs, 256, writes, 64, commits, 64, arena, sizeof arena);
    struct vsr_state st = {0};
    struct vsr *r = vsr_init(mem, &cfg, &st, (rj & 4) != 0, &ob);
    if (!r)
        return 0;
    /* Messages with fields from the rest of the input. */
    while (n >= 16) {
        struct vsr_msg m;
        memset(&m, 0, sizeof m);
        uint8_t t = 0, from = 0;
        take(&p, &n, &t, 1);
        take(&p, &n, &from, 1);
        m.type = (uint8_t)(t % (VSR_MSG_TYPE_COUNT + 1));
        m.from = (uint8_t)(from % 4);
        m.to = 1;
        m.cluster = 7;
        take(&p, &n, &m.view, 1);
        take(&p, &n, &m.op, 1);
        take(&p, &n, &m.commit, 1);
        take(&p, &n, &m.log_view, 1);
        take(&p, &n, m.checksum, 4);
        take(&p, &n, &m.header.op, 1);
        m.header.size = 0;
        m.client = 1;
        take(&p, &n, &m.request, 1);
        uint8_t wl = 0;
        take(&p, &n, &wl, 1);
        m.window_len = wl % (VSR_WINDOW_MAX + 2);
        m.window_base = m.op;
        for (uint32_t i = 0; i < m.window_len && i < VSR_WINDOW_MAX; i++) {
            m.window[i].status = (uint8_t)(i % 4);
            m.window[i].h.op = m.op + i;
        }
        m.op_min = m.log_view; /* REQUEST_HEADERS */
        /* HEADERS: 1 or 2 headers (the core takes SLOTS / 4), each at an op
         * from the input, usually with the checksum the replica trusts
         * there (so the chain is followed) and a valid hcheck */
        uint8_t hb[3 * VSR_HEADER_SIZE];
        if (m.type == VSR_MSG_HEADERS) {
            uint8_t cnt = 0;
            take(&p, &n, &cnt, 1);
            uint32_t hn = 1 + cnt % 3; /* 3: one more than the core takes */
            for (uint32_t i = 0; i < hn; i++) {
                struct vsr_header h;
                memset(&h, 0, sizeof h);
                uint8_t opb = 0;
                take(&p, &n, &opb, 1);
                take(&p, &n, h.parent, 4);
                h.op = opb % 64;
                if (!(cnt & 0x40))
                    (void)vsr_checksum_of(r, h.op, h.checksum);
                h.size = cnt & 0x20 ? BODY_MAX : 0;
                vsr_header_encode(&cfg, &h, NULL, hb + i * VSR_HEADER_SIZE);
                if (cnt & 0x80)
                    hb[i * VSR_HEADER_SIZE] ^= 1; /* hcheck broken */
            }
            m.body = hb;
            m.body_len = hn * VSR_HEADER_SIZE - ((cnt & 0x10) ? 1 : 0);
        }
        vsr_on_message(r, &m, &ob);
        if (t & 0x80)
            vsr_on_peer_lost(r, m.from, &ob); /* the link to the sender closed */
        vsr_on_tick(r, &ob);
        /* complete the writes it asked for (copied: each call refills ob) */
        struct vsr_write done[64];
        size_t nd = ob.nwrites < 64 ? ob.nwrites : 64;
        memcpy(done, ob.writes, nd * sizeof done[0]);
        for (size_t i = 0; i < nd; i++)
            vsr_on_write_done(r, &done[i], &ob);
        vsr_verify(r);
    }
    return 0;
}
