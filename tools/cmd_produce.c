/*
 * verity produce TOPIC [FILE...]: one record per input line (stdin when no
 * file is named, "-" names stdin too), through libverity's idempotent
 * producer.
 *
 * --key-separator SEP splits each line at the first SEP into key and value
 * (a line without SEP has a null key). --header K=V adds a header to every
 * record. --idempotency-key KEY sends all lines as exactly one batch that
 * carries SHA-256(KEY)[0..16) as its idempotency key, so running the same
 * command twice stores the lines once; that batch goes to --partition N, or
 * else to the partition the key string hashes to (murmur2, as record keys).
 *
 * Exit codes: 0 every record acknowledged, 1 a record failed or the topic
 * does not exist, 2 usage, 3 the broker cannot be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/limits.h"
#include "verity/verity.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity produce TOPIC [FILE...] [--key-separator SEP] [--header K=V]...\n"
            "                      [--partition N] [--idempotency-key KEY] [--no-idempotence]\n"
            "                      [--linger-ms MS] [--timeout-ms MS] [--acks quorum|leader]\n"
            "                      [--broker HOST:PORT[,HOST:PORT...]] [--json]\n"
            "Reads one record per line from the files (stdin when none, or '-').\n"
            "  --key-separator SEP   key = text before the first SEP, value = the rest\n"
            "  --header K=V          header on every record (repeatable, up to %u)\n"
            "  --partition N         send to partition N (default: key hash, round robin)\n"
            "  --idempotency-key KEY all lines as one batch keyed by SHA-256(KEY)[0..16);\n"
            "                        a repeated run with the same KEY is stored once\n"
            "  --timeout-ms MS       give up on a record after MS (default 30000)\n"
            "exit: 0 all acknowledged, 1 failure, 2 usage, 3 broker unreachable\n",
            VERITY_RECORD_HEADERS_MAX);
}

struct part_stat {
    bool any;
    uint64_t first;
    uint64_t last;
};

struct stats {
    pthread_mutex_t mu;
    uint64_t acked;
    uint64_t failed;
    uint64_t duplicates;
    int first_err;
    uint32_t nparts;
    struct part_stat *parts;
};

/* Runs on the producer's I/O thread. */
static void on_delivery(void *opaque, int err, const struct verity_delivery *d)
{
    struct stats *s = opaque;
    pthread_mutex_lock(&s->mu);
    if (err && err != VERITY_EDUPLICATE) {
        s->failed++;
        if (!s->first_err)
            s->first_err = err;
    } else {
        s->acked++;
        if (d->duplicate)
            s->duplicates++;
        if (err == 0 && d->partition < s->nparts) {
            struct part_stat *p = &s->parts[d->partition];
            if (!p->any || d->offset < p->first)
                p->first = d->offset;
            if (!p->any || d->offset > p->last)
                p->last = d->offset;
            p->any = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

struct produce_args {
    enum verity_acks acks;      /* cluster: quorum (default) or leader */
    const char *topic;
    char **files;
    int nfiles;
    const char *key_sep;
    struct verity_header headers[VERITY_RECORD_HEADERS_MAX];
    uint32_t nheaders;
    int32_t partition;
    const char *idem_key;
    bool no_idempotence;
    int linger_ms;
    int timeout_ms;
    const char *broker;
    bool json;
};

enum { OPT_KEYSEP = 256, OPT_HEADER, OPT_PARTITION, OPT_IDEM, OPT_NOIDEM, OPT_LINGER,
       OPT_TIMEOUT, OPT_BROKER, OPT_JSON, OPT_HELP, OPT_ACKS };

static const struct option long_opts[] = {
    {"key-separator", required_argument, NULL, OPT_KEYSEP},
    {"header", required_argument, NULL, OPT_HEADER},
    {"partition", required_argument, NULL, OPT_PARTITION},
    {"idempotency-key", required_argument, NULL, OPT_IDEM},
    {"no-idempotence", no_argument, NULL, OPT_NOIDEM},
    {"linger-ms", required_argument, NULL, OPT_LINGER},
    {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
    {"acks", required_argument, NULL, OPT_ACKS},
    {"broker", required_argument, NULL, OPT_BROKER},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static bool parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int parse(int argc, char **argv, struct produce_args *a)
{
    long v;
    int c;
    memset(a, 0, sizeof *a);
    a->partition = VERITY_PARTITION_ANY;
    a->linger_ms = 5;
    a->timeout_ms = 30000;
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "h", long_opts)) != -1) {
        switch (c) {
        case OPT_KEYSEP:
            if (!optarg[0])
                goto bad;
            a->key_sep = optarg;
            break;
        case OPT_HEADER: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || a->nheaders >= VERITY_RECORD_HEADERS_MAX)
                goto bad;
            struct verity_header *h = &a->headers[a->nheaders++];
            h->key = optarg;
            h->key_len = (uint32_t)(eq - optarg);
            h->value = eq + 1;
            h->value_len = (int32_t)strlen(eq + 1);
            break;
        }
        case OPT_PARTITION:
            if (!parse_int(optarg, 0, VERITY_PARTITIONS_MAX - 1, &v))
                goto bad;
            a->partition = (int32_t)v;
            break;
        case OPT_IDEM:
            a->idem_key = optarg;
            break;
        case OPT_NOIDEM:
            a->no_idempotence = true;
            break;
        case OPT_LINGER:
            if (!parse_int(optarg, 0, 60000, &v))
                goto bad;
            a->linger_ms = (int)v;
            break;
        case OPT_TIMEOUT:
            if (!parse_int(optarg, 1, 86400000, &v))
                goto bad;
            a->timeout_ms = (int)v;
            break;
        case OPT_ACKS:
            if (verity_acks_parse(optarg, &a->acks) != 0)
                return cli_bad_value("verity produce", "--acks", optarg, "quorum or leader");
            break;
        case OPT_BROKER:
            a->broker = optarg;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        default:
            goto bad;
        }
    }
    if (optind >= argc)
        goto bad;
    a->topic = argv[optind++];
    a->files = argv + optind;
    a->nfiles = argc - optind;
    return -1;
bad:
    return cli_bad_args("verity produce", c, long_opts, argv, usage);
}

