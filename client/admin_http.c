/*
 * A small client of the broker's admin HTTP port, for Verity's own tools
 * (verity cluster status, broker status, bench --trace) and the sharing
 * gateway's proof reads: HTTP/1.0 (the server closes after the body), one
 * request per connection, VERITY_API_KEY sent as the bearer key, a deadline
 * over the whole exchange and a bound on the body.
 *
 * TLS (a TLS admin port): when the address is "https://host:port", or when
 * the environment asks for TLS as it does for the protocol port
 * (VERITY_TLS_CA, VERITY_TLS_CERT or VERITY_TLS=1; "http://" turns it
 * off). The broker's certificate must chain to VERITY_TLS_CA (the
 * system's CAs without it) and name the host (or VERITY_TLS_SERVER_NAME);
 * VERITY_TLS_CERT/VERITY_TLS_KEY are presented for mutual TLS. TLS 1.2 at
 * least. The socket is made blocking with send/receive timeouts for the
 * TLS exchange (the remaining deadline).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "verity/verity.h"

static int64_t admin_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events until deadline; 0 or -ETIMEDOUT/-errno. */
static int admin_wait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - admin_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static const char *env_nonempty(const char *name)
{
    const char *e = getenv(name);
    return e && e[0] ? e : NULL;
}

/* Whether the environment asks for TLS (as libverity's connection config). */
static bool admin_tls_env(void)
{
    const char *e = getenv("VERITY_TLS");
    return env_nonempty("VERITY_TLS_CA") || env_nonempty("VERITY_TLS_CERT") ||
           (e && strcmp(e, "1") == 0);
}

/* The TLS session over the connected fd for host, within deadline: 0 and
 * *out (with its context in *ctx_out), or a negative errno: -EPROTO (the
 * handshake failed), -ENOENT (a CA, certificate or key file did not load),
 * -ETIMEDOUT; the reason of the first two is printed on stderr. */
static int admin_tls_open(int fd, const char *host, int64_t deadline, SSL_CTX **ctx_out,
                          SSL **out)
{
    *out = NULL;
    *ctx_out = NULL;
    int64_t left = deadline - admin_now_ms();
    if (left <= 0)
        return -ETIMEDOUT;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        return -errno;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return -ENOMEM;
    const char *ca = env_nonempty("VERITY_TLS_CA"), *cert = env_nonempty("VERITY_TLS_CERT");
    const char *key = env_nonempty("VERITY_TLS_KEY");
    const char *name = env_nonempty("VERITY_TLS_SERVER_NAME");
    name = name ? name : host;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int rc = 0;
    if ((ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) : SSL_CTX_set_default_verify_paths(ctx)) != 1)
        rc = -ENOENT;
    else if (cert && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
                      SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1))
        rc = -ENOENT;
    SSL *ssl = rc ? NULL : SSL_new(ctx);
    if (!rc && !ssl)
        rc = -ENOMEM;
    if (!rc) {
        unsigned char ip[16];
        bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
        if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1
                  : (SSL_set1_host(ssl, name) != 1 || SSL_set_tlsext_host_name(ssl, name) != 1))
            rc = -EINVAL;
    }
    if (!rc && (SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1))
        rc = errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -EPROTO;
    if (rc) {
        if (rc == -EPROTO || rc == -ENOENT) {
            char why[256];
            unsigned long e = ERR_peek_last_error();
            ERR_error_string_n(e, why, sizeof why);
            long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
            fprintf(stderr, "admin TLS to %s: %s%s\n", host,
                    vr != X509_V_OK ? X509_verify_cert_error_string(vr)
                    : e             ? why
                                    : "handshake failed",
                    rc == -ENOENT ? " (reading the CA, certificate or key file)" : "");
        }
        ERR_clear_error();
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        return rc;
    }
    *ctx_out = ctx;
    *out = ssl;
    return 0;
}

int verity_admin_get(const char *hostport, const char *path, int timeout_ms, size_t max_body,
                     char **body, size_t *body_len)
{
    return verity_admin_request(hostport, "GET", path, NULL, 0, timeout_ms, max_body, body,
                                body_len);
}

