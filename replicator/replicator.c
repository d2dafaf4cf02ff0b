/* The replicator's event loop: one libev loop owns QMP, the epoch timer,
 * the backup link, heartbeats and the control socket. */
#include "clock.h"
#include "log.h"
#include "netaddr.h"
#include "notify.h"
#include "procfs.h"
#include "qmp.h"
#include "replicator.h"
#include "runtime_dir.h"
#include "sighup.h"
#include "virt.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FINAL_FLUSH_MS 2000
/* A backup restoring the VM for a handover does not answer meanwhile. */
#define HANDOVER_SILENCE_MS 120000

void replicator_notify_state(struct replicator *r)
{
	const char *vm = r->vm.name ? r->vm.name : "?";
	const struct prot_state *s = &r->state;

	if (prot_pause(s) == PAUSE_ON || prot_handing_over(s) || prot_left_paused(s))
		notify_status("VM %s: %s (epoch %llu committed)", vm, prot_name(s),
			      (unsigned long long)r->stats.last_acked_epoch);
	else if (prot_is_protected(s))
		notify_status("VM %s: protected, epoch %llu committed", vm,
			      (unsigned long long)r->stats.last_acked_epoch);
	else if (prot_link(s) == PROT_UNPROTECTED || prot_link(s) == PROT_CONNECTING)
		notify_status("VM %s: %s, connecting to backup %s", vm, prot_name(s),
			      r->cfg.backup.text);
	else
		notify_status("VM %s: %s", vm, prot_name(s));
}

/* Devices that wait on barriers ask again whether one is coming. */
static void tell_devices(struct replicator *r)
{
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->state_changed)
			r->devices[i].ops->state_changed(r->devices[i].state, &r->ckpt);
}

/* Whatever derives from the protection state follows each change: the
 * service manager's STATUS=, and devices that wait on barriers. */
static void on_state_changed(void *data)
{
	struct replicator *r = data;

	replicator_notify_state(r);
	tell_devices(r);
}

void replicator_reconnect(struct replicator *r)
{
	if (!peer_link_up(&r->link) && !ev_is_active(&r->reconnect_timer))
		ev_timer_start(r->loop, &r->reconnect_timer);
}

void replicator_notify(struct replicator *r, const char *event, const char *reason)
{
	struct hook_event ev = {
		.pair = r->cfg.pair_name ? r->cfg.pair_name : r->vm.name,
		.vm = r->vm.name,
		.event = event,
		.role = "primary",
		.epoch = r->stats.last_acked_epoch,
		.peer = r->cfg.backup.text,
		.reason = reason,
	};

	hook_notify(&r->hooks, &ev);
}

/* Push out what is queued (the last epoch may still commit), bounded. */
static void final_flush(struct replicator *r)
{
	if (peer_link_up(&r->link))
		peer_link_finish(&r->link, FINAL_FLUSH_MS);
}

void replicator_leave(struct replicator *r, int exit_code)
{
	notify_stopping(exit_code == 1 ? "stopping: QEMU is gone" :
			exit_code == 3 ? "stopping: lost libvirt" : "stopping");
	r->stopping = true;
	r->exit_code = exit_code;
	tell_devices(r); /* no barrier comes now: a waiting disk writer goes on */
	ev_break(r->loop, EVBREAK_ALL);
}

/* QEMU is gone. If it announced a shutdown, the guest or the operator
 * ended it on purpose and the backup must not resurrect it; otherwise the
 * primary failed and the backup takes over from its last commit. */
