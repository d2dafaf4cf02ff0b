/* One replication link, for both daemons: a TCP connection (connected by
 * the primary, accepted by the backup), secured by TLS (link_security.h),
 * carrying frames (proto.h) both ways. Nothing here waits on the network:
 * connect, TLS handshake, reads and writes all run from the daemon's libev
 * loop, which the net buffer shares.
 *
 * A link goes IDLE -> CONNECTING (primary only) -> TLS -> OPEN ->
 * ESTABLISHED. OPEN means the peer is authenticated and frames flow; the
 * daemons exchange HELLO and HELLO_REPLY then, and the one that is
 * satisfied calls peer_link_established(). The whole way from connect (or
 * accept) to ESTABLISHED must end within the deadline given at the start,
 * however slowly the peer trickles bytes, or the link fails with
 * -ETIMEDOUT. */
#ifndef REMUS_PEER_LINK_H
#define REMUS_PEER_LINK_H

#include "frame_queue.h"
#include "link_security.h"
#include "netaddr.h"
#include "proto.h"

#include <ev.h>
#include <stdbool.h>

enum peer_link_state {
	PEER_LINK_IDLE,
	PEER_LINK_CONNECTING,
	PEER_LINK_TLS,
	PEER_LINK_OPEN,
	PEER_LINK_ESTABLISHED,
};

struct peer_link;

struct peer_link_ops {
	/* OPEN: the peer is authenticated (or the link is cleartext); the
	 * primary sends its HELLO now. May be NULL. */
	void (*on_open)(struct peer_link *l);
	/* One whole frame, its payload not yet checked against its CRC (the
	 * callee decides what a corrupt payload means). Return false when the
	 * callee closed or freed the link: it is not touched again. */
	bool (*on_frame)(struct peer_link *l, const struct frame_hdr *h, const uint8_t *payload);
	/* The link cannot go on: err is -EPIPE (peer closed), -ECONNRESET,
	 * -ETIMEDOUT (handshake deadline), -EACCES (authentication failed),
	 * -EBADMSG / -EMSGSIZE / -EPROTONOSUPPORT (unreadable stream: a
	 * header the reader rejected, still in l->reader.hdr), or another
	 * -errno. The link is still open, so the callee may queue and flush a
	 * last frame; it must close (peer_link_close) or free it. */
	void (*on_error)(struct peer_link *l, int err, const char *why);
};

struct peer_link {
	struct ev_loop *loop;
	const struct peer_link_ops *ops;
	const struct link_security *sec;
	void *data;                  /* the owner's */
	int fd;
	enum peer_link_state state;
	bool server;
	bool closing;                /* peer_link_close_when_sent */
	gnutls_session_t tls;
	struct link_io io;
	size_t tls_retry;            /* bytes of a gnutls_record_send to finish */
	int pulse_err;               /* a pulse's send failed: the loop reports this */
	struct frame_reader reader;
	struct frame_queue out;
	ev_io rio, wio;
	ev_timer deadline;
	unsigned deadline_ms;
	/* boot_ms() of the last bytes in and the last frame queued out: a step
	 * of the wall clock (libev's ev_now) is no silence, a suspend is */
	double last_rx_ms, last_tx_ms;
	/* boot_ms() of the last read that found nothing more (0: none yet) */
	double drained_ms;
	/* A peer that sends faster than we handle frames would keep us in one
	 * read callback for seconds: give the loop back after this long. */
	double read_slice_ms;
	/* Until the link is ESTABLISHED (an accepted HELLO), frames larger
	 * than this are refused: an unadmitted peer (cleartext, or a key
	 * holder before its HELLO) does not make us buffer 32 MiB. 0: no
	 * limit but the protocol's. */
	uint32_t unadmitted_max_frame;
	char peer[160];              /* the peer's address, for messages */
	char identity[LINK_IDENTITY_MAX + 8]; /* "psk:NAME" once OPEN; "cleartext" */
	char session[64];            /* "(TLS1.3)-(ECDHE-SECP256R1)-(AES-128-GCM)", for logs */
};

/* Set up an IDLE link (no I/O yet). */
void peer_link_init(struct peer_link *l, struct ev_loop *loop, const struct link_security *sec,
		    const struct peer_link_ops *ops, void *data);
/* Start connecting to a; 0 (progress and failure come as callbacks) or
 * -errno when no socket could even be made. */
int peer_link_connect(struct peer_link *l, const struct netaddr *a, unsigned deadline_ms);
/* Take over an accepted socket; 0 or -errno (fd is closed then). */
int peer_link_accept(struct peer_link *l, int fd, const char *peer, unsigned deadline_ms);
/* The rest of the handshake must end within deadline_ms from now (a
 * step whose length the application knows, such as the HELLO's reply). */
void peer_link_set_deadline(struct peer_link *l, unsigned deadline_ms);
/* The application handshake is done: no deadline any more. */
void peer_link_established(struct peer_link *l);
/* Last words (a refusal): stop reading, close once what is queued is
 * written, or at the handshake deadline. No callback comes after. */
void peer_link_close_when_sent(struct peer_link *l);
/* Back to IDLE: watchers stopped, socket closed, queue dropped. */
void peer_link_close(struct peer_link *l);

/* OPEN or ESTABLISHED: frames can be queued. */
bool peer_link_open(const struct peer_link *l);
bool peer_link_up(const struct peer_link *l); /* ESTABLISHED */
/* Queue a frame (see frame_queue_push); it goes out from the loop. */
int peer_link_push(struct peer_link *l, unsigned type, uint64_t epoch,
		   const struct iovec *iov, int iovcnt, void *owned, uint32_t *crc);
/* Drop the queued frames not begun yet (frame_queue_drop_unsent); one the
 * TLS session holds part of stays. */
void peer_link_drop_unsent(struct peer_link *l);
/* Write what is queued, blocking for at most ms: only for last words (a
 * GOODBYE before exit, HANDOVER_DONE). 1 all written, 0 time ran out,
 * -errno. */
int peer_link_flush_for(struct peer_link *l, int ms);
/* Long work on the loop (a large epoch queued, a large commit): write what
 * the socket takes now, without waiting, so that the peer keeps hearing
 * from us while the loop cannot turn. An error is kept for the loop: its
 * writable watcher reports it (no callback runs from here). */
void peer_link_pulse(struct peer_link *l);
/* Last words, then a clean end: write what is queued, end our side and
 * read (and drop) what the peer still sends until it closes too, all
 * within ms, blocking; then close. Closing with the peer's bytes unread
 * would send a reset, which aborts what the peer has not acknowledged
 * yet: a GOODBYE lost on the way would never be sent again, and the peer
 * would take the reset for our death. 1: the peer read it all and closed,
 * 0: time ran out, -errno. */
int peer_link_finish(struct peer_link *l, int ms);
/* Bytes the peer sent that we have not handled yet (in the socket, or
 * decrypted and waiting in the TLS session). */
size_t peer_link_unread(const struct peer_link *l);

const char *peer_link_state_name(enum peer_link_state s);

#endif
