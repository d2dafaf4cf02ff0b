/* The epoch pipeline (replicator/epoch.c, and the operator's pause and
 * handover around it, replicator/operator.c) with fake checkpoint devices, a
 * fake QEMU behind QMP's passthrough and a real peer link (cleartext,
 * over a socketpair) to a fake backup that records every frame: the
 * order of the device hooks around stop and cont, acks and commits, early
 * epochs, NACK and resend, a backup lost with an epoch in flight, a
 * barrier QEMU refuses, a failed capture, and a handover's final
 * checkpoint. */
#include "../replicator/replicator.h"
#include "clock.h"
#include "qmp.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- what happened, in order: one word per event ---- */

static char trail[4096];

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	size_t n = strlen(trail);
	va_list ap;

	if (n && n < sizeof(trail) - 1)
		trail[n++] = ' ';
	va_start(ap, fmt);
	vsnprintf(trail + n, sizeof(trail) - n, fmt, ap);
	va_end(ap);
}

static void trail_reset(void)
{
	trail[0] = 0;
}

/* ---- a fake QEMU: answers stop, cont and query-status ---- */

static struct fake_qemu {
	bool running;
	bool refuse_stop;   /* `stop` fails */
} qemu;

static int qemu_command(void *ctx, const char *request, const int *fds, unsigned nfds,
			char **reply, char *why, size_t whylen)
{
	struct json_object *req = json_tokener_parse(request), *cmd;
	const char *name = "";

	if (req && json_object_object_get_ex(req, "execute", &cmd))
		name = json_object_get_string(cmd);
	if (!strcmp(name, "query-status")) {
		*reply = strdup(qemu.running ? "{\"return\":{\"running\":true,\"status\":\"running\"}}" :
					       "{\"return\":{\"running\":false,\"status\":\"paused\"}}");
	} else if (!strcmp(name, "stop") && qemu.refuse_stop) {
		note("qemu.stop-refused");
		*reply = strdup("{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"}}");
	} else if (!strcmp(name, "stop") || !strcmp(name, "cont")) {
		note("qemu.%s", name);
		qemu.running = !strcmp(name, "cont");
		*reply = strdup("{\"return\":{}}");
	} else {
		*reply = strdup("{\"return\":{}}");
	}
	json_object_put(req);
	return *reply ? 0 : -ENOMEM;
}

/* ---- fake devices: every hook notes itself ---- */

struct fake_dev {
	const char *name;
	bool sync_pending;      /* sync returns CKPT_SYNC_PENDING */
	int fail_postsuspend;   /* postsuspend returns this (-EIO) */
	int frames_per_send;    /* DEVSTATE frames it queues per send */
};

static struct fake_dev dev_a = { .name = "a", .frames_per_send = 2 };
static struct fake_dev dev_b = { .name = "b", .frames_per_send = 1 };

static int fake_sync(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct fake_dev *d = state;

	note("%s.sync", d->name);
	return d->sync_pending ? CKPT_SYNC_PENDING : 0;
}

static void fake_presuspend(void *state, struct ckpt_ctx *cx)
{
	note("%s.presuspend", ((struct fake_dev *)state)->name);
}

static void fake_barrier_skipped(void *state, struct ckpt_ctx *cx)
{
	note("%s.skipped", ((struct fake_dev *)state)->name);
}

static int fake_postsuspend(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct fake_dev *d = state;

	note("%s.postsuspend", d->name);
	return d->fail_postsuspend;
}

/* the context the last send was given */
static const struct ckpt_ctx *send_ctx;

static int fake_send(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct fake_dev *d = state;

	send_ctx = cx;
	note("%s.send%s(%llu)", d->name, t->resend ? "-again" : "", (unsigned long long)t->id);
	for (int i = 0; i < d->frames_per_send; i++) {
		char *body = strdup(d->name);
		struct iovec iov = { .iov_base = body, .iov_len = strlen(body) };
		int rc = epoch_push_frame(cx, t, FRAME_DEVSTATE, &iov, 1, body);

		if (rc)
			return rc;
		t->devstate_bytes += iov.iov_len;
	}
	return 0;
}

static void fake_commit(void *state, struct ckpt_ctx *cx, uint64_t epoch)
{
	note("%s.commit(%llu)", ((struct fake_dev *)state)->name, (unsigned long long)epoch);
}

static void fake_protect(void *state, struct ckpt_ctx *cx, bool on, uint64_t next)
{
	note("%s.protect(%s)", ((struct fake_dev *)state)->name, on ? "on" : "off");
}

