/*
 * The audit trail (issue 14): security events appended as records to
 * topics the broker writes itself, so they are hash-chained, covered by the
 * signed checkpoints and provable like any record (docs/FORMAT.md).
 *
 * Every event goes to the broker-wide topic AUDIT_TOPIC ("__audit"); an
 * event that belongs to a tenant also goes to that tenant's own
 * "<tenant>~__audit", which the tenant's principals read as "__audit" when
 * an ACL lets them consume it. The broker-wide topic is read by a principal
 * with consume on cluster:audit. Clients never write, create or delete an
 * audit topic (auth.c refuses it whatever the ACLs say).
 *
 * A record: key = the event name, value = one JSON object
 * {"ts_ms":..,"event":"..","tenant":"..",...fields}. Events are queued and
 * appended from a timer (never inside a request handler or a commit
 * callback); the topics are created on first use with unlimited retention.
 * In a cluster an audit topic has one partition per broker (one replica,
 * partition i on the i-th node), each broker appends its own events to its
 * own partition and adds "node": its id; the primary of __meta creates the
 * topics (__audit and one per tenant of the store in use) for all brokers.
 * At most AUDIT_QUEUE_MAX events wait; more are dropped, counted and logged
 * (audit_dropped), never blocking a request.
 */
#ifndef VERITY_BROKER_AUDIT_H
#define VERITY_BROKER_AUDIT_H

#include <stdint.h>

struct broker;
struct event_base;

#define AUDIT_TOPIC "__audit"
#define AUDIT_QUEUE_MAX 10000u
#define AUDIT_BATCH_MAX 64u /* events per appended batch */

struct audit;

struct audit_stats {
    uint64_t events;  /* appended */
    uint64_t dropped; /* queue full, out of memory, broker stopping */
    uint64_t queued;  /* waiting now */
};

struct audit *audit_new(struct broker *b);
void audit_free(struct audit *a);

/* Queues an event. tenant: "" or NULL when it belongs to none. fmt/...: more
 * fields as a jansson pack format of an object ("{s:s, s:I}", ...) or NULL. */
void audit_emit(struct audit *a, const char *tenant, const char *event, const char *fmt, ...);

void audit_stats(const struct audit *a, struct audit_stats *out);

#endif
