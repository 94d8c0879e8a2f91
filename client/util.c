/*
 * Small public helpers of libverity: configuration defaults, the broker
 * address lookup, durability names, the per-thread error message, and the
 * classification of "cannot reach the broker" errors.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client/client_int.h"

static _Thread_local char last_error[CL_ERRMSG_MAX];

const char *verity_last_error_message(void)
{
    return last_error;
}

void cl_set_last_error(const char *msg)
{
    if (!msg)
        msg = "";
    strncpy(last_error, msg, sizeof last_error - 1);
    last_error[sizeof last_error - 1] = '\0';
}

const char *verity_broker_resolve(const char *arg)
{
    if (arg && arg[0])
        return arg;
    const char *env = getenv(VERITY_BROKER_ENV);
    if (env && env[0])
        return env;
    return VERITY_BROKER_DEFAULT;
}

bool verity_err_unreachable(int err)
{
    switch (err) {
    case -ECONNREFUSED:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
    case -ETIMEDOUT:
    case -EHOSTDOWN:
    case -ENETDOWN:
    case -EADDRNOTAVAIL:
    case -ENXIO: /* name did not resolve */
        return true;
    default:
        return false;
    }
}

void verity_conn_config_default(struct verity_conn_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->connect_timeout_ms = 5000;
    cfg->request_timeout_ms = 30000;
    cfg->reconnect_backoff_ms = 50;
    cfg->reconnect_backoff_max_ms = 1000;
}

void cl_conn_config_fill(const struct verity_conn_config *cfg, struct verity_conn_config *out)
{
    struct verity_conn_config d;
    verity_conn_config_default(&d);
    *out = cfg ? *cfg : d;
    if (out->connect_timeout_ms <= 0)
        out->connect_timeout_ms = d.connect_timeout_ms;
    if (out->request_timeout_ms <= 0)
        out->request_timeout_ms = d.request_timeout_ms;
    if (out->reconnect_backoff_ms <= 0)
        out->reconnect_backoff_ms = d.reconnect_backoff_ms;
    if (out->reconnect_backoff_max_ms < out->reconnect_backoff_ms)
        out->reconnect_backoff_max_ms =
            d.reconnect_backoff_max_ms > out->reconnect_backoff_ms ? d.reconnect_backoff_max_ms
                                                                   : out->reconnect_backoff_ms;
    out->broker = verity_broker_resolve(out->broker);
    const char *e;
    if (!out->tls_ca && (e = getenv("VERITY_TLS_CA")) && e[0])
        out->tls_ca = e;
    if (!out->tls_cert && (e = getenv("VERITY_TLS_CERT")) && e[0])
        out->tls_cert = e;
    if (!out->tls_key && (e = getenv("VERITY_TLS_KEY")) && e[0])
        out->tls_key = e;
    if (!out->tls_server_name && (e = getenv("VERITY_TLS_SERVER_NAME")) && e[0])
        out->tls_server_name = e;
    if (out->tls == 0 && (out->tls_ca || out->tls_cert ||
                          ((e = getenv("VERITY_TLS")) && strcmp(e, "1") == 0)))
        out->tls = 1;
    if (!out->api_key && (e = getenv("VERITY_API_KEY")) && e[0])
        out->api_key = e;
    if (!out->client_id)
        out->client_id = "libverity";
}

static const char *const durability_names[] = {"default", "always", "group", "os"};

int verity_durability_parse(const char *s, enum verity_durability *out)
{
    for (size_t i = 0; s && i < sizeof durability_names / sizeof durability_names[0]; i++) {
        if (strcasecmp(s, durability_names[i]) == 0) {
            *out = (enum verity_durability)i;
            return 0;
        }
    }
    return VERITY_EINVAL;
}

const char *verity_durability_name(enum verity_durability d)
{
    if ((unsigned)d < sizeof durability_names / sizeof durability_names[0])
        return durability_names[d];
    return "unknown";
}

static const char *const acks_names[] = {"default", "quorum", "leader"};

int verity_acks_parse(const char *s, enum verity_acks *out)
{
    for (size_t i = 0; s && i < sizeof acks_names / sizeof acks_names[0]; i++) {
        if (strcasecmp(s, acks_names[i]) == 0) {
            *out = (enum verity_acks)i;
            return 0;
        }
    }
    return VERITY_EINVAL;
}

const char *verity_acks_name(enum verity_acks a)
{
    if ((unsigned)a < sizeof acks_names / sizeof acks_names[0])
        return acks_names[a];
    return "unknown";
}

enum verity_durability cl_durability_from_wire(int d)
{
    switch (d) {
    case VERITY__DURABILITY__DURABILITY_ALWAYS:
        return VERITY_DURABILITY_ALWAYS;
    case VERITY__DURABILITY__DURABILITY_GROUP:
        return VERITY_DURABILITY_GROUP;
    case VERITY__DURABILITY__DURABILITY_OS:
        return VERITY_DURABILITY_OS;
    default:
        return VERITY_DURABILITY_DEFAULT;
    }
}

void cl_topic_info_clear(struct verity_topic_info *t)
{
    free(t->name);
    free(t->error_message);
    free(t->partitions);
    memset(t, 0, sizeof *t);
}

void verity_topic_info_free(struct verity_topic_info *topics, size_t n)
{
    if (!topics)
        return;
    for (size_t i = 0; i < n; i++)
        cl_topic_info_clear(&topics[i]);
    free(topics);
}

int cl_topic_info_from_wire(const Verity__TopicMetadata *m, struct verity_topic_info *out)
{
    memset(out, 0, sizeof *out);
    out->name = strdup(m->name ? m->name : "");
    out->error_message = strdup(m->error_message ? m->error_message : "");
    if (!out->name || !out->error_message)
        goto nomem;
    out->error = codec_err_from_wire(m->error);
    if (m->config) {
        const Verity__TopicConfig *c = m->config;
        out->config.partitions = c->partitions;
        out->config.durability = cl_durability_from_wire(c->durability);
        out->config.retention_ms = c->retention_ms;
        out->config.retention_bytes = c->retention_bytes;
        out->config.segment_bytes = c->segment_bytes;
        out->config.max_message_bytes = c->max_message_bytes;
        out->config.replication_factor = c->replication_factor;
    }
    if (m->n_partitions > 0) {
        out->partitions = calloc(m->n_partitions, sizeof *out->partitions);
        if (!out->partitions)
            goto nomem;
        for (size_t i = 0; i < m->n_partitions; i++) {
            const Verity__PartitionMetadata *p = m->partitions[i];
            struct verity_partition_info *o = &out->partitions[i];
            o->partition = p->partition;
            o->leader = p->leader;
            o->start_offset = p->start_offset;
            o->high_watermark = p->high_watermark;
            o->end_offset = p->end_offset;
            o->size_bytes = p->size_bytes;
            o->error = codec_err_from_wire(p->error);
        }
        out->partition_count = (uint32_t)m->n_partitions;
    }
    return 0;
nomem:
    cl_topic_info_clear(out);
    return -ENOMEM;
}

const char *verity_admin_auth_header(void)
{
    static char line[160];
    static bool done;
    if (done)
        return line;
    done = true;
    const char *k = getenv("VERITY_API_KEY");
    if (!k || !k[0] || strlen(k) > sizeof line - 32)
        return line;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return line;
    snprintf(line, sizeof line, "Authorization: Bearer %s\r\n", k);
    return line;
}