static const struct ckpt_device_ops fake_ops = {
	.name = "fake",
	.sync = fake_sync,
	.presuspend = fake_presuspend,
	.barrier_skipped = fake_barrier_skipped,
	.postsuspend = fake_postsuspend,
	.send = fake_send,
	.commit = fake_commit,
	.protect = fake_protect,
};

/* ---- the fake backup: a peer link that notes each frame ---- */

static struct backup_side {
	struct peer_link link;
	unsigned frames, epoch_ends, goodbyes;
	unsigned of_type[32];
	uint64_t last_end_epoch;
	struct epoch_end last_end;
} backup;

static bool backup_frame(struct peer_link *l, const struct frame_hdr *h, const uint8_t *payload)
{
	backup.frames++;
	if (h->type < 32)
		backup.of_type[h->type]++;
	if (h->type == FRAME_EPOCH_END) {
		backup.epoch_ends++;
		backup.last_end_epoch = h->epoch;
		ck_assert_int_eq(proto_parse_epoch_end(payload, h->len, &backup.last_end), 0);
	} else if (h->type == FRAME_GOODBYE) {
		backup.goodbyes++;
	}
	return true;
}

static void backup_error(struct peer_link *l, int err, const char *why)
{
	peer_link_close(l);
}

static const struct peer_link_ops backup_ops = { .on_frame = backup_frame,
						 .on_error = backup_error };

/* The agent closes its end once the primary has said GOODBYE and ended
 * its own; the replicator waits for that (peer_link_finish) while our loop
 * stands still, so a thread answers for the fake backup: when the
 * primary's end is shut, it shuts the backup's (the frames stay there for
 * the backup's link to read). */
static pthread_t closer;
static atomic_bool closer_stop;
static bool closer_joined;
static int closer_fd;

static void *close_when_primary_ends(void *arg)
{
	struct pollfd pfd = { .fd = closer_fd, .events = POLLRDHUP };

	(void)arg;
	while (!atomic_load(&closer_stop))
		if (poll(&pfd, 1, 20) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP))) {
			shutdown(pfd.fd, SHUT_WR);
			break;
		}
	return NULL;
}

static void primary_error(struct peer_link *l, int err, const char *why)
{
	peer_link_close(l);
}

static const struct peer_link_ops primary_ops = { .on_error = primary_error };

/* ---- the replicator under test ---- */

static struct replicator r;
static struct ckpt_device devices[2];
static struct link_security cleartext;

static void noop_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
}

static void noop_fine_timer(struct fine_timer *t)
{
}

