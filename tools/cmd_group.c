/*
 * verity group create|list|describe|pending|reset|delete: consumer-group
 * administration through libverity's group admin handle
 * (include/verity/group.h). Members are the `verity consume --group`
 * processes and libverity group consumers.
 *
 * Positions (create --from, reset --to): earliest | latest | OFFSET (every
 * partition, clamped by the broker into what is stored) | @MS (the first
 * batch whose max timestamp is at or after MS since the epoch). reset also
 * takes --set TOPIC:PARTITION=OFFSET (repeatable) for single partitions.
 *
 * Exit codes: 0 ok, 1 the broker refused (not found, exists, invalid), 2
 * usage, 3 the broker cannot be reached. --json prints one JSON document on
 * stdout; errors go to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/group.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000
#define SETS_MAX 1024

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity group create NAME --topic T [--topic T2 ...] [--mode ordered|shared]\n"
            "                   [--from earliest|latest|OFFSET|@MS] [--lease-ms MS]\n"
            "                   [--session-ms MS] [--max-deliveries N] [--backoff MS[,MS...]]\n"
            "                   [--dlq TOPIC] [--pending-max N]\n"
            "       verity group list\n"
            "       verity group describe NAME [--kafka]\n"
            "       verity group pending NAME [--member ID] [--max N] [--min-age-ms MS]\n"
            "       verity group reset NAME --to earliest|latest|OFFSET|@MS\n"
            "                   [--set TOPIC:PARTITION=OFFSET ...]\n"
            "       verity group delete NAME\n"
            "common options: --broker HOST:PORT (default $%s or %s), --json\n"
            "--backoff 0 means redeliver at once; zero or absent options take the broker's\n"
            "defaults (lease 30 s, session 30 s, 5 deliveries, backoff 1 s,5 s,30 s,\n"
            "dead letters to <first topic>.dlq).\n"
            "list also shows the Kafka listener's classic groups (mode kafka); describe\n"
            "shows a Kafka group's committed offsets and lag when no Verity group has\n"
            "that name, or always with --kafka (Kafka groups are a namespace of their own).\n"
            "exit: 0 ok, 1 refused by the broker, 2 usage, 3 broker unreachable\n",
            VERITY_BROKER_ENV, VERITY_BROKER_DEFAULT);
}

struct group_args {
    const char *action;
    const char *name;
    const char *broker;
    bool json;
    const char *topics[VERITY_GROUP_TOPICS_MAX];
    size_t n_topics;
    struct verity_group_config cfg;
    bool config_given;
    bool pos_given;
    enum verity_group_start start;
    int64_t start_arg;
    struct verity_group_offset sets[SETS_MAX];
    char set_topics[SETS_MAX][VERITY_GROUP_NAME_MAX + 1];
    size_t n_sets;
    uint64_t member;
    uint32_t max;
    int64_t min_age_ms;
    bool kafka;
};

static int exit_for(int err)
{
    if (err == 0)
        return CMD_EXIT_OK;
    return verity_err_unreachable(err) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
}

static int fail(const char *what, const char *name, int err)
{
    const char *msg = verity_last_error_message();
    fprintf(stderr, "verity group %s%s%s: %s%s%s\n", what, name ? " " : "", name ? name : "",
            verity_strerror(err), msg[0] && strcmp(msg, verity_strerror(err)) ? ": " : "",
            msg[0] && strcmp(msg, verity_strerror(err)) ? msg : "");
    return exit_for(err);
}

static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_pos(const char *s, enum verity_group_start *start, int64_t *arg)
{
    *arg = 0;
    if (strcmp(s, "earliest") == 0) {
        *start = VERITY_GROUP_START_EARLIEST;
        return true;
    }
    if (strcmp(s, "latest") == 0) {
        *start = VERITY_GROUP_START_LATEST;
        return true;
    }
    if (s[0] == '@') {
        *start = VERITY_GROUP_START_TIME;
        return parse_i64(s + 1, 0, INT64_MAX, arg);
    }
    *start = VERITY_GROUP_START_OFFSET;
    return s[0] >= '0' && s[0] <= '9' && parse_i64(s, 0, INT64_MAX, arg);
}

static bool parse_backoff(const char *s, struct verity_group_config *cfg)
{
    char buf[256];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    cfg->n_backoff = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (cfg->n_backoff == VERITY_GROUP_BACKOFF_MAX ||
            !parse_i64(tok, 0, INT64_MAX, &cfg->backoff_ms[cfg->n_backoff]))
            return false;
        cfg->n_backoff++;
    }
    return cfg->n_backoff > 0;
}

/* TOPIC:PARTITION=OFFSET */
static bool parse_set(struct group_args *a, const char *s)
{
    const char *colon = strrchr(s, ':');
    const char *eq = strrchr(s, '=');
    int64_t part, off;
    if (a->n_sets == SETS_MAX || !colon || !eq || eq < colon ||
        (size_t)(colon - s) > VERITY_GROUP_NAME_MAX || colon == s)
        return false;
    char num[32];
    size_t nl = (size_t)(eq - colon - 1);
    if (nl == 0 || nl >= sizeof num)
        return false;
    memcpy(num, colon + 1, nl);
    num[nl] = '\0';
    if (!parse_i64(num, 0, UINT32_MAX, &part) || !parse_i64(eq + 1, 0, INT64_MAX, &off))
        return false;
    char *t = a->set_topics[a->n_sets];
    memcpy(t, s, (size_t)(colon - s));
    t[colon - s] = '\0';
    a->sets[a->n_sets++] = (struct verity_group_offset){t, (uint32_t)part, (uint64_t)off};
    return true;
}

