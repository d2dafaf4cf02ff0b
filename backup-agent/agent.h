/* remus-agent: the backup side. */
#ifndef REMUS_AGENT_H
#define REMUS_AGENT_H

#include "agent_state.h"
#include "cold_start.h"
#include "takeover_deadline.h"
#include "test_failover.h"
#include "config.h"
#include "pair_role.h"
#include "control_socket.h"
#include "frame_queue.h"
#include "hooks.h"
#include "parked.h"
#include "link_security.h"
#include "netaddr.h"
#include "peer_link.h"
#include "proto.h"
#include "replica.h"
#include "restore.h"
#include "ring.h"

#include <ev.h>
#include <stdbool.h>
#include <stdio.h>

#define AGENT_DEFAULT_TIMEOUT_MS   2000u
#define AGENT_DEFAULT_HEARTBEAT_MS 100u
/* From accept to an accepted HELLO, TLS included, however slowly the
 * peer trickles its bytes. */
#define AGENT_HELLO_TIMEOUT_MS     5000
/* Connections at once: the primary and peers still in their handshake.
 * An unauthenticated peer never holds the primary's place. */
#define AGENT_MAX_LINKS            16
/* Handshakes not yet authenticated from one address: a flood from a few
 * addresses cannot hold every place (agent.c, on_accept). */
#define AGENT_HANDSHAKES_PER_ADDR  4
/* Longest run of frames one readable event handles before the loop runs. */
#define AGENT_READ_SLICE_MS        50
/* A peer's first frame (its HELLO, or a PEER_QUERY): a VM's command line,
 * domain XML and disks fit many times over. */
#define AGENT_MAX_FIRST_FRAME      (4u << 20)
/* What the agent may have queued for a primary that does not read it:
 * past this, the stream is dropped (a VERIFY answer is 100 times its
 * request, so a primary that only writes would otherwise fill our memory). */
#define AGENT_MAX_BACKLOG_BYTES    (64u << 20)
/* A delta resync's hashes wait while the link holds this much. */
#define AGENT_DELTA_BACKLOG_BYTES  (8u << 20)
#define AGENT_MAX_TAPS             8
#define AGENT_DEFAULT_FENCE_TIMEOUT_MS 10000u
#define AGENT_DEFAULT_EMULATOR     "/usr/bin/qemu-system-x86_64"
#define AGENT_MAX_SHARED_DISKS     8

struct agent_config {
	struct netaddr listen;
	const char *state_dir;
	unsigned timeout_ms;     /* primary silent this long: lost */
	unsigned heartbeat_ms;
	bool restore_now;        /* --restore: restore the replica and exit */
	bool after_host_restart; /* --after-host-restart: a replica of an earlier boot is fine */
	bool no_failover;        /* --no-failover: keep the replica, never restore */
	/* [backup] takeover = manual: a cluster manager decides; a lost
	 * primary's replica waits for `remusctl takeover` (its promote) */
	bool takeover_manual;
	/* ... and how long a lost primary's replica stays ready: the primary
	 * holds its output that long (takeover_after_ms), so that it cannot
	 * have shown clients more than the replica holds */
	unsigned takeover_window_ms;
	bool test_disk_apply_on_arrival; /* test only: see replica_apply_unbuffered */
	bool forget_pair;        /* --forget-pair: remove DIR's pin (pair.h) and exit */
	struct replica_limits limits; /* --max-ram-mb, --max-disk-gb, --max-epoch-mb */
	const char *taps[AGENT_MAX_TAPS]; /* --tap [ID=]NAME */
	const char *shared_disks[AGENT_MAX_SHARED_DISKS]; /* --shared-disk PATH */
	struct restore_opts restore;
	/* Run before taking over; only exit 0 lets the agent restore the VM. */
	const char *fence_cmd;     /* --fence CMD */
	bool fence_disabled;       /* --no-fence: a lost link is a lost host */
	unsigned fence_timeout_ms; /* --fence-timeout-ms: then it counts as failed */
	const char *notify_cmd;    /* --notify CMD: events, see README "Hooks" */
	const char *pair_name;     /* --pair NAME; NULL: the VM's name */
	const char *key_file;      /* --key-file: the pair key (link_security.h) */
	bool cleartext_link;       /* --insecure-cleartext-link */
	const char *control_path;  /* --control PATH; NULL: no control socket */
	const char *control_group; /* --control-group; NULL: root alone may use it */
	gid_t control_gid;         /* control_group's; -1 without one */
	/* A pair whose roles move ([host] sections): this host's, and the
	 * file, for the replicator we become (common/pair_role.h); NULL: none. */
	const struct config_host *host;
	const char *config_path;
	struct pair_role_carry carry; /* the service's flags, for the next role */
	/* --config: owns the strings above that came from the file, and the
	 * keys no flag sets yet ([hooks] fence, notify, ...) */
	struct pair_config file;
};