/* One input line as a record (pointers into line). */
static void line_record(const struct produce_args *a, char *line, size_t len,
                        struct verity_record *r)
{
    memset(r, 0, sizeof *r);
    r->value = line;
    r->value_len = (int32_t)len;
    r->headers = a->nheaders ? a->headers : NULL;
    r->header_count = a->nheaders;
    if (a->key_sep) {
        char *sep = memmem(line, len, a->key_sep, strlen(a->key_sep));
        if (sep) {
            r->key = line;
            r->key_len = (int32_t)(sep - line);
            r->value = sep + strlen(a->key_sep);
            r->value_len = (int32_t)(len - (size_t)(sep - line) - strlen(a->key_sep));
        }
    }
}

/* Lines kept for the single idempotent batch. */
struct lines {
    char **v;
    size_t *len;
    size_t n;
    size_t cap;
    size_t bytes;
};

static int lines_push(struct lines *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        l->v = v;
        size_t *ln = realloc(l->len, cap * sizeof *ln);
        if (!ln)
            return -ENOMEM;
        l->len = ln;
        l->cap = cap;
    }
    if (!(l->v[l->n] = malloc(len + 1)))
        return -ENOMEM;
    memcpy(l->v[l->n], s, len);
    l->v[l->n][len] = '\0';
    l->len[l->n++] = len;
    l->bytes += len;
    return 0;
}

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    free(l->len);
}

/* Reads every input; each line goes to verity_produce or into *keep. */
static int read_inputs(const struct produce_args *a, struct verity_producer *p, struct stats *s,
                       struct lines *keep, uint64_t *count)
{
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    int nfiles = a->nfiles ? a->nfiles : 1;
    for (int i = 0; i < nfiles && rc == 0; i++) {
        const char *path = a->nfiles ? a->files[i] : "-";
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
        if (!f) {
            fprintf(stderr, "verity produce: %s: %s\n", path, strerror(errno));
            rc = -errno;
            break;
        }
        ssize_t n;
        while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
            size_t len = (size_t)n;
            if (len && line[len - 1] == '\n')
                len--;
            if (len > VERITY_BATCH_BYTES_MAX) {
                fprintf(stderr, "verity produce: line %" PRIu64 " is longer than %u bytes\n",
                        *count + 1, VERITY_BATCH_BYTES_MAX);
                rc = VERITY_ELIMIT;
                break;
            }
            if (keep) {
                rc = lines_push(keep, line, len);
            } else {
                struct verity_record r;
                line_record(a, line, len, &r);
                rc = verity_produce(p, a->topic, a->partition, &r, on_delivery, s);
                if (rc)
                    fprintf(stderr, "verity produce: record %" PRIu64 ": %s %s\n", *count + 1,
                            verity_strerror(rc), verity_last_error_message());
            }
            if (rc == 0)
                (*count)++;
        }
        if (f != stdin)
            fclose(f);
    }
    free(line);
    return rc;
}

static int send_keyed_batch(const struct produce_args *a, struct verity_producer *p,
                            struct stats *s, struct lines *l, uint32_t partitions)
{
    if (l->n == 0)
        return 0;
    struct verity_record *recs = calloc(l->n, sizeof *recs);
    if (!recs)
        return -ENOMEM;
    for (size_t i = 0; i < l->n; i++)
        line_record(a, l->v[i], l->len[i], &recs[i]);
    uint8_t key[VERITY_IDEM_KEY_SIZE];
    verity_idempotency_key(a->idem_key, strlen(a->idem_key), key);
    int32_t part = a->partition != VERITY_PARTITION_ANY
                       ? a->partition
                       : (int32_t)verity_partition_for_key(a->idem_key, strlen(a->idem_key),
                                                           partitions);
    int rc = verity_produce_batch(p, a->topic, part, recs, l->n, key, on_delivery, s);
    if (rc)
        fprintf(stderr, "verity produce: the batch of %zu records: %s\n", l->n,
                rc == VERITY_ELIMIT ? "too large for one batch" : verity_strerror(rc));
    free(recs);
    return rc;
}

