/*
 * Mutual TLS on the broker-to-broker links of a cluster (issue 14), kept
 * apart from broker/peer.c, which calls these at connect, accept, HELLO and
 * on a link's error. On when peer_tls_cert is configured (with
 * peer_tls_key and peer_tls_ca): every link is TLS 1.2+ (no compression,
 * no renegotiation), both ends present a certificate chaining to
 * peer_tls_ca, and both check the other's name: the dialer checks the
 * acceptor's certificate against the host of that node's `peer` address
 * (an IP address against the IP SANs, a name against the DNS names) during
 * the handshake; the acceptor checks the dialer's certificate against the
 * `peer` host of the node its HELLO names. A broker with peer TLS
 * configured but unreadable does not start; SIGHUP reloads the files (new
 * links use them, open links keep their session).
 */
#ifndef VERITY_BROKER_PEER_TLS_H
#define VERITY_BROKER_PEER_TLS_H

#include <stdbool.h>

#include <event2/util.h>

struct broker;
struct bufferevent;
struct bcfg_node;

/* Builds the contexts (peer_start). 0, or VERITY_EINVAL logged as
 * tls_config_failed port=peer. No-op without peer_tls_cert. */
int peer_tls_open(struct broker *b) __attribute__((warn_unused_result));
void peer_tls_close(struct broker *b);
/* SIGHUP: new contexts for new links; a failure keeps the old ones. */
void peer_tls_reload(struct broker *b);

/* A bufferevent for a link: fd -1 and host set: to dial host (TLS: with the
 * name check armed); fd >= 0: an accepted socket. Plain socket bufferevents
 * when peer TLS is off. NULL on failure (fd is then not closed). */
struct bufferevent *peer_tls_bev(struct broker *b, evutil_socket_t fd, const char *host);

/* After HELLO on an accepted link: whether the dialer's certificate names
 * node's peer host (true when peer TLS is off). */
bool peer_tls_peer_ok(struct broker *b, struct bufferevent *bev, const struct bcfg_node *node);

/* A link or pending connection failed: on a TLS link before its handshake
 * completed, logs tls_handshake_failed port=peer and counts it. */
void peer_tls_failed(struct broker *b, struct bufferevent *bev, short what, unsigned node);

#endif