struct agent {
	struct ev_loop *loop;
	struct agent_config cfg;
	int listen_fd;
	int state_lock_fd;      /* the state directory, locked (one agent per dir) */
	ev_io accept_watch;
	ev_timer heartbeat_timer;
	ev_signal sigterm, sigint, sighup;
	struct link_security sec;
	/* every connection; the primary, once its HELLO is accepted, is one
	 * of them (NULL: none) */
	struct peer_link links[AGENT_MAX_LINKS];
	struct peer_link *primary;
	double refused_log_ms;    /* rate limit of the lines about refused peers */
	unsigned refused_quiet;   /* refusals not logged since */
	double grace_until_ms;    /* boot_ms(): stream dropped by us, failover if no reconnect by then */
	char peer[160];
	/* the primary's [host] name (its HELLO's "host"), "" if it gave none */
	char peer_host[CONFIG_MAX_HOSTNAME + 1];
	/* The operator paused this session's protection: no failover. Kept
	 * by agent_set_state alone: set on entering PAUSED, cleared on
	 * entering SYNCING (a new session) or BACKUP (a commit after the
	 * pause), and so still known while RECONNECTING. */
	bool session_paused;
	double status_at_ms;      /* last STATUS= of a commit (notify) */
	double pulse_ms;          /* mono_ms() of the last commit_pulse that wrote */
	struct replica replica;
	int exit_code;
	struct hook_runner hooks;  /* notify hooks */
	char vm_name[128];         /* from the primary's HELLO, for hooks */
	bool backup_notified;      /* `backup` sent for this session */
	/* sessions in a row whose initial copy this host's storage lost
	 * (replica.copy_lost); 0 once a session commits */
	unsigned copies_lost;
	/* what remusctl sees (backup-agent/control.c) */
	struct control_socket control;
	enum agent_state state;
	char state_reason[300];
	double state_since_ms;     /* mono_ms() of the last change */
	char replica_vm[128];      /* the replica's VM at start (vm.json), "" if none */
	bool replica_known;        /* a committed replica is in the state dir */
	uint64_t replica_epoch;    /* its epoch */
	uint64_t replica_generation; /* its generation (replica.h) */
	long long replica_committed_ms; /* when it was committed (Unix ms; 0: unknown) */
	double replica_committed_boot_ms; /* the same on boot_ms() if by this process, else 0:
					   * its age, whatever the wall clock does */
	struct sample_ring commit_ms;   /* time to commit each epoch (reset-stats) */
	int master_pid;            /* the restored QEMU, in AGENT_MASTER (0: none) */
	/* cfg.host: the VM runs here now, on this QMP socket; we become its
	 * replicator, protecting it to the other host, once run returns */
	struct cold_start cold;    /* a pair whose roles move: both hosts came back */
	struct test_failover test; /* remusctl test-failover */
	/* delta resync: the base copied and hashed so far (agent.c) */
	ev_idle delta_step;
	ev_timer delta_wait;        /* the link is full: the next step after this */
	uint64_t delta_next;
	unsigned delta_disk;        /* then each disk's chunks (disk_base.c) */
	uint64_t delta_disk_next;
	double delta_started_ms;
	/* takeover = manual: may `remusctl takeover` restore the replica
	 * without --force, and why (a lost primary's committed epoch, a
	 * parked VM's final one, or the newer replica at a cold start) */
	bool takeover_ready;
	char takeover_why[200];
	ev_timer ready_expiry;    /* a lost primary's replica stops being ready */
	double ready_until_ms;    /* then, on boot_ms() (0: ready with no window) */
	/* when the last primary last spoke, on boot_ms() and stall-adjusted:
	 * what a takeover's window counts from (takeover_deadline.h) */
	double primary_heard_ms;
	struct takeover_deadline deadline; /* and the loop's own stalls */
	/* a QEMU of the VM parked here, paused (common/parked.h) */
	struct parked_vm parked;
	bool parked_valid;
	int takeover_fd;         /* remusctl takeover waiting for the other host */
	bool takeover_force;
	bool become_primary;
	/* what its replicator attaches to: a QMP socket, or a libvirt domain
	 * on this host's libvirt (then master_qmp is empty) */
	char master_qmp[4096];
	char master_domain[256];
	uint64_t master_generation; /* of the replica it was restored from */
};