static void print_summary(const struct produce_args *a, struct stats *s, uint64_t count)
{
    if (!a->json) {
        fprintf(stderr, "produced %" PRIu64 " record%s to %s: %" PRIu64 " acknowledged", count, count == 1 ? "" : "s",
                a->topic, s->acked);
        if (s->duplicates)
            fprintf(stderr, " (%" PRIu64 " already stored)", s->duplicates);
        if (s->failed)
            fprintf(stderr, ", %" PRIu64 " failed (%s)", s->failed, verity_strerror(s->first_err));
        fputc('\n', stderr);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "topic", json_string(a->topic));
    json_object_set_new(o, "records", json_integer((json_int_t)count));
    json_object_set_new(o, "acked", json_integer((json_int_t)s->acked));
    json_object_set_new(o, "duplicates", json_integer((json_int_t)s->duplicates));
    json_object_set_new(o, "failed", json_integer((json_int_t)s->failed));
    if (s->failed)
        json_object_set_new(o, "error", json_string(verity_errname(s->first_err)));
    json_t *arr = json_array();
    for (uint32_t i = 0; i < s->nparts; i++) {
        if (!s->parts[i].any)
            continue;
        json_t *p = json_object();
        json_object_set_new(p, "partition", json_integer(i));
        json_object_set_new(p, "first_offset", json_integer((json_int_t)s->parts[i].first));
        json_object_set_new(p, "last_offset", json_integer((json_int_t)s->parts[i].last));
        json_array_append_new(arr, p);
    }
    json_object_set_new(o, "partitions", arr);
    char *txt = json_dumps(o, JSON_COMPACT);
    if (txt)
        puts(txt);
    free(txt);
    json_decref(o);
}

/* Checks the broker and the topic; *partitions gets its partition count. */
static int check_topic(const struct produce_args *a, uint32_t *partitions)
{
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = a->broker;
    struct verity_client *c = NULL;
    int rc = verity_client_new(&conn, &c);
    if (rc) {
        fprintf(stderr, "verity produce: %s: %s\n", verity_broker_resolve(a->broker),
                cli_strerror(verity_broker_resolve(a->broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_client_connect(c, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity produce: cannot reach broker %s: %s\n",
                verity_broker_resolve(a->broker), cli_strerror(verity_broker_resolve(a->broker), rc));
        verity_client_free(c);
        return EXIT_UNREACHABLE;
    }
    struct verity_topic_info *t = NULL;
    rc = verity_topic_describe(c, a->topic, &t);
    if (rc) {
        fprintf(stderr, "verity produce: topic %s: %s\n", a->topic, verity_last_error_message());
        verity_client_free(c);
        return verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
    }
    *partitions = t->partition_count ? t->partition_count : t->config.partitions;
    verity_topic_info_free(t, 1);
    verity_client_free(c);
    if (a->partition != VERITY_PARTITION_ANY && (uint32_t)a->partition >= *partitions) {
        fprintf(stderr, "verity produce: topic %s has %" PRIu32 " partitions\n", a->topic,
                *partitions);
        return CMD_EXIT_USAGE;
    }
    return -1;
}

int cmd_produce(int argc, char **argv)
{
    struct produce_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    uint32_t partitions = 0;
    if ((rc = check_topic(&a, &partitions)) >= 0)
        return rc;

    struct stats s = {.nparts = partitions};
    pthread_mutex_init(&s.mu, NULL);
    s.parts = calloc(partitions, sizeof *s.parts);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = a.broker;
    pc.idempotence = !a.no_idempotence;
    pc.linger_ms = a.linger_ms;
    pc.delivery_timeout_ms = a.timeout_ms;
    pc.acks = a.acks;
    struct verity_producer *p = NULL;
    if (!s.parts || (rc = verity_producer_new(&pc, &p)) != 0) {
        fprintf(stderr, "verity produce: %s\n", verity_strerror(s.parts ? rc : -ENOMEM));
        free(s.parts);
        return CMD_EXIT_FAIL;
    }
    struct lines keep = {0};
    uint64_t count = 0;
    rc = read_inputs(&a, p, &s, a.idem_key ? &keep : NULL, &count);
    if (rc == 0 && a.idem_key)
        rc = send_keyed_batch(&a, p, &s, &keep, partitions);
    int frc = verity_producer_flush(p, a.timeout_ms + 5000);
    verity_producer_free(p, 0);
    lines_free(&keep);
    pthread_mutex_lock(&s.mu);
    print_summary(&a, &s, count);
    bool ok = rc == 0 && frc == 0 && s.failed == 0 && s.acked == count;
    pthread_mutex_unlock(&s.mu);
    free(s.parts);
    pthread_mutex_destroy(&s.mu);
    return ok ? CMD_EXIT_OK : CMD_EXIT_FAIL;
}
