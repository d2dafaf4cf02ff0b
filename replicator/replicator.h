/* The primary-side replicator: state shared by its modules. */
#ifndef REMUS_REPLICATOR_H
#define REMUS_REPLICATOR_H

#include "backup_choice.h"
#include "ckpt_device.h"
#include "replicator_config.h"
#include "compress.h"
#include "config.h"
#include "pair_role.h"
#include "control_socket.h"
#include "epoch_policy.h"
#include "fine_timer.h"
#include "frame_queue.h"
#include "hooks.h"
#include "netaddr.h"
#include "peer_link.h"
#include "proto.h"
#include "prot_state.h"
#include "stats.h"
#include "verify.h"
#include "vcpu_load.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct qmp;
struct ckpt_device;
struct json_object;


struct replicator {
	struct ev_loop *loop;
	struct replicator_config cfg;
	struct backup_choice backups; /* which host is the backup ([host] sections) */
	struct vm_info vm;
	struct qmp *qmp;
	ev_io qmp_watch;          /* QMP socket; or, through libvirt: */
	struct virt *virt;
	int qemu_pidfd;           /* QEMU's exit, as libvirt has no socket to close */
	ev_io qemu_exit_watch;
	ev_timer qemu_exit_grace;
	/* the epoch's end: sub-millisecond, for a reply's quiet (fine_timer.h) */
	struct fine_timer epoch_timer;
	ev_timer heartbeat_timer, reconnect_timer, stats_timer;
	ev_signal sigterm, sigint, sighup;
	struct control_socket control; /* --control (common/control_socket.h) */
	/* Our runtime files (NBD sockets, device state): a directory of our
	 * own under /run/remus, QEMU's user let through; "" until made. */
	char runtime_dir[192];
	uid_t qemu_uid;
	gid_t qemu_gid;

	struct ckpt_device *devices;
	int ndevices;
	struct ckpt_ctx ckpt;     /* what the devices see of us (epoch.c) */

	struct peer_link link;
	struct link_security link_sec;
	/* protection, pause, handover: changed by prot_set() alone */
	struct prot_state state;
	uint64_t epoch;          /* id of the newest captured epoch */
	bool inflight;           /* epoch captured and sent, not yet acked */
	struct epoch_tally sync_tally; /* epoch 0 while devices still copy */
	int sync_pending;        /* devices whose copy is still going on */
	bool checkpoint_due;     /* timer fired while an epoch was in flight */
	bool stopping;
	unsigned connect_failures; /* in a row, for quiet retries */
	bool vm_stopped_by_us;    /* our stop succeeded, our cont did not (yet) */
	unsigned nacks_in_a_row;
	bool vm_shutdown;        /* QEMU announced SHUTDOWN: leaving on purpose */
	bool vm_gone;            /* QEMU has exited: nothing more to ask it */
	bool vm_absent;          /* attach found no QEMU at the QMP socket */
	/* cfg.host: the VM does not run here (any more); we become this
	 * host's agent, the other host's backup, once run returns */
	bool become_backup;
	int exit_code;
	double epoch_sent_ms;      /* mono_ms() */
	/* epoch_watchdog: since when (mono_ms, 0: not) the epoch in flight was
	 * written whole (drained_epoch), and no barrier scheduled */
	double drained_at_ms, unscheduled_since_ms;
	uint64_t drained_epoch;
	struct epoch_policy policy;
	double epoch_started_ms;  /* the VM resumed: this epoch runs from here */
	double long_pause_warned_ms; /* the last warning of a pause near --timeout-ms */
	/* ms into the epoch when output began to wait, and when the VM last
	 * sent a reply (not a bare TCP ACK); -1: none yet */
	double output_since_ms, reply_at_ms;
	/* the last barrier's `stop` paused the VM (and `cont` ran it on): the
	 * next one need not ask QEMU first (epoch.c, stop_vm) */
	bool vm_seen_running;
	bool vm_paused_said;  /* "paused, not by us" logged for this stretch */
	/* the vCPUs' time from the epoch's first reply on (epoch_timer_expired) */
	struct vcpu_mark reply_mark;
	bool reply_marked;
	struct vcpu_load vcpu_load; /* how busy the vCPUs are while the VM runs */

