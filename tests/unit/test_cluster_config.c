/*
 * Cluster configuration (broker/config.c): the `cluster` object of the JSON
 * file and the cluster_nodes text form give the same node list; listen and
 * http come from this node's entry unless set explicitly; bad lists
 * (duplicate id, missing peer, port 0, too many nodes, node_id not a member,
 * extra keys) are refused with a message; no cluster section changes
 * nothing.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/config.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

static char dir[512];

static int run(const char *json, char **extra, int nextra, struct broker_config *c, char *err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/c.json", dir);
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    char *argv[16] = {"verityd", "--config", path};
    int argc = 3;
    for (int i = 0; i < nextra; i++)
        argv[argc++] = extra[i];
    bool help;
    return bcfg_from_args(c, argc, argv, &help, err, 256);
}

static const char *three =
    "{\"cluster\": {\"nodes\": ["
    "{\"id\": 1, \"listen\": \"127.0.0.1:7001\", \"peer\": \"127.0.0.1:7002\", \"http\": \"127.0.0.1:7003\"},"
    "{\"id\": 2, \"listen\": \"127.0.0.1:7011\", \"peer\": \"127.0.0.1:7012\", \"http\": \"127.0.0.1:7013\"},"
    "{\"id\": 3, \"listen\": \"127.0.0.1:7021\", \"peer\": \"127.0.0.1:7022\"}]}}";

static void test_file_form(void)
{
    struct broker_config c;
    char err[256] = "";
    char *a[] = {"--node-id", "2"};
    CU_ASSERT_EQUAL_FATAL(run(three, a, 2, &c, err), 0);
    CU_ASSERT_EQUAL(c.cluster_n, 3);
    CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.1:7011");
    CU_ASSERT_STRING_EQUAL(c.http, "127.0.0.1:7013");
    CU_ASSERT_STRING_EQUAL(c.nodes[2].peer, "127.0.0.1:7022");
    CU_ASSERT_STRING_EQUAL(c.nodes[2].http, "");
    CU_ASSERT(bcfg_self(&c) == &c.nodes[1]);
    /* explicit listen wins over the node entry */
    char *b[] = {"--node-id", "1", "--listen", "127.0.0.1:0"};
    CU_ASSERT_EQUAL_FATAL(run(three, b, 4, &c, err), 0);
    CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.1:0");
    CU_ASSERT_STRING_EQUAL(c.http, "127.0.0.1:7003");
    /* node 3 has no http: the default stays */
    char *d[] = {"--node-id", "3"};
    CU_ASSERT_EQUAL_FATAL(run(three, d, 2, &c, err), 0);
    CU_ASSERT_STRING_EQUAL(c.http, "127.0.0.1:9721");
}

static void test_flag_form_same(void)
{
    struct broker_config a, b;
    char err[256];
    char *x[] = {"--node-id", "2"};
    CU_ASSERT_EQUAL_FATAL(run(three, x, 2, &a, err), 0);
    char *y[] = {"--node-id", "2", "--cluster-nodes",
                 "1=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003;"
                 "2=127.0.0.1:7011,127.0.0.1:7012,127.0.0.1:7013;3=127.0.0.1:7021,127.0.0.1:7022"};
    CU_ASSERT_EQUAL_FATAL(run("{}", y, 4, &b, err), 0);
    CU_ASSERT_EQUAL(a.cluster_n, b.cluster_n);
    CU_ASSERT(memcmp(a.nodes, b.nodes, sizeof a.nodes) == 0);
    CU_ASSERT_STRING_EQUAL(a.listen, b.listen);
}

static void test_refused(void)
{
    struct broker_config c;
    char err[256];
    static const char *bad[] = {
        "1=127.0.0.1:1,127.0.0.1:2;1=127.0.0.1:3,127.0.0.1:4", /* duplicate id */
        "1=127.0.0.1:1",                                      /* no peer */
        "1=127.0.0.1:0,127.0.0.1:2",                          /* port 0 */
        "0=127.0.0.1:1,127.0.0.1:2",                          /* id 0 */
        "x=127.0.0.1:1,127.0.0.1:2",                          /* id not a number */
        "1=127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4",  /* extra field */
        "1=a:1,b:2;2=c:1,d:2;3=e:1,f:2;4=g:1,h:2;5=i:1,j:2;6=k:1,l:2", /* > 5 nodes */
        "1=127.0.0.1:1,127.0.0.1:2;;",                        /* empty entry */
        "2=127.0.0.1:1,127.0.0.1:2",                          /* node_id 1 not a member */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *a[] = {"--cluster-nodes", (char *)bad[i]};
        err[0] = '\0';
        int rc = run("{}", a, 2, &c, err);
        CU_ASSERT_EQUAL(rc, VERITY_EINVAL);
        CU_ASSERT(err[0] != '\0');
        if (rc != VERITY_EINVAL)
            fprintf(stderr, "accepted: %s\n", bad[i]);
    }
    static const char *badjson[] = {
        "{\"cluster\": []}",
        "{\"cluster\": {\"nodes\": [{\"id\": 1, \"listen\": \"127.0.0.1:1\"}]}}",
        "{\"cluster\": {\"nodes\": [{\"id\": 1, \"listen\": \"127.0.0.1:1\", \"peer\": "
        "\"127.0.0.1:2\", \"color\": \"red\"}]}}",
        "{\"cluster\": {\"nodes\": [], \"extra\": 1}}",
    };
    for (size_t i = 0; i < sizeof badjson / sizeof badjson[0]; i++)
        CU_ASSERT_EQUAL(run(badjson[i], NULL, 0, &c, err), VERITY_EINVAL);
}