/* options.c: 0 run, 1 exit 0 (--help, --check-config passed), -1 usage or
 * config error (printed). After 0, agent_config_free. */
int agent_parse_args(int argc, char **argv, struct agent_config *cfg, int *use_syslog);
void agent_config_free(struct agent_config *cfg);
void agent_usage(FILE *f);

int agent_run(struct agent *a);
/* Restore the VM from this host's replica with no primary to take over
 * from (cold_start.c decided it): state RESTORING, then MASTER and out of
 * the loop, or FAULT. */
void agent_restore_cold(struct agent *a, const char *why);
/* takeover = manual: this replica is one the VM may resume from (why),
 * once the cluster manager says so (agent_takeover). */
void agent_takeover_ready(struct agent *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* takeover.c: the ways a replica becomes ready, and stops being ready.
 * A lost primary's: until its takeover window ([backup]
 * takeover-window-ms) has passed since it last spoke, after which it may
 * have released output the replica does not hold. A parked VM's: its
 * QEMU stopped at that epoch, so for good (recorded in the state dir, it
 * outlives an agent restart) until the VM runs anywhere. */
void agent_ready_lost_primary(struct agent *a, const char *why);
void agent_ready_parked(struct agent *a, uint64_t epoch);
void agent_ready_clear(struct agent *a);
/* The other host (host) resumes the QEMU it parked at generation/epoch:
 * if this replica is ready at exactly that epoch, it is given up (marked
 * restored from, not ready) and true says so in the answer. */
bool agent_ready_give_up(struct agent *a, const char *host, uint64_t generation, uint64_t epoch);
/* Restore the VM from this host's replica with no primary (what says
 * which path: "cold start", "takeover"): 0, the VM runs here and the loop
 * ends; -1, FAULT, replica kept. */
int agent_restore_here(struct agent *a, const char *what, const char *why,
		       struct restore_result *res);
/* The VM runs here in a QEMU already running on qmp (NULL: the pair's
 * libvirt domain, [vm] domain): its replicator attaches once the loop
 * ends. */
void agent_attach_here(struct agent *a, const char *qmp, uint64_t generation, const char *why);

/* takeover.c: remusctl takeover [--force], the cluster manager's promote.
 * The reply (malloc'd JSON), or NULL with *keep set when it comes later on
 * fd (a parked VM here waits for the other host's word). */
char *agent_takeover(struct agent *a, int fd, bool force, bool *keep);
/* Start: a parked VM here (parked.h) is found; stop: a waiting takeover
 * is answered, and a parked VM dropped (its QEMU killed) unless it runs
 * on. A parked VM is dropped too once it is stale. The other host's
 * answer about it comes to agent_takeover_peer_answer. */
void agent_takeover_init(struct agent *a);
void agent_takeover_stop(struct agent *a);
/* A QEMU of the VM was started here, no primary runs it, and this host
 * holds no newer state: what takeover attaches to. */