enum { OPT_TOPIC = 256, OPT_MODE, OPT_FROM, OPT_TO, OPT_LEASE, OPT_SESSION, OPT_MAXDEL,
       OPT_BACKOFF, OPT_DLQ, OPT_PENDING_MAX, OPT_SET, OPT_MEMBER, OPT_MAX, OPT_MIN_AGE,
       OPT_KAFKA, OPT_BROKER, OPT_JSON, OPT_HELP };

static const struct option long_opts[] = {
    {"topic", required_argument, NULL, OPT_TOPIC},
    {"mode", required_argument, NULL, OPT_MODE},
    {"from", required_argument, NULL, OPT_FROM},
    {"to", required_argument, NULL, OPT_TO},
    {"lease-ms", required_argument, NULL, OPT_LEASE},
    {"session-ms", required_argument, NULL, OPT_SESSION},
    {"max-deliveries", required_argument, NULL, OPT_MAXDEL},
    {"backoff", required_argument, NULL, OPT_BACKOFF},
    {"dlq", required_argument, NULL, OPT_DLQ},
    {"pending-max", required_argument, NULL, OPT_PENDING_MAX},
    {"set", required_argument, NULL, OPT_SET},
    {"member", required_argument, NULL, OPT_MEMBER},
    {"max", required_argument, NULL, OPT_MAX},
    {"min-age-ms", required_argument, NULL, OPT_MIN_AGE},
    {"kafka", no_argument, NULL, OPT_KAFKA},
    {"broker", required_argument, NULL, OPT_BROKER},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Which options each action takes (bit per option - OPT_TOPIC). */
#define B(o) (1u << ((o) - OPT_TOPIC))
static unsigned allowed(const char *action)
{
    if (strcmp(action, "create") == 0)
        return B(OPT_TOPIC) | B(OPT_MODE) | B(OPT_FROM) | B(OPT_LEASE) | B(OPT_SESSION) |
               B(OPT_MAXDEL) | B(OPT_BACKOFF) | B(OPT_DLQ) | B(OPT_PENDING_MAX);
    if (strcmp(action, "pending") == 0)
        return B(OPT_MEMBER) | B(OPT_MAX) | B(OPT_MIN_AGE);
    if (strcmp(action, "reset") == 0)
        return B(OPT_TO) | B(OPT_SET);
    if (strcmp(action, "describe") == 0)
        return B(OPT_KAFKA);
    return 0;
}

static int parse(int argc, char **argv, struct group_args *a)
{
    int64_t v;
    int c;
    unsigned seen = 0;
    memset(a, 0, sizeof *a);
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "h", long_opts)) != -1) {
        if (c >= OPT_TOPIC && c < OPT_BROKER)
            seen |= B(c);
        switch (c) {
        case OPT_TOPIC:
            if (a->n_topics == VERITY_GROUP_TOPICS_MAX)
                goto bad;
            a->topics[a->n_topics++] = optarg;
            break;
        case OPT_KAFKA:
            a->kafka = true;
            break;
        case OPT_MODE:
            if (verity_group_mode_parse(optarg, &a->cfg.mode) != 0)
                goto bad;
            break;
        case OPT_FROM:
        case OPT_TO:
            if (!parse_pos(optarg, &a->start, &a->start_arg))
                goto bad;
            a->pos_given = true;
            break;
        case OPT_LEASE:
            if (!parse_i64(optarg, 1, INT64_MAX, &a->cfg.lease_ms))
                goto bad;
            break;
        case OPT_SESSION:
            if (!parse_i64(optarg, 1, INT64_MAX, &a->cfg.session_ms))
                goto bad;
            break;
        case OPT_MAXDEL:
            if (!parse_i64(optarg, 1, UINT32_MAX, &v))
                goto bad;
            a->cfg.max_deliveries = (uint32_t)v;
            break;
        case OPT_BACKOFF:
            if (!parse_backoff(optarg, &a->cfg))
                goto bad;
            break;
        case OPT_DLQ:
            a->cfg.dlq_topic = optarg;
            break;
        case OPT_PENDING_MAX:
            if (!parse_i64(optarg, 1, UINT32_MAX, &v))
                goto bad;
            a->cfg.pending_max = (uint32_t)v;
            break;
        case OPT_SET:
            if (!parse_set(a, optarg))
                goto bad;
            break;
        case OPT_MEMBER:
            if (!parse_i64(optarg, 0, INT64_MAX, &v))
                goto bad;
            a->member = (uint64_t)v;
            break;
        case OPT_MAX:
            if (!parse_i64(optarg, 1, 4096, &v))
                goto bad;
            a->max = (uint32_t)v;
            break;
        case OPT_MIN_AGE:
            if (!parse_i64(optarg, 0, INT64_MAX, &a->min_age_ms))
                goto bad;
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
    for (; optind < argc; optind++) {
        if (!a->action)
            a->action = argv[optind];
        else if (!a->name)
            a->name = argv[optind];
        else
            goto bad;
    }
    if (!a->action)
        goto bad;
    if ((seen & ~allowed(a->action)) != 0)
        goto bad;
    if ((strcmp(a->action, "list") == 0) != (a->name == NULL))
        goto bad;
    if (strcmp(a->action, "create") == 0 && a->n_topics == 0)
        goto bad;
    if (strcmp(a->action, "reset") == 0 && !a->pos_given)
        goto bad;
    if (a->n_sets && a->start != VERITY_GROUP_START_OFFSET)
        goto bad; /* per-partition offsets go with an offset position */
    a->cfg.topics = a->topics;
    a->cfg.n_topics = a->n_topics;
    return -1;
bad:
    return cli_bad_args("verity group", c, long_opts, argv, usage);
}

/* ---- output -------------------------------------------------------------- */

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    if (s)
        puts(s);
    free(s);
    json_decref(o);
}

