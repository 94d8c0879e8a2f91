/*
 * A small client of the broker's admin HTTP port, for Verity's own tools
 * (verity cluster status, broker status, bench --trace) and the sharing
 * gateway's proof reads: HTTP/1.0 (the server closes after the body), one
 * request per connection, VERITY_API_KEY sent as the bearer key, a deadline
 * over the whole exchange and a bound on the body.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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
    for (int off = 0; rc == 0 && off < rl;) {
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
        ssize_t r = recv(fd, buf + len, cap - len, 0);
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
