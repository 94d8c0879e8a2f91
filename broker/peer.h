/*
 * peer: broker-to-broker connections of a cluster (the `peer` address of
 * each node in the cluster section).
 *
 * One TCP connection per pair of brokers, dialled by the broker with the
 * lower node id and accepted by the higher one; every replica group's
 * messages travel on it as vsr_wire frames (group name + partition + vsr
 * message). The first frame each way is HELLO (node id, cluster id): an
 * accepted connection that names a node outside the cluster, the wrong
 * cluster id, or a node that should not dial us, is closed. One timer per
 * broker (PEER_TICK_MS) drives every pair: it pings, closes a connection
 * silent for PEER_DEAD_MS, and redials with a back-off (PEER_REDIAL_MIN_MS
 * doubling to PEER_REDIAL_MAX_MS); the same tick is the clock replica
 * groups count in (peer_tick_hook).
 *
 * State of a link (struct peer_link):
 *
 *   DOWN --dial (lower id) / accept+HELLO (higher id)--> UP
 *    ^                                                    |
 *    +---- EOF, error, bad frame, silent PEER_DEAD_MS ----+
 *
 * Everything runs on the event loop thread.
 */
#ifndef VERITY_BROKER_PEER_H
#define VERITY_BROKER_PEER_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/config.h"
#include "broker/vsr/vsr_wire.h"

#define PEER_TICK_MS       50
#define PEER_PING_MS       200
#define PEER_DEAD_MS       2000
#define PEER_REDIAL_MIN_MS 100
#define PEER_REDIAL_MAX_MS 400 /* under half the view-change timeout (1 s): a restarted
                                * broker hears its primary before it times out */
#define PEER_OUT_MAX       (64u << 20) /* bytes queued to one peer before it counts as dead */

struct broker;
struct bufferevent;
struct evconnlistener;
struct event;

struct peer_link {
    uint32_t id;                 /* the other node's id */
    const struct bcfg_node *node; /* its config entry (borrowed from the broker's cfg) */
    struct bufferevent *bev;     /* NULL while DOWN or dialling */
    bool up;                     /* HELLO exchanged */
    bool dialer;                 /* we dial this one (our id is lower) */
    int64_t last_rx_ms;          /* monotonic */
    int64_t last_tx_ms;
    int64_t redial_at_ms;
    uint32_t redial_ms;          /* current back-off */
    uint64_t connects;           /* times it came UP */
    uint64_t disconnects;        /* times it went DOWN after UP */
    uint64_t frames_in, frames_out, bad_frames;
};

/* Receives a MSG frame from node `from` (already decoded and length checked;
 * payload is a vsr message not yet decoded). */
typedef void (*peer_msg_fn)(struct broker *b, uint32_t from, const struct vsr_wire_frame *f);
/* Receives an XFER frame (state transfer, broker/vsr/xfer_wire.h) from node
 * `from`; payload not yet decoded. */
typedef void (*peer_xfer_fn)(struct broker *b, uint32_t from, const struct vsr_wire_frame *f);
/* Called once per PEER_TICK_MS. */
typedef void (*peer_tick_fn)(struct broker *b);
/* The link to node closed by the other side or failed (EOF, socket error:
 * what kill -9 of that broker gives at once), not for silence. */
typedef void (*peer_down_fn)(struct broker *b, uint32_t node);

/* What a connection's callbacks get: the broker and the link (or the
 * pending slot of an accepted connection not yet identified). */
struct peer_ctx {
    struct broker *b;
    struct peer_link *l;
    int slot;
};

struct peers {
    bool on;                       /* a cluster is configured */
    uint64_t cluster_id;           /* from the node list: same on every broker */
    const struct bcfg_node *self;
    struct evconnlistener *listener;
    char peer_addr[BCFG_ADDR_MAX + 16]; /* bound peer address */
    struct peer_link links[BCFG_NODES_MAX];
    uint32_t n_links;
    struct event *tick_ev;
    struct bufferevent *pending[BCFG_NODES_MAX * 2]; /* accepted, no HELLO yet */
    struct peer_ctx lctx[BCFG_NODES_MAX];
    struct peer_ctx pctx[BCFG_NODES_MAX * 2];
    peer_msg_fn on_msg;
    peer_xfer_fn on_xfer;
    peer_tick_fn on_tick;
    peer_down_fn on_down;
    uint64_t accepted, refused;
    struct peer_tls *tls; /* broker/peer_tls.c: NULL = plaintext links */
};

/* Starts the peer listener and the dialling timer when cfg has a cluster.
 * 0, or -errno / VERITY_EINVAL (the peer address cannot be bound). */
int peer_start(struct broker *b) __attribute__((warn_unused_result));
void peer_stop(struct broker *b);

/* Sends one vsr message to node `to` for group/partition. False when the
 * link is down, the message cannot be encoded, or the link's queue is full
 * (the message is dropped: the protocol resends). */
bool peer_send(struct broker *b, uint32_t to, const char *group, uint32_t partition,
               const struct vsr_msg *m);

/* Sends a frame of kind with an already encoded payload (state transfer).
 * False as peer_send (link down, queue full, frame too long). */
bool peer_send_payload(struct broker *b, uint32_t to, uint8_t kind, const char *group,
                       uint32_t partition, const uint8_t *payload, size_t len);

const struct peer_link *peer_link(const struct broker *b, uint32_t id);

struct evbuffer;
void peer_metrics_render(struct broker *b, struct evbuffer *o);
/* GET /cluster (docs/OPERATIONS.md). */
struct evhttp_request;
void peer_http_cluster(struct evhttp_request *req, void *arg);

#endif
