/* remusctl test-failover (test_failover.h). */
#include "agent.h"
#include "clock.h"
#include "log.h"
#include "page_hash.h"
#include "procfs.h"
#include "qmp.h"
#include "restore.h"
#include "test_failover.h"
#include "virt.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define ALIVE_WAIT_S 5

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* Does process pid run with dir on its command line (the clone's QEMU:
 * its -pidfile, -qmp and RAM are there), not a recycled pid? */
static bool runs_in(int pid, const char *dir)
{
	char buf[65536];
	ssize_t n = proc_cmdline(pid, buf, sizeof(buf));

	for (ssize_t i = 0; i < n; i++)
		if (!buf[i])
			buf[i] = ' ';
	return n > 0 && strstr(buf, dir) != NULL;
}

/* The clone's QEMU, if its pid file names one still running (a child
 * killed at its deadline leaves it); then the clone's files. */
static void remove_clone(const char *dir)
{
	char path[PATH_MAX + 16];
	FILE *f;
	int pid = 0;

	if (!dir[0])
		return;
	snprintf(path, sizeof(path), "%s/qemu.pid", dir);
	if ((f = fopen(path, "re"))) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	if (pid > 1 && runs_in(pid, dir))
		kill(pid, SIGKILL);
	nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- the child: restore the clone, check it, discard it ---- */

/* The guest runs if its RAM changes: a kernel alive writes some page
 * (timers, jiffies) every tick. Hash all of it twice, a second apart. */
static bool guest_alive(const char *ram_path, char *detail, size_t len)
{
	int fd = open(ram_path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	const uint8_t *ram;
	bool alive = false;

	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < (off_t)PROTO_PAGE_SIZE) {
		snprintf(detail, len, "cannot read the clone's RAM: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	ram = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (ram == MAP_FAILED) {
		snprintf(detail, len, "cannot map the clone's RAM");
		return false;
	}
	for (int round = 0; round < ALIVE_WAIT_S && !alive; round++) {
		size_t npages = (size_t)st.st_size / PROTO_PAGE_SIZE, changed = 0;
		uint8_t *h = malloc(npages * PAGE_HASH_SIZE), x[PAGE_HASH_SIZE];

		if (!h)
			break;
		for (size_t i = 0; i < npages; i++)
			page_hash(ram + i * PROTO_PAGE_SIZE, 0, h + i * PAGE_HASH_SIZE);
		sleep(1);
		for (size_t i = 0; i < npages; i++) {
			page_hash(ram + i * PROTO_PAGE_SIZE, 0, x);
			changed += memcmp(x, h + i * PAGE_HASH_SIZE, PAGE_HASH_SIZE) != 0;
		}
		free(h);
		alive = changed > 0;
		snprintf(detail, len, "%zu of %zu guest pages changed in 1 s", changed, npages);
	}
	munmap((void *)ram, (size_t)st.st_size);
	return alive;
}

/* Read the first 4 KiB of every disk through the clone's block graph
 * (HMP qemu-io: the guest's device, its backend, the overlay, the copy of
 * the replica). */
static bool disks_read(struct qmp *q, int *ndisks, char *detail, size_t len)
{
	struct json_object *ret = NULL;
	bool ok = true;

	*ndisks = 0;
	if (!q || qmp_execute(q, "query-block", NULL, &ret, 5000)) {
		snprintf(detail, len, "cannot ask the clone's QEMU for its disks");
		return false;
	}
	snprintf(detail, len, "no disk");
	for (size_t i = 0; ret && i < json_object_array_length(ret); i++) {
		struct json_object *b = json_object_array_get_idx(ret, i), *v;
		const char *dev = NULL, *qdev = NULL;
		char cmd[512], *text = NULL;

		if (!json_object_object_get_ex(b, "inserted", &v))
			continue;
		if (json_object_object_get_ex(b, "device", &v))
			dev = json_object_get_string(v);
		if (json_object_object_get_ex(b, "qdev", &v))
			qdev = json_object_get_string(v);
		if (dev && *dev)
			snprintf(cmd, sizeof(cmd), "qemu-io %s \"read 0 4096\"", dev);
		else if (qdev && !strncmp(qdev, "/machine/peripheral/", 20))
			/* -blockdev: the device holding the backend, by its path
			 * under /machine/peripheral (ID/virtio-backend) */
			snprintf(cmd, sizeof(cmd), "qemu-io -d %s \"read 0 4096\"", qdev + 20);
		else
			continue; /* a device without an id: nothing names it */
		(*ndisks)++;
		/* qemu-io prints its figures on QEMU's stdout: the monitor gets
		 * only an error, if any */
		if (qmp_hmp(q, cmd, &text, 10000) || !text || strcasestr(text, "error") ||
		    strstr(text, "failed")) {
			snprintf(detail, len, "%s: %s", cmd, text ? text : qmp_last_error(q));
			ok = false;
		} else {
			snprintf(detail, len, "%d disk(s) read", *ndisks);
		}
		free(text);
	}
	json_object_put(ret);
	return ok;
}

/* libvirt's QEMU is not our child: after its quit, wait (3 s at most)
 * until it is gone, so that closing the connection (AUTODESTROY) does not
 * kill it before it flushed qemu-io's reports. */
static void wait_gone(pid_t pid)
{
	for (int i = 0; i < 30 && pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); i++)
		usleep(100000);
}

/* QMP quit, so that QEMU's stdout (where qemu-io writes) is flushed; then
 * q is closed. Plain QEMU is our child: reaped, or killed if it does not
 * go. libvirt's is waited for; it goes with its connection (AUTODESTROY)
 * if not before. */
static void quit_clone(struct qmp *q, pid_t pid, bool ours)
{
	if (q)
		qmp_execute(q, "quit", NULL, NULL, 2000);
	qmp_close(q);
	if (!ours)
		wait_gone(pid);
	if (!ours || pid <= 0)
		return;
	for (int i = 0; i < 30; i++) {
		if (waitpid(pid, NULL, WNOHANG) != 0)
			return; /* reaped (or not ours after all): never signalled again */
		usleep(100000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* qemu-io's reports of a whole first block in QEMU's output (fd, read
 * from its start): failures are reported there too. */
static int reads_in(int fd)
{
	char line[512];
	int done = 0;
	FILE *f = fd >= 0 ? fdopen(dup(fd), "r") : NULL;

	if (!f)
		return 0;
	rewind(f);
	while (fgets(line, sizeof(line), f))
		done += strstr(line, "read 4096/4096 bytes at offset 0") != NULL;
	fclose(f);
	return done;
}

static int open_regular(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return -1;
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* Where libvirt's QEMU writes qemu-io's reports, for reading: its stdout
 * if that is a file (libvirt's stdio_handler "file"), else the domain's
 * log that virtlogd writes from the pipe (never the pipe itself: reading
 * it would take what libvirt logs). The file may hold earlier lines. */
static int open_libvirt_output(pid_t pid, const char *domain)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/fd/1", (int)pid);
	if ((fd = open_regular(path)) >= 0)
		return fd;
	snprintf(path, sizeof(path), "/var/log/libvirt/qemu/%s.log", domain);
	return open_regular(path);
}

/* What the child finds, for the report. */
struct clone_check {
	bool started, alive, disks_ok;
	char alive_detail[160], disk_detail[600];
	int ndisks;
	char uuid[40];        /* libvirt's clone: its UUID, "" if none */
};

static void report(int fd, const struct clone_check *c, const struct restore_result *res)
{
	struct json_object *o = json_object_new_object();
	bool ok = c->started && c->alive && c->disks_ok;
	const char *text;

	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	if (!ok)
		json_object_object_add(o, "error", json_object_new_string(
			!c->started ? "the clone did not start: see the agent's log" :
			!c->alive ? "the clone's guest did not run (its RAM stood still)" :
			"a disk of the clone could not be read"));
	if (c->started) {
		json_object_object_add(o, "epoch", json_object_new_uint64(res->epoch));
		json_object_object_add(o, "restore_ms", json_object_new_double(res->total_ms));
		if (res->libvirt_domain[0]) {
			json_object_object_add(o, "domain", json_object_new_string(res->libvirt_domain));
			json_object_object_add(o, "uuid", json_object_new_string(c->uuid));
		}
		json_object_object_add(o, "guest_alive", json_object_new_boolean(c->alive));
		json_object_object_add(o, "guest_alive_detail",
				       json_object_new_string(c->alive_detail));
		json_object_object_add(o, "disks", json_object_new_int(c->ndisks));
		json_object_object_add(o, "disks_detail", json_object_new_string(c->disk_detail));
	}
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	if (write(fd, text, strlen(text)) < 0) /* the agent then says: no report */
		log_warn("test failover: cannot write the report: %s", strerror(errno));
	json_object_put(o);
}

/* The disks' reads, counted in QEMU's output (out: -1 if not found) */
static bool reads_seen(int out, int before, int ndisks, char *detail, size_t len)
{
	int done;

	if (out < 0) {
		snprintf(detail, len, "cannot find QEMU's output, where qemu-io reports its reads "
			 "(a file, or libvirt's log of the domain)");
		return false;
	}
	/* virtlogd writes what QEMU wrote as it quit a moment later */
	for (int i = 0; (done = reads_in(out) - before) < ndisks && i < 20; i++)
		usleep(100000);
	snprintf(detail, len, "%d of %d disk(s) read 4096 bytes through the restored graph", done,
		 ndisks);
	return done == ndisks;
}

static void run_child(struct agent *a, int fd)
{
	struct restore_opts o = a->cfg.restore;
	struct restore_result res;
	struct clone_check c = { .disks_ok = true };
	char log[PATH_MAX + 16];
	struct qmp *q = NULL;
	bool libvirt = a->test.domain[0] != 0;
	int out = -1, before = 0;

	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	alarm(TEST_FAILOVER_DEADLINE_S);
	/* None of the agent's sockets (the primary's link, the listener, the
	 * control clients) may stay open here: the report's descriptor is 3,
	 * and all above it goes. */
	if (fd != 3 && dup2(fd, 3) < 0)
		_exit(1);
	fd = 3;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	close_range(4, ~0u, 0);
	/* cut off: no TAP (a libvirt clone's NICs are cut off after the
	 * restore's checks, which the agent's --tap take part in), no shared
	 * disk, no lock on the real state dir */
	o.dir = a->test.dir;
	if (libvirt) {
		o.clone_name = a->test.domain;
	} else {
		o.taps = NULL;
		o.ntaps = 0;
	}
	o.shared_disks = NULL;
	o.nshared_disks = 0;
	o.lock_fd = -1;
	/* libvirt's clone dies with this process's connection (AUTODESTROY):
	 * a test killed at its deadline leaves no domain behind */
	if (restore_vm(&o, &res)) {
		report(fd, &c, &res);
		_exit(1);
	}
	c.started = true;
	c.alive = guest_alive(res.ram_path, c.alive_detail, sizeof(c.alive_detail));
	if (libvirt) {
		snprintf(c.uuid, sizeof(c.uuid), "%s", virt_uuid(res.clone));
		if (virt_qmp_open(res.clone, NULL, NULL, &q))
			q = NULL;
		out = open_libvirt_output(res.qemu_pid, res.libvirt_domain); /* QEMU's goes with it */
		before = reads_in(out);
	} else if (qmp_connect(res.qmp_path, 5000, &q)) {
		q = NULL;
	}
	c.disks_ok = disks_read(q, &c.ndisks, c.disk_detail, sizeof(c.disk_detail));
	quit_clone(q, res.qemu_pid, !libvirt);
	virt_close(res.clone);
	if (!libvirt) {
		snprintf(log, sizeof(log), "%s/qemu.log", a->test.dir);
		out = open_regular(log);
	}
	if (c.disks_ok && c.ndisks)
		c.disks_ok = reads_seen(out, before, c.ndisks, c.disk_detail, sizeof(c.disk_detail));
	if (out >= 0)
		close(out);
	report(fd, &c, &res);
	_exit(c.alive && c.disks_ok ? 0 : 1);
}

/* ---- the agent ---- */

static void finish(struct agent *a, const char *reply)
{
	struct test_failover *t = &a->test;

	if (t->client_fd >= 0) {
		control_reply(t->client_fd, reply);
		close(t->client_fd);
		t->client_fd = -1;
	}
	if (t->result_fd >= 0)
		close(t->result_fd);
	t->result_fd = -1;
	ev_child_stop(a->loop, &t->child_watch);
	ev_timer_stop(a->loop, &t->deadline);
	remove_clone(t->dir);
	t->child = 0;
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
	struct agent *a = w->data;
	struct test_failover *t = &a->test;
	char buf[2048];
	ssize_t n = t->result_fd >= 0 ? pread(t->result_fd, buf, sizeof(buf) - 1, 0) : -1;

	buf[n > 0 ? n : 0] = 0;
	log_info("test failover: done in %.1f s: %s", (mono_ms() - t->started_ms) / 1000,
		 n > 0 ? buf : "no report");
	finish(a, n > 0 ? buf : "{\"ok\":false,\"error\":\"the test's process ended without a "
	       "report: see the agent's log\"}");
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;

	if (a->test.child > 0)
		kill(a->test.child, SIGKILL); /* its QEMU goes in finish (remove_clone) */
}

void test_failover_init(struct agent *a)
{
	memset(&a->test, 0, sizeof(a->test));
	a->test.client_fd = a->test.result_fd = -1;
	ev_init(&a->test.child_watch, on_child);
	ev_timer_init(&a->test.deadline, on_deadline, TEST_FAILOVER_DEADLINE_S + 30, 0);
	a->test.child_watch.data = a->test.deadline.data = a;
}

/* A -netdev that talks to an address (socket,udp=, dgram over inet):
 * unlike a unix one, restored as is, it would reach the primary's peer. */
static bool inet_nic(struct json_object *vm)
{
	struct json_object *argv;
	size_t n;

	if (!json_object_object_get_ex(vm, "qemu_argv", &argv))
		return false;
	n = json_object_array_length(argv);
	for (size_t i = 0; i + 1 < n; i++) {
		const char *o = json_object_get_string(json_object_array_get_idx(argv, i));
		const char *v = json_object_get_string(json_object_array_get_idx(argv, i + 1));

		if (o && v && (!strcmp(o, "-netdev") || !strcmp(o, "--netdev")) &&
		    (strstr(v, "udp=") || strstr(v, "inet")))
			return true;
	}
	return false;
}

/* The clone needs its files (clones may share blocks until written), a
 * second copy of RAM (the restore's) and room for its overlays: refuse
 * rather than fill the file system under the replica. */
static bool room_for_clone(const char *dir, const struct replica_info *info, char *why,
			   size_t len)
{
	struct json_object *v;
	struct statvfs fs;
	uint64_t need = 256ull << 20, ram = 0;

	if (json_object_object_get_ex(info->vm, "ram_size", &v))
		ram = (uint64_t)json_object_get_int64(v);
	need += 2 * ram;
	for (unsigned i = 0; i < info->ndisks; i++)
		need += info->disks[i].size;
	if (statvfs(dir, &fs) < 0 || (uint64_t)fs.f_bavail * fs.f_frsize >= need)
		return true;
	snprintf(why, len, "%s has %llu MiB free; a clone of this replica needs %llu MiB",
		 dir, (unsigned long long)((uint64_t)fs.f_bavail * fs.f_frsize >> 20),
		 (unsigned long long)(need >> 20));
	return false;
}

static char *refuse(const char *msg)
{
	struct json_object *o = json_object_new_object();
	char *text;

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "daemon", json_object_new_string("agent"));
	json_object_object_add(o, "error", json_object_new_string(msg));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

char *test_failover_start(struct agent *a, int fd, bool *keep)
{
	struct test_failover *t = &a->test;
	struct replica_info info;
	char why[PATH_MAX + 128], tmpl[PATH_MAX + 32];
	bool libvirt, inet, room;
	pid_t pid;

	if (t->child)
		return refuse("a test failover is already running");
	if (a->state == AGENT_RESTORING || a->state == AGENT_MASTER || a->state == AGENT_FENCING)
		return refuse("the agent is taking over: no test now");
	if (replica_load_info(a->cfg.state_dir, &info))
		return refuse("no committed replica to test");
	libvirt = json_object_object_get_ex(info.vm, "libvirt_xml", NULL);
	inet = inet_nic(info.vm);
	room = room_for_clone(a->cfg.state_dir, &info, why, sizeof(why));
	t->domain[0] = 0;
	if (libvirt)
		snprintf(t->domain, sizeof(t->domain), "%.200s-test-failover",
			 restore_json_str(info.vm, "name") ? restore_json_str(info.vm, "name") : "vm");
	replica_info_free(&info);
	if (inet && !libvirt)
		return refuse("a NIC of the VM is an inet socket (UDP or dgram to an address): "
			      "its clone would send to the production peer");
	if (!room)
		return refuse(why);
	snprintf(t->dir, sizeof(t->dir), "%s/test-failover", a->cfg.state_dir);
	remove_clone(t->dir); /* a test that died with the agent */
	snprintf(tmpl, sizeof(tmpl), "%s/.test-failover.XXXXXX", a->cfg.state_dir);
	if (mkdir(t->dir, 0700) < 0 || (t->result_fd = mkostemp(tmpl, O_CLOEXEC)) < 0) {
		snprintf(why, sizeof(why), "cannot make %s: %s", t->dir, strerror(errno));
		t->dir[0] = 0;
		return refuse(why);
	}
	unlink(tmpl); /* the report is read through the descriptor */
	if (replica_snapshot(&a->replica, t->dir, TEST_FAILOVER_MAX_COPY, why, sizeof(why))) {
		finish(a, NULL);
		return refuse(why);
	}
	t->started_ms = mono_ms();
	pid = fork();
	if (pid < 0) {
		snprintf(why, sizeof(why), "fork: %s", strerror(errno));
		finish(a, NULL);
		return refuse(why);
	}
	if (pid == 0)
		run_child(a, t->result_fd);
	t->child = pid;
	t->client_fd = fd;
	ev_child_set(&t->child_watch, pid, 0);
	ev_child_start(a->loop, &t->child_watch);
	ev_timer_start(a->loop, &t->deadline);
	*keep = true;
	log_info("test failover: a clone of the replica (epoch %llu) starts in %s, cut off from "
		 "the LAN; protection goes on", (unsigned long long)a->replica_epoch, t->dir);
	return NULL;
}

void test_failover_stop(struct agent *a)
{
	struct test_failover *t = &a->test;

	if (!t->child)
		return;
	kill(t->child, SIGKILL);
	waitpid(t->child, NULL, 0);
	finish(a, "{\"ok\":false,\"error\":\"the agent stopped\"}");
}
