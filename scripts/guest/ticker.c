/*
 * ticker - test-guest heartbeat.
 *
 * Prints "tick N" to stdout every 100 ms. N lives in a global variable, i.e.
 * in guest RAM, so after a failover the secondary continues counting from
 * the replicated value: the sequence seen on the console must be monotonic.
 *
 * Deadlines are absolute (clock_nanosleep TIMER_ABSTIME on CLOCK_MONOTONIC)
 * so the period does not drift. If we fall behind by more than one period
 * (guest starved or stopped), missed deadlines are skipped rather than
 * printed in a burst.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS 100000000L /* 100 ms */
#define NSEC_PER_SEC 1000000000L

unsigned long tick_count; /* the counter, held in guest memory */

static void ts_add(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= NSEC_PER_SEC) {
        t->tv_nsec -= NSEC_PER_SEC;
        t->tv_sec++;
    }
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec ||
           (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

int main(void)
{
    struct timespec next, now;
    char line[64];

    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        int len = snprintf(line, sizeof(line), "tick %lu\n", tick_count);
        write_all(STDOUT_FILENO, line, (size_t)len);
        tick_count++;

        ts_add(&next, PERIOD_NS);
        clock_gettime(CLOCK_MONOTONIC, &now);
        struct timespec late = next;
        ts_add(&late, PERIOD_NS);
        if (ts_before(&late, &now)) {
            /* more than a period behind: resynchronise */
            next = now;
            ts_add(&next, PERIOD_NS);
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
    return 0;
}