static void on_qemu_gone(struct replicator *r)
{
	r->vm_gone = true;
	ev_io_stop(r->loop, &r->qmp_watch);
	ev_io_stop(r->loop, &r->qemu_exit_watch);
	ev_timer_stop(r->loop, &r->qemu_exit_grace);
	if (r->vm_shutdown) {
		log_info("VM %s shut down: telling the backup not to take over", r->vm.name);
		replicator_notify(r, "detached", "VM shut down");
		/* no failover: its last words may go out; not after a handover of
		 * unknown outcome, though: the backup may run it from before them */
		if (!prot_vm_held_stopped(&r->state))
			protect_devices(r, false, 0);
		link_goodbye(r, "VM shut down");
		final_flush(r);
		replicator_leave(r, 0);
		return;
	}
	log_err("QEMU (pid %d) of VM %s died: primary lost; the backup takes over "
		"from epoch %llu", (int)r->vm.pid, r->vm.name,
		(unsigned long long)r->stats.last_acked_epoch);
	replicator_notify(r, "vm-lost", "QEMU died");
	final_flush(r);
	/* the backup takes over, and this host becomes its backup */
	r->become_backup = r->cfg.host != NULL;
	replicator_leave(r, 1);
}

void replicator_primary_trouble(struct replicator *r, int rc)
{
	if (rc == -EPIPE && r->virt) {
		/* Through libvirt, its last events may still be on the way. */
		fine_timer_stop(r->loop, &r->epoch_timer);
		if (!ev_is_active(&r->qemu_exit_grace))
			ev_timer_start(r->loop, &r->qemu_exit_grace);
		return;
	}
	if (rc == -EPIPE) {
		on_qemu_gone(r);
		return;
	}
	/* QEMU is alive but did not do what we asked: try again at the next
	 * barrier rather than give up protection. */
	epoch_arm_timer(r);
}

static void on_qmp_event(const char *event, struct json_object *data, void *opaque)
{
	struct replicator *r = opaque;

	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->event)
			r->devices[i].ops->event(r->devices[i].state, &r->ckpt, event, data);
	if (!strcmp(event, "SHUTDOWN")) {
		r->vm_shutdown = true;
		log_info("QEMU reports SHUTDOWN: %s", data ? json_object_to_json_string(data) : "");
	} else if (!strcmp(event, "RESET") && r->vm_shutdown) {
		/* -no-shutdown: the VM stayed and was reset, it is back. */
		r->vm_shutdown = false;
		log_info("QEMU reports RESET after a shutdown: protecting the VM again");
	}
}

static void on_qmp_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct replicator *r = w->data;

	if (qmp_read_events(r->qmp, on_qmp_event, r) == -EPIPE)
		on_qemu_gone(r);
}

void replicator_qemu_events(void *replicator)
{
	struct replicator *r = replicator;

	if (!r->stopping)
		qmp_read_events(r->qmp, on_qmp_event, r);
}

/* Through libvirt, QEMU's last events (a SHUTDOWN) travel through
 * libvirtd and may arrive just after QEMU's exit: give them a moment
 * before deciding whether the backup must take over. */
static bool qemu_exited(const struct replicator *r)
{
	struct pollfd p = { .fd = r->qemu_pidfd, .events = POLLIN };

	return r->qemu_pidfd >= 0 && poll(&p, 1, 0) == 1;
}

static void on_qemu_exit_grace(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct replicator *r = w->data;

	replicator_qemu_events(r);
	if (r->stopping)
		return;
	/* libvirt said the domain is gone, but the process runs: not a death
	 * to fail over for (the backup would start a second copy). */
	if (!qemu_exited(r)) {
		log_warn("libvirt reports domain %s gone but QEMU (pid %d) runs: trying again "
			 "at the next barrier", r->vm.name, (int)r->vm.pid);
		epoch_arm_timer(r);
		return;
	}
	on_qemu_gone(r);
}

static void on_qemu_exit(struct ev_loop *loop, ev_io *w, int revents)
{
	struct replicator *r = w->data;

	ev_io_stop(loop, w);
	log_debug("QEMU (pid %d) exited", (int)r->vm.pid);
	fine_timer_stop(loop, &r->epoch_timer); /* no more barriers on a dead VM */
	if (!ev_is_active(&r->qemu_exit_grace))
		ev_timer_start(loop, &r->qemu_exit_grace);
}

