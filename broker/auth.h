/*
 * Authentication, tenants, ACLs and quotas on the protocol port (issue 14).
 * Off (b->auth == NULL, every hook a no-op the callers skip) unless
 * auth_file is configured. See broker/auth.c.
 */
#ifndef VERITY_BROKER_AUTH_H
#define VERITY_BROKER_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "proto/codec.h"

struct broker;
struct conn;
struct req;
struct ssl_st;

#define AUTH_PREAUTH_FRAME_BYTES 4096u /* largest frame before a principal is known */
#define AUTH_FAILS_PER_CONN 3u         /* failed attempts before the connection is closed */

/* Loads auth_file (broker start). 0, or an error logged as auth_config_failed. */
int auth_open(struct broker *b) __attribute__((warn_unused_result));
void auth_close(struct broker *b);
/* SIGHUP: reloads auth_file; a broken file keeps the store in use. */
void auth_reload(struct broker *b);

/* A new protocol connection: starts its authentication deadline. 0 or -ENOMEM. */
int auth_conn_open(struct conn *c) __attribute__((warn_unused_result));
void auth_conn_close(struct conn *c);
/* The TLS handshake finished: a client certificate whose subject CN is
 * mapped in the store gives the connection its principal. */
void auth_conn_tls(struct conn *c, struct ssl_st *ssl);
/* Whether a frame of total bytes may be read now (false: too large before
 * authentication; the caller closes with VERITY_EAUTH). */
bool auth_frame_ok(const struct conn *c, uint64_t total);

/* Runs before dispatch on a broker with auth: checks the principal, the
 * ACLs and quotas, and puts the request's names into the tenant. Returns 0
 * (dispatch r now) or 1 (r was answered or will be dispatched later). */
int auth_gate(struct req *r);

/* Around encoding an answer: takes the tenant off names, drops other
 * tenants' entries and charges fetch quotas; unscope puts everything back
 * (the handler owns env). */
struct auth_undo;
struct auth_undo *auth_reply_scope(struct req *r, Verity__Envelope *env, uint64_t payload);
void auth_reply_unscope(struct auth_undo *u);

/* Releases what auth_gate put on r (before r's message is freed). */
void auth_req_release(struct req *r);

/* The Authenticate request. */
void h_authenticate(struct req *r);

#endif
