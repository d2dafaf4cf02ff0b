#include "peer_link.h"

#include "clock.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Plaintext per TLS record: the protocol's maximum. Small frame pieces are
 * gathered up to this, so a 32-byte header does not cost a record. */
#define TLS_CHUNK 16384
#define CLOSE_LINGER_S 2.0

const char *peer_link_state_name(enum peer_link_state s)
{
	static const char *const names[] = {
		[PEER_LINK_IDLE] = "idle", [PEER_LINK_CONNECTING] = "connecting",
		[PEER_LINK_TLS] = "TLS handshake", [PEER_LINK_OPEN] = "HELLO exchange",
		[PEER_LINK_ESTABLISHED] = "established",
	};
	return s <= PEER_LINK_ESTABLISHED ? names[s] : "?";
}

bool peer_link_open(const struct peer_link *l)
{
	return l->state >= PEER_LINK_OPEN;
}

bool peer_link_up(const struct peer_link *l)
{
	return l->state == PEER_LINK_ESTABLISHED;
}

static void fail(struct peer_link *l, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct peer_link *l, int err, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	l->ops->on_error(l, err, why);
}

/* -errno for a GnuTLS error on an established session. A record that does
 * not decrypt is an unreadable stream, as a bad frame header is. */
static int tls_errno(ssize_t rc)
{
	switch (rc) {
	case GNUTLS_E_AGAIN:
	case GNUTLS_E_INTERRUPTED:
		return -EAGAIN;
	case GNUTLS_E_PREMATURE_TERMINATION:
		return -EPIPE; /* TCP closed without close_notify: a lost peer */
	case GNUTLS_E_PUSH_ERROR:
	case GNUTLS_E_PULL_ERROR:
		return -ECONNRESET;
	default:
		return -EBADMSG;
	}
}

static ssize_t tls_recv(void *ctx, void *buf, size_t len)
{
	struct peer_link *l = ctx;
	ssize_t n = gnutls_record_recv(l->tls, buf, len);

	if (n > 0)
		return n;
	return n == 0 ? -EPIPE : tls_errno(n);
}

/* Gather the first pieces of iov into one record's worth. */
static size_t gather(uint8_t *buf, const struct iovec *iov, int iovcnt)
{
	size_t n = 0;

	for (int i = 0; i < iovcnt && n < TLS_CHUNK; i++) {
		size_t take = iov[i].iov_len < TLS_CHUNK - n ? iov[i].iov_len : TLS_CHUNK - n;
		memcpy(buf + n, iov[i].iov_base, take);
		n += take;
	}
	return n;
}

/* GnuTLS wants a send it could not finish repeated, not new data: it has
 * encrypted the record already. So remember its length and repeat it
 * (NULL, 0) before anything else; the queue then consumes that many. */
static ssize_t tls_send(void *ctx, const struct iovec *iov, int iovcnt)
{
	static uint8_t bounce[TLS_CHUNK]; /* one loop per daemon, one caller */
	struct peer_link *l = ctx;
	const void *data;
	size_t len;
	ssize_t n;

	if (l->tls_retry) {
		n = gnutls_record_send(l->tls, NULL, 0);
		if (n < 0)
			return tls_errno(n);
		l->tls_retry = 0;
		return n;
	}
	while (iovcnt && !iov->iov_len) {
		iov++;
		iovcnt--;
	}
	if (!iovcnt)
		return 0;
	if (iov->iov_len >= TLS_CHUNK || iovcnt == 1) {
		data = iov->iov_base;
		len = iov->iov_len < TLS_CHUNK ? iov->iov_len : TLS_CHUNK;
	} else {
		data = bounce;
		len = gather(bounce, iov, iovcnt);
	}
	n = gnutls_record_send(l->tls, data, len);
	if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
		l->tls_retry = len;
	return n < 0 ? tls_errno(n) : n;
}

static void watch(struct peer_link *l, bool want_read, bool want_write)
{
	if (want_read && !ev_is_active(&l->rio))
		ev_io_start(l->loop, &l->rio);
	else if (!want_read && ev_is_active(&l->rio))
		ev_io_stop(l->loop, &l->rio);
	if (want_write && !ev_is_active(&l->wio))
		ev_io_start(l->loop, &l->wio);
	else if (!want_write && ev_is_active(&l->wio))
		ev_io_stop(l->loop, &l->wio);
}

