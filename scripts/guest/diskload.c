/*
 * diskload - test-guest disk workloads.
 *
 *   diskload check DEV        every 100 ms: read back the value last written
 *                             at a fixed sector (O_DIRECT), compare it with
 *                             the value held in memory, write the next one,
 *                             fdatasync (a flush the device must honour)
 *   diskload write DEV RATE   write random 4 KiB blocks elsewhere on DEV at
 *                             RATE MiB/s ("max": as fast as it completes),
 *                             O_DIRECT; every 5 s print throughput and
 *                             write latency percentiles
 *
 * check prints, on the console:
 *   disk: first read none | V       at start (none: a fresh, zeroed sector)
 *   disk: ok N                      every 10 good checks (N: value verified)
 *   disk: MISMATCH expected X got Y the disk disagrees with memory (Y: a
 *                                   value, "none" for a zeroed sector, or
 *                                   "garbage")
 *   disk: read error / write error  an I/O call failed (errno text)
 * The expected value lives in guest RAM: after a failover the restored VM
 * must find on its disk exactly the value its memory says was written last.
 *
 * write prints every 5 s:
 *   diskw: writes=N mb_s=X lat_p50_us=A lat_p99_us=B lat_max_us=C
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BLOCK         4096
#define CHECK_OFFSET  (1u << 20)       /* the check's sector: 1 MiB in */
#define WRITE_START   (2u << 20)       /* the writer stays above 2 MiB */
#define PERIOD_NS     100000000L       /* check tick: 100 ms */
#define NSEC_PER_SEC  1000000000L
#define REPORT_NS     (5 * NSEC_PER_SEC)
#define MAX_SAMPLES   200000
#define OPEN_WAIT_S   20

static const char magic[8] = "RMDSKCHK";

/* The check's state, in guest memory (replicated with it). */
uint64_t last_value;   /* the value last written and flushed */
int have_value;        /* 0 until a value is known */
unsigned long checks;

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
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static int64_t ns_between(const struct timespec *a, const struct timespec *b)
{
    return (int64_t)(b->tv_sec - a->tv_sec) * NSEC_PER_SEC + (b->tv_nsec - a->tv_nsec);
}

/* Sleep to the next absolute deadline; skip the ones already missed. */
static void next_tick(struct timespec *deadline, long period)
{
    struct timespec now;

    ts_add(deadline, period);
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (ts_before(deadline, &now)) {
        *deadline = now;
        return;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline, NULL) == EINTR)
        ;
}

/* The device node appears shortly after the driver probes it. */
static int open_dev(const char *dev)
{
    for (int i = 0; i < OPEN_WAIT_S * 10; i++) {
        int fd = open(dev, O_RDWR | O_DIRECT | O_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno != ENOENT && errno != ENXIO && errno != ENODEV)
            break;
        usleep(100000);
    }
    printf("disk: cannot open %s: %s\n", dev, strerror(errno));
    return -1;
}

static void *block_buf(void)
{
    void *p = NULL;

    if (posix_memalign(&p, BLOCK, BLOCK)) {
        printf("disk: out of memory\n");
        exit(1);
    }
    return p;
}

/* What the check sector holds: 1 a value, 0 none (zeroes), -1 garbage. */
static int decode(const uint8_t *b, uint64_t *v)
{
    uint64_t inv;

    for (int i = 0; i < BLOCK; i++)
        if (b[i])
            goto nonzero;
    return 0;
nonzero:
    memcpy(v, b + 8, 8);
    memcpy(&inv, b + 16, 8);
    return !memcmp(b, magic, 8) && inv == ~*v ? 1 : -1;
}

static void describe(int kind, uint64_t v, char *out, size_t len)
{
    if (kind == 1)
        snprintf(out, len, "%llu", (unsigned long long)v);
    else
        snprintf(out, len, "%s", kind ? "garbage" : "none");
}

static int read_value(int fd, uint8_t *buf, uint64_t *v)
{
    ssize_t n = pread(fd, buf, BLOCK, CHECK_OFFSET);

    if (n != BLOCK) {
        printf("disk: read error: %s\n", n < 0 ? strerror(errno) : "short read");
        return -2;
    }
    return decode(buf, v);
}

