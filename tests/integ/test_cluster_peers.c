/*
 * Cluster membership and broker-to-broker links on real verityd processes
 * (issue 10, step 2): three brokers share one cluster config file; each
 * takes its client and admin ports from its node entry, dials the brokers
 * with higher ids on their peer ports, and GET /cluster on every broker
 * shows all three connected. A broker killed with SIGKILL shows as
 * disconnected on the others and connected again once restarted (the
 * dialler redials with back-off); /metrics counts the reconnection. A
 * connection that sends a HELLO naming a node outside the cluster, or bytes
 * that are not a frame, is closed and counted as refused. A broker whose
 * node_id is not in the cluster refuses to start.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/vsr/vsr_wire.h"
#include "tests/support/tcluster.h"
#include "tests/support/tutil.h"

static char body[1 << 16];

/* Node id `id` as broker i sees it in /cluster: 1 connected, 0 not, -1 error. */
static int connected(struct tcluster *c, int i, uint32_t id)
{
    if (tc_http_get(c, i, "/cluster", body, sizeof body) != 200)
        return -1;
    json_t *root = json_loads(body, 0, NULL);
    json_t *nodes = json_object_get(root, "nodes");
    int out = -1;
    size_t k;
    json_t *n;
    if (json_integer_value(json_object_get(root, "node_id")) != c->node[i].id)
        goto done;
    json_array_foreach(nodes, k, n)
    {
        if (json_integer_value(json_object_get(n, "id")) == id)
            out = json_is_true(json_object_get(n, "connected")) ? 1 : 0;
    }
done:
    json_decref(root);
    return out;
}

/* Waits until broker i sees node id in state want, at most ms. */
static bool wait_link(struct tcluster *c, int i, uint32_t id, int want, int ms)
{
    int64_t end = tu_mono_ns() + (int64_t)ms * 1000000;
    while (tu_mono_ns() < end) {
        if (connected(c, i, id) == want)
            return true;
        usleep(20000);
    }
    return false;
}

static bool all_connected(struct tcluster *c, int ms)
{
    for (int i = 0; i < c->n; i++)
        for (int j = 0; j < c->n; j++)
            if (!wait_link(c, i, c->node[j].id, 1, ms))
                return false;
    return true;
}

/* The value of a metric line (exact name with labels) on broker i, or -1. */
static long metric(struct tcluster *c, int i, const char *name)
{
    if (tc_http_get(c, i, "/metrics", body, sizeof body) != 200)
        return -1;
    size_t nl = strlen(name);
    for (char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ')
            return atol(p + nl + 1);
    return -1;
}

static int dial_peer(const char *addr)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    a.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* True when the broker closes fd (read returns 0 or an error other than a timeout). */
static bool closed_by_peer(int fd)
{
    char b[64];
    ssize_t r = read(fd, b, sizeof b);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void test_cluster_links(void)
{
    struct tcluster c;
    CU_ASSERT_FATAL(tc_init(&c, 3, "cluster-peers") == 0);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_FATAL(tc_start(&c, i) == 0);
    CU_ASSERT(all_connected(&c, 10000));

    /* Client port from the node entry: it accepts connections. */
    int cfd = dial_peer(c.node[1].listen);
    CU_ASSERT(cfd >= 0);
    if (cfd >= 0)
        close(cfd);

    /* kill -9 the middle broker: the others see it gone, then back. */
    tc_stop(&c, 1, SIGKILL);
    CU_ASSERT(wait_link(&c, 0, 2, 0, 5000));
    CU_ASSERT(wait_link(&c, 2, 2, 0, 5000));
    CU_ASSERT(wait_link(&c, 0, 3, 1, 100)); /* the others stay linked */
    CU_ASSERT_FATAL(tc_start(&c, 1) == 0);
    CU_ASSERT(all_connected(&c, 10000));
    CU_ASSERT_EQUAL(metric(&c, 0, "verity_cluster_peer_connects_total{node=\"2\"}"), 2);
    CU_ASSERT_EQUAL(metric(&c, 0, "verity_cluster_peer_disconnects_total{node=\"2\"}"), 1);
    CU_ASSERT_EQUAL(metric(&c, 0, "verity_cluster_peer_up{node=\"3\"}"), 1);

    /* An impostor: HELLO from node 7 (not a member) to node 3's peer port. */
    long refused = metric(&c, 2, "verity_cluster_peer_refused_total");
    CU_ASSERT(refused == 0);
    int fd = dial_peer(c.node[2].peer);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t hello[64];
    size_t h = vsr_wire_frame_header(VSR_WIRE_HELLO, "", 0, 0, 12, hello, sizeof hello);
    memset(hello + h, 0, 12);
    hello[h] = 7;
    CU_ASSERT(write(fd, hello, h + 12) == (ssize_t)(h + 12));
    CU_ASSERT(closed_by_peer(fd));
    close(fd);
    CU_ASSERT_EQUAL(metric(&c, 2, "verity_cluster_peer_refused_total"), refused + 1);
    /* Garbage that is not a frame (a length field out of range). */
    fd = dial_peer(c.node[2].peer);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, "\xff\xff\xff\xff garbage", 12) == 12);
    CU_ASSERT(closed_by_peer(fd));
    close(fd);
    /* A HELLO from node 1 to node 3 on a fresh connection replaces the
     * link only with the right cluster id: a wrong one is refused. */
    fd = dial_peer(c.node[2].peer);
    CU_ASSERT_FATAL(fd >= 0);
    memset(hello + h, 0, 12);
    hello[h] = 1;
    hello[h + 4] = 0x55; /* cluster id */
    CU_ASSERT(write(fd, hello, h + 12) == (ssize_t)(h + 12));
    CU_ASSERT(closed_by_peer(fd));
    close(fd);
    CU_ASSERT_EQUAL(metric(&c, 2, "verity_cluster_peer_refused_total"), refused + 2);
    CU_ASSERT(all_connected(&c, 5000)); /* the real links are untouched */
    tc_free(&c);
}

static void test_not_a_member(void)
{
    struct tcluster c;
    CU_ASSERT_FATAL(tc_init(&c, 3, "cluster-member") == 0);
    c.node[0].id = 9; /* starts with --node-id 9, not in the file */
    CU_ASSERT_EQUAL(tc_start(&c, 0), -ECHILD);
    tc_free(&c);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cluster_peers", NULL, NULL);
    CU_add_test(s, "three brokers link, survive kill -9, refuse impostors", test_cluster_links);
    CU_add_test(s, "a node id outside the cluster refuses to start", test_not_a_member);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
