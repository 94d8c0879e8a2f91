/*
 * Mutual TLS on the cluster's peer links: see broker/peer_tls.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/peer_tls.h"
#include "broker/tls.h"
#include "verity/errors.h"

struct peer_tls {
    SSL_CTX *server; /* accepted links */
    SSL_CTX *client; /* dialled links */
};

static bool is_ip(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static SSL_CTX *ctx_new(const struct broker_config *cfg, bool server, char *err, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    const char *what = "SSL_CTX_new", *file = "";
    if (!ctx)
        goto fail;
    what = "TLS 1.2 minimum";
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
        goto fail;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    what = "peer_tls_cert";
    file = cfg->peer_tls_cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->peer_tls_cert) != 1)
        goto fail;
    what = "peer_tls_key";
    file = cfg->peer_tls_key;
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->peer_tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    what = "peer_tls_ca";
    file = cfg->peer_tls_ca;
    if (SSL_CTX_load_verify_locations(ctx, cfg->peer_tls_ca, NULL) != 1)
        goto fail;
    SSL_CTX_set_verify(ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                       NULL);
    return ctx;
fail : {
    char e[256];
    btls_err_text(ERR_get_error(), e, sizeof e);
    int n = snprintf(err, cap, "%s %.300s: ", what, file);
    snprintf(err + n, cap - (size_t)n, "%.180s", e[0] ? e : "failed");
    SSL_CTX_free(ctx);
    return NULL;
}
}

static struct peer_tls *build(const struct broker_config *cfg, char *err, size_t cap)
{
    struct peer_tls *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    if (!(t->server = ctx_new(cfg, true, err, cap)) || !(t->client = ctx_new(cfg, false, err, cap))) {
        SSL_CTX_free(t->server);
        free(t);
        return NULL;
    }
    return t;
}

static void tls_free(struct peer_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->server);
    SSL_CTX_free(t->client);
    free(t);
}

int peer_tls_open(struct broker *b)
{
    if (!b->cfg.peer_tls_cert[0])
        return 0;
    char err[600], q[700];
    if (!(b->peers.tls = build(&b->cfg, err, sizeof err))) {
        blog(BLOG_ERROR, "tls_config_failed", "port=peer reason=%s", blog_q(err, q, sizeof q));
        return VERITY_EINVAL;
    }
    return 0;
}

void peer_tls_close(struct broker *b)
{
    tls_free(b->peers.tls);
    b->peers.tls = NULL;
}

void peer_tls_reload(struct broker *b)
{
    if (!b->peers.tls)
        return;
    char err[600], q[700];
    struct peer_tls *t = build(&b->cfg, err, sizeof err);
    if (!t) {
        b->met.tls_reload_failures++;
        blog(BLOG_ERROR, "tls_reload_failed",
             "port=peer reason=%s (the previous certificates stay in use)", blog_q(err, q, sizeof q));
        return;
    }
    tls_free(b->peers.tls); /* open links' SSL objects hold their own context references */
    b->peers.tls = t;
    b->met.tls_reloads++;
    blog(BLOG_INFO, "tls_reloaded", "port=peer cert=%s", b->cfg.peer_tls_cert);
}

struct bufferevent *peer_tls_bev(struct broker *b, evutil_socket_t fd, const char *host)
{
    struct peer_tls *t = b->peers.tls;
    if (!t)
        return bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE);
    SSL *ssl = SSL_new(fd < 0 ? t->client : t->server);
    if (!ssl)
        return NULL;
    if (fd < 0) {
        /* The dialer checks the acceptor's name during the handshake. */
        bool ok = is_ip(host) ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1
                              : SSL_set1_host(ssl, host) == 1 &&
                                    SSL_set_tlsext_host_name(ssl, host) == 1;
        if (!ok) {
            SSL_free(ssl);
            return NULL;
        }
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        b->base, fd, ssl, fd < 0 ? BUFFEREVENT_SSL_CONNECTING : BUFFEREVENT_SSL_ACCEPTING,
        BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        SSL_free(ssl);
    return bev;
}

bool peer_tls_peer_ok(struct broker *b, struct bufferevent *bev, const struct bcfg_node *node)
{
    if (!b->peers.tls)
        return true;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    char host[BCFG_NODE_ADDR_MAX];
    uint16_t port;
    if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK ||
        bcfg_split_hostport(node->peer, host, sizeof host, &port))
        return false;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (!cert)
        return false;
    bool ok = is_ip(host) ? X509_check_ip_asc(cert, host, 0) == 1
                          : X509_check_host(cert, host, 0, 0, NULL) == 1;
    X509_free(cert);
    return ok;
}

void peer_tls_failed(struct broker *b, struct bufferevent *bev, short what, unsigned node)
{
    SSL *ssl = b->peers.tls ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (!ssl || SSL_is_init_finished(ssl))
        return;
    char why[256], q[300];
    b->met.tls_handshake_failures++;
    blog(BLOG_WARN, "tls_handshake_failed", "port=peer node=%u reason=%s", node,
         blog_q(btls_bev_reason(bev, what, why, sizeof why), q, sizeof q));
}
