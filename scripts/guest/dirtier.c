/*
 * dirtier - test-guest memory dirtier.
 *
 * Usage: dirtier RATE_MIB_S [SIZE_MIB [ON_MS OFF_MS]]
 *        dirtier max [SIZE_MIB]
 *
 * Allocates a SIZE_MIB (default 16) working set and dirties it at about
 * RATE_MIB_S MiB/s: every 10 ms it writes as many 4 KiB pages as are due
 * (one byte-changing write per page), cycling through the working set.
 * Every second it prints "dirtier pages_per_s=X total=Y" (Y = total pages
 * written since start) on stdout. With ON_MS and OFF_MS it writes in bursts:
 * ON_MS at RATE, then OFF_MS idle (a bursty workload).
 *
 * "max" writes as fast as the vCPU allows and prints "work total=Y" every
 * 100 ms of guest time: the benchmarks read Y against host time to get the
 * guest's work rate (guest time stands still while the VM is paused, so the
 * guest cannot see its own pauses).
 *
 * With DIRTIER_FILL=random in the environment (kernel argument
 * dirty_fill=random) every write fills its whole page with fresh
 * pseudo-random bytes instead: pages no delta or compressor can shrink,
 * the worst case of compressed checkpoints (bench/bench.py compress).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define BURST_NS 10000000L /* 10 ms */
#define NSEC_PER_SEC 1000000000L
#define MAX_CATCHUP_S 0.1 /* never write more than 100 ms worth at once */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void ts_add(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= NSEC_PER_SEC) {
        t->tv_nsec -= NSEC_PER_SEC;
        t->tv_sec++;
    }
}

static int fill_random;

/* Dirty page idx of mem: one byte, or (DIRTIER_FILL=random) all of it. */
static void touch_page(volatile uint8_t *mem, size_t idx, uint8_t gen)
{
    static uint64_t x = 88172645463325252ull;

    if (!fill_random) {
        mem[idx * PAGE + (idx % (PAGE / 64)) * 64] = gen;
        return;
    }
    for (size_t i = 0; i < PAGE; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *(volatile uint64_t *)(mem + idx * PAGE + i) = x;
    }
}

static unsigned long parse_ul(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end) {
        fprintf(stderr, "dirtier: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

/* Unthrottled: one byte-changing write per page, as fast as possible.
 * Never returns. */
__attribute__((noreturn)) static void work_loop(volatile uint8_t *mem, size_t npages, unsigned long size_mb)
{
    unsigned long long total = 0;
    size_t idx = 0;
    uint8_t gen = 1;
    double t_report = now_s();

    printf("dirtier: rate=max working set=%lu MiB\n", size_mb);
    fflush(stdout);
    for (;;) {
        for (int i = 0; i < 256; i++) {
            touch_page(mem, idx, gen);
            if (++idx == npages) {
                idx = 0;
                if (++gen == 0)
                    gen = 1;
            }
        }
        total += 256;
        double t = now_s();
        if (t - t_report >= 0.1) {
            printf("work total=%llu\n", total);
            fflush(stdout);
            t_report = t;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 5 || argc == 4) {
        fprintf(stderr, "usage: %s RATE_MIB_S [SIZE_MIB [ON_MS OFF_MS]] | max [SIZE_MIB]\n", argv[0]);
        return 2;
    }
    int max = !strcmp(argv[1], "max");
    const char *fill = getenv("DIRTIER_FILL");

    fill_random = fill && !strcmp(fill, "random");
    unsigned long rate = max ? 0 : parse_ul(argv[1], "rate");
    unsigned long size_mb = argc > 2 ? parse_ul(argv[2], "size") : 16;
    double on_s = argc > 4 ? parse_ul(argv[3], "on_ms") / 1e3 : 0;
    double off_s = argc > 4 ? parse_ul(argv[4], "off_ms") / 1e3 : 0;
    if (rate == 0 && !max)
        return 0;
    if (size_mb == 0)
        size_mb = 1;

    size_t npages = size_mb * (1024 * 1024 / PAGE);
    volatile uint8_t *mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) {
        perror("dirtier: mmap");
        return 1;
    }

    if (max)
        work_loop(mem, npages, size_mb);

    double pages_per_s = (double)rate * (1024.0 * 1024.0 / PAGE);
    size_t idx = 0;
    uint8_t gen = 1;
    unsigned long long total = 0, last_total = 0;
    double credit = 0.0;
    double t_prev = now_s(), t_report = t_prev;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);

    printf("dirtier: rate=%lu MiB/s (%.0f pages/s) working set=%lu MiB\n",
           rate, pages_per_s, size_mb);
    fflush(stdout);

    double t_start = now_s();
    for (;;) {
        double t = now_s();
        double dt = t - t_prev;
        if (dt > MAX_CATCHUP_S)
            dt = MAX_CATCHUP_S;
        t_prev = t;
        /* bursts: idle during the OFF part of each period */
        if (on_s > 0 && fmod(t - t_start, on_s + off_s) >= on_s)
            dt = 0;
        credit += dt * pages_per_s;

        unsigned long todo = (unsigned long)credit;
        credit -= (double)todo;
        for (unsigned long i = 0; i < todo; i++) {
            /* one write per page, value changes on every pass */
            touch_page(mem, idx, gen);
            if (++idx == npages) {
                idx = 0;
                if (++gen == 0)
                    gen = 1;
            }
        }
        total += todo;

        if (t - t_report >= 1.0) {
            double pps = (double)(total - last_total) / (t - t_report);
            printf("dirtier pages_per_s=%.0f total=%llu\n", pps, total);
            fflush(stdout);
            last_total = total;
            t_report = t;
        }

        ts_add(&next, BURST_NS);
        struct timespec cur;
        clock_gettime(CLOCK_MONOTONIC, &cur);
        if (cur.tv_sec > next.tv_sec + 1) /* far behind: resynchronise */
            next = cur;
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
}
