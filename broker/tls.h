/*
 * TLS on the broker's client and admin ports (OpenSSL 3 through libevent's
 * bufferevent_openssl). One SSL_CTX serves both ports; it is built from the
 * tls_* configuration keys at start (a broker with TLS configured but
 * unreadable refuses to start) and rebuilt on SIGHUP. A rebuilt context
 * replaces the old one for new connections only: every SSL holds a
 * reference to the context it was made from, so open connections keep
 * theirs until they close (nothing is dropped).
 *
 * Policy: TLS 1.2 minimum (1.3 is negotiated when the peer has it), no
 * compression, no renegotiation, client certificates asked for and checked
 * against tls_ca as tls_client_auth says (none|optional|required).
 */
#ifndef VERITY_BROKER_TLS_H
#define VERITY_BROKER_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct broker_config;

/* A server context from cfg, or NULL with the reason in err (OpenSSL's
 * words and the file that failed). */
SSL_CTX *btls_ctx_new(const struct broker_config *cfg, char *err, size_t cap);

/* The first queued OpenSSL error as text (and clears the queue); "" when
 * none. buf is returned. */
const char *btls_err_text(unsigned long e, char *buf, size_t cap);

/* Why a TLS bufferevent failed (what: its event flags), from OpenSSL's
 * queue for it, else the socket error, else "peer closed during the
 * handshake". buf is returned. */
struct bufferevent;
const char *btls_bev_reason(struct bufferevent *bev, short what, char *buf, size_t cap);

/* Bytes a TLS bufferevent writes per callback (libevent's default, 16 KiB,
 * took hundreds of loop passes for a fetch answer of megabytes). */
#define BTLS_SINGLE_IO_BYTES (1u << 20)

#endif