bool agent_vm_started_here(const struct agent *a);
void agent_parked_discard(struct agent *a, const char *why);
/* cold_start.c asked the other host for a takeover of the parked VM:
 * peer is what it holds, or NULL with why when it did not answer. */
void agent_takeover_peer_answer(struct agent *a, const struct cold_facts *peer,
				const char *why);
/* agent.c: the links' frames, dispatched; the state. */
/* The one place the state changes (agent_state.h): logged as "old -> new
 * (reason)", or refused with a BUG line outside the table. */
void agent_set_state(struct agent *a, enum agent_state st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The primary's VM name (its HELLO), "?" without one. */
const char *agent_vm_name(const struct agent *a);
/* Hook events: the common part, and one sent as it is. */
void agent_hook_event(const struct agent *a, struct hook_event *ev, const char *event,
		      const char *reason);
void agent_notify(struct agent *a, const char *event, const char *reason);
/* The loop is about to stand still or end: answer waiting clients. */
void agent_answer_waiting(struct agent *a);
/* Close the primary's link and end its session (the replica stays). */
void agent_drop_primary(struct agent *a);
/* The loop runs now: true when a gap since it last did was a stall
 * (said, with a primary connected). */
bool agent_loop_ran(struct agent *a);
/* How long after it last heard from the primary this agent may have
 * restored the VM: what its HELLO_REPLY promises. */
unsigned agent_takeover_after_ms(const struct agent *a);
/* The stream cannot be read, but the primary may live: drop it and give
 * it --timeout-ms to reconnect before taking over. */
void agent_lose_stream(struct agent *a, const char *why);

/* failover.c: the primary is lost (its link broke, or it went silent):
 * fence it and restore the VM here, or say in FAULT why not. */
void agent_failover(struct agent *a, const char *why);
/* What agent_failover would do with a primary lost now (agent_state.h). */
enum failover_verdict agent_failover_now(const struct agent *a);
/* The VM was restored here (res): the hook's `master` event with the
 * figures, and in a pair whose roles move, our next role. */
void agent_notify_master(struct agent *a, const struct restore_result *res,
			 long long lost_at, double fence_ms, const char *why);
void agent_become_primary(struct agent *a, const struct restore_result *res);
/* remus-agent --restore: 0 the VM runs, 1 not (logged). */
int agent_restore_and_report(struct agent *a);
/* At start: taking over without a fence command may run the VM twice. */
void agent_warn_no_fence(const struct agent *a);

/* admission.c: accept a connection into a free place (accept_watch). */
void agent_on_accept(struct ev_loop *loop, ev_io *w, int revents);
/* One line per 10 s at most about refused peers. */
void agent_log_refused(struct agent *a, const char *peer, const char *why);

/* delta_steps.c: the new session's base, copied and hashed in steps
 * (delta_step, an idle watcher), its hashes sent to the primary. */
void agent_delta_start(struct agent *a);
void agent_on_delta_step(struct ev_loop *loop, ev_idle *w, int revents);
/* delta_wait: the link drained for a while; steps go on. */
void agent_on_delta_wait(struct ev_loop *loop, ev_timer *w, int revents);
/* Still copying a base: nothing of epoch 0 may land in a .sync file yet. */
bool agent_delta_base_pending(struct agent *a);
/* The HELLO_REPLY's "disk_hashes": per disk, the chunks whose hashes follow. */
void agent_add_disk_hashes(const struct replica *rp, char *reply, size_t size);

/* state_dir.c: one agent per state directory (its flock, held until
 * exit); the committed replica an earlier session left there. */
int agent_lock_state_dir(struct agent *a);
void agent_unlock_state_dir(struct agent *a);
void agent_load_replica_facts(struct agent *a);

/* control.c: the control socket's commands, and the status they show. */
char *agent_control_command(void *data, int fd, const char *cmd, bool *keep);
/* A command's reply: {"ok":...,"daemon":"agent","state":... (given a),
 * "message" or "error":TEXT}, built by json-c, since the text may quote
 * what the client sent. malloc'd; NULL out of memory. */
char *agent_control_reply(const struct agent *a, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
char *agent_status_json(const struct agent *a);

#endif
