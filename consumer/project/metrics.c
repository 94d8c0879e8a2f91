/*
 * GET /metrics (Prometheus text format) from the worker's counters, served
 * by an evhttp server on its own thread and event base. Limits are set
 * explicitly: no request body, small headers, a timeout.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/worker.h"

static struct event_base *base;
static struct evhttp *http;
static pthread_t thr;
static bool running;

static void on_metrics(struct evhttp_request *req, void *opaque)
{
    struct prj_stats *st = opaque;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_send_error(req, 405, "GET only");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    pthread_mutex_lock(&st->mu);
    evbuffer_add_printf(b,
                        "# TYPE verity_project_events_total counter\n"
                        "verity_project_events_total %" PRIu64 "\n"
                        "# TYPE verity_project_dead_lettered_total counter\n"
                        "verity_project_dead_lettered_total %" PRIu64 "\n"
                        "# TYPE verity_project_skipped_total counter\n"
                        "verity_project_skipped_total %" PRIu64 "\n"
                        "# TYPE verity_project_commits_total counter\n"
                        "verity_project_commits_total %" PRIu64 "\n"
                        "# TYPE verity_project_db_errors_total counter\n"
                        "verity_project_db_errors_total %" PRIu64 "\n"
                        "# TYPE verity_project_conflicts_total counter\n"
                        "verity_project_conflicts_total %" PRIu64 "\n"
                        "# TYPE verity_project_gap_fills_total counter\n"
                        "verity_project_gap_fills_total %" PRIu64 "\n"
                        "# TYPE verity_project_next_offset gauge\n",
                        st->events, st->dead_lettered, st->skipped, st->commits, st->db_errors,
                        st->conflicts, st->gap_fills);
    for (size_t i = 0; i < st->n_pos; i++)
        evbuffer_add_printf(b, "verity_project_next_offset{topic=\"%s\",partition=\"%u\"} %" PRIu64
                               "\n",
                            st->pos[i].topic, st->pos[i].partition, st->pos[i].next_offset);
    evbuffer_add_printf(b, "# TYPE verity_project_events_per_second gauge\n");
    for (size_t i = 0; i < st->n_pos; i++)
        evbuffer_add_printf(b,
                            "verity_project_events_per_second{topic=\"%s\",partition=\"%u\"} "
                            "%.1f\n",
                            st->pos[i].topic, st->pos[i].partition, st->pos[i].rate_eps);
    pthread_mutex_unlock(&st->mu);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *opaque)
{
    evhttp_send_error(req, 404, "only /metrics");
}

static void *loop(void *arg)
{
    event_base_dispatch(base);
    return NULL;
}

int prj_metrics_start(const char *addr, struct prj_stats *st)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535)
        return -1;
    evthread_use_pthreads();
    base = event_base_new();
    http = base ? evhttp_new(base) : NULL;
    if (!http)
        return -1;
    evhttp_set_max_body_size(http, 0);
    evhttp_set_max_headers_size(http, 8192);
    evhttp_set_timeout(http, 10);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET);
    evhttp_set_cb(http, "/metrics", on_metrics, st);
    evhttp_set_gencb(http, on_other, NULL);
    if (evhttp_bind_socket(http, host, (uint16_t)port) != 0) {
        evhttp_free(http);
        event_base_free(base);
        http = NULL;
        base = NULL;
        return -1;
    }
    if (pthread_create(&thr, NULL, loop, NULL) != 0)
        return -1;
    running = true;
    return 0;
}

void prj_metrics_stop(void)
{
    if (!running)
        return;
    event_base_loopbreak(base);
    pthread_join(thr, NULL);
    evhttp_free(http);
    event_base_free(base);
    running = false;
}
