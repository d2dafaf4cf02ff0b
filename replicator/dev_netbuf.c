/* Checkpoint device: the net buffer (output commit). The VM's NIC backend
 * is a datagram socket that this device owns (-netdev dgram, or -netdev
 * socket,udp= as libvirt's <interface type='udp'> makes it): every frame
 * the VM sends lands here, waits in a netbuf until the backup has
 * acknowledged the epoch that produced it, and goes out through a port
 * (TAP or host interface). Inbound frames go to the VM at once.
 * At the barrier, with the VM stopped, the socket is drained completely
 * before the epoch is sealed, so no frame of epoch N+1 is counted into N. */
#include "clock.h"
#include "ckpt_device.h"
#include "frame_kind.h"
#include "log.h"
#include "netbuf.h"
#include "port.h"
#include "qemu_opts.h"
#include "qmp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SOCKET_BUFFER_BYTES (4 << 20)

struct nic {
	struct net_device *dev;
	char id[64];
	int fd;                            /* bound where QEMU sends */
	struct sockaddr_storage qemu;      /* where QEMU listens */
	socklen_t qemu_len;
	char bound_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct port port;
	char port_spec[80];
	struct netbuf nb;
	ev_io from_vm, from_net, to_net;
	uint64_t inbound_frames, inbound_dropped;
};

struct net_device {
	struct ckpt_ctx *cx;
	struct nic nics[REPLICATOR_MAX_NICS];
	int n;
	uint8_t buf[NETBUF_MAX_FRAME + 1];
};

/* --- finding the NICs ------------------------------------------------ */

/* Every backend in `info network` must be one we can own: anything else
 * would put the VM's output on the wire before its checkpoint commits. */
static int check_backends(struct ckpt_ctx *cx)
{
	char *text = NULL, *line, *save = NULL;
	int rc = qmp_hmp(cx->qmp, "info network", &text, 5000);

	if (rc) {
		log_err("cannot list the VM's network backends: %s", qmp_last_error(cx->qmp));
		return rc;
	}
	for (line = strtok_r(text, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
		char id[64], type[32];
		/* " \ n0: index=0,type=dgram,..." */
		if (sscanf(line, " \\ %63[^:]: index=%*d,type=%31[^,]", id, type) != 2)
			continue;
		if (!strcmp(type, "dgram") || (!strcmp(type, "socket") && strstr(line, "udp=")))
			continue;
		log_err("refusing VM %s: its network backend '%s' is of type %s, which the net "
			"buffer cannot hold back, so clients could see output that a failover "
			"takes back; give the NIC -netdev dgram,id=%s,local.type=unix,"
			"local.path=PATH1,remote.type=unix,remote.path=PATH2 and run the "
			"replicator with --net-out %s=tap:NAME or packet:IFACE",
			cx->vm->name, id, type, id, id);
		rc = -EPERM;
		break;
	}
	free(text);
	return rc;
}

static int unix_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)ss;

	if (!path || strlen(path) >= sizeof(sun->sun_path))
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	sun->sun_family = AF_UNIX;
	strcpy(sun->sun_path, path);
	*len = sizeof(*sun);
	return 0;
}