static int watch_qemu_exit(struct replicator *r)
{
	r->qemu_pidfd = (int)syscall(SYS_pidfd_open, r->vm.pid, 0);
	if (r->qemu_pidfd < 0) {
		log_err("cannot watch QEMU (pid %d) for its exit: %s", (int)r->vm.pid,
			strerror(errno));
		return -errno;
	}
	ev_io_init(&r->qemu_exit_watch, on_qemu_exit, r->qemu_pidfd, EV_READ);
	ev_timer_init(&r->qemu_exit_grace, on_qemu_exit_grace, 0.2, 0);
	r->qemu_exit_watch.data = r->qemu_exit_grace.data = r;
	ev_io_start(r->loop, &r->qemu_exit_watch);
	return 0;
}

static void on_epoch_timer(struct fine_timer *t)
{
	epoch_timer_expired(t->data);
}

static void on_heartbeat_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct replicator *r = w->data;
	struct peer_link *l = &r->link;
	double now = boot_ms();

	if (!peer_link_up(l))
		return;
	if (now - l->last_rx_ms >
	    (prot_handover(&r->state) == HO_WAIT_DONE ? HANDOVER_SILENCE_MS : r->backup_silence_ms)) {
		/* Our own loop may have stood still (a long pause): bytes
		 * waiting from the backup mean it was not silent. */
		if (peer_link_unread(l)) {
			l->last_rx_ms = now;
		} else {
			link_drop_alive(r, "no heartbeat from the backup");
			return;
		}
	}
	if (now - l->last_tx_ms >= r->cfg.heartbeat_ms && !l->out.frames)
		link_push(r, FRAME_HEARTBEAT, r->epoch, NULL, 0, NULL, NULL);
}

static void on_stats_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct replicator *r = w->data;
	uint64_t sent = r->link.out.bytes_sent;

	/* bytes_sent restarts with each connection */
	if (sent >= r->stats.bytes_sent_prev)
		r->stats.link_bytes_per_s = (double)(sent - r->stats.bytes_sent_prev) / w->repeat;
	r->stats.bytes_sent_prev = sent;
	epoch_watchdog(r);
	replicator_notify_state(r);
}

static void try_connect(struct replicator *r)
{
	char err[256];

	if (prot_left_paused(&r->state))
		return; /* the operator decides first (remusctl resume) */
	ev_timer_stop(r->loop, &r->reconnect_timer);
	if (r->link.state != PEER_LINK_IDLE)
		return; /* an attempt is under way: it ends in link_up or link_failed */
	backup_choice_pick(&r->backups, mono_ms() / 1e3, &r->cfg.backup);
	if (link_open(r, err, sizeof(err)))
		replicator_link_failed(r, err);
}

/* Connect, TLS or HELLO failed: try again in a second. The VM runs on,
 * and its network with it: nothing here waited. */
void replicator_link_failed(struct replicator *r, const char *why)
{
	peer_link_close(&r->link);
	backup_choice_failed(&r->backups);
	/* Say it once, not every second. */
	if (!r->connect_failures++)
		log_warn("%s; retrying every second (VM %s is not protected)", why, r->vm.name);
	else
		log_debug("%s", why);
	if (!r->stopping && !ev_is_active(&r->reconnect_timer))
		ev_timer_start(r->loop, &r->reconnect_timer);
}

void replicator_link_up(struct replicator *r)
{
	r->connect_failures = 0;
	r->stats.bytes_sent_prev = 0;
	log_info("connected to backup %s (%s, %s)", r->cfg.backup.text, r->link.identity,
		 r->link.session);
	if (operator_on_connected(r))
		return;
	if (link_sync_waits(r)) {
		/* delta resync: the sync starts once they are all here (link.c) */
		log_info("delta resync: waiting for the hashes of the backup's replica (%llu "
			 "pages%s)", (unsigned long long)r->delta.expect,
			 r->ckpt.protected_disks ? ", and its disks' chunks" : "");
		return;
	}
	epoch_start_sync(r);
}