static int write_value(int fd, uint8_t *buf, uint64_t v)
{
    uint64_t inv = ~v;

    memset(buf, 0, BLOCK);
    memcpy(buf, magic, 8);
    memcpy(buf + 8, &v, 8);
    memcpy(buf + 16, &inv, 8);
    if (pwrite(fd, buf, BLOCK, CHECK_OFFSET) != BLOCK || fdatasync(fd) < 0) {
        printf("disk: write error: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static int run_check(const char *dev)
{
    struct timespec deadline;
    uint8_t *buf = block_buf();
    char got[32];
    uint64_t v = 0;
    int fd = open_dev(dev), kind;

    if (fd < 0)
        return 1;
    kind = read_value(fd, buf, &v);
    if (kind >= -1) {
        describe(kind, v, got, sizeof(got));
        printf("disk: first read %s\n", got);
        if (kind == 1) {
            last_value = v;
            have_value = 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    for (;;) {
        next_tick(&deadline, PERIOD_NS);
        kind = read_value(fd, buf, &v);
        if (kind == -2)
            continue;
        if (have_value && (kind != 1 || v != last_value)) {
            describe(kind, v, got, sizeof(got));
            printf("disk: MISMATCH expected %llu got %s\n", (unsigned long long)last_value, got);
        } else if (have_value && ++checks % 10 == 0) {
            printf("disk: ok %llu\n", (unsigned long long)last_value);
        }
        if (write_value(fd, buf, last_value + 1) == 0) {
            last_value++;
            have_value = 1;
        }
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static void report(uint32_t *lat, unsigned long n, unsigned long writes, int64_t ns)
{
    double mb_s = ns > 0 ? (double)writes * BLOCK / (1 << 20) / ((double)ns / NSEC_PER_SEC) : 0;

    if (n)
        qsort(lat, n, sizeof(*lat), cmp_u32);
    printf("diskw: writes=%lu mb_s=%.2f lat_p50_us=%u lat_p99_us=%u lat_max_us=%u\n", writes,
           mb_s, n ? lat[n / 2] : 0, n ? lat[(n * 99) / 100] : 0, n ? lat[n - 1] : 0);
}

static int run_write(const char *dev, const char *rate)
{
    static uint32_t lat[MAX_SAMPLES];
    struct timespec deadline, t0, t1, since;
    uint8_t *buf = block_buf();
    unsigned long n = 0, writes = 0;
    uint64_t size = 0, nblocks, seed = 88172645463325252ull;
    long period = 0;
    int fd;

    if (strcmp(rate, "max") != 0) {
        double r = atof(rate);
        if (r <= 0) {
            printf("diskw: bad rate '%s' (MiB/s, or max)\n", rate);
            return 2;
        }
        period = (long)(NSEC_PER_SEC / (r * ((1 << 20) / BLOCK)));
    }
    fd = open_dev(dev);
    if (fd < 0)
        return 1;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0 || size < WRITE_START + BLOCK) {
        printf("diskw: %s is too small (%llu bytes)\n", dev, (unsigned long long)size);
        return 1;
    }
    nblocks = (size - WRITE_START) / BLOCK;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    since = deadline;
    for (;;) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        memset(buf, (int)(seed & 0xff), BLOCK);
        memcpy(buf, &seed, sizeof(seed));
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (pwrite(fd, buf, BLOCK, (off_t)(WRITE_START + (seed % nblocks) * BLOCK)) != BLOCK) {
            printf("diskw: write error: %s\n", strerror(errno));
            sleep(1);
            clock_gettime(CLOCK_MONOTONIC, &t1);
        } else {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (n < MAX_SAMPLES)
                lat[n++] = (uint32_t)(ns_between(&t0, &t1) / 1000);
            writes++;
        }
        if (ns_between(&since, &t1) >= REPORT_NS) {
            report(lat, n, writes, ns_between(&since, &t1));
            since = t1;
            n = writes = 0;
        }
        if (period)
            next_tick(&deadline, period);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "check"))
        return run_check(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "write"))
        return run_write(argv[2], argv[3]);
    fprintf(stderr, "usage: diskload check DEV | diskload write DEV MIB_PER_S|max\n");
    return 2;
}