static json_t *offsets_json(const struct verity_group_offset *o, size_t n, bool with_offset)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "topic", json_string(o[i].topic));
        json_object_set_new(e, "partition", json_integer(o[i].partition));
        if (with_offset)
            json_object_set_new(e, "offset", json_integer((json_int_t)o[i].offset));
        json_array_append_new(arr, e);
    }
    return arr;
}

static json_t *group_json(const struct verity_group_info *g, bool full)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(g->name));
    json_object_set_new(o, "mode", json_string(verity_group_mode_name(g->mode)));
    json_t *topics = json_array();
    for (size_t i = 0; i < g->n_topics; i++)
        json_array_append_new(topics, json_string(g->topics[i]));
    json_object_set_new(o, "topics", topics);
    json_object_set_new(o, "members", json_integer(g->member_count));
    json_object_set_new(o, "generation", json_integer(g->generation));
    json_object_set_new(o, "unacked", json_integer((json_int_t)g->unacked));
    json_object_set_new(o, "leased", json_integer(g->leased));
    json_object_set_new(o, "dead_lettered", json_integer((json_int_t)g->dead_lettered));
    if (!full)
        return o;
    json_object_set_new(o, "group_id", json_integer(g->group_id));
    json_object_set_new(o, "dlq_topic", json_string(g->dlq_topic ? g->dlq_topic : ""));
    json_object_set_new(o, "lease_ms", json_integer(g->lease_ms));
    json_object_set_new(o, "session_ms", json_integer(g->session_ms));
    json_object_set_new(o, "max_deliveries", json_integer(g->max_deliveries));
    json_t *bo = json_array();
    for (uint32_t i = 0; i < g->n_backoff; i++)
        json_array_append_new(bo, json_integer(g->backoff_ms[i]));
    json_object_set_new(o, "backoff_ms", bo);
    json_object_set_new(o, "pending_max", json_integer(g->pending_max));
    json_object_set_new(o, "tracked", json_integer(g->tracked));
    json_object_set_new(o, "waiting", json_integer(g->waiting));
    json_object_set_new(o, "dead_letter_pending", json_integer(g->dead_letter_pending));
    json_object_set_new(o, "redeliveries", json_integer((json_int_t)g->redeliveries));
    json_t *members = json_array();
    for (size_t i = 0; i < g->n_members; i++) {
        const struct verity_group_member *m = &g->members[i];
        json_t *e = json_object();
        json_object_set_new(e, "member_id", json_integer((json_int_t)m->member_id));
        json_object_set_new(e, "name", json_string(m->name));
        json_object_set_new(e, "session_ms", json_integer(m->session_ms));
        json_object_set_new(e, "last_seen_ms", json_integer(m->last_seen_ms));
        json_object_set_new(e, "leased", json_integer(m->leased));
        json_object_set_new(e, "assignment", offsets_json(m->assigned, m->n_assigned, false));
        json_array_append_new(members, e);
    }
    json_object_set_new(o, "member_list", members);
    json_t *parts = json_array();
    for (size_t i = 0; i < g->n_partitions; i++) {
        const struct verity_group_partition *p = &g->partitions[i];
        json_t *e = json_object();
        json_object_set_new(e, "topic", json_string(p->topic));
        json_object_set_new(e, "partition", json_integer(p->partition));
        json_object_set_new(e, "ack_floor", json_integer((json_int_t)p->ack_floor));
        if (g->mode == VERITY_GROUP_KAFKA)
            json_object_set_new(e, "committed", json_integer((json_int_t)p->ack_floor));
        json_object_set_new(e, "read_cursor", json_integer((json_int_t)p->read_cursor));
        json_object_set_new(e, "high_watermark", json_integer((json_int_t)p->high_watermark));
        json_object_set_new(e, "start_offset", json_integer((json_int_t)p->start_offset));
        json_object_set_new(e, "unacked", json_integer((json_int_t)p->unacked));
        json_object_set_new(e, "leased", json_integer(p->leased));
        json_object_set_new(e, "waiting", json_integer(p->waiting));
        json_object_set_new(e, "oldest_unacked_age_ms", json_integer(p->oldest_unacked_age_ms));
        json_object_set_new(e, "owner", json_integer((json_int_t)p->owner));
        if (p->error)
            json_object_set_new(e, "error", json_string(verity_errname(p->error)));
        json_array_append_new(parts, e);
    }
    json_object_set_new(o, "partitions", parts);
    return o;
}