/* Authenticated (or cleartext by the operator's word): frames may flow. */
static void become_open(struct peer_link *l)
{
	l->state = PEER_LINK_OPEN;
	frame_reader_init(&l->reader);
	if (l->tls) {
		const char *user = l->server ? gnutls_psk_server_get_username(l->tls) :
			l->sec->identity;
		char *desc = gnutls_session_get_desc(l->tls);

		snprintf(l->identity, sizeof(l->identity), "psk:%s", user ? user : "?");
		snprintf(l->session, sizeof(l->session), "%s", desc ? desc : "TLS");
		gnutls_free(desc);
		l->io = (struct link_io){ .recv = tls_recv, .send = tls_send, .ctx = l };
	} else {
		snprintf(l->identity, sizeof(l->identity), "cleartext");
		snprintf(l->session, sizeof(l->session), "no TLS");
		link_io_plain(&l->io, &l->fd);
	}
	watch(l, true, l->out.frames > 0);
	if (l->ops->on_open)
		l->ops->on_open(l);
}

static void tls_step(struct peer_link *l)
{
	int rc = gnutls_handshake(l->tls);

	if (rc == GNUTLS_E_SUCCESS) {
		become_open(l);
		return;
	}
	if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(rc)) {
		bool writing = gnutls_record_get_direction(l->tls) == 1;
		watch(l, !writing, writing);
		return;
	}
	/* Say why (one small record, best effort: never waited for), so that
	 * an operator with a mismatched key reads it on the other side. */
	if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED)
		gnutls_alert_send_appropriate(l->tls, rc);
	if (rc == GNUTLS_E_PREMATURE_TERMINATION || rc == GNUTLS_E_PUSH_ERROR ||
	    rc == GNUTLS_E_PULL_ERROR)
		fail(l, -ECONNRESET, "closed during the TLS handshake");
	else if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
		fail(l, -EACCES, "TLS handshake refused by the peer (%s): not the same pair key?",
		     gnutls_alert_get_name(gnutls_alert_get(l->tls)));
	else
		fail(l, -EACCES, "TLS handshake failed (%s): not the same pair key, or not a "
		     "remus peer", gnutls_strerror(rc));
}

static void start_secure(struct peer_link *l)
{
	int rc;

	if (l->sec->cleartext) {
		become_open(l);
		return;
	}
	rc = link_security_session(l->sec, l->server, l->fd, &l->tls);
	if (rc) {
		fail(l, -EIO, "TLS session: %s", gnutls_strerror(rc));
		return;
	}
	l->state = PEER_LINK_TLS;
	tls_step(l);
}

static void connect_done(struct peer_link *l)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr) {
		fail(l, -soerr, "cannot connect: %s", strerror(soerr));
		return;
	}
	start_secure(l);
}

/* Handle the frames that have come in, for at most read_slice_ms if
 * sliced. False when the link failed or the owner closed it meanwhile (not
 * to be touched again). */
static bool read_frames(struct peer_link *l, bool sliced)
{
	double until = mono_ms() + l->read_slice_ms;

	for (;;) {
		int rc;

		/* Any bytes count as a sign of life, not only whole frames;
		 * and time spent handling them (a commit's fsync, an ack that
		 * starts the next checkpoint) is ours, not the peer's silence. */
		ev_now_update(l->loop);
		l->last_rx_ms = boot_ms();
		if (sliced && l->read_slice_ms > 0 && mono_ms() > until) {
			/* Decrypted bytes may wait in the session with the
			 * socket drained: make sure we are called again. */
			if (l->tls && gnutls_record_check_pending(l->tls))
				ev_feed_event(l->loop, &l->rio, EV_READ);
			return true;
		}
		l->reader.max_len = l->state == PEER_LINK_ESTABLISHED ? 0 : l->unadmitted_max_frame;
		rc = frame_reader_read_io(&l->reader, &l->io);
		if (rc == 0) {
			l->drained_ms = boot_ms();
			return true;
		}
		if (rc < 0) {
			fail(l, rc, "%s", rc == -EPIPE ? "connection closed" :
			     rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTONOSUPPORT ?
			     "unreadable stream" : strerror(-rc));
			return false;
		}
		if (!l->ops->on_frame(l, &l->reader.hdr, l->reader.payload) || !peer_link_open(l))
			return false;
	}
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct peer_link *l = w->data;

	if (l->state == PEER_LINK_TLS)
		tls_step(l);
	else if (peer_link_open(l))
		read_frames(l, true);
}

