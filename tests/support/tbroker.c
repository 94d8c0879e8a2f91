/* A real verityd for integration tests (see tbroker.h). */
#include "tests/support/tbroker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/tutil.h"

#define START_TIMEOUT_MS 20000 /* a restart after kill -9 replays its logs first */

uint16_t tb_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int tb_init(struct tbroker *b, const char *tag)
{
    memset(b, 0, sizeof *b);
    b->root = tu_tmpdir(tag);
    if (!b->root)
        return -1;
    snprintf(b->data, sizeof b->data, "%s/data", b->root);
    snprintf(b->log, sizeof b->log, "%s/verityd.log", b->root);
    /* The port is the broker's choice (port 0), known once it started. */
    snprintf(b->addr, sizeof b->addr, "127.0.0.1:0");
    return 0;
}

/* Reads the port out of the broker's ready file ({"listen":"HOST:PORT"}). */
static uint16_t ready_port(const char *path)
{
    char buf[512];
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *l = strstr(buf, "\"listen\":\"");
    const char *colon = l ? strchr(l + 10, ':') : NULL;
    const char *end = colon ? strchr(colon, '"') : NULL;
    if (!end)
        return 0;
    long port = strtol(colon + 1, NULL, 10);
    return port > 0 && port < 65536 ? (uint16_t)port : 0;
}

int tb_start(struct tbroker *b)
{
    const char *dir = getenv("VERITY_BIN_DIR");
    char bin[512], ready[600], listen[64];
    snprintf(bin, sizeof bin, "%s/verityd", dir ? dir : "build/bin");
    snprintf(ready, sizeof ready, "%s/ready.json", b->root);
    /* First start: port 0. A restart asks for the port it had, so clients
     * configured with b->addr reach it again. */
    snprintf(listen, sizeof listen, "127.0.0.1:%u", b->port);
    unlink(ready);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "--data-dir", b->data, "--listen", listen, "--http",
              b->http[0] ? b->http : "off",
              "--log-level", "warn", "--ready-file", ready, (char *)NULL);
        _exit(127);
    }
    b->pid = pid;
    for (int i = 0; i < START_TIMEOUT_MS / 10; i++) {
        uint16_t port = ready_port(ready);
        if (port) {
            b->port = port;
            snprintf(b->addr, sizeof b->addr, "127.0.0.1:%u", port);
            return 0;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            b->pid = 0;
            return -ECHILD;
        }
        usleep(10000);
    }
    return -ETIMEDOUT;
}

void tb_stop(struct tbroker *b, int sig)
{
    if (b->pid <= 0)
        return;
    kill(b->pid, sig);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(b->pid, NULL, WNOHANG) == b->pid) {
            b->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(b->pid, SIGKILL);
    waitpid(b->pid, NULL, 0);
    b->pid = 0;
}

void tb_free(struct tbroker *b)
{
    tb_stop(b, SIGKILL);
    if (b->root) {
        if (getenv("VERITY_TEST_KEEP"))
            fprintf(stderr, "(kept %s)\n", b->root);
        else
            tu_rmrf(b->root);
        free(b->root);
        b->root = NULL;
    }
}
