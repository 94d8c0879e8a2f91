/*
 * The broker's TLS context (see tls.h).
 */
#include "broker/tls.h"

#include <stdio.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "broker/config.h"

const char *btls_err_text(unsigned long e, char *buf, size_t cap)
{
    if (!e)
        e = ERR_get_error();
    if (!e) {
        snprintf(buf, cap, "%s", "");
        return buf;
    }
    const char *reason = ERR_reason_error_string(e);
    if (reason)
        snprintf(buf, cap, "%s", reason);
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

static SSL_CTX *fail(SSL_CTX *ctx, char *err, size_t cap, const char *what, const char *path)
{
    char why[256];
    btls_err_text(0, why, sizeof why);
    snprintf(err, cap, "%s %s: %s", what, path, why[0] ? why : "failed");
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *btls_ctx_new(const struct broker_config *cfg, char *err, size_t cap)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return fail(NULL, err, cap, "SSL_CTX_new", "");
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
        return fail(ctx, err, cap, "SSL_CTX_set_min_proto_version", "TLS1.2");
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1)
        return fail(ctx, err, cap, "tls_cert", cfg->tls_cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1)
        return fail(ctx, err, cap, "tls_key", cfg->tls_key);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return fail(ctx, err, cap, "tls_key does not match tls_cert", cfg->tls_key);
    if (cfg->tls_ca[0]) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_ca, NULL) != 1)
            return fail(ctx, err, cap, "tls_ca", cfg->tls_ca);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_ca);
        if (!names)
            return fail(ctx, err, cap, "tls_ca (no certificate names)", cfg->tls_ca);
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    int mode = SSL_VERIFY_NONE;
    if (strcmp(cfg->tls_client_auth, "optional") == 0)
        mode = SSL_VERIFY_PEER;
    else if (strcmp(cfg->tls_client_auth, "required") == 0)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    /* Session tickets stay on (OpenSSL rotates their keys per context). */
    return ctx;
}

/* Why a TLS bufferevent failed, from OpenSSL's queue for it. */
const char *btls_bev_reason(struct bufferevent *bev, short what, char *buf, size_t cap)
{
    unsigned long e = bufferevent_get_openssl_error(bev);
    unsigned long last = e;
    while (last) { /* the first error is the root cause; drain the rest */
        last = bufferevent_get_openssl_error(bev);
    }
    if (e)
        return btls_err_text(e, buf, cap);
    int serr = EVUTIL_SOCKET_ERROR();
    if ((what & BEV_EVENT_ERROR) && serr)
        snprintf(buf, cap, "socket: %s", evutil_socket_error_to_string(serr));
    else
        snprintf(buf, cap, "%s", "peer closed during the handshake");
    return buf;
}