/* A Kafka classic group: members by Kafka member id, committed offsets, lag. */
static void print_describe_kafka(const struct verity_group_info *g)
{
    printf("Kafka group %s: generation %" PRIu32 ", %zu member%s, topics", g->name,
           g->generation, g->n_members, g->n_members == 1 ? "" : "s");
    for (size_t i = 0; i < g->n_topics; i++)
        printf(" %s", g->topics[i]);
    printf("\n");
    for (size_t i = 0; i < g->n_members; i++)
        printf("  member %s\n", g->members[i].name);
    printf("\n%-24s %-5s %-12s %-12s %s\n", "TOPIC", "PART", "COMMITTED", "HIGH_WM", "LAG");
    uint64_t lag = 0;
    for (size_t i = 0; i < g->n_partitions; i++) {
        const struct verity_group_partition *p = &g->partitions[i];
        lag += p->unacked;
        printf("%-24s %-5" PRIu32 " %-12" PRIu64 " %-12" PRIu64 " %" PRIu64 "%s%s\n", p->topic,
               p->partition, p->ack_floor, p->high_watermark, p->unacked, p->error ? "  " : "",
               p->error ? verity_errname(p->error) : "");
    }
    printf("total lag %" PRIu64 "\n", lag);
}

static void print_describe(const struct verity_group_info *g)
{
    if (g->mode == VERITY_GROUP_KAFKA) {
        print_describe_kafka(g);
        return;
    }
    printf("group %s (id %" PRIu32 "): %s, generation %" PRIu32 ", topics", g->name, g->group_id,
           verity_group_mode_name(g->mode), g->generation);
    for (size_t i = 0; i < g->n_topics; i++)
        printf(" %s", g->topics[i]);
    printf("\n  lease %" PRId64 " ms, session %" PRId64 " ms, max deliveries %" PRIu32
           ", backoff",
           g->lease_ms, g->session_ms, g->max_deliveries);
    for (uint32_t i = 0; i < g->n_backoff; i++)
        printf("%s%" PRId64, i ? "," : " ", g->backoff_ms[i]);
    printf(" ms, dead letters to %s, pending max %" PRIu32 "\n", g->dlq_topic, g->pending_max);
    printf("  unacked %" PRIu64 ", tracked %" PRIu32 ", leased %" PRIu32 ", waiting %" PRIu32
           ", dead-lettered %" PRIu64 " (%" PRIu32 " pending), redeliveries %" PRIu64 "\n",
           g->unacked, g->tracked, g->leased, g->waiting, g->dead_lettered,
           g->dead_letter_pending, g->redeliveries);
    printf("\n%-20s %-24s %-8s %s\n", "MEMBER", "NAME", "LEASED", "ASSIGNMENT");
    for (size_t i = 0; i < g->n_members; i++) {
        const struct verity_group_member *m = &g->members[i];
        printf("%-20" PRIu64 " %-24s %-8" PRIu32 " ", m->member_id, m->name, m->leased);
        for (size_t k = 0; k < m->n_assigned; k++)
            printf("%s%s/%" PRIu32, k ? "," : "", m->assigned[k].topic, m->assigned[k].partition);
        printf("%s\n", m->n_assigned ? "" : "-");
    }
    printf("\n%-24s %-5s %-12s %-12s %-12s %-10s %-8s %-8s %-10s %s\n", "TOPIC", "PART",
           "ACK_FLOOR", "CURSOR", "HIGH_WM", "LAG", "LEASED", "WAITING", "OLDEST_MS", "OWNER");
    for (size_t i = 0; i < g->n_partitions; i++) {
        const struct verity_group_partition *p = &g->partitions[i];
        printf("%-24s %-5" PRIu32 " %-12" PRIu64 " %-12" PRIu64 " %-12" PRIu64 " %-10" PRIu64
               " %-8" PRIu32 " %-8" PRIu32 " %-10" PRId64 " %" PRIu64 "%s%s\n",
               p->topic, p->partition, p->ack_floor, p->read_cursor, p->high_watermark,
               p->unacked, p->leased, p->waiting, p->oldest_unacked_age_ms, p->owner,
               p->error ? "  " : "", p->error ? verity_errname(p->error) : "");
    }
}