	/* The VM's place in its history: the generation of the last session
	 * (or of the replica it was restored from); each HELLO proposes one
	 * more, the backup's reply says what it recorded (vm.json). Of two
	 * replicas, the one of the higher generation was written later. */
	uint64_t generation;

	/* Delta resync of this connection (link.c fills it, the memory
	 * device uses it; ckpt_device.h) */
	struct ram_delta delta;

	/* remusctl verify (verify.c) */
	struct verify verify;
	bool agent_verify;        /* the backup's HELLO_REPLY lists "verify" */
	bool agent_verify_disk;   /* ... and "verify-disk": it compares disk blocks */
	bool agent_park;          /* ... and "park" */
	bool agent_pages_lz4;     /* ... and "pages-lz4": it decodes PAGES_Z */

	/* --compress (compress.h): set up and used by the memory device */
	struct compress compress;
	uint64_t epoch_wire_bytes; /* the epoch in flight, all its frames */

	/* operator controls (operator.c) */
	bool agent_operator;      /* the agent understands HANDOVER and PAUSE */
	/* Backup silent this long: lost, held output released. At least
	 * --timeout-ms, and longer than the backup may take to declare us
	 * lost and fence us (its HELLO_REPLY says how long): output released
	 * before the fence could be rolled back by the takeover. */
	unsigned backup_silence_ms;
	/* The link broke without our GOODBYE: the backup may restore the
	 * last commit, so held output waits until it would have (release_timer). */
	bool backup_may_take_over;
	ev_timer release_timer;   /* ... until then (epoch.c, release_output) */
	bool session_synced;      /* the initial sync of this session is acked */
	ev_timer handover_timer;  /* remusctl failover's deadline */
	int handover_fd;          /* remusctl failover waiting for the outcome; -1 */
	uint64_t handover_epoch;  /* the final checkpoint */
	bool handover_park;       /* remusctl park: the backup keeps the VM stopped */

	struct replicator_stats stats;
	struct hook_runner hooks;  /* notify hooks */
};

int replicator_run(struct replicator *r);
/* Tell the notify hook (if any) about event: protected, unprotected,
 * vm-lost, detached. */
void replicator_notify(struct replicator *r, const char *event, const char *reason);

/* options.c: 0 to run, 1 to exit 0 (--help, --check-config passed), -1
 * usage or config error (printed). After 0, replicator_config_free. */
int replicator_parse_args(int argc, char **argv, struct replicator_config *cfg,
			  int *use_syslog);
void replicator_config_free(struct replicator_config *cfg);
void replicator_usage(FILE *f);

/* link.c: the replicator's side of the peer link (common/peer_link.h).
 * link_open starts connecting; the outcome comes from the loop as
 * replicator_link_up or replicator_link_failed (replicator.c). */
int link_open(struct replicator *r, char *err, size_t errlen);
/* Drop the delta resync's page hashes (after epoch 0, on a new link). */
void link_delta_free(struct replicator *r);
/* Delta resync: hashes the initial copy still waits for (RAM or a device's). */
bool link_sync_waits(const struct replicator *r);
void link_start_sync_when_ready(struct replicator *r);
void link_drop_alive(struct replicator *r, const char *why);
void link_goodbye(struct replicator *r, const char *why);
int link_push(struct replicator *r, unsigned type, uint64_t epoch,
	      const struct iovec *iov, int iovcnt, void *owned, uint32_t *crc);
void replicator_link_up(struct replicator *r);
void replicator_link_failed(struct replicator *r, const char *why);

/* replicator.c: a QMP command failed at the barrier (-EPIPE: QEMU died). */
void replicator_primary_trouble(struct replicator *r, int rc);
/* QEMU events arrived through libvirt: dispatch them. */
void replicator_qemu_events(void *replicator);
/* The connection to libvirt broke: detach (exit 3). */
void replicator_lost_libvirt(void *replicator, const char *why);
/* Leave the event loop; the process exits with exit_code. */
void replicator_leave(struct replicator *r, int exit_code);
/* Start reconnecting to the backup (every second until it answers). */
void replicator_reconnect(struct replicator *r);
/* Tell the service manager (STATUS=) what the replicator does now. */
void replicator_notify_state(struct replicator *r);

/* replicator.c: give path (a socket or file made for QEMU) to QEMU's user. */
int replicator_give_to_qemu(struct replicator *r, const char *path);

