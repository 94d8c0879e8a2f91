/*
 * Kafka classic consumer groups: not implemented yet (the group APIs are
 * not in the dispatch table, so clients see them unsupported). The hooks
 * below keep the listener's lifecycle in one place for when they are.
 */
#include "broker/kafka/kafka_int.h"

int kgroups_open(struct kafka *k)
{
    k->groups = NULL;
    return 0;
}

void kgroups_close(struct kafka *k)
{
    k->groups = NULL;
}

void kgroups_conn_gone(struct kafka *k, struct kconn *c)
{
    (void)k;
    (void)c;
}
