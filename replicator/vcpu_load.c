/* The vCPU threads' busy fraction while the VM runs (vcpu_load.h). */
#include "vcpu_load.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int vcpu_load_parse_schedstat(const char *text, uint64_t *ns)
{
	char *end;
	unsigned long long v;

	if (!text || *text < '0' || *text > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || (*end != ' ' && *end != '\n'))
		return -EINVAL;
	*ns = v;
	return 0;
}

static bool listed(const struct vcpu_load *l, pid_t tid)
{
	for (int i = 0; i < l->nthreads; i++)
		if (l->tids[i] == tid)
			return true;
	return false;
}

int vcpu_load_init(struct vcpu_load *l, pid_t qemu, struct json_object *cpus)
{
	size_t n = cpus && json_object_is_type(cpus, json_type_array) ?
		json_object_array_length(cpus) : 0;

	*l = (struct vcpu_load){ .qemu = qemu };
	for (size_t i = 0; i < n; i++) {
		struct json_object *tid;
		int64_t v;

		if (!json_object_object_get_ex(json_object_array_get_idx(cpus, i), "thread-id",
					       &tid) || !json_object_is_type(tid, json_type_int))
			continue;
		v = json_object_get_int64(tid);
		if (v <= 0 || v > INT32_MAX || listed(l, (pid_t)v))
			continue;
		if (l->nthreads == VCPU_LOAD_MAX_THREADS)
			break;
		l->tids[l->nthreads++] = (pid_t)v;
	}
	return l->nthreads ? 0 : -EINVAL;
}

/* The vCPU threads' CPU time, summed. */
static int cpu_ns(const struct vcpu_load *l, uint64_t *sum)
{
	*sum = 0;
	for (int i = 0; i < l->nthreads; i++) {
		char path[64], buf[96];
		uint64_t ns;
		ssize_t got;
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", (int)l->qemu,
			 (int)l->tids[i]);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		got = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (got <= 0)
			return -EIO;
		buf[got] = 0;
		if (vcpu_load_parse_schedstat(buf, &ns))
			return -EIO;
		*sum += ns;
	}
	return 0;
}

void vcpu_load_mark_at(const struct vcpu_load *l, struct vcpu_mark *m, double now_ms)
{
	m->valid = l->nthreads && !cpu_ns(l, &m->ns);
	m->ms = now_ms;
}

double vcpu_load_busy_since(const struct vcpu_load *l, struct vcpu_mark *m, double now_ms)
{
	struct vcpu_mark before = *m;
	double span = now_ms - before.ms, busy;

	vcpu_load_mark_at(l, m, now_ms);
	if (!before.valid || !m->valid || span <= 0 || m->ns < before.ns)
		return -1;
	busy = (double)(m->ns - before.ns) / 1e6 / span / l->nthreads;
	return busy > 1 ? 1 : busy;
}

void vcpu_load_mark(struct vcpu_load *l, double now_ms)
{
	vcpu_load_mark_at(l, &l->epoch, now_ms);
}

double vcpu_load_busy(struct vcpu_load *l, double now_ms)
{
	return vcpu_load_busy_since(l, &l->epoch, now_ms);
}