static int inet_sockaddr(const char *host, const char *port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;

	if (!host || !port || getaddrinfo(host, port, &hints, &res))
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* "HOST:PORT" of -netdev socket,udp=...,localaddr=... */
static int hostport_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon = text ? strrchr(text, ':') : NULL;

	if (!colon || (size_t)(colon - text) >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = 0;
	return inet_sockaddr(host, colon + 1, ss, len);
}

/* One side ("local" or "remote") of a -netdev dgram. */
static int dgram_side(const struct qemu_opts *o, const char *side,
		      struct sockaddr_storage *ss, socklen_t *len)
{
	char key[32], key2[32];
	const char *type;

	snprintf(key, sizeof(key), "%s.type", side);
	type = qemu_opts_get(o, key);
	if (type && !strcmp(type, "unix")) {
		snprintf(key, sizeof(key), "%s.path", side);
		return unix_addr(qemu_opts_get(o, key), ss, len);
	}
	if (type && !strcmp(type, "inet")) {
		snprintf(key, sizeof(key), "%s.host", side);
		snprintf(key2, sizeof(key2), "%s.port", side);
		return inet_sockaddr(qemu_opts_get(o, key), qemu_opts_get(o, key2), ss, len);
	}
	return -EINVAL;
}

/* Where we bind (QEMU's "remote") and where QEMU listens (its "local"). */
static int nic_addresses(const struct qemu_opts *o, struct sockaddr_storage *ours,
			 socklen_t *ours_len, struct nic *nic)
{
	const char *type = qemu_opts_first_bare(o);

	if (type && !strcmp(type, "dgram"))
		return dgram_side(o, "remote", ours, ours_len) ?:
		       dgram_side(o, "local", &nic->qemu, &nic->qemu_len);
	if (type && !strcmp(type, "socket") && qemu_opts_get(o, "udp"))
		return hostport_addr(qemu_opts_get(o, "udp"), ours, ours_len) ?:
		       hostport_addr(qemu_opts_get(o, "localaddr"), &nic->qemu, &nic->qemu_len);
	return -ENOENT; /* not one of ours: check_backends judged it */
}

static const char *port_spec_for(const struct replicator_config *cfg, const char *id, int nnics)
{
	for (int i = 0; i < cfg->n_net_out; i++)
		if (!strcmp(cfg->net_out[i].netdev, id))
			return cfg->net_out[i].spec;
	/* One NIC, one --net-out without an id: they belong together. */
	if (nnics == 1 && cfg->n_net_out == 1 && !cfg->net_out[0].netdev[0])
		return cfg->net_out[0].spec;
	return NULL;
}

/* --- the data path ----------------------------------------------------- */

static int send_to_port(void *opaque, const uint8_t *frame, size_t len)
{
	struct nic *nic = opaque;
	int rc = port_send(&nic->port, frame, len);

	if (rc == -EAGAIN && !ev_is_active(&nic->to_net))
		ev_io_start(nic->dev->cx->loop, &nic->to_net);
	else if (rc < 0 && rc != -EAGAIN)
		log_warn("%s: frame of %zu bytes dropped: %s on %s", nic->id, len,
			 strerror(-rc), nic->port_spec);
	return rc;
}

/* Read what the VM sent; stop at the cap (the epoch then ends early) unless
 * draining at the barrier. Outside the barrier a burst is taken in slices,
 * so that acks and heartbeats are not starved by a chatty VM. */
static void read_from_vm(struct nic *nic, bool drain)
{
	struct net_device *d = nic->dev;

	for (int i = 0; drain || i < 256; i++) {
		ssize_t n;
		int rc;

		if (!drain && netbuf_full(&nic->nb)) {
			ev_io_stop(d->cx->loop, &nic->from_vm);
			if (nic->nb.held_frames)
				epoch_request_early(d->cx, "net buffer full");
			return;
		}
		n = recv(nic->fd, d->buf, sizeof(d->buf), MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0)
			return; /* EAGAIN: drained */
		rc = netbuf_push(&nic->nb, d->buf, (size_t)n, mono_ms());
		if (!rc && nic->nb.protected && !drain)
			epoch_output_waiting(d->cx, !frame_is_bare_tcp_ack(d->buf, (size_t)n));
		if (rc == -EMSGSIZE || rc == -EINVAL)
			log_warn("%s: %s frame of %zd bytes from the VM dropped", nic->id,
				 rc == -EMSGSIZE ? "oversized" : "malformed", n);
		else if (rc)
			log_err("%s: frame from the VM dropped: %s", nic->id, strerror(-rc));
	}
}

static void on_from_vm(struct ev_loop *loop, ev_io *w, int revents)
{
	read_from_vm(w->data, false);
}

/* Inbound traffic goes to the VM at once: it does not depend on the VM's
 * state, and a frame the VM loses in a failover is one TCP sends again. */
static void on_from_net(struct ev_loop *loop, ev_io *w, int revents)
{
	struct nic *nic = w->data;
	struct net_device *d = nic->dev;

	for (int i = 0; i < 256; i++) {
		ssize_t n = port_recv(&nic->port, d->buf, sizeof(d->buf));
		if (n == 0)
			return;
		if (n < 0) {
			nic->inbound_dropped++;
			if (n != -EMSGSIZE)
				return;
			continue;
		}
		if (send(nic->fd, d->buf, (size_t)n, MSG_DONTWAIT) < 0)
			nic->inbound_dropped++;
		else
			nic->inbound_frames++;
	}
}

static void resume_reading(struct nic *nic)
{
	if (!netbuf_full(&nic->nb) && !ev_is_active(&nic->from_vm))
		ev_io_start(nic->dev->cx->loop, &nic->from_vm);
}

static void on_to_net(struct ev_loop *loop, ev_io *w, int revents)
{
	struct nic *nic = w->data;

	if (netbuf_flush(&nic->nb, mono_ms()))
		ev_io_stop(loop, w);
	resume_reading(nic);
}

/* --- setup ------------------------------------------------------------- */

/* Our end of the VM's datagram socket: bound where QEMU sends, and
 * connected to QEMU's own end, so that the kernel drops datagrams from
 * anyone else. Unconnected, any local user could send "the VM's" frames
 * out through the port, as root. */
static int bind_vm_side(struct nic *nic, const struct sockaddr_storage *ours, socklen_t len)
{
	int size = SOCKET_BUFFER_BYTES;
	int fd = socket(ours->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (ours->ss_family == AF_UNIX) {
		struct stat st;

		/* A socket file left by an earlier replicator of this VM; the
		 * path comes from QEMU's command line, so nothing but a socket
		 * is removed (bind then fails, and says so). */
		snprintf(nic->bound_path, sizeof(nic->bound_path), "%s",
			 ((const struct sockaddr_un *)ours)->sun_path);
		if (!lstat(nic->bound_path, &st) && S_ISSOCK(st.st_mode))
			unlink(nic->bound_path);
	}
	/* Room for a whole epoch of output while the VM is stopped. */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	if (bind(fd, (const struct sockaddr *)ours, len) < 0) {
		int rc = -errno;
		close(fd);
		nic->bound_path[0] = 0;
		return rc;
	}
	if (connect(fd, (const struct sockaddr *)&nic->qemu, nic->qemu_len) < 0) {
		int rc = -errno;
		close(fd);
		if (nic->bound_path[0])
			unlink(nic->bound_path); /* ours: bound just now */
		nic->bound_path[0] = 0;
		return rc;
	}
	nic->fd = fd;
	return 0;
}

static int setup_nic(struct net_device *d, const char *id, const struct qemu_opts *o, int nnics)
{
	struct ckpt_ctx *cx = d->cx;
	struct nic *nic = &d->nics[d->n];
	struct sockaddr_storage ours;
	socklen_t ours_len = 0;
	const char *spec = port_spec_for(cx->cfg, id, nnics);
	char err[200];
	int rc;

	memset(nic, 0, sizeof(*nic));
	nic->dev = d;
	nic->fd = -1;
	nic->port.fd = -1;
	snprintf(nic->id, sizeof(nic->id), "%s", id);
	rc = nic_addresses(o, &ours, &ours_len, nic);
	if (rc == -ENOENT)
		return 0;
	if (rc) {
		log_err("netdev %s: cannot make out its socket addresses", id);
		return -EINVAL;
	}
	if (!spec) {
		log_err("refusing VM %s: netdev %s is a datagram socket the net buffer must own; "
			"say where its frames go with --net-out %s=tap:NAME or --net-out %s=packet:IFACE",
			cx->vm->name, id, id, id);
		return -EPERM;
	}
	snprintf(nic->port_spec, sizeof(nic->port_spec), "%s", spec);
	if (port_parse(spec, &nic->port, err, sizeof(err)) || port_open(&nic->port, err, sizeof(err))) {
		log_err("netdev %s: %s", id, err);
		return -EINVAL;
	}
	rc = bind_vm_side(nic, &ours, ours_len);
	if (rc) {
		log_err("netdev %s: cannot bind the VM's output socket, or connect it to QEMU's "
			"end: %s", id, strerror(-rc));
		port_close(&nic->port);
		return rc;
	}
	netbuf_init(&nic->nb, cx->cfg->net_cap_bytes, send_to_port, nic);
	ev_io_init(&nic->from_vm, on_from_vm, nic->fd, EV_READ);
	ev_io_init(&nic->from_net, on_from_net, nic->port.fd, EV_READ);
	ev_io_init(&nic->to_net, on_to_net, nic->port.fd, EV_WRITE);
	nic->from_vm.data = nic->from_net.data = nic->to_net.data = nic;
	ev_io_start(cx->loop, &nic->from_vm);
	ev_io_start(cx->loop, &nic->from_net);
	d->n++;
	log_info("netdev %s: output held for its checkpoint, then out through %s%s", id, spec,
		 cx->cfg->no_output_commit ? " (OUTPUT COMMIT OFF: test mode)" : "");
	return 0;
}

static int count_netdevs(const struct vm_info *vm)
{
	int n = 0;

	for (int i = 1; i + 1 < vm->argc; i++)
		if (!strcmp(vm->argv[i], "-netdev") || !strcmp(vm->argv[i], "--netdev"))
			n++;
	return n;
}

static int netbuf_setup(struct ckpt_ctx *cx, void **state)
{
	struct net_device *d = calloc(1, sizeof(*d));
	int nnics = count_netdevs(cx->vm), rc;

	if (!d)
		return -ENOMEM;
	*state = d;
	d->cx = cx;
	rc = check_backends(cx);
	for (int i = 1; !rc && i + 1 < cx->vm->argc; i++) {
		struct qemu_opts o;
		const char *id;
		if (strcmp(cx->vm->argv[i], "-netdev") && strcmp(cx->vm->argv[i], "--netdev"))
			continue;
		if (qemu_opts_parse_any(cx->vm->argv[i + 1], &o))
			return -EINVAL;
		id = qemu_opts_get(&o, "id");
		if (!id) {
			rc = -EINVAL;
		} else if (d->n == REPLICATOR_MAX_NICS) {
			log_err("refusing VM %s: more than %d NICs", cx->vm->name, REPLICATOR_MAX_NICS);
			rc = -EPERM;
		} else {
			rc = setup_nic(d, id, &o, nnics);
		}
		qemu_opts_free(&o);
	}
	if (!rc && cx->cfg->n_net_out > d->n)
		log_warn("%d --net-out given, but the VM has %d NIC(s) on a datagram socket",
			 cx->cfg->n_net_out, d->n);
	return rc;
}

static void netbuf_teardown(void *state)
{
	struct net_device *d = state;

	if (!d)
		return;
	for (int i = 0; i < d->n; i++) {
		struct nic *nic = &d->nics[i];
		ev_io_stop(d->cx->loop, &nic->from_vm);
		ev_io_stop(d->cx->loop, &nic->from_net);
		ev_io_stop(d->cx->loop, &nic->to_net);
		/* A detach released everything first (protect off). What is still
		 * held belongs to epochs that never committed: QEMU died, and the
		 * restored VM will send it again from its checkpoint. */
		if (nic->nb.held_frames)
			log_info("netdev %s: %zu frames of uncommitted epochs discarded", nic->id,
				 nic->nb.held_frames);
		netbuf_free(&nic->nb);
		close(nic->fd);
		if (nic->bound_path[0])
			unlink(nic->bound_path);
		port_close(&nic->port);
	}
	free(d);
}

/* --- the checkpoint hooks ------------------------------------------------ */

static int netbuf_postsuspend(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct net_device *d = state;

	for (int i = 0; i < d->n; i++) {
		read_from_vm(&d->nics[i], true);
		netbuf_seal(&d->nics[i].nb, t->id);
	}
	return 0;
}

static void netbuf_commit(void *state, struct ckpt_ctx *cx, uint64_t epoch)
{
	struct net_device *d = state;

	for (int i = 0; i < d->n; i++) {
		struct nic *nic = &d->nics[i];
		if (!netbuf_release(&nic->nb, epoch, mono_ms()) && !ev_is_active(&nic->to_net))
			ev_io_start(cx->loop, &nic->to_net);
		resume_reading(nic);
	}
}

static void netbuf_protect(void *state, struct ckpt_ctx *cx, bool on, uint64_t next_epoch)
{
	struct net_device *d = state;

	if (cx->cfg->no_output_commit)
		on = false;
	for (int i = 0; i < d->n; i++) {
		struct nic *nic = &d->nics[i];
		if (nic->nb.protected != on)
			log_info("netdev %s: output %s", nic->id, on ?
				 "now waits for each checkpoint" : "goes out at once (unprotected)");
		netbuf_set_protected(&nic->nb, on, next_epoch, mono_ms());
		resume_reading(nic);
	}
}

static void netbuf_status(void *state, struct json_object *out)
{
	struct net_device *d = state;
	struct json_object *arr = json_object_new_array();

	for (int i = 0; i < d->n; i++) {
		const struct nic *nic = &d->nics[i];
		const struct netbuf_stats *st = &nic->nb.st;
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "netdev", json_object_new_string(nic->id));
		json_object_object_add(o, "port", json_object_new_string(nic->port_spec));
		json_object_object_add(o, "output_commit", json_object_new_boolean(nic->nb.protected));
		json_object_object_add(o, "frames_held", json_object_new_uint64(nic->nb.held_frames));
		json_object_object_add(o, "bytes_held", json_object_new_uint64(nic->nb.held_bytes));
		json_object_object_add(o, "frames_queued", json_object_new_uint64(nic->nb.frames));
		json_object_object_add(o, "high_water_bytes", json_object_new_uint64(st->high_water_bytes));
		json_object_object_add(o, "frames_out", json_object_new_uint64(st->frames_out));
		json_object_object_add(o, "bytes_out", json_object_new_uint64(st->bytes_out));
		json_object_object_add(o, "delay_p50_ms", json_object_new_double(ring_quantile(&st->delay_ms, 0.5)));
		json_object_object_add(o, "delay_p99_ms", json_object_new_double(ring_quantile(&st->delay_ms, 0.99)));
		json_object_object_add(o, "dropped_malformed", json_object_new_uint64(st->dropped_malformed));
		json_object_object_add(o, "dropped_oversized", json_object_new_uint64(st->dropped_oversized));
		json_object_object_add(o, "dropped_output", json_object_new_uint64(st->dropped_output));
		json_object_object_add(o, "inbound_frames", json_object_new_uint64(nic->inbound_frames));
		json_object_object_add(o, "inbound_dropped", json_object_new_uint64(nic->inbound_dropped));
		json_object_array_add(arr, o);
	}
	json_object_object_add(out, "net", arr);
}

static void netbuf_reset_stats(void *state)
{
	struct net_device *d = state;

	for (int i = 0; i < d->n; i++)
		netbuf_forget_recent(&d->nics[i].nb);
}

const struct ckpt_device_ops netbuf_device_ops = {
	.name = "net-buffer",
	.setup = netbuf_setup,
	.teardown = netbuf_teardown,
	.postsuspend = netbuf_postsuspend,
	.commit = netbuf_commit,
	.protect = netbuf_protect,
	.status = netbuf_status,
	.reset_stats = netbuf_reset_stats,
};
