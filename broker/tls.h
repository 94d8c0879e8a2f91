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

#endif