static void print_offsets(const char *what, const char *name, const struct verity_group_offset *o,
                          size_t n, bool json)
{
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "group", json_string(name));
        json_object_set_new(doc, what, offsets_json(o, n, true));
        print_json(doc);
        return;
    }
    printf("%s group %s:\n", strcmp(what, "start") == 0 ? "created" : "reset", name);
    for (size_t i = 0; i < n; i++)
        printf("  %s/%" PRIu32 " at %" PRIu64 "\n", o[i].topic, o[i].partition, o[i].offset);
}

/* ---- actions ------------------------------------------------------------------ */

static int do_create(struct verity_group_admin *ga, const struct group_args *a)
{
    struct verity_group_offset *o = NULL;
    size_t n = 0;
    int rc = verity_group_create(ga, a->name, &a->cfg, a->start, a->start_arg, &o, &n);
    if (rc)
        return fail("create", a->name, rc);
    print_offsets("start", a->name, o, n, a->json);
    verity_group_offsets_free(o, n);
    return CMD_EXIT_OK;
}

static int do_list(struct verity_group_admin *ga, const struct group_args *a)
{
    struct verity_group_info *g = NULL;
    size_t n = 0;
    int rc = verity_group_list(ga, &g, &n);
    if (rc)
        return fail("list", NULL, rc);
    if (a->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, group_json(&g[i], false));
        print_json(arr);
    } else {
        printf("%-32s %-8s %-8s %-10s %-12s %-8s %s\n", "GROUP", "MODE", "MEMBERS", "GEN",
               "UNACKED", "LEASED", "DEAD_LETTERED");
        for (size_t i = 0; i < n; i++)
            printf("%-32s %-8s %-8" PRIu32 " %-10" PRIu32 " %-12" PRIu64 " %-8" PRIu32
                   " %" PRIu64 "\n",
                   g[i].name, verity_group_mode_name(g[i].mode), g[i].member_count,
                   g[i].generation, g[i].unacked, g[i].leased, g[i].dead_lettered);
    }
    verity_group_info_free(g, n);
    return CMD_EXIT_OK;
}