int verity_admin_request(const char *hostport, const char *method, const char *path,
                         const char *req_body, size_t req_len, int timeout_ms, size_t max_body,
                         char **body, size_t *body_len)
{
    if (body)
        *body = NULL;
    if (body_len)
        *body_len = 0;
    bool tls = admin_tls_env();
    if (hostport && strncmp(hostport, "https://", 8) == 0) {
        tls = true;
        hostport += 8;
    } else if (hostport && strncmp(hostport, "http://", 7) == 0) {
        tls = false;
        hostport += 7;
    }
    char host[256], port[16];
    const char *colon = hostport ? strrchr(hostport, ':') : NULL;
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host || !colon[1] ||
        strlen(colon + 1) >= sizeof port || !path || path[0] != '/')
        return -EINVAL;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    strcpy(port, colon + 1);
    if (!method || (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0) ||
        req_len > (1u << 20) || (req_len && !req_body) || strpbrk(path, "\r\n "))
        return -EINVAL;
    char head[1200];
    char clen[64] = "";
    if (strcmp(method, "POST") == 0)
        snprintf(clen, sizeof clen, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                 req_len);
    int hl = snprintf(head, sizeof head, "%s %s HTTP/1.0\r\nHost: %s\r\n%s%s\r\n", method, path,
                      hostport, clen, verity_admin_auth_header());
    if (hl < 0 || (size_t)hl >= sizeof head)
        return -EINVAL;
    char *req = malloc((size_t)hl + req_len);
    if (!req)
        return -ENOMEM;
    memcpy(req, head, (size_t)hl);
    if (req_len)
        memcpy(req + hl, req_body, req_len);
    int rl = hl + (int)req_len;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
        free(req);
        return -ENXIO;
    }
    int64_t deadline = admin_now_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
    int rc = 0;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        rc = -errno;
    else if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS)
            rc = -errno;
        else if (!(rc = admin_wait(fd, POLLOUT, deadline))) {
            int err = 0;
            socklen_t el = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
                rc = -errno;
            else if (err)
                rc = -err;
        }
    }
    freeaddrinfo(ai);
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    if (rc == 0 && tls)
        rc = admin_tls_open(fd, host, deadline, &ctx, &ssl);
    for (int off = 0; rc == 0 && ssl && off < rl;) {
        int w = SSL_write(ssl, req + off, rl - off);
        if (w > 0)
            off += w;
        else
            rc = errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -EIO;
    }
    for (int off = 0; rc == 0 && !ssl && off < rl;) {
        ssize_t w = send(fd, req + off, (size_t)(rl - off), MSG_NOSIGNAL);
        if (w > 0)
            off += (int)w;
        else if (w < 0 && (errno == EAGAIN || errno == EINTR))
            rc = admin_wait(fd, POLLOUT, deadline);
        else
            rc = w < 0 ? -errno : -EIO;
    }
    /* Without body only the status line is wanted. */
    size_t limit = body ? max_body + 16384 : 1024, len = 0, cap = 0;
    char *buf = NULL;
    while (rc == 0) {
        if (cap - len < 4096 + 1) {
            if (cap >= limit) {
                if (!body)
                    break;
                rc = -EMSGSIZE;
                break;
            }
            size_t nc = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                rc = -ENOMEM;
                break;
            }
            buf = nb;
            cap = nc;
        }
        ssize_t r;
        if (ssl) {
            int n = SSL_read(ssl, buf + len, (int)(cap - len));
            int se = n > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, n);
            if (n > 0)
                r = n;
            else if (se == SSL_ERROR_ZERO_RETURN || (se == SSL_ERROR_SYSCALL && errno == 0))
                r = 0; /* closed (HTTP/1.0: the end of the answer) */
            else {
                rc = errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -EIO;
                break;
            }
        } else {
            r = recv(fd, buf + len, cap - len, 0);
        }
        if (r > 0) {
            len += (size_t)r;
            if (!body && memchr(buf, '\n', len))
                break;
        } else if (r == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            rc = admin_wait(fd, POLLIN, deadline);
        } else {
            rc = -errno;
        }
    }
    if (ssl) {
        (void)SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
    ERR_clear_error();
    if (fd >= 0)
        close(fd);
    free(req);
    int status = 0;
    char *hend = NULL;
    if (rc == 0) {
        buf[len] = '\0';
        hend = strstr(buf, "\r\n\r\n");
        if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || (body && !hend))
            rc = -EPROTO;
        else if (body && len - (size_t)(hend + 4 - buf) > max_body)
            rc = -EMSGSIZE;
    }
    if (rc) {
        free(buf);
        return rc;
    }
    if (body) {
        size_t blen = len - (size_t)(hend + 4 - buf);
        memmove(buf, hend + 4, blen);
        buf[blen] = '\0';
        *body = buf;
        if (body_len)
            *body_len = blen;
    } else {
        free(buf);
    }
    return status;
}