static void stop_loop(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

/* Let the loop move bytes until the backup has n EPOCH_ENDs (or 2 s). */
static void pump_until_epoch_ends(unsigned n)
{
	ev_timer limit;

	ev_timer_init(&limit, stop_loop, 0.01, 0.01);
	ev_timer_start(r.loop, &limit);
	for (int i = 0; i < 200 && backup.epoch_ends < n; i++)
		ev_run(r.loop, EVRUN_ONCE);
	ev_timer_stop(r.loop, &limit);
}

static void setup(void)
{
	struct qmp_passthrough pt = { .command = qemu_command, .what = "fake QEMU", .pid = 1 };
	struct epoch_policy_cfg policy = { .kind = POLICY_FIXED, .fixed_ms = 60000,
					   .min_ms = 10, .max_ms = 60000, .max_overhead = 0.25 };
	int sv[2];

	memset(&r, 0, sizeof(r));
	memset(&backup, 0, sizeof(backup));
	qemu = (struct fake_qemu){ .running = true };
	dev_a.fail_postsuspend = dev_b.fail_postsuspend = 0;
	dev_a.sync_pending = dev_b.sync_pending = false;
	trail_reset();
	send_ctx = NULL;
	r.loop = ev_loop_new(EVFLAG_AUTO);
	r.cfg.test_corrupt_epoch = -1;
	r.cfg.timeout_ms = 2000;
	r.backup_silence_ms = 2000;
	r.handover_fd = -1;
	r.agent_operator = true; /* the backup knows PAUSE and HANDOVER */
	snprintf(r.cfg.backup.text, sizeof(r.cfg.backup.text), "fake-backup");
	r.vm.name = "vm-test";
	prot_init(&r.state, NULL, NULL);
	r.state.vm = r.vm.name;
	epoch_policy_init(&r.policy, &policy);
	ck_assert_int_eq(compress_init(&r.compress, COMPRESS_OFF, 0), 0);
	hook_runner_init(&r.hooks, r.loop, NULL, 1000);
	verify_init(&r);
	ck_assert_int_eq(fine_timer_init(&r.epoch_timer, noop_fine_timer, NULL), 0);
	ev_timer_init(&r.reconnect_timer, noop_timer, 1.0, 1.0);
	ck_assert_int_eq(qmp_open_passthrough(&pt, &r.qmp), 0);
	epoch_ctx_init(&r);
	devices[0] = (struct ckpt_device){ .ops = &fake_ops, .state = &dev_a };
	devices[1] = (struct ckpt_device){ .ops = &fake_ops, .state = &dev_b };
	r.devices = devices;
	r.ndevices = 2;

	/* a cleartext link over a socketpair, established at both ends */
	link_security_cleartext(&cleartext);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	peer_link_init(&r.link, r.loop, &cleartext, &primary_ops, &r);
	peer_link_init(&backup.link, r.loop, &cleartext, &backup_ops, &backup);
	ck_assert_int_eq(peer_link_accept(&r.link, sv[0], "backup", 1000), 0);
	ck_assert_int_eq(peer_link_accept(&backup.link, sv[1], "primary", 1000), 0);
	peer_link_established(&r.link);
	peer_link_established(&backup.link);
	ck_assert(peer_link_up(&r.link));
	atomic_store(&closer_stop, false);
	closer_fd = backup.link.fd;
	closer_joined = false;
	ck_assert_int_eq(pthread_create(&closer, NULL, close_when_primary_ends, NULL), 0);
}

static void teardown(void)
{
	atomic_store(&closer_stop, true);
	if (!closer_joined)
		ck_assert_int_eq(pthread_join(closer, NULL), 0);
	verify_free(&r);
	peer_link_close(&r.link);
	peer_link_close(&backup.link);
	hook_runner_free(&r.hooks);
	compress_free(&r.compress);
	qmp_close(r.qmp);
	fine_timer_close(r.loop, &r.epoch_timer);
	ev_timer_stop(r.loop, &r.reconnect_timer);
	ev_timer_stop(r.loop, &r.release_timer);
	ev_timer_stop(r.loop, &r.handover_timer);
	ev_loop_destroy(r.loop);
	link_security_free(&cleartext);
}

/* The session's epoch 0 is acked: protection starts at epoch 1 (what
 * link.c and epoch_start_sync would have done). */
static void synced(void)
{
	ck_assert_int_eq(prot_set(&r.state, PROT_PART_LINK, PROT_SYNCING, "test sync"), 0);
	r.session_synced = true;
	r.epoch = 0;
}

/* ... and epoch 1 taken and committed: protected. */
static void protected_at_epoch_1(void)
{
	synced();
	epoch_checkpoint(&r);
	epoch_on_ack(&r, 1);
	ck_assert_str_eq(prot_name(&r.state), "protected");
}

/* ---- the tests ---- */

START_TEST(test_one_barrier_orders_the_hooks_around_stop_and_cont)
{
	synced();
	epoch_checkpoint(&r);
	/* the VM runs again before anything is queued: its pause is the
	 * capture alone, not the send */
	ck_assert_str_eq(trail, "a.presuspend b.presuspend qemu.stop a.postsuspend "
				"b.postsuspend qemu.cont a.send(1) b.send(1)");
	ck_assert(r.inflight);
	ck_assert_int_eq(r.epoch, 1);
	pump_until_epoch_ends(1);
	/* three device frames, then EPOCH_END counting them */
	ck_assert_int_eq(backup.frames, 4);
	ck_assert_int_eq(backup.last_end_epoch, 1);
	ck_assert_int_eq(backup.last_end.frames, 3);
	ck_assert_int_eq(backup.last_end.devstate_bytes, 3);
}
END_TEST

START_TEST(test_an_ack_commits_every_device_and_protects)
{
	synced();
	epoch_checkpoint(&r);
	trail_reset();
	epoch_on_ack(&r, 2); /* not the epoch in flight */
	ck_assert_str_eq(trail, "");
	ck_assert(r.inflight);
	ck_assert_str_eq(prot_name(&r.state), "syncing");
	epoch_on_ack(&r, 1);
	ck_assert_str_eq(trail, "a.commit(1) b.commit(1)");
	ck_assert(!r.inflight);
	ck_assert_str_eq(prot_name(&r.state), "protected");
	ck_assert_int_eq(r.stats.last_acked_epoch, 1);
	/* a second ack of the same epoch commits nothing twice */
	trail_reset();
	epoch_on_ack(&r, 1);
	ck_assert_str_eq(trail, "");
}
END_TEST

START_TEST(test_an_early_epoch_waits_for_the_ack_in_flight)
{
	synced();
	epoch_checkpoint(&r);
	trail_reset();
	/* one epoch in flight at a time: the timer's end of the epoch, and a
	 * device's request, are remembered */
	epoch_checkpoint(&r);
	ck_assert_str_eq(trail, "");
	ck_assert(r.checkpoint_due);
	epoch_request_early(&r.ckpt, "test: a device is full");
	ck_assert_str_eq(trail, "");
	ck_assert(r.checkpoint_due);
	epoch_on_ack(&r, 1);
	/* the ack commits epoch 1, then takes epoch 2 at once */
	ck_assert_str_eq(trail, "a.commit(1) b.commit(1) a.presuspend b.presuspend qemu.stop "
				"a.postsuspend b.postsuspend qemu.cont a.send(2) b.send(2)");
	ck_assert_int_eq(r.epoch, 2);
	ck_assert_int_eq(r.stats.early_epochs, 1);
	/* without a request, an ack takes nothing */
	trail_reset();
	epoch_on_ack(&r, 2);
	ck_assert_str_eq(trail, "a.commit(2) b.commit(2)");
}
END_TEST

START_TEST(test_a_nack_sends_the_same_epoch_again_without_a_barrier)
{
	synced();
	epoch_checkpoint(&r);
	pump_until_epoch_ends(1);
	trail_reset();
	epoch_on_nack(&r, 7, "test: not in flight");
	ck_assert_str_eq(trail, "");
	epoch_on_nack(&r, 1, "test: checksum");
	ck_assert_str_eq(trail, "a.send-again(1) b.send-again(1)");
	ck_assert(r.inflight);
	pump_until_epoch_ends(2);
	ck_assert_int_eq(backup.epoch_ends, 2);
	ck_assert_int_eq(backup.last_end_epoch, 1);
	ck_assert_int_eq(r.stats.epochs_nacked, 1);
	trail_reset();
	epoch_on_ack(&r, 1);
	ck_assert_str_eq(trail, "a.commit(1) b.commit(1)");
}
END_TEST

START_TEST(test_an_epoch_refused_again_and_again_starts_over)
{
	int nacks = 0;

	synced();
	epoch_checkpoint(&r);
	/* MAX_RESENDS (5) resends, then the session is dropped for a resync */
	while (peer_link_up(&r.link) && nacks < 20) {
		epoch_on_nack(&r, 1, "test: the backup cannot take it");
		nacks++;
	}
	ck_assert_int_eq(nacks, 6);
	ck_assert(!peer_link_up(&r.link));
	ck_assert_str_eq(prot_name(&r.state), "unprotected");
	ck_assert(strstr(trail, "a.protect(off) b.protect(off)"));
	ck_assert(ev_is_active(&r.reconnect_timer));
}
END_TEST

START_TEST(test_backup_lost_mid_epoch_releases_and_forgets_the_epoch)
{
	protected_at_epoch_1();
	epoch_checkpoint(&r);
	ck_assert(r.inflight);
	trail_reset();
	epoch_on_backup_lost(&r, "test: link reset");
	/* the backup cannot take over (backup_may_take_over unset): held
	 * output goes out at once */
	ck_assert_str_eq(trail, "a.protect(off) b.protect(off)");
	ck_assert(!r.inflight);
	ck_assert_str_eq(prot_name(&r.state), "unprotected");
	ck_assert(!peer_link_up(&r.link));
	/* a late ack of the lost epoch commits nothing, and no barrier runs
	 * without a backup */
	trail_reset();
	epoch_on_ack(&r, 2);
	epoch_checkpoint(&r);
	ck_assert_str_eq(trail, "");
}
END_TEST

START_TEST(test_output_held_while_the_backup_may_take_over)
{
	protected_at_epoch_1();
	trail_reset();
	/* the link broke without our GOODBYE: the backup may restore the
	 * last commit, so released output could be rolled back */
	r.backup_may_take_over = true;
	r.link.last_rx_ms = boot_ms();
	epoch_on_backup_lost(&r, "test: silence");
	ck_assert_str_eq(trail, "");
	ck_assert(ev_is_active(&r.release_timer));
}
END_TEST

/* A GOODBYE whose arrival the backup does not confirm by closing in
 * turn (here it never answers) may be lost: the backup may take over, so
 * output waits as on a broken link. */
START_TEST(test_an_unconfirmed_goodbye_holds_output)
{
	int nacks = 0;

	atomic_store(&closer_stop, true);
	ck_assert_int_eq(pthread_join(closer, NULL), 0);
	closer_joined = true;
	synced();
	epoch_checkpoint(&r);
	while (peer_link_up(&r.link) && nacks < 20) {
		epoch_on_nack(&r, 1, "test: the backup cannot take it");
		nacks++;
	}
	ck_assert(!peer_link_up(&r.link));
	ck_assert_ptr_null(strstr(trail, "protect(off)"));
	ck_assert(ev_is_active(&r.release_timer));
}
END_TEST

START_TEST(test_a_vm_not_running_skips_the_barrier)
{
	synced();
	qemu.running = false; /* paused by someone else */
	epoch_checkpoint(&r);
	/* our `cont` must not wake it, and nothing is captured or sent */
	ck_assert_str_eq(trail, "a.presuspend b.presuspend a.skipped b.skipped");
	ck_assert(!r.inflight);
	ck_assert_int_eq(r.epoch, 0);
}
END_TEST

START_TEST(test_a_failed_capture_resumes_the_vm_and_resyncs)
{
	synced();
	dev_b.fail_postsuspend = -EIO;
	epoch_checkpoint(&r);
	ck_assert_str_eq(trail, "a.presuspend b.presuspend qemu.stop a.postsuspend "
				"b.postsuspend qemu.cont a.protect(off) b.protect(off)");
	ck_assert(qemu.running);
	ck_assert(!peer_link_up(&r.link));
	ck_assert_str_eq(prot_name(&r.state), "unprotected");
}
END_TEST

/* An epoch sent whole that the backup, alive, never acknowledges holds
 * the VM's output: after a minute from the first look that found it
 * written, the session starts over, saying GOODBYE (no failover). Not
 * the session's first commit, which may sync whole disks. */
START_TEST(test_an_epoch_never_acked_starts_over)
{
	ev_timer limit;

	synced();
	epoch_checkpoint(&r); /* epoch 1: the first commit, not protected yet */
	pump_until_epoch_ends(1);
	epoch_watchdog(&r);
	r.drained_at_ms -= 600000;
	epoch_watchdog(&r);
	ck_assert(peer_link_up(&r.link));
	epoch_on_ack(&r, 1);
	ck_assert_str_eq(prot_name(&r.state), "protected");
	epoch_checkpoint(&r);
	pump_until_epoch_ends(2);
	ck_assert_uint_eq(backup.epoch_ends, 2);
	ck_assert_uint_eq(r.link.out.bytes_queued, 0);
	epoch_watchdog(&r); /* written whole: from now */
	r.drained_at_ms -= 59000;
	epoch_watchdog(&r);
	ck_assert(peer_link_up(&r.link));
	ck_assert_uint_eq(r.stats.stalls, 0);
	r.drained_at_ms -= 2000;
	epoch_watchdog(&r);
	ck_assert_uint_eq(r.stats.stalls, 1);
	ck_assert(!peer_link_up(&r.link));
	ck_assert_str_eq(prot_name(&r.state), "unprotected");
	ev_timer_init(&limit, stop_loop, 0.01, 0.01);
	ev_timer_start(r.loop, &limit);
	for (int i = 0; i < 200 && !backup.goodbyes; i++)
		ev_run(r.loop, EVRUN_ONCE);
	ev_timer_stop(r.loop, &limit);
	ck_assert_uint_eq(backup.goodbyes, 1);
}
END_TEST

/* Protected, nothing in flight, and no barrier scheduled for a second: a
 * barrier is scheduled. A barrier owed with no ack in flight to take it
 * is no schedule; a timer that expired, its callback not run yet, is. */
START_TEST(test_a_lost_epoch_timer_is_armed_again)
{
	protected_at_epoch_1();
	ck_assert(fine_timer_armed(&r.epoch_timer));
	epoch_watchdog(&r);
	ck_assert_uint_eq(r.stats.stalls, 0);
	fine_timer_stop(r.loop, &r.epoch_timer);
	epoch_watchdog(&r);
	epoch_watchdog(&r); /* at once again: not a second yet */
	ck_assert_uint_eq(r.stats.stalls, 0);
	ck_assert(!fine_timer_armed(&r.epoch_timer));
	r.unscheduled_since_ms -= 1000;
	epoch_watchdog(&r);
	ck_assert_uint_eq(r.stats.stalls, 1);
	ck_assert(fine_timer_armed(&r.epoch_timer));
	ck_assert(peer_link_up(&r.link));

	fine_timer_stop(r.loop, &r.epoch_timer);
	r.checkpoint_due = true;
	epoch_watchdog(&r);
	r.unscheduled_since_ms -= 1000;
	epoch_watchdog(&r);
	ck_assert_uint_eq(r.stats.stalls, 2);

	/* expired, its callback queued in this turn: the kernel's expiry
	 * read as libev hands it out */
	fine_timer_start(r.loop, &r.epoch_timer, 0);
	ev_feed_event(r.loop, &r.epoch_timer.io, EV_READ);
	ck_assert(!fine_timer_armed(&r.epoch_timer) && fine_timer_scheduled(&r.epoch_timer));
	epoch_watchdog(&r);
	r.unscheduled_since_ms -= 1000;
	epoch_watchdog(&r);
	ck_assert_uint_eq(r.stats.stalls, 2);
	/* a reply arriving in the same turn leaves that expiry alone: the
	 * barrier is already due */
	epoch_output_waiting(&r.ckpt, true);
	ck_assert(fine_timer_scheduled(&r.epoch_timer));
	ck_assert(!fine_timer_armed(&r.epoch_timer));
	ev_clear_pending(r.loop, &r.epoch_timer.io);
}
END_TEST

/* A device learns what it may of the replicator from its context: the
 * same answers the pipeline acts on, at each step of a session. */
START_TEST(test_a_device_asks_its_context_what_the_pipeline_acts_on)
{
	const struct ckpt_ctx *cx = &r.ckpt;
	uint64_t sent;

	ck_assert(ckpt_link_up(cx));
	ck_assert(!ckpt_initial_sync_running(cx)); /* no session yet */
	ck_assert(!ckpt_barriers_coming(cx));
	synced();
	ck_assert(ckpt_initial_sync_running(cx));
	ck_assert(ckpt_barriers_coming(cx));
	sent = ckpt_link_sent(cx) + ckpt_link_queued(cx);
	epoch_checkpoint(&r);
	ck_assert_ptr_eq(send_ctx, cx); /* the hooks get this context */
	ck_assert_ptr_eq(send_ctx->cfg, &r.cfg);
	ck_assert_uint_gt(ckpt_link_sent(cx) + ckpt_link_queued(cx), sent);
	epoch_on_ack(&r, 1);
	ck_assert(!ckpt_initial_sync_running(cx));
	ck_assert(ckpt_barriers_coming(cx));
	/* a pause stops barriers; so does the way out; so does the link */
	ck_assert_int_eq(prot_set(&r.state, PROT_PART_PAUSE, PAUSE_DRAIN, "test pause"), 0);
	ck_assert(!ckpt_barriers_coming(cx));
	ck_assert_int_eq(prot_set(&r.state, PROT_PART_PAUSE, PAUSE_OFF, "test resume"), 0);
	ck_assert(ckpt_barriers_coming(cx));
	r.stopping = true;
	ck_assert(ckpt_stopping(cx));
	ck_assert(!ckpt_barriers_coming(cx));
	r.stopping = false;
	peer_link_close(&r.link);
	ck_assert(!ckpt_link_up(cx));
	ck_assert(!ckpt_barriers_coming(cx));
	ck_assert(!ckpt_vm_gone(cx));
}
END_TEST

START_TEST(test_no_barrier_while_paused_or_handing_over)
{
	protected_at_epoch_1();
	ck_assert_int_eq(prot_set(&r.state, PROT_PART_PAUSE, PAUSE_DRAIN, "test pause"), 0);
	trail_reset();
	epoch_checkpoint(&r);
	epoch_request_early(&r.ckpt, "test");
	ck_assert_str_eq(trail, "");
	ck_assert_int_eq(prot_set(&r.state, PROT_PART_PAUSE, PAUSE_OFF, "test resume"), 0);
	/* a handover's final checkpoint leaves the VM stopped */
	ck_assert_int_eq(prot_set(&r.state, PROT_PART_HANDOVER, HO_DRAIN, "test"), 0);
	epoch_checkpoint(&r);
	ck_assert_str_eq(trail, "");
	ck_assert_int_eq(prot_set(&r.state, PROT_PART_HANDOVER, HO_FINAL, "test"), 0);
	ck_assert_int_eq(epoch_final_checkpoint(&r), 0);
	ck_assert_str_eq(trail, "a.presuspend b.presuspend qemu.stop a.postsuspend "
				"b.postsuspend a.send(2) b.send(2)");
	ck_assert(!qemu.running);
	/* one epoch in flight: no second final checkpoint */
	ck_assert_int_eq(epoch_final_checkpoint(&r), -EAGAIN);
}
END_TEST

START_TEST(test_a_refused_stop_is_no_barrier)
{
	synced();
	qemu.refuse_stop = true;
	epoch_checkpoint(&r);
	ck_assert_str_eq(trail, "a.presuspend b.presuspend qemu.stop-refused a.skipped b.skipped");
	ck_assert(!r.inflight);
	ck_assert(qemu.running);
}
END_TEST

/* Let the loop move bytes until the backup has n frames of type (or 2 s). */
static void pump_until_frames(unsigned type, unsigned n)
{
	ev_timer limit;

	ev_timer_init(&limit, stop_loop, 0.01, 0.01);
	ev_timer_start(r.loop, &limit);
	for (int i = 0; i < 200 && backup.of_type[type] < n; i++)
		ev_run(r.loop, EVRUN_ONCE);
	ev_timer_stop(r.loop, &limit);
}

static void operator_says(char *reply, const char *expect)
{
	ck_assert_ptr_nonnull(reply);
	ck_assert_msg(strstr(reply, expect), "%s: not in %s", expect, reply);
	free(reply);
}

static void backup_sends(unsigned type, uint64_t epoch, const char *text)
{
	struct frame_hdr h = { .type = type, .epoch = epoch,
			       .len = text ? (uint32_t)strlen(text) : 0 };

	operator_on_frame(&r, &h, (const uint8_t *)(text ? text : ""));
}

/* A pause, then resume, while the session's initial copy is still going:
 * the copy goes on and its ack takes the first checkpoint. Starting the
 * copy again would meet a backup that holds part of it (a delta resync's
 * hashes then skip pages the backup no longer holds as hashed). */
START_TEST(test_resume_during_the_initial_sync_lets_it_go_on)
{
	dev_a.sync_pending = true; /* its copy goes on while the VM runs */
	epoch_start_sync(&r);
	ck_assert_str_eq(trail, "a.sync b.sync");
	ck_assert_str_eq(prot_name(&r.state), "syncing");
	operator_says(operator_pause(&r), "pausing");
	pump_until_frames(FRAME_PAUSE, 1);
	backup_sends(FRAME_PAUSE_ACK, 0, NULL);
	ck_assert_str_eq(prot_name(&r.state), "paused");
	trail_reset();
	operator_says(operator_resume(&r), "the initial sync to the backup goes on");
	ck_assert_str_eq(trail, "");
	ck_assert_str_eq(prot_name(&r.state), "syncing");
	/* the copy ends; its ack protects from epoch 1 and takes it at once */
	epoch_sync_device_ready(&r.ckpt);
	pump_until_epoch_ends(1);
	ck_assert_int_eq(backup.epoch_ends, 1);
	ck_assert_int_eq(backup.last_end_epoch, 0);
	epoch_on_ack(&r, 0);
	ck_assert_str_eq(trail, "a.protect(on) b.protect(on) a.presuspend b.presuspend qemu.stop "
				"a.postsuspend b.postsuspend qemu.cont a.send(1) b.send(1)");
}
END_TEST

/* remusctl pause while an epoch is in flight: its ack comes first, then
 * PAUSE, and output is released only once the backup has answered. */
START_TEST(test_pause_waits_for_the_ack_then_for_the_backup)
{
	synced();
	epoch_checkpoint(&r);
	trail_reset();
	operator_says(operator_pause(&r), "the backup is told once epoch 1 is acknowledged");
	ck_assert_str_eq(prot_name(&r.state), "pausing");
	epoch_on_ack(&r, 1);
	/* committed, but no barrier follows and nothing is released yet */
	ck_assert_str_eq(trail, "a.commit(1) b.commit(1)");
	pump_until_frames(FRAME_PAUSE, 1);
	ck_assert_int_eq(backup.of_type[FRAME_PAUSE], 1);
	backup_sends(FRAME_PAUSE_ACK, 1, NULL);
	ck_assert_str_eq(trail, "a.commit(1) b.commit(1) a.protect(off) b.protect(off)");
	ck_assert_str_eq(prot_name(&r.state), "paused");
	/* resume: output waits again from the next epoch, which is taken now */
	trail_reset();
	operator_says(operator_resume(&r), "resumed: checkpoints from epoch 2");
	ck_assert_str_eq(trail, "a.protect(on) b.protect(on) a.presuspend b.presuspend qemu.stop "
				"a.postsuspend b.postsuspend qemu.cont a.send(2) b.send(2)");
	ck_assert_str_eq(prot_name(&r.state), "syncing");
	epoch_on_ack(&r, 2);
	ck_assert_str_eq(prot_name(&r.state), "protected");
}
END_TEST

/* remusctl failover: the final checkpoint leaves the VM stopped; the
 * backup fails to start it, and the VM resumes here, still protected. */
START_TEST(test_handover_refused_by_the_backup_resumes_here)
{
	protected_at_epoch_1();
	trail_reset();
	ck_assert_ptr_null(operator_failover(&r, -1, 60000));
	ck_assert_str_eq(trail, "a.presuspend b.presuspend qemu.stop a.postsuspend "
				"b.postsuspend a.send(2) b.send(2)");
	ck_assert(!qemu.running);
	ck_assert_str_eq(prot_name(&r.state), "handing-over");
	/* a second failover, or a pause, is refused meanwhile */
	operator_says(operator_failover(&r, -1, 60000), "already under way");
	operator_says(operator_pause(&r), "pause refused");
	epoch_on_ack(&r, 2);
	pump_until_frames(FRAME_HANDOVER, 1);
	ck_assert_int_eq(backup.of_type[FRAME_HANDOVER], 1);
	ck_assert_int_eq(prot_handover(&r.state), HO_WAIT_DONE);
	trail_reset();
	backup_sends(FRAME_HANDOVER_FAILED, 2, "test: no QEMU there");
	ck_assert_str_eq(trail, "qemu.cont");
	ck_assert(qemu.running);
	ck_assert_str_eq(prot_name(&r.state), "protected");
}
END_TEST

/* The backup is lost after HANDOVER went out: it may run the VM now, so
 * the VM stays stopped here, its output held, nothing reconnects, until
 * the operator decides. */
START_TEST(test_backup_lost_during_handover_leaves_the_vm_stopped)
{
	protected_at_epoch_1();
	ck_assert_ptr_null(operator_failover(&r, -1, 60000));
	epoch_on_ack(&r, 2);
	trail_reset();
	epoch_on_backup_lost(&r, "test: link reset");
	ck_assert_str_eq(trail, "");      /* output stays held */
	ck_assert(!qemu.running);
	ck_assert_str_eq(prot_name(&r.state), "handover-unknown");
	ck_assert(!ev_is_active(&r.reconnect_timer));
	operator_says(operator_pause(&r), "pause refused");
	/* remusctl resume: the operator found the backup not running it */
	operator_says(operator_resume(&r), "resumed on the primary");
	ck_assert_str_eq(trail, "qemu.cont a.protect(off) b.protect(off)");
	ck_assert_str_eq(prot_name(&r.state), "unprotected");
	ck_assert(ev_is_active(&r.reconnect_timer));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("epoch");
	TCase *tc = tcase_create("epoch");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_one_barrier_orders_the_hooks_around_stop_and_cont);
	tcase_add_test(tc, test_an_ack_commits_every_device_and_protects);
	tcase_add_test(tc, test_an_early_epoch_waits_for_the_ack_in_flight);
	tcase_add_test(tc, test_a_nack_sends_the_same_epoch_again_without_a_barrier);
	tcase_add_test(tc, test_an_epoch_refused_again_and_again_starts_over);
	tcase_add_test(tc, test_backup_lost_mid_epoch_releases_and_forgets_the_epoch);
	tcase_add_test(tc, test_output_held_while_the_backup_may_take_over);
	tcase_add_test(tc, test_an_unconfirmed_goodbye_holds_output);
	tcase_add_test(tc, test_a_vm_not_running_skips_the_barrier);
	tcase_add_test(tc, test_a_failed_capture_resumes_the_vm_and_resyncs);
	tcase_add_test(tc, test_a_device_asks_its_context_what_the_pipeline_acts_on);
	tcase_add_test(tc, test_no_barrier_while_paused_or_handing_over);
	tcase_add_test(tc, test_a_refused_stop_is_no_barrier);
	tcase_add_test(tc, test_resume_during_the_initial_sync_lets_it_go_on);
	tcase_add_test(tc, test_pause_waits_for_the_ack_then_for_the_backup);
	tcase_add_test(tc, test_handover_refused_by_the_backup_resumes_here);
	tcase_add_test(tc, test_backup_lost_during_handover_leaves_the_vm_stopped);
	tcase_add_test(tc, test_an_epoch_never_acked_starts_over);
	tcase_add_test(tc, test_a_lost_epoch_timer_is_armed_again);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