static int do_describe(struct verity_group_admin *ga, const struct group_args *a)
{
    struct verity_group_info *g = NULL;
    /* Without --kafka: a Verity group first, then a Kafka group of that name
     * (whose ids may use characters a Verity group name may not). */
    int rc = a->kafka ? VERITY_ENOTFOUND : verity_group_describe(ga, a->name, &g);
    if (rc == VERITY_ENOTFOUND || (rc == VERITY_EINVAL && !verity_group_name_ok(a->name))) {
        int krc = verity_group_describe_kafka(ga, a->name, &g);
        if (krc != VERITY_ENOTFOUND || a->kafka)
            rc = krc;
    }
    if (rc)
        return fail("describe", a->name, rc);
    if (a->json)
        print_json(group_json(g, true));
    else
        print_describe(g);
    verity_group_info_free(g, 1);
    return CMD_EXIT_OK;
}

static int do_pending(struct verity_group_admin *ga, const struct group_args *a)
{
    struct verity_group_pending_entry *e = NULL;
    size_t n = 0;
    uint64_t total = 0;
    int rc = verity_group_pending(ga, a->name, a->member, a->max, a->min_age_ms, &e, &n, &total);
    if (rc)
        return fail("pending", a->name, rc);
    if (a->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "group", json_string(a->name));
        json_object_set_new(doc, "total", json_integer((json_int_t)total));
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "topic", json_string(e[i].topic));
            json_object_set_new(o, "partition", json_integer(e[i].partition));
            json_object_set_new(o, "offset", json_integer((json_int_t)e[i].offset));
            json_object_set_new(o, "member_id", json_integer((json_int_t)e[i].member_id));
            json_object_set_new(o, "delivery_count", json_integer(e[i].delivery_count));
            json_object_set_new(o, "age_ms", json_integer(e[i].age_ms));
            json_object_set_new(o, "lease_deadline_ms", json_integer(e[i].lease_deadline_ms));
            json_array_append_new(arr, o);
        }
        json_object_set_new(doc, "entries", arr);
        print_json(doc);
    } else {
        printf("%" PRIu64 " leased (%zu shown)\n", total, n);
        printf("%-24s %-5s %-14s %-20s %-6s %-10s %s\n", "TOPIC", "PART", "OFFSET", "MEMBER",
               "COUNT", "AGE_MS", "LEASE_DEADLINE_MS");
        for (size_t i = 0; i < n; i++)
            printf("%-24s %-5" PRIu32 " %-14" PRIu64 " %-20" PRIu64 " %-6" PRIu32
                   " %-10" PRId64 " %" PRId64 "\n",
                   e[i].topic, e[i].partition, e[i].offset, e[i].member_id, e[i].delivery_count,
                   e[i].age_ms, e[i].lease_deadline_ms);
    }
    verity_group_pending_free(e, n);
    return CMD_EXIT_OK;
}