static void on_reconnect_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_timer_stop(loop, w);
	try_connect(w->data);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct replicator *r = w->data;

	log_info("signal %d: detaching from VM %s; it keeps running unprotected",
		 w->signum, r->vm.name);
	/* The final checkpoint is taken but the backup was not asked to take
	 * over: our GOODBYE tells it not to, so the VM runs on here. */
	if (prot_handover(&r->state) == HO_FINAL && epoch_resume_vm(r) == 0)
		prot_set(&r->state, PROT_PART_HANDOVER, HO_NONE,
			 "stopped by a signal before HANDOVER was sent: VM resumed here");
	replicator_notify(r, "detached", w->signum == SIGTERM ? "replicator stopped by SIGTERM" :
			  "replicator stopped by SIGINT");
	if (prot_vm_held_stopped(&r->state))
		/* The backup may run the VM from a checkpoint before the output
		 * we hold: that output must never go out. It dies with us. */
		log_err("VM %s is left PAUSED: a handover to the backup was under way; if the "
			"backup does not run it, resume it with QMP cont (its held output "
			"is dropped)", r->vm.name);
	else
		protect_devices(r, false, 0); /* held output goes out now */
	link_goodbye(r, "replicator detached");
	final_flush(r);
	replicator_leave(r, 0);
}

/* Without libvirt no command reaches QEMU: no checkpoint can be taken, and
 * output held for one would be held for ever. Detach as on SIGTERM (output
 * released, the backup told not to take over: the VM still runs here) and
 * exit 3, for a service manager to restart us, which then resyncs. */
void replicator_lost_libvirt(void *replicator, const char *why)
{
	struct replicator *r = replicator;

	if (r->stopping)
		return;
	log_err("connection to libvirt lost (%s): VM %s cannot be checkpointed; detaching, "
		"it runs on UNPROTECTED", why, r->vm.name);
	protect_devices(r, false, 0);
	replicator_notify(r, "detached", "connection to libvirt lost");
	link_goodbye(r, "lost the connection to libvirt");
	final_flush(r);
	r->vm_gone = true; /* no QMP either: teardown must not ask */
	replicator_leave(r, 3);
}

/* QEMU opens the device state file and the NBD sockets by their paths: a
 * QEMU in a mount namespace whose /run is not ours (a container, a
 * libvirtd started elsewhere) would fail every checkpoint, again and
 * again. Refused at once instead; a QEMU whose root we may not enter is
 * let through (the first checkpoint then tells). */
static int qemu_sees_runtime_dir(struct replicator *r)
{
	int rc = proc_sees_path(r->vm.pid, r->runtime_dir);

	if (rc == 1)
		return 0;
	if (rc < 0) {
		log_debug("cannot tell whether QEMU pid %d sees %s: %s", (int)r->vm.pid,
			  r->runtime_dir, strerror(-rc));
		return 0;
	}
	log_err("refusing VM %s: QEMU pid %d does not see our runtime directory %s (it runs in "
		"another mount namespace, where that path is not this directory), and it must "
		"open the device state and the disks' sockets there: run the replicator in "
		"QEMU's mount namespace, or give it a directory both see ($RUNTIME_DIRECTORY)",
		r->vm.name, (int)r->vm.pid, r->runtime_dir);
	return -EXDEV;
}

/* The runtime directory is made only once QEMU is known: QEMU's user must
 * pass through it to the sockets and the file it is given, and no one
 * else. */
static int make_runtime_dir(struct replicator *r)
{
	char parent[sizeof(r->runtime_dir)], prefix[32];
	const char *where = runtime_dir_parent(parent, sizeof(parent));
	int rc = proc_ids(r->vm.pid, &r->qemu_uid, &r->qemu_gid);

	if (rc) {
		log_err("cannot see QEMU's user in /proc/%d/status: %s", (int)r->vm.pid,
			strerror(-rc));
		return rc;
	}
	snprintf(prefix, sizeof(prefix), "replicator-%d", (int)getpid());
	rc = runtime_dir_make(where, prefix, r->runtime_dir, sizeof(r->runtime_dir));
	if (rc) {
		log_err("cannot make our runtime directory in %s: %s (it must be a directory, "
			"not a symlink, of root or us, that no one else may write)", where,
			strerror(-rc));
		r->runtime_dir[0] = 0;
		return rc;
	}
	rc = runtime_dir_share(r->runtime_dir, r->qemu_uid, r->qemu_gid);
	if (rc)
		log_err("cannot let QEMU's user into %s: %s", r->runtime_dir, strerror(-rc));
	else if (!(rc = qemu_sees_runtime_dir(r)))
		log_info("runtime files in %s", r->runtime_dir);
	return rc;
}

