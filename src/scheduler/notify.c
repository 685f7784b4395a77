/*
 * notify.c - systemd integration through sd_notify(3): READY=1 with a short STATUS= line when
 * the supervisor serves, a refreshed STATUS= while it runs, STOPPING=1 once it drains, and
 * WATCHDOG=1 pings at half the interval systemd asks for (WatchdogSec=, seen as
 * $WATCHDOG_USEC), sent from the loop's timer so that a stuck loop stops them.
 *
 * Without $NOTIFY_SOCKET (not started by systemd) every function here returns at once. The
 * agents never see these variables (fleet.c removes them from their environment): with
 * NotifyAccess=main systemd would ignore them anyway, but an agent that speaks sd_notify
 * itself must not be taken for the service.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "sup.h"

#define STATUS_EVERY_NS 5000000000ull

static void summary(struct sup *s, char *buf, size_t cap)
{
    struct shard_totals t;
    shards_totals(s, &t); /* notify_tick runs with the world stopped */
    int running = 0;
    for (int i = 0; i < s->nagents; i++)
        running += s->agents[i].state == AG_RUNNING;
    snprintf(buf, cap, "serving %s: engine %s, %d/%d agents running, %u attached, %llu tasks",
             s->cfg.name, s->engine_ops ? s->engine_ops->name : "-", running, s->fleet_size,
             s->nactive, (unsigned long long)t.tasks_done);
}

static void notify_send(const char *msg)
{
    int rc = sd_notify(0, msg);
    if (rc < 0)
        log_debug("sd_notify: %s", strerror(-rc));
}

/* Called once, when the supervisor prints its ready line. Not thread-safe (loop thread). */
void notify_ready(struct sup *s)
{
    struct sup_notify *n = &s->notify;
    n->on = getenv("NOTIFY_SOCKET") != NULL;
    if (!n->on)
        return;
    uint64_t usec = 0, now = now_ns();
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        n->wd_ns = usec * 1000u / 2;
        n->wd_next_ns = now + n->wd_ns;
        log_debug("systemd watchdog: %llu us, pinging every %llu us", (unsigned long long)usec,
                  (unsigned long long)(n->wd_ns / 1000u));
    }
    summary(s, n->status, sizeof n->status);
    char msg[256];
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s%s", n->status, n->wd_ns ? "\nWATCHDOG=1" : "");
    notify_send(msg);
    n->status_next_ns = now + STATUS_EVERY_NS;
}

/* Called from the loop's timer block (at least every 50 ms, and on events). */
void notify_tick(struct sup *s, uint64_t now)
{
    struct sup_notify *n = &s->notify;
    if (!n->on)
        return;
    if (n->wd_ns && now >= n->wd_next_ns) {
        notify_send("WATCHDOG=1");
        n->wd_next_ns = now + n->wd_ns;
    }
    if (s->draining && !n->stopping_sent) {
        n->stopping_sent = 1;
        notify_send("STOPPING=1\nSTATUS=draining: finishing tasks in flight, stopping the agents");
        return;
    }
    if (!s->draining && now >= n->status_next_ns) {
        char st[sizeof n->status];
        summary(s, st, sizeof st);
        if (strcmp(st, n->status)) {
            memcpy(n->status, st, sizeof st);
            char msg[256];
            snprintf(msg, sizeof msg, "STATUS=%s", st);
            notify_send(msg);
        }
        n->status_next_ns = now + STATUS_EVERY_NS;
    }
}