/* Closing with unread input would send a reset that can destroy our last
 * words before the peer reads them: read what is there, then close. */
static void finish_close(struct peer_link *l)
{
	char buf[512];

	shutdown(l->fd, SHUT_WR);
	while (recv(l->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	peer_link_close(l);
}

void peer_link_close_when_sent(struct peer_link *l)
{
	if (!peer_link_open(l)) {
		peer_link_close(l);
		return;
	}
	l->closing = true;
	ev_io_stop(l->loop, &l->rio);
	/* however slowly the peer reads */
	ev_timer_stop(l->loop, &l->deadline);
	ev_timer_set(&l->deadline, CLOSE_LINGER_S, 0);
	ev_timer_start(l->loop, &l->deadline);
	if (frame_queue_flush_io(&l->out, &l->io) != 0)
		finish_close(l);
	else if (!ev_is_active(&l->wio))
		ev_io_start(l->loop, &l->wio);
}

/* The peer's last frames came before it went: read them first, so that a
 * GOODBYE waiting there is a planned close, not a lost peer (a backup
 * would take over from a primary that lives). */
static void send_failed(struct peer_link *l, int rc)
{
	/* what is read now came before the failure, not after */
	double heard = l->last_rx_ms;

	if (!read_frames(l, false))
		return;
	l->last_rx_ms = heard;
	fail(l, rc, "sending failed: %s", strerror(-rc));
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct peer_link *l = w->data;
	int rc;

	if (l->state == PEER_LINK_CONNECTING) {
		connect_done(l);
		return;
	}
	if (l->state == PEER_LINK_TLS) {
		tls_step(l);
		return;
	}
	/* the first error is the one to report: a TLS session that failed
	 * in a pulse answers differently when asked again */
	rc = l->pulse_err ? l->pulse_err : frame_queue_flush_io(&l->out, &l->io);
	l->pulse_err = 0;
	if (l->closing && rc != 0)
		finish_close(l);
	else if (rc == 1)
		ev_io_stop(loop, w);
	else if (rc < 0)
		send_failed(l, rc);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct peer_link *l = w->data;

	if (l->closing) {
		peer_link_close(l);
		return;
	}
	fail(l, -ETIMEDOUT, "no complete handshake within %u ms (stuck in %s)", l->deadline_ms,
	     peer_link_state_name(l->state));
}

void peer_link_init(struct peer_link *l, struct ev_loop *loop, const struct link_security *sec,
		    const struct peer_link_ops *ops, void *data)
{
	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->sec = sec;
	l->ops = ops;
	l->data = data;
	l->fd = -1;
	frame_queue_init(&l->out);
	frame_reader_init(&l->reader);
}

static void start(struct peer_link *l, int fd, enum peer_link_state state, unsigned deadline_ms)
{
	l->fd = fd;
	l->state = state;
	l->tls_retry = 0;
	l->pulse_err = 0;
	l->identity[0] = l->session[0] = '\0';
	frame_queue_init(&l->out);
	frame_reader_init(&l->reader);
	ev_io_init(&l->rio, on_readable, fd, EV_READ);
	ev_io_init(&l->wio, on_writable, fd, EV_WRITE);
	ev_timer_init(&l->deadline, on_deadline, deadline_ms / 1000.0, 0);
	l->rio.data = l->wio.data = l->deadline.data = l;
	l->deadline_ms = deadline_ms;
	ev_timer_start(l->loop, &l->deadline);
	l->last_rx_ms = l->last_tx_ms = boot_ms();
	l->drained_ms = 0;
}

int peer_link_connect(struct peer_link *l, const struct netaddr *a, unsigned deadline_ms)
{
	int fd = netaddr_connect_start(a);

	if (fd < 0)
		return fd;
	l->server = false;
	snprintf(l->peer, sizeof(l->peer), "%s", a->text);
	start(l, fd, PEER_LINK_CONNECTING, deadline_ms);
	ev_io_start(l->loop, &l->wio);
	return 0;
}

int peer_link_accept(struct peer_link *l, int fd, const char *peer, unsigned deadline_ms)
{
	l->server = true;
	snprintf(l->peer, sizeof(l->peer), "%s", peer);
	start(l, fd, PEER_LINK_TLS, deadline_ms);
	start_secure(l);
	return 0;
}

void peer_link_set_deadline(struct peer_link *l, unsigned deadline_ms)
{
	ev_timer_stop(l->loop, &l->deadline);
	ev_timer_set(&l->deadline, deadline_ms / 1000.0, 0);
	l->deadline_ms = deadline_ms;
	ev_timer_start(l->loop, &l->deadline);
}

void peer_link_established(struct peer_link *l)
{
	l->state = PEER_LINK_ESTABLISHED;
	ev_timer_stop(l->loop, &l->deadline);
}

void peer_link_close(struct peer_link *l)
{
	if (l->fd < 0)
		return;
	ev_io_stop(l->loop, &l->rio);
	ev_io_stop(l->loop, &l->wio);
	ev_timer_stop(l->loop, &l->deadline);
	if (l->tls)
		gnutls_deinit(l->tls);
	l->tls = NULL;
	close(l->fd);
	l->fd = -1;
	l->state = PEER_LINK_IDLE;
	l->closing = false;
	l->tls_retry = 0;
	l->pulse_err = 0;
	frame_queue_clear(&l->out);
	frame_reader_free(&l->reader);
}

int peer_link_push(struct peer_link *l, unsigned type, uint64_t epoch,
		   const struct iovec *iov, int iovcnt, void *owned, uint32_t *crc)
{
	int rc;

	if (!peer_link_open(l) || l->closing) {
		free(owned);
		return -ENOTCONN;
	}
	rc = frame_queue_push(&l->out, type, epoch, iov, iovcnt, owned, crc);
	if (rc)
		return rc;
	l->last_tx_ms = boot_ms();
	/* Sending waits for the loop: the caller may queue a whole epoch
	 * first, and the VM is already running again. */
	if (!ev_is_active(&l->wio))
		ev_io_start(l->loop, &l->wio);
	return 0;
}

void peer_link_drop_unsent(struct peer_link *l)
{
	/* a send GnuTLS could not finish has the head's bytes encrypted */
	frame_queue_drop_unsent(&l->out, l->tls_retry > 0);
}

int peer_link_flush_for(struct peer_link *l, int ms)
{
	double deadline = mono_ms() + ms;
	int rc;

	if (!peer_link_open(l))
		return -ENOTCONN;
	while ((rc = frame_queue_flush_io(&l->out, &l->io)) == 0) {
		struct pollfd pfd = { .fd = l->fd, .events = POLLOUT };
		int left = (int)(deadline - mono_ms());
		if (left <= 0)
			break;
		poll(&pfd, 1, left);
	}
	return rc;
}

void peer_link_pulse(struct peer_link *l)
{
	int rc;

	if (!peer_link_open(l) || l->closing || l->pulse_err)
		return;
	rc = frame_queue_flush_io(&l->out, &l->io);
	if (rc < 0) {
		l->pulse_err = rc;
		ev_io_start(l->loop, &l->wio); /* where it is reported */
	}
}

int peer_link_finish(struct peer_link *l, int ms)
{
	double deadline = mono_ms() + ms;
	int rc = peer_link_flush_for(l, ms);
	char buf[4096];

	if (rc == 1) {
		shutdown(l->fd, SHUT_WR);
		rc = 0;
		for (;;) {
			struct pollfd pfd = { .fd = l->fd, .events = POLLIN };
			int left = (int)(deadline - mono_ms()), ready;
			ssize_t n;

			if (left <= 0)
				break;
			/* a hook's SIGCHLD must not cut the wait short */
			ready = poll(&pfd, 1, left);
			if (ready < 0 && errno == EINTR)
				continue;
			if (ready <= 0)
				break;
			n = recv(l->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n == 0)
				rc = 1;
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
		}
	}
	peer_link_close(l);
	return rc;
}

size_t peer_link_unread(const struct peer_link *l)
{
	size_t n = l->fd >= 0 ? fd_unread_bytes(l->fd) : 0;

	if (l->tls)
		n += gnutls_record_check_pending(l->tls);
	return n;
}
