/*
 * peer: the broker-to-broker listener and links of a cluster (peer.h has
 * the design: one connection per pair, HELLO, one timer per broker).
 *
 * HELLO payload (after the frame header, group "" partition 0):
 *   off size field
 *     0    4 node id of the sender
 *     4    8 cluster id (hash of the node list: ids and peer addresses)
 *
 * Invariants: a link is `up` only with a bev whose HELLO both ways was
 * valid; at most one bev per link; a pending (accepted, not yet
 * identified) connection is in pending[] and nowhere else.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/metrics.h"
#include "broker/peer.h"
#include "broker/peer_tls.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define HELLO_LEN 12

static int64_t mono_ms(void)
{
    return mono_ns() / 1000000;
}

static uint64_t cluster_id_of(const struct broker_config *c)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over ids and peer addresses, in id order */
    uint32_t last = 0;
    for (uint32_t k = 0; k < c->cluster_n; k++) {
        const struct bcfg_node *next = NULL;
        for (uint32_t i = 0; i < c->cluster_n; i++)
            if (c->nodes[i].id > last && (!next || c->nodes[i].id < next->id))
                next = &c->nodes[i];
        VERITY_VERIFY(next);
        last = next->id;
        char buf[BCFG_NODE_ADDR_MAX + 16];
        int n = snprintf(buf, sizeof buf, "%u=%s;", (unsigned)next->id, next->peer);
        for (int i = 0; i < n; i++) {
            h ^= (uint8_t)buf[i];
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

static struct peer_link *link_of(struct broker *b, uint32_t id)
{
    for (uint32_t i = 0; i < b->peers.n_links; i++)
        if (b->peers.links[i].id == id)
            return &b->peers.links[i];
    return NULL;
}

const struct peer_link *peer_link(const struct broker *b, uint32_t id)
{
    return link_of((struct broker *)b, id);
}

static int send_hello(struct broker *b, struct bufferevent *bev)
{
    uint8_t buf[VSR_WIRE_FRAME_HDR_MAX + HELLO_LEN];
    size_t h = vsr_wire_frame_header(VSR_WIRE_HELLO, "", 0, 0, HELLO_LEN, buf, sizeof buf);
    VERITY_VERIFY(h > 0);
    uint32_t id = b->cfg.node_id;
    uint64_t c = b->peers.cluster_id;
    for (int i = 0; i < 4; i++)
        buf[h + i] = (uint8_t)(id >> (8 * i));
    for (int i = 0; i < 8; i++)
        buf[h + 4 + i] = (uint8_t)(c >> (8 * i));
    return bufferevent_write(bev, buf, h + HELLO_LEN);
}

static void link_down(struct broker *b, struct peer_link *l, const char *why)
{
    if (l->bev) {
        bufferevent_free(l->bev);
        l->bev = NULL;
    }
    if (l->up) {
        l->disconnects++;
        blog(BLOG_WARN, "peer_down", "node=%u reason=%s", (unsigned)l->id, why);
    }
    l->up = false;
    l->redial_at_ms = mono_ms() + l->redial_ms;
    l->redial_ms = l->redial_ms * 2 > PEER_REDIAL_MAX_MS ? PEER_REDIAL_MAX_MS : l->redial_ms * 2;
}

static void link_up(struct broker *b, struct peer_link *l)
{
    l->up = true;
    l->connects++;
    l->redial_ms = PEER_REDIAL_MIN_MS;
    l->last_rx_ms = l->last_tx_ms = mono_ms();
    blog(BLOG_INFO, "peer_up", "node=%u addr=%s role=%s", (unsigned)l->id, l->node->peer,
         l->dialer ? "dialer" : "acceptor");
}

/* Reads every complete frame in bev's input. Returns false when the
 * connection must close (bad frame, bad HELLO). For a pending connection
 * (*lp NULL) the first frame must be HELLO; it sets *lp. */
static bool read_frames(struct broker *b, struct bufferevent *bev, struct peer_link **lp)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        uint8_t head[4];
        if (avail < 4)
            return true;
        evbuffer_copyout(in, head, 4);
        long fl = vsr_wire_frame_len(head, 4);
        if (fl == 0) { /* length known: check it against what is buffered */
            uint32_t len = (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 |
                           (uint32_t)head[3] << 24;
            fl = len > VSR_WIRE_FRAME_MAX || len < 8 ? VERITY_EPROTO : 4 + (long)len;
        }
        if (fl < 0)
            return false;
        if (avail < (size_t)fl)
            return true;
        uint8_t *p = evbuffer_pullup(in, fl);
        struct vsr_wire_frame f;
        if (!p || vsr_wire_frame_decode(p, (size_t)fl, &f))
            return false;
        struct peer_link *l = *lp;
        if (!l) {
            if (f.kind != VSR_WIRE_HELLO || f.payload_len != HELLO_LEN)
                return false;
            uint32_t id = 0;
            uint64_t c = 0;
            for (int i = 0; i < 4; i++)
                id |= (uint32_t)f.payload[i] << (8 * i);
            for (int i = 0; i < 8; i++)
                c |= (uint64_t)f.payload[4 + i] << (8 * i);
            l = link_of(b, id);
            if (!l || l->dialer || c != b->peers.cluster_id) {
                b->peers.refused++;
                blog(BLOG_WARN, "peer_refused", "node=%u reason=%s", (unsigned)id,
                     !l ? "not_a_member" : l->dialer ? "wrong_direction" : "cluster_mismatch");
                return false;
            }
            *lp = l;
        } else if (f.kind == VSR_WIRE_HELLO) {
            if (!l->dialer || l->up)
                return false; /* only the acceptor's answer to our HELLO */
            uint32_t id = 0;
            for (int i = 0; i < 4 && f.payload_len == HELLO_LEN; i++)
                id |= (uint32_t)f.payload[i] << (8 * i);
            if (f.payload_len != HELLO_LEN || id != l->id)
                return false;
            link_up(b, l);
        } else if (!l->up) {
            return false;
        } else {
            l->frames_in++;
            if (f.kind == VSR_WIRE_MSG && b->peers.on_msg)
                b->peers.on_msg(b, l->id, &f);
            else if (f.kind == VSR_WIRE_XFER && b->peers.on_xfer)
                b->peers.on_xfer(b, l->id, &f);
        }
        l->last_rx_ms = mono_ms();
        evbuffer_drain(in, fl);
    }
}

static void link_read(struct bufferevent *bev, void *arg)
{
    struct peer_ctx *c = arg;
    struct peer_link *l = c->l;
    if (!read_frames(c->b, bev, &l))
        link_down(c->b, c->l, "bad_frame");
}

static void link_event(struct bufferevent *bev, short what, void *arg)
{
    struct peer_ctx *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        (void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (send_hello(c->b, bev))
            link_down(c->b, c->l, "write_failed");
        return;
    }
    peer_tls_failed(c->b, bev, what, (unsigned)c->l->id); /* issue 14 */
    bool was_up = c->l->up;
    link_down(c->b, c->l, (what & BEV_EVENT_EOF) ? "eof" : "error");
    if (was_up && c->b->peers.on_down)
        c->b->peers.on_down(c->b, c->l->id);
}

static void dial(struct broker *b, struct peer_link *l, struct peer_ctx *c)
{
    char host[BCFG_NODE_ADDR_MAX];
    uint16_t port;
    /* peer_dial: a node-local address for this node (a relay), else its peer address */
    const char *via = b->cfg.peer_dial_addr[l->node - b->cfg.nodes];
    if (bcfg_split_hostport(via[0] ? via : l->node->peer, host, sizeof host, &port))
        return;
    l->bev = peer_tls_bev(b, -1, host); /* issue 14: TLS when peer_tls_cert is set */
    if (!l->bev)
        return;
    bufferevent_setcb(l->bev, link_read, NULL, link_event, c);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    l->last_rx_ms = mono_ms();
    if (bufferevent_socket_connect_hostname(l->bev, NULL, AF_UNSPEC, host, port))
        link_down(b, l, "connect_failed");
}

/* ---- accepted connections ------------------------------------------------ */


static void pend_drop(struct broker *b, int slot)
{
    bufferevent_free(b->peers.pending[slot]);
    b->peers.pending[slot] = NULL;
}

static void pend_read(struct bufferevent *bev, void *arg)
{
    struct peer_ctx *pc = arg;
    struct broker *b = pc->b;
    struct peer_link *l = NULL;
    struct evbuffer *in = bufferevent_get_input(bev);
    /* Only the HELLO first: decode it, then hand the bev to its link. */
    uint8_t head[4];
    if (evbuffer_get_length(in) < 4)
        return;
    evbuffer_copyout(in, head, 4);
    uint32_t len = (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 |
                   (uint32_t)head[3] << 24;
    if (len > VSR_WIRE_FRAME_HDR_MAX + HELLO_LEN || len < 8) {
        pend_drop(b, pc->slot);
        return;
    }
    if (evbuffer_get_length(in) < 4 + (size_t)len)
        return;
    uint8_t frame[VSR_WIRE_FRAME_HDR_MAX + HELLO_LEN + 4];
    evbuffer_remove(in, frame, 4 + len);
    struct vsr_wire_frame f;
    bool ok = vsr_wire_frame_decode(frame, 4 + len, &f) == 0;
    if (ok && f.kind == VSR_WIRE_HELLO && f.payload_len == HELLO_LEN) {
        uint32_t id = 0;
        uint64_t c = 0;
        for (int i = 0; i < 4; i++)
            id |= (uint32_t)f.payload[i] << (8 * i);
        for (int i = 0; i < 8; i++)
            c |= (uint64_t)f.payload[4 + i] << (8 * i);
        l = link_of(b, id);
        if (!l || l->dialer || c != b->peers.cluster_id) {
            b->peers.refused++;
            blog(BLOG_WARN, "peer_refused", "node=%u reason=%s", (unsigned)id,
                 !l ? "not_a_member" : l->dialer ? "wrong_direction" : "cluster_mismatch");
            l = NULL;
        } else if (!peer_tls_peer_ok(b, bev, l->node)) { /* issue 14: its certificate's name */
            b->peers.refused++;
            blog(BLOG_WARN, "peer_refused", "node=%u reason=certificate_name_mismatch",
                 (unsigned)id);
            l = NULL;
        }
    }
    if (!l) {
        pend_drop(b, pc->slot);
        return;
    }
    /* The newest connection from a node wins (the old one is dead or dying). */
    if (l->bev)
        link_down(b, l, "replaced");
    b->peers.pending[pc->slot] = NULL;
    bufferevent_set_timeouts(bev, NULL, NULL); /* the tick watches silence from now */
    l->bev = bev;
    struct peer_ctx *lc = &b->peers.lctx[l - b->peers.links];
    bufferevent_setcb(bev, link_read, NULL, link_event, lc);
    if (send_hello(b, bev)) {
        link_down(b, l, "write_failed");
        return;
    }
    link_up(b, l);
    if (evbuffer_get_length(in))
        link_read(bev, lc);
}

static void pend_event(struct bufferevent *bev, short what, void *arg)
{
    struct peer_ctx *pc = arg;
    if (what & BEV_EVENT_CONNECTED)
        return; /* issue 14: a TLS link's handshake done; HELLO comes next */
    peer_tls_failed(pc->b, bev, what, 0);
    pend_drop(pc->b, pc->slot);
}

static void peer_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                        int salen, void *arg)
{
    struct broker *b = arg;
    (void)lis;
    (void)sa;
    (void)salen;
    int slot = -1;
    for (int i = 0; i < BCFG_NODES_MAX * 2 && slot < 0; i++)
        if (!b->peers.pending[i])
            slot = i;
    if (slot < 0) {
        b->peers.refused++;
        evutil_closesocket(fd);
        return;
    }
    struct bufferevent *bev = peer_tls_bev(b, fd, NULL); /* issue 14 */
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    b->peers.accepted++;
    b->peers.pending[slot] = bev;
    b->peers.pctx[slot] = (struct peer_ctx){b, NULL, slot};
    bufferevent_setcb(bev, pend_read, NULL, pend_event, &b->peers.pctx[slot]);
    struct timeval tv = {PEER_DEAD_MS / 1000, (PEER_DEAD_MS % 1000) * 1000};
    bufferevent_set_timeouts(bev, &tv, NULL); /* a HELLO must come soon */
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* ---- the one timer ------------------------------------------------------- */

static void send_ping(struct peer_link *l)
{
    uint8_t buf[16];
    size_t h = vsr_wire_frame_header(VSR_WIRE_PING, "", 0, 0, 0, buf, sizeof buf);
    if (h && bufferevent_write(l->bev, buf, h) == 0) {
        l->last_tx_ms = mono_ms();
        l->frames_out++;
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    int64_t now = mono_ms();
    for (uint32_t i = 0; i < b->peers.n_links; i++) {
        struct peer_link *l = &b->peers.links[i];
        if (l->bev && now - l->last_rx_ms > PEER_DEAD_MS) {
            link_down(b, l, "silent");
            continue;
        }
        if (l->up && now - l->last_tx_ms >= PEER_PING_MS)
            send_ping(l);
        if (!l->bev && l->dialer && now >= l->redial_at_ms && !b->stopping)
            dial(b, l, &b->peers.lctx[i]);
    }
    if (b->peers.on_tick)
        b->peers.on_tick(b);
}

int peer_start(struct broker *b)
{
    struct peers *p = &b->peers;
    if (b->cfg.cluster_n == 0)
        return 0;
    p->self = bcfg_self(&b->cfg);
    if (!p->self)
        return VERITY_EINVAL;
    p->on = true;
    p->cluster_id = cluster_id_of(&b->cfg);
    int trc = peer_tls_open(b); /* issue 14: mutual TLS on the links */
    if (trc)
        return trc;
    for (uint32_t i = 0; i < b->cfg.cluster_n; i++) {
        const struct bcfg_node *n = &b->cfg.nodes[i];
        if (n->id == b->cfg.node_id)
            continue;
        struct peer_link *l = &p->links[p->n_links];
        memset(l, 0, sizeof *l);
        l->id = n->id;
        l->node = n;
        l->dialer = b->cfg.node_id < n->id;
        l->redial_ms = PEER_REDIAL_MIN_MS;
        p->lctx[p->n_links] = (struct peer_ctx){b, l, 0};
        p->n_links++;
    }
    char host[BCFG_NODE_ADDR_MAX];
    uint16_t port;
    struct sockaddr_in sin;
    if (bcfg_split_hostport(p->self->peer, host, sizeof host, &port))
        return VERITY_EINVAL;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (evutil_inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        blog(BLOG_ERROR, "peer_listen_failed", "addr=%s error=bad_address (numeric IPv4 expected)",
             p->self->peer);
        return VERITY_EINVAL;
    }
    p->listener = evconnlistener_new_bind(
        b->base, peer_accept, b, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        64, (struct sockaddr *)&sin, sizeof sin);
    if (!p->listener) {
        int rc = errno ? -errno : -EADDRINUSE;
        blog(BLOG_ERROR, "peer_listen_failed", "addr=%s error=%s", p->self->peer,
             verity_errname(rc));
        return rc;
    }
    snprintf(p->peer_addr, sizeof p->peer_addr, "%s", p->self->peer);
    p->tick_ev = event_new(b->base, -1, EV_PERSIST, tick_cb, b);
    struct timeval tv = {0, PEER_TICK_MS * 1000};
    if (!p->tick_ev || event_add(p->tick_ev, &tv))
        return -ENOMEM;
    blog(BLOG_INFO, "cluster_started", "node_id=%u peer=%s nodes=%u cluster_id=%016" PRIx64,
         (unsigned)b->cfg.node_id, p->peer_addr, (unsigned)b->cfg.cluster_n, p->cluster_id);
    return 0;
}

void peer_stop(struct broker *b)
{
    struct peers *p = &b->peers;
    if (p->tick_ev) {
        event_free(p->tick_ev);
        p->tick_ev = NULL;
    }
    if (p->listener) {
        evconnlistener_free(p->listener);
        p->listener = NULL;
    }
    for (int i = 0; i < BCFG_NODES_MAX * 2; i++)
        if (p->pending[i])
            pend_drop(b, i);
    for (uint32_t i = 0; i < p->n_links; i++)
        if (p->links[i].bev) {
            bufferevent_free(p->links[i].bev);
            p->links[i].bev = NULL;
            p->links[i].up = false;
        }
    peer_tls_close(b);
}

bool peer_send(struct broker *b, uint32_t to, const char *group, uint32_t partition,
               const struct vsr_msg *m)
{
    struct peer_link *l = link_of(b, to);
    if (!l || !l->up || !l->bev)
        return false;
    size_t n = vsr_wire_size(m);
    size_t glen = strlen(group);
    if (n == 0 || glen > VSR_WIRE_GROUP_MAX)
        return false;
    struct evbuffer *out = bufferevent_get_output(l->bev);
    if (evbuffer_get_length(out) > PEER_OUT_MAX)
        return false; /* the protocol resends; a stuck peer must not grow us */
    uint8_t hdr[VSR_WIRE_FRAME_HDR_MAX];
    size_t h = vsr_wire_frame_header(VSR_WIRE_MSG, group, glen, partition, (uint32_t)n, hdr,
                                     sizeof hdr);
    struct evbuffer_iovec v;
    if (h == 0 || evbuffer_add(out, hdr, h) || evbuffer_reserve_space(out, n, &v, 1) != 1)
        return false;
    size_t w = vsr_wire_encode(m, v.iov_base, v.iov_len);
    VERITY_VERIFY(w == n);
    v.iov_len = n;
    if (evbuffer_commit_space(out, &v, 1))
        return false;
    l->frames_out++;
    l->last_tx_ms = mono_ms();
    return true;
}

bool peer_send_payload(struct broker *b, uint32_t to, uint8_t kind, const char *group,
                       uint32_t partition, const uint8_t *payload, size_t len)
{
    struct peer_link *l = link_of(b, to);
    if (!l || !l->up || !l->bev || len > VSR_WIRE_MSG_MAX)
        return false;
    size_t glen = strlen(group);
    struct evbuffer *out = bufferevent_get_output(l->bev);
    if (evbuffer_get_length(out) > PEER_OUT_MAX)
        return false;
    uint8_t hdr[VSR_WIRE_FRAME_HDR_MAX];
    size_t h = vsr_wire_frame_header(kind, group, glen, partition, (uint32_t)len, hdr, sizeof hdr);
    struct evbuffer_iovec v;
    if (h == 0 || evbuffer_reserve_space(out, h + len, &v, 1) != 1)
        return false; /* nothing added: the stream stays whole */
    memcpy(v.iov_base, hdr, h);
    memcpy((uint8_t *)v.iov_base + h, payload, len);
    v.iov_len = h + len;
    if (evbuffer_commit_space(out, &v, 1))
        return false;
    l->frames_out++;
    l->last_tx_ms = mono_ms();
    return true;
}

/* ---- observability --------------------------------------------------------- */

void peer_metrics_render(struct broker *b, struct evbuffer *o)
{
    struct peers *p = &b->peers;
    if (!p->on)
        return;
    met_family(o, "verity_cluster_peer_up", "gauge",
               "1 while the connection to this peer broker is up (HELLO exchanged).");
    for (uint32_t i = 0; i < p->n_links; i++)
        evbuffer_add_printf(o, "verity_cluster_peer_up{node=\"%u\"} %d\n",
                            (unsigned)p->links[i].id, p->links[i].up ? 1 : 0);
    met_family(o, "verity_cluster_peer_connects_total", "counter",
               "Times the connection to this peer came up.");
    for (uint32_t i = 0; i < p->n_links; i++)
        evbuffer_add_printf(o, "verity_cluster_peer_connects_total{node=\"%u\"} %" PRIu64 "\n",
                            (unsigned)p->links[i].id, p->links[i].connects);
    met_family(o, "verity_cluster_peer_disconnects_total", "counter",
               "Times the connection to this peer went down after being up.");
    for (uint32_t i = 0; i < p->n_links; i++)
        evbuffer_add_printf(o, "verity_cluster_peer_disconnects_total{node=\"%u\"} %" PRIu64 "\n",
                            (unsigned)p->links[i].id, p->links[i].disconnects);
    met_family(o, "verity_cluster_peer_refused_total", "counter",
               "Peer connections closed before or at HELLO (unknown node, wrong cluster).");
    evbuffer_add_printf(o, "verity_cluster_peer_refused_total %" PRIu64 "\n", p->refused);
    cluster_metrics_render(b, o);
}

void peer_http_cluster(struct evhttp_request *req, void *arg)
{
    struct broker *b = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
        evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        evhttp_send_error(req, 405, NULL);
        return;
    }
    json_t *nodes = json_array(), *parts = json_array();
    if (b->cfg.cluster_n == 0) {
        json_array_append_new(nodes, json_pack("{s:i,s:s,s:s,s:s,s:b}", "id", (int)b->cfg.node_id,
                                               "listen", b->listen_addr, "peer", "", "http",
                                               b->http_addr, "connected", 1));
    }
    for (uint32_t i = 0; i < b->cfg.cluster_n; i++) {
        const struct bcfg_node *n = &b->cfg.nodes[i];
        const struct peer_link *l = peer_link(b, n->id);
        bool connected = n->id == b->cfg.node_id ? true : (l && l->up);
        json_array_append_new(nodes, json_pack("{s:i,s:s,s:s,s:s,s:b}", "id", (int)n->id, "listen",
                                               n->listen, "peer", n->peer, "http", n->http,
                                               "connected", connected));
    }
    /* Partitions: every local partition is a single-replica group in this
     * slice (replicated partitions are not built yet: docs/REPLICATION.md). */
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        for (uint32_t i = 0; t->ready && i < t->cfg.partitions; i++) {
            struct partition *p = t->parts[i];
            uint64_t hw = p && p->replica ? replica_hw(p->replica) : 0;
            json_t *row = p ? cluster_part_json(p) : NULL;
            if (row || (p && p->error == VERITY_ENOTLEADER)) {
                if (row)
                    json_array_append_new(parts, row);
                continue;
            }
            json_array_append_new(
                parts, json_pack("{s:s,s:i,s:[i],s:i,s:i,s:s,s:I,s:I,s:[]}", "topic", t->name,
                                 "partition", (int)i, "replicas", (int)b->cfg.node_id, "primary",
                                 (int)b->cfg.node_id, "view", 0, "role", "single", "commit",
                                 (json_int_t)hw, "op", (json_int_t)hw, "backups"));
        }
    }
    json_t *root = json_pack("{s:i,s:o,s:o}", "node_id", (int)b->cfg.node_id, "nodes", nodes,
                             "partitions", parts);
    json_t *meta = cluster_meta_json(b);
    if (root && meta)
        json_object_set_new(root, "meta", meta);
    else
        json_decref(meta);
    json_t *grp = groups_repl_json(b);
    if (root && grp)
        json_object_set_new(root, "groups", grp);
    else
        json_decref(grp);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    struct evbuffer *body = text ? evbuffer_new() : NULL;
    if (!body) {
        free(text);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(body, text, strlen(text));
    evbuffer_add(body, "\n", 1);
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}