int replicator_give_to_qemu(struct replicator *r, const char *path)
{
	if (chown(path, r->qemu_uid, r->qemu_gid) < 0 || chmod(path, 0600) < 0)
		return -errno;
	return 0;
}

static int init_watchers(struct replicator *r)
{
	int rc = fine_timer_init(&r->epoch_timer, on_epoch_timer, r);

	if (rc) {
		log_err("cannot make the epoch timer (timerfd): %s", strerror(-rc));
		return rc;
	}
	ev_timer_init(&r->heartbeat_timer, on_heartbeat_timer, 0, r->cfg.heartbeat_ms / 1000.0);
	ev_timer_init(&r->reconnect_timer, on_reconnect_timer, 1.0, 1.0);
	ev_timer_init(&r->stats_timer, on_stats_timer, 1.0, 1.0);
	ev_signal_init(&r->sigterm, on_stop_signal, SIGTERM);
	ev_signal_init(&r->sigint, on_stop_signal, SIGINT);
	ev_io_init(&r->qmp_watch, on_qmp_readable, qmp_fd(r->qmp), EV_READ);
	r->heartbeat_timer.data = r->reconnect_timer.data = r;
	r->stats_timer.data = r->sigterm.data = r->sigint.data = r->qmp_watch.data = r;
	ev_timer_again(r->loop, &r->heartbeat_timer);
	ev_timer_again(r->loop, &r->stats_timer);
	ev_signal_start(r->loop, &r->sigterm);
	ev_signal_start(r->loop, &r->sigint);
	sighup_ignore_start(r->loop, &r->sighup, "remus-replicator");
	if (qmp_fd(r->qmp) >= 0)
		ev_io_start(r->loop, &r->qmp_watch);
	return 0;
}

/* The generation we start from: the replica the VM was restored from
 * (--generation), or, in a pair whose roles move, this host's own replica
 * if it is as high: our first session then records a higher one than any
 * replica of either host (the backup's own is the agent's to add). */
static void start_generation(struct replicator *r)
{
	char path[PATH_MAX];
	struct json_object *file, *vm = NULL, *v;

	r->generation = r->cfg.generation;
	if (!r->cfg.host)
		return;
	/* vm.json: {"vm": the HELLO with its "generation", "epoch": ...} */
	snprintf(path, sizeof(path), "%s/vm.json", r->cfg.host->state_dir);
	file = json_object_from_file(path);
	if (file)
		json_object_object_get_ex(file, "vm", &vm);
	if (vm && json_object_object_get_ex(vm, "generation", &v) &&
	    json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0 &&
	    (uint64_t)json_object_get_int64(v) > r->generation)
		r->generation = (uint64_t)json_object_get_int64(v);
	json_object_put(file);
}

/* Which of the file's other hosts protects the VM (backup_choice.h);
 * --backup names one. */
static int choose_backups(struct replicator *r)
{
	char err[300];

	if (backup_choice_init(&r->backups, &r->cfg.file,
			       r->cfg.backup_flag ? NULL : r->cfg.host, mono_ms() / 1e3, err,
			       sizeof(err))) {
		log_err("%s", err);
		return -EINVAL;
	}
	return 0;
}

/* A VM restored here just now: the NIC's frames were dropped until the
 * net buffer bound its socket, the restore's announcement with them, so
 * switches still send the VM's traffic to the old host. Announce again
 * now that frames go out. */