static void test_no_cluster(void)
{
    struct broker_config c, d;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(run("{}", NULL, 0, &c, err), 0);
    bcfg_default(&d);
    CU_ASSERT_EQUAL(c.cluster_n, 0);
    CU_ASSERT_STRING_EQUAL(c.listen, d.listen);
    CU_ASSERT(bcfg_self(&c) == NULL);
}

/* peer_dial: node-local dial addresses, flag and file forms; bad ones refused. */
static void test_peer_dial(void)
{
    struct broker_config c;
    char err[256] = "";
    char *a[] = {"--node-id", "1", "--peer-dial", "2=127.0.0.1:9002;3=127.0.0.1:9003"};
    CU_ASSERT_EQUAL_FATAL(run(three, a, 4, &c, err), 0);
    CU_ASSERT_STRING_EQUAL(c.peer_dial_addr[0], "");
    CU_ASSERT_STRING_EQUAL(c.peer_dial_addr[1], "127.0.0.1:9002");
    CU_ASSERT_STRING_EQUAL(c.peer_dial_addr[2], "127.0.0.1:9003");
    /* the node list (the cluster id's input) is untouched */
    CU_ASSERT_STRING_EQUAL(c.nodes[1].peer, "127.0.0.1:7012");
    /* file form: an object */
    char json[1200];
    snprintf(json, sizeof json, "%.*s, \"peer_dial\": {\"3\": \"127.0.0.1:9103\"}}",
             (int)strlen(three) - 1, three);
    char *b[] = {"--node-id", "2"};
    CU_ASSERT_EQUAL_FATAL(run(json, b, 2, &c, err), 0);
    CU_ASSERT_STRING_EQUAL(c.peer_dial_addr[2], "127.0.0.1:9103");
    CU_ASSERT_STRING_EQUAL(c.peer_dial_addr[0], "");
    const char *bad[] = {"4=127.0.0.1:9004", "1=127.0.0.1:9001", "2=127.0.0.1:0", "2=nohost",
                         "x=127.0.0.1:1", "2=127.0.0.1:1;2=127.0.0.1:2", "=1", ";"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *d[] = {"--node-id", "1", "--peer-dial", (char *)bad[i]};
        err[0] = '\0';
        CU_ASSERT_EQUAL(run(three, d, 4, &c, err), VERITY_EINVAL);
        CU_ASSERT(strstr(err, "peer_dial") != NULL);
    }
    /* without a cluster section it means nothing: refused */
    char *e[] = {"--peer-dial", "2=127.0.0.1:9002"};
    CU_ASSERT_EQUAL(run("{}", e, 2, &c, err), VERITY_EINVAL);
}

/* rejoin: node-local, a bare flag (--rejoin), an inline value, the file;
 * refused without a cluster section and for values other than 0 and 1. */
static void test_rejoin(void)
{
    struct broker_config c;
    char err[256] = "";
    char *a[] = {"--node-id", "2", "--rejoin"};
    CU_ASSERT_EQUAL_FATAL(run(three, a, 3, &c, err), 0);
    CU_ASSERT_EQUAL(c.rejoin, 1);
    char *a2[] = {"--rejoin", "--node-id", "2"}; /* bare flag before another flag */
    CU_ASSERT_EQUAL_FATAL(run(three, a2, 3, &c, err), 0);
    CU_ASSERT_EQUAL(c.rejoin, 1);
    CU_ASSERT_EQUAL(c.node_id, 2);
    char *b[] = {"--node-id", "2", "--rejoin=0"};
    CU_ASSERT_EQUAL_FATAL(run(three, b, 3, &c, err), 0);
    CU_ASSERT_EQUAL(c.rejoin, 0);
    char *d[] = {"--node-id", "2"};
    CU_ASSERT_EQUAL_FATAL(run(three, d, 2, &c, err), 0);
    CU_ASSERT_EQUAL(c.rejoin, 0);
    char json[1200];
    snprintf(json, sizeof json, "%.*s, \"rejoin\": 1}", (int)strlen(three) - 1, three);
    CU_ASSERT_EQUAL_FATAL(run(json, d, 2, &c, err), 0);
    CU_ASSERT_EQUAL(c.rejoin, 1);
    char *e[] = {"--node-id", "2", "--rejoin=2"};
    CU_ASSERT_EQUAL(run(three, e, 3, &c, err), VERITY_EINVAL);
    char *f[] = {"--rejoin"};
    err[0] = '\0';
    CU_ASSERT_EQUAL(run("{}", f, 1, &c, err), VERITY_EINVAL);
    CU_ASSERT(strstr(err, "rejoin") != NULL);
}

int main(void)
{
    char *t = tu_tmpdir("cluster-config");
    snprintf(dir, sizeof dir, "%s", t);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cluster_config", NULL, NULL);
    CU_add_test(s, "file form", test_file_form);
    CU_add_test(s, "flag form gives the same list", test_flag_form_same);
    CU_add_test(s, "bad lists refused", test_refused);
    CU_add_test(s, "no cluster section", test_no_cluster);
    CU_add_test(s, "peer_dial", test_peer_dial);
    CU_add_test(s, "rejoin", test_rejoin);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    tu_rmrf(t);
    free(t);
    return fails ? 1 : 0;
}