/* The replicator a device's context belongs to: the functions of
 * ckpt_device.h answer for it (epoch.c, ckpt_ctx.c). */
static inline struct replicator *replicator_of(const struct ckpt_ctx *cx)
{
	return (struct replicator *)((char *)cx - offsetof(struct replicator, ckpt));
}

/* epoch.c */
/* Fill r->ckpt (what the devices see of r); epoch_devices_setup does. */
void epoch_ctx_init(struct replicator *r);
int epoch_devices_setup(struct replicator *r);
/* The state of the device of these ops; NULL when there is none. */
void *epoch_device_state(const struct replicator *r, const struct ckpt_device_ops *ops);
void epoch_devices_teardown(struct replicator *r);
void epoch_checkpoint(struct replicator *r);
void epoch_start_sync(struct replicator *r);
void epoch_on_ack(struct replicator *r, uint64_t epoch);
void epoch_on_nack(struct replicator *r, uint64_t epoch, const char *why);
void epoch_on_backup_lost(struct replicator *r, const char *why);
/* The same for a link already closed; link_was_up: it was up until then
 * (the loss is said in the log). */
void epoch_backup_gone(struct replicator *r, const char *why, bool link_was_up);
/* Start the next epoch's timer (from now, as long as the policy says). */
void epoch_arm_timer(struct replicator *r);
/* The epoch timer: end the epoch, or let a busy VM's replies gather. */
void epoch_timer_expired(struct replicator *r);
/* Once a second (the stats timer): protection that stands still while
 * the link lives (an epoch sent whole and never acknowledged, no barrier
 * scheduled) is said, and set going again. */
void epoch_watchdog(struct replicator *r);
/* Tell every device that protection starts (on) or ends. */
void protect_devices(struct replicator *r, bool on, uint64_t next_epoch);
/* The handover's last checkpoint: like a barrier, but the VM stays
 * stopped. 0 queued (VM stopped), 1 the VM was not running (nothing done),
 * <0 failed (the VM runs again, or QEMU is gone; already handled). */
int epoch_final_checkpoint(struct replicator *r);
/* QMP cont; 0 or -errno (logged). */
int epoch_resume_vm(struct replicator *r);

/* operator.c: remusctl pause / resume / failover and their frames. Replies
 * are JSON text (malloc'd) for the control socket. */
char *operator_pause(struct replicator *r);
char *operator_resume(struct replicator *r);
/* Starts a failover; the reply goes to fd when the outcome is known
 * (operator owns fd then). Returns a reply to send at once instead (and
 * keeps nothing) when the failover cannot start. */
char *operator_failover(struct replicator *r, int fd, unsigned timeout_ms);
/* remusctl park: the same final checkpoint, but the backup (takeover =
 * manual) keeps it as the VM's last state instead of starting the VM, and
 * this QEMU quits: a cluster manager's demote. */
char *operator_park(struct replicator *r, int fd, unsigned timeout_ms);
/* An epoch was acked: true when the operator took over what comes next
 * (no checkpoint is to be taken now). */
bool operator_after_ack(struct replicator *r, uint64_t epoch);
/* The link to the backup is gone (before the devices are told). */
void operator_on_backup_lost(struct replicator *r, const char *why);
/* A link came up: true when the initial sync must wait (paused). */
bool operator_on_connected(struct replicator *r);
/* HANDOVER_DONE, HANDOVER_FAILED, PAUSE_ACK from the backup. */
void operator_on_frame(struct replicator *r, const struct frame_hdr *h, const uint8_t *payload);
/* Status keys: pause_state, handover, vm_left_paused, backup_operator. */
void operator_status(const struct replicator *r, struct json_object *o);
void operator_close(struct replicator *r);

/* attach.c: 0, -errno (logged), or 3: in a pair whose roles move, this
 * host's libvirt cannot tell whether the VM runs here (exit 3, retried). */
int vm_attach(struct replicator *r);
void vm_info_free(struct vm_info *vm);
char *vm_hello_json(const struct replicator *r);

/* control.c: the control socket's commands (the socket itself is
 * common/control_socket.c, shared with the agent; control_reply there
 * answers a connection operator.c kept). */
int control_open(struct replicator *r);
void control_close(struct replicator *r);
/* One command line of an allowed peer (control_handler). */
char *control_command(void *data, int fd, const char *cmd, bool *keep);
char *status_json(const struct replicator *r);


#endif
