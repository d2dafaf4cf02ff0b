/* Cold start of a pair whose roles move (cold_start.h). */
#include "agent.h"
#include "cold_start.h"
#include "log.h"
#include "virt.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#define COLD_START_ASK_S       2.0
#define COLD_START_DEADLINE_MS 3000
/* how long the agent's loop waits for libvirt's "does the domain run
 * here": a hung libvirtd must not hold the loop (control socket, a
 * primary's connection) */
#define COLD_START_LIBVIRT_MS  1000


bool cold_start_listens(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	if (!path || strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	rc = rc == 0 || (errno != ENOENT && errno != ECONNREFUSED);
	close(fd);
	return rc;
}

static const char *libvirt_uri(const struct agent *a)
{
	return a->cfg.restore.libvirt_uri ? a->cfg.restore.libvirt_uri : VIRT_DEFAULT_URI;
}

int cold_start_vm_here(const struct agent *a)
{
	static int last_error;
	const char *domain = a->cfg.file.vm_domain;
	int rc;

	if (!domain)
		return cold_start_listens(a->cfg.file.vm_qmp);
	rc = virt_domain_active_within(libvirt_uri(a), domain, COLD_START_LIBVIRT_MS);
	/* asked every few seconds while waiting: say it once per change */
	if (rc < 0 && rc != last_error)
		log_warn("cannot tell whether libvirt domain %s runs here (libvirt at %s: %s): "
			 "taken as running, so this host neither restores it nor offers "
			 "itself as empty", domain, libvirt_uri(a), strerror(-rc));
	else if (rc >= 0 && last_error)
		log_info("libvirt at %s answers again", libvirt_uri(a));
	last_error = rc < 0 ? rc : 0;
	return rc;
}


static struct cold_facts own_facts(const struct agent *a)
{
	return (struct cold_facts){
		.host = a->cfg.host->name,
		/* no primary, and no VM of ours on this host either (one started
		 * by hand, or a daemon that took the host for empty) */
		.waiting = !a->primary && (a->state == AGENT_WAITING || a->state == AGENT_FAULT) &&
			   cold_start_vm_here(a) == 0,
		.replica = a->replica_known,
		/* one a VM ran on from is behind what clients saw */
		.restored = a->replica_known && replica_was_restored(a->cfg.state_dir),
		.ready = a->takeover_ready && a->state == AGENT_READY,
		.generation = a->replica_generation,
		.epoch = a->replica_epoch,
	};
}

/* ---- asking ---- */

static void ask_done(struct agent *a)
{
	peer_link_close(&a->cold.link);
}

/* No answer: a takeover waiting for one hears why (cold start just asks
 * again later). */
static void ask_failed(struct agent *a, const char *why)
{
	ask_done(a);
	a->cold.asking = 0; /* a round starts again at the first host */
	if (a->takeover_fd >= 0)
		agent_takeover_peer_answer(a, NULL, why);
}

static void on_ask_open(struct peer_link *l)
{
	struct agent *a = l->data;
	struct cold_facts f = own_facts(a);
	char *q;
	struct iovec iov;

	if (a->takeover_fd >= 0 && a->parked_valid) {
		/* resuming our parked QEMU uses up the other host's copy of it */
		f.claim = true;
		f.claim_generation = a->parked.generation;
		f.claim_epoch = a->parked.epoch;
	}
	q = cold_facts_json(&f, agent_state_name(a->state));
	iov = (struct iovec){ .iov_base = q, .iov_len = q ? strlen(q) : 0 };
	if (!q || peer_link_push(l, FRAME_PEER_QUERY, 0, &iov, 1, q, NULL))
		ask_failed(a, "out of memory");
}

/* Every other host said, in this round, that this one wins: restore. */
static void won(struct agent *a, const struct cold_facts *us, const char *answer)
{
	char why[300];

	snprintf(why, sizeof(why), "no host runs the VM and this host's replica (generation "
		 "%llu, epoch %llu) is the newest (%s%s)", (unsigned long long)us->generation,
		 (unsigned long long)us->epoch, a->cold.npeers > 1 ? "last, " : "", answer);
	if (a->cfg.takeover_manual)
		agent_takeover_ready(a, "cold start: %.260s", why); /* the manager promotes */
	else
		agent_restore_cold(a, why);
}

static bool on_ask_frame(struct peer_link *l, const struct frame_hdr *h, const uint8_t *payload)
{
	struct agent *a = l->data;
	struct cold_facts us = own_facts(a), peer;
	struct json_object *owner = NULL;
	char *last = a->cold.last_answer[a->cold.asking];
	char answer[sizeof(a->cold.last_answer[0])];
	bool wins;

	if (h->type != FRAME_PEER_STATE || proto_check_payload(h, payload) ||
	    cold_facts_parse(payload, h->len, &peer, &owner)) {
		log_warn("cold start: the agent of %s answered with a bad %s frame",
			 a->cold.peer[a->cold.asking].text, frame_type_name(h->type));
		ask_failed(a, "a bad answer");
		return false;
	}
	snprintf(answer, sizeof(answer), "host %s: %s, replica %s generation %llu epoch %llu",
		 peer.host, peer.waiting ? "waiting" : "busy",
		 !peer.replica ? "none," : peer.restored ? "(restored from) at" : "at",
		 (unsigned long long)peer.generation, (unsigned long long)peer.epoch);
	if (strcmp(answer, last)) {
		log_info("cold start: %s (ours: generation %llu epoch %llu)", answer,
			 (unsigned long long)us.generation, (unsigned long long)us.epoch);
		snprintf(last, sizeof(a->cold.last_answer[0]), "%s", answer);
	}
	ask_done(a);
	if (a->takeover_fd >= 0) {
		agent_takeover_peer_answer(a, &peer, NULL);
		json_object_put(owner);
		return false;
	}
	wins = cold_start_wins(&us, &peer);
	json_object_put(owner);
	if (!wins) {
		a->cold.asking = 0; /* a round starts again at the first host */
		return false;
	}
	if (++a->cold.asking < a->cold.npeers) {
		/* the next host at once: the round's answers must be fresh */
		ev_timer_stop(a->loop, &a->cold.timer);
		ev_timer_set(&a->cold.timer, 0.01, COLD_START_ASK_S);
		ev_timer_start(a->loop, &a->cold.timer);
		return false;
	}
	a->cold.asking = 0;
	won(a, &us, answer);
	return false;
}

static void on_ask_error(struct peer_link *l, int err, const char *why)
{
	struct agent *a = l->data;

	/* Nobody there, or not an agent: it may run the VM. Ask again. */
	log_debug("cold start: %s: %s", a->cold.peer[a->cold.asking].text, why);
	ask_failed(a, why);
}

static const struct peer_link_ops ask_ops = {
	.on_open = on_ask_open,
	.on_frame = on_ask_frame,
	.on_error = on_ask_error,
};

/* Only a host that could restore asks: an agent with no primary, a
 * replica, and one of this boot (a replica of an earlier boot is the
 * operator's, see --after-host-restart). */
static bool may_ask(struct agent *a)
{
	char err[600];

	if (a->primary || a->state != AGENT_WAITING || !a->replica_known ||
	    replica_was_restored(a->cfg.state_dir))
		return false;
	if (!a->cfg.after_host_restart &&
	    replica_check_host_restart(a->cfg.state_dir, err, sizeof(err))) {
		if (!a->cold.refused_logged)
			log_warn("cold start: this host's replica is not restored automatically: %s",
				 err);
		a->cold.refused_logged = true;
		return false;
	}
	return true;
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;
	int rc;

	if (a->cold.link.state != PEER_LINK_IDLE)
		return;
	if (!may_ask(a)) {
		a->cold.asking = 0; /* the answers so far were for another state */
		return;
	}
	peer_link_init(&a->cold.link, loop, &a->sec, &ask_ops, a);
	rc = peer_link_connect(&a->cold.link, &a->cold.peer[a->cold.asking],
			       COLD_START_DEADLINE_MS);
	if (rc) {
		log_debug("cold start: cannot connect to %s: %s",
			  a->cold.peer[a->cold.asking].text, strerror(-rc));
		a->cold.asking = 0;
	}
}

int cold_start_ask_now(struct agent *a)
{
	int rc;

	if (!a->cold.enabled)
		return -1;
	peer_link_close(&a->cold.link);
	peer_link_init(&a->cold.link, a->loop, &a->sec, &ask_ops, a);
	a->cold.asking = 0;
	rc = peer_link_connect(&a->cold.link, &a->cold.peer[0], COLD_START_DEADLINE_MS);
	if (rc)
		log_warn("takeover: cannot connect to the other host %s: %s",
			 a->cold.peer[0].text, strerror(-rc));
	return rc ? -1 : 0;
}

void cold_start_init(struct agent *a)
{
	const struct pair_config *pc = &a->cfg.file;
	char err[256];

	a->cold.enabled = false;
	a->cold.npeers = a->cold.asking = 0;
	peer_link_init(&a->cold.link, a->loop, &a->sec, &ask_ops, a);
	if (!a->cfg.host)
		return;
	for (int h = 0; h < pc->nhosts; h++) {
		if (&pc->hosts[h] == a->cfg.host)
			continue;
		/* all or none: a host left out could hold the newer replica */
		if (netaddr_parse(pc->hosts[h].address, &a->cold.peer[a->cold.npeers++], err,
				  sizeof(err))) {
			log_warn("cold start: [host %s] address: %s; this host never restores "
				 "the VM by itself", pc->hosts[h].name, err);
			return;
		}
	}
	if (!a->cold.npeers)
		return;
	ev_timer_init(&a->cold.timer, on_timer, 1.0, COLD_START_ASK_S);
	a->cold.timer.data = a;
	ev_timer_start(a->loop, &a->cold.timer);
	a->cold.enabled = true;
}

void cold_start_stop(struct agent *a)
{
	if (!a->cold.enabled)
		return;
	ev_timer_stop(a->loop, &a->cold.timer);
	ask_failed(a, "the agent stopped asking");
	a->cold.enabled = false;
}

/* ---- answering ---- */

void cold_start_answer(struct agent *a, struct peer_link *l, const struct frame_hdr *h,
		       const uint8_t *payload)
{
	struct cold_facts f, q;
	struct json_object *owner = NULL;
	char *text;
	struct iovec iov;

	if (!a->cfg.host || proto_check_payload(h, payload) ||
	    cold_facts_parse(payload, h->len, &q, &owner)) {
		peer_link_close(l);
		return;
	}
	f = own_facts(a);
	f.granted = q.claim && agent_ready_give_up(a, q.host, q.claim_generation, q.claim_epoch);
	json_object_put(owner);
	text = cold_facts_json(&f, agent_state_name(a->state));
	if (!text) {
		peer_link_close(l);
		return;
	}
	iov = (struct iovec){ .iov_base = text, .iov_len = strlen(text) };
	if (peer_link_push(l, FRAME_PEER_STATE, 0, &iov, 1, text, NULL)) {
		peer_link_close(l);
		return;
	}
	peer_link_close_when_sent(l);
}
