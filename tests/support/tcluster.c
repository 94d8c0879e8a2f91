/* A cluster of real verityd processes for integration tests (tcluster.h). */
#include "tests/support/tcluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/tbroker.h"
#include "tests/support/tutil.h"

#define START_TIMEOUT_MS 20000

int tc_init(struct tcluster *c, int n, const char *tag)
{
    memset(c, 0, sizeof *c);
    if (n < 1 || n > TC_NODES_MAX || !(c->root = tu_tmpdir(tag)))
        return -1;
    c->n = n;
    snprintf(c->config, sizeof c->config, "%s/cluster.json", c->root);
    FILE *f = fopen(c->config, "w");
    if (!f)
        return -1;
    fprintf(f, "{\"cluster\": {\"nodes\": [");
    for (int i = 0; i < n; i++) {
        struct tc_node *nd = &c->node[i];
        nd->id = (uint32_t)i + 1;
        snprintf(nd->data, sizeof nd->data, "%s/d%u", c->root, nd->id);
        snprintf(nd->log, sizeof nd->log, "%s/verityd-%u.log", c->root, nd->id);
        snprintf(nd->ready, sizeof nd->ready, "%s/ready-%u.json", c->root, nd->id);
        snprintf(nd->listen, sizeof nd->listen, "127.0.0.1:%u", tb_free_port());
        snprintf(nd->peer, sizeof nd->peer, "127.0.0.1:%u", tb_free_port());
        snprintf(nd->http, sizeof nd->http, "127.0.0.1:%u", tb_free_port());
        fprintf(f, "%s{\"id\": %u, \"listen\": \"%s\", \"peer\": \"%s\", \"http\": \"%s\"}",
                i ? ", " : "", nd->id, nd->listen, nd->peer, nd->http);
    }
    fprintf(f, "]}}\n");
    return fclose(f) == 0 ? 0 : -1;
}

int tc_start(struct tcluster *c, int i)
{
    struct tc_node *nd = &c->node[i];
    const char *dir = getenv("VERITY_BIN_DIR");
    char bin[512], id[16];
    snprintf(bin, sizeof bin, "%s/verityd", dir ? dir : "build/bin");
    snprintf(id, sizeof id, "%u", nd->id);
    unlink(nd->ready);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int fd = open(nd->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "--config", c->config, "--node-id", id, "--data-dir", nd->data,
              "--log-level", "info", "--ready-file", nd->ready, (char *)NULL);
        _exit(127);
    }
    nd->pid = pid;
    for (int k = 0; k < START_TIMEOUT_MS / 10; k++) {
        if (access(nd->ready, F_OK) == 0)
            return 0;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            nd->pid = 0;
            return -ECHILD;
        }
        usleep(10000);
    }
    return -ETIMEDOUT;
}

void tc_stop(struct tcluster *c, int i, int sig)
{
    struct tc_node *nd = &c->node[i];
    if (nd->pid <= 0)
        return;
    kill(nd->pid, sig);
    for (int k = 0; k < 1000; k++) {
        if (waitpid(nd->pid, NULL, WNOHANG) == nd->pid) {
            nd->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(nd->pid, SIGKILL);
    waitpid(nd->pid, NULL, 0);
    nd->pid = 0;
}

void tc_free(struct tcluster *c)
{
    for (int i = 0; i < c->n; i++)
        tc_stop(c, i, SIGKILL);
    if (c->root) {
        if (getenv("VERITY_TEST_KEEP"))
            fprintf(stderr, "(kept %s)\n", c->root);
        else
            tu_rmrf(c->root);
        free(c->root);
        c->root = NULL;
    }
}

int tc_http_get(const struct tcluster *c, int i, const char *path, char *body, size_t cap)
{
    const char *colon = strrchr(c->node[i].http, ':');
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {2, 0};
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char *buf = malloc(1 << 20);
    size_t got = 0;
    ssize_t r;
    while (buf && got < (1u << 20) - 1 && (r = read(fd, buf + got, (1u << 20) - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    if (!buf)
        return -1;
    buf[got] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    const char *b = strstr(buf, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    free(buf);
    return status;
}