static void announce(struct replicator *r)
{
	struct json_object *args = json_object_new_object();

	json_object_object_add(args, "initial", json_object_new_int(50));
	json_object_object_add(args, "max", json_object_new_int(550));
	json_object_object_add(args, "rounds", json_object_new_int(5));
	json_object_object_add(args, "step", json_object_new_int(100));
	if (qmp_execute(r->qmp, "announce-self", args, NULL, 5000))
		log_warn("announce-self failed: %s", qmp_last_error(r->qmp));
	else
		log_info("VM %s announces its MAC addresses here", r->vm.name);
	json_object_put(args);
}

/* No key, no start: a link anyone can speak on gives the backup host to
 * anyone (docs/SECURITY.md). Cleartext only when the operator named it. */
static int link_security_setup(struct replicator *r)
{
	char err[512];

	if (r->cfg.cleartext_link) {
		link_security_cleartext(&r->link_sec);
		log_warn("INSECURE: --insecure-cleartext-link: the replication link is neither "
			 "encrypted nor authenticated; anyone on the path reads the VM's memory "
			 "and disks, and anyone who reaches the backup can feed it a VM");
		return 0;
	}
	if (link_security_load(&r->link_sec, r->cfg.key_file, NULL, err, sizeof(err))) {
		log_err("%s", err);
		return -EINVAL;
	}
	return 0;
}

int replicator_run(struct replicator *r)
{
	int rc;

	prot_init(&r->state, on_state_changed, r);
	peer_link_init(&r->link, NULL, &r->link_sec, NULL, r);
	control_socket_init(&r->control, "replicator", r->cfg.control_path, r->cfg.control_group,
			    r->cfg.control_gid, control_command, r);
	r->qemu_pidfd = -1;
	r->handover_fd = -1;
	verify_init(r);
	r->backup_silence_ms = r->cfg.timeout_ms; /* until a backup says more */
	epoch_policy_init(&r->policy, &r->cfg.policy);
	r->loop = ev_default_loop(EVFLAG_AUTO);
	hook_runner_init(&r->hooks, r->loop, r->cfg.notify_cmd, HOOK_NOTIFY_TIMEOUT_MS);
	signal(SIGPIPE, SIG_IGN);
	rc = link_security_setup(r);
	if (rc)
		goto out;
	rc = vm_attach(r);
	if (rc && r->vm_absent) {
		/* the VM runs on the other host, or nowhere: never start a
		 * copy here, be the backup of whichever host runs it */
		r->become_backup = true;
		goto out;
	}
	if (rc)
		goto out;
	r->state.vm = r->vm.name;
	link_security_set_identity(&r->link_sec, r->cfg.pair_name ? r->cfg.pair_name : r->vm.name);
	start_generation(r);
	rc = choose_backups(r);
	if (rc)
		goto out;
	rc = make_runtime_dir(r);
	if (rc)
		goto out;
	rc = epoch_devices_setup(r);
	if (rc)
		goto out;
	if (r->cfg.announce)
		announce(r);
	if (r->cfg.control_path && (rc = control_open(r)))
		goto out;
	if ((rc = init_watchers(r)))
		goto out;
	if (r->virt && (rc = watch_qemu_exit(r)))
		goto out;
	try_connect(r);
	/* Attached, and connected or retrying: what systemd waits for. */
	notify_ready(NULL);
	replicator_notify_state(r);
	ev_run(r->loop, 0);
	rc = r->exit_code;
out:
	/* `vm-lost` must reach the operator before we are gone. */
	hook_runner_drain(&r->hooks, HOOK_NOTIFY_TIMEOUT_MS);
	operator_close(r);
	verify_free(r);
	peer_link_close(&r->link);
	link_delta_free(r);
	control_close(r);
	epoch_devices_teardown(r);
	runtime_dir_remove(r->runtime_dir);
	if (r->qmp)
		qmp_close(r->qmp);
	virt_close(r->virt);
	if (r->qemu_pidfd >= 0)
		close(r->qemu_pidfd);
	fine_timer_close(r->loop, &r->epoch_timer);
	vm_info_free(&r->vm);
	link_security_free(&r->link_sec);
	ev_loop_destroy(r->loop);
	sighup_ignore_quietly(); /* the loop is gone: sighup.h */
	return rc < 0 ? 2 : rc;
}