static int do_reset(struct verity_group_admin *ga, const struct group_args *a)
{
    struct verity_group_offset *o = NULL;
    size_t n = 0;
    int rc = verity_group_reset(ga, a->name, a->start, a->start_arg, a->sets, a->n_sets, &o, &n);
    if (rc)
        return fail("reset", a->name, rc);
    print_offsets("offsets", a->name, o, n, a->json);
    verity_group_offsets_free(o, n);
    return CMD_EXIT_OK;
}

static int do_delete(struct verity_group_admin *ga, const struct group_args *a)
{
    int rc = verity_group_delete(ga, a->name);
    if (rc)
        return fail("delete", a->name, rc);
    if (a->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "deleted", json_string(a->name));
        print_json(doc);
    } else {
        printf("deleted group %s\n", a->name);
    }
    return CMD_EXIT_OK;
}

static const struct {
    const char *action;
    int (*run)(struct verity_group_admin *, const struct group_args *);
} actions[] = {
    {"create", do_create}, {"list", do_list},   {"describe", do_describe},
    {"pending", do_pending}, {"reset", do_reset}, {"delete", do_delete},
};

int cmd_group(int argc, char **argv)
{
    struct group_args *a = calloc(1, sizeof *a);
    if (!a)
        return CMD_EXIT_FAIL;
    int rc = parse(argc, argv, a);
    if (rc >= 0) {
        free(a);
        return rc;
    }
    int (*run)(struct verity_group_admin *, const struct group_args *) = NULL;
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (strcmp(actions[i].action, a->action) == 0)
            run = actions[i].run;
    if (!run) {
        fprintf(stderr, "verity group: unknown action '%s'\n", a->action);
        usage(stderr);
        free(a);
        return CMD_EXIT_USAGE;
    }
    if (a->name && !verity_group_name_ok(a->name)) {
        fprintf(stderr, "verity group: invalid group name '%s'\n", a->name);
        free(a);
        return CMD_EXIT_USAGE;
    }
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = a->broker;
    conn.client_id = "verity-cli";
    struct verity_group_admin *ga = NULL;
    if ((rc = verity_group_admin_new(&conn, &ga)) != 0) {
        fprintf(stderr, "verity group: %s: %s\n", verity_broker_resolve(a->broker),
                cli_strerror(verity_broker_resolve(a->broker), rc));
        free(a);
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_group_admin_connect(ga, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity group: cannot reach broker %s: %s\n",
                verity_broker_resolve(a->broker), cli_strerror(verity_broker_resolve(a->broker), rc));
        verity_group_admin_free(ga);
        free(a);
        return EXIT_UNREACHABLE;
    }
    rc = run(ga, a);
    verity_group_admin_free(ga);
    free(a);
    return rc;
}
