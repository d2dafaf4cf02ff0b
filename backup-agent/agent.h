/* remus-agent: the backup side. */
#ifndef REMUS_AGENT_H
#define REMUS_AGENT_H

#include "config.h"
#include "frame_queue.h"
#include "hooks.h"
#include "link_security.h"
#include "netaddr.h"
#include "peer_link.h"
#include "proto.h"
#include "replica.h"
#include "restore.h"

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
/* Longest run of frames one readable event handles before the loop runs. */
#define AGENT_READ_SLICE_MS        50
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
	ev_signal sigterm, sigint;
	struct link_security sec;
	/* every connection; the primary, once its HELLO is accepted, is one
	 * of them (NULL: none) */
	struct peer_link links[AGENT_MAX_LINKS];
	struct peer_link *primary;
	double refused_log_ms;    /* rate limit of the lines about refused peers */
	unsigned refused_quiet;   /* refusals not logged since */
	ev_tstamp grace_until;    /* stream dropped by us: failover if no reconnect by then */
	char peer[160];
	bool paused;              /* the operator paused protection: no failover */
	double status_at_ms;      /* last STATUS= of a commit (notify) */
	struct replica replica;
	int exit_code;
	struct hook_runner hooks;  /* notify hooks */
	char vm_name[128];         /* from the primary's HELLO, for hooks */
	bool backup_notified;      /* `backup` sent for this session */
};

/* options.c: 0 run, 1 exit 0 (--help, --check-config passed), -1 usage or
 * config error (printed). After 0, agent_config_free. */
int agent_parse_args(int argc, char **argv, struct agent_config *cfg, int *use_syslog);
void agent_config_free(struct agent_config *cfg);
void agent_usage(FILE *f);

int agent_run(struct agent *a);

#endif
