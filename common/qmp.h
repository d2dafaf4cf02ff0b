/* A small synchronous QMP client.
 *
 * The replicator talks to QEMU only at the epoch barrier, where every step
 * (stop, save devices, cont) must finish before the next starts, so commands
 * are plain request/reply with a deadline. Events that arrive while waiting
 * for a reply are queued and handed out by qmp_read_events(), which the event
 * loop calls when the socket is readable between barriers.
 *
 * What QEMU 7.2 does on the wire: every message ends with "\r\n" (with
 * -qmp-pretty one message spans several lines; both are read); each reply
 * echoes the command's "id", except the error for a request QEMU could not
 * parse; "quit" is answered after the SHUTDOWN event (so that event ends up
 * queued) and then the connection is reset, which reads as -EPIPE. A second
 * client is accepted but greeted only when the first one leaves: its
 * qmp_connect() times out.
 *
 * Errors: every function returns 0 or a negative errno value; the text of the
 * last error (QEMU's class and desc, or what went wrong locally) is kept in
 * qmp_last_error().
 *   -ETIMEDOUT   no complete reply before the deadline
 *   -EPIPE       QEMU closed the socket (it died or quit)
 *   -EPROTO      the peer sent something that is not QMP (not JSON, no
 *                greeting, a reply with neither "return" nor "error", a line
 *                longer than QMP_MAX_LINE)
 *   -EREMOTEIO   QEMU answered with {"error": ...}
 * After -EPIPE or -EPROTO (or a command cut off half-written by its deadline,
 * -ETIMEDOUT) the connection is unusable: later commands fail the same way
 * at once; close it. After a plain -ETIMEDOUT it stays usable: the late
 * reply is recognised by its id and skipped. timeout_ms < 0 means no deadline.
 */
#ifndef REMUS_QMP_H
#define REMUS_QMP_H

#include <json-c/json.h>
#include <stdbool.h>
#include <sys/types.h>

#define QMP_MAX_LINE (16u << 20)

struct qmp;

/* data is NULL for events without one (STOP, RESUME, ...); it lives only
 * during the call: json_object_get() it to keep it. */
typedef void qmp_event_fn(const char *event, struct json_object *data, void *opaque);

/* Connect to a QMP unix socket, read the greeting and negotiate
 * (qmp_capabilities). */
int qmp_connect(const char *path, int timeout_ms, struct qmp **out);
/* Same over an already connected stream socket (tests use a socketpair).
 * Takes ownership of fd, also on failure. */
int qmp_attach_fd(int fd, int timeout_ms, struct qmp **out);
/* Error text of a failed qmp_connect/qmp_attach_fd (no struct qmp exists then). */
const char *qmp_connect_error(void);

/* Run one command. args may be NULL; it is not consumed. On success, if
 * ret is not NULL, *ret receives the "return" value (caller json_object_put). */
int qmp_execute(struct qmp *q, const char *command, struct json_object *args,
		struct json_object **ret, int timeout_ms);

/* Send one command and return without its reply, for work that may run
 * while the caller's loop goes on (QEMU runs commands in order, so a
 * later qmp_execute still comes after it). The reply is dropped when a
 * later call reads past it; an error in it is logged then. Through the
 * libvirt passthrough it waits, as qmp_execute. timeout_ms bounds the
 * write. args is not consumed. */
int qmp_send(struct qmp *q, const char *command, struct json_object *args, int timeout_ms);

/* qmp_execute for a command whose effect shows as an event: *seen tells
 * whether QEMU sent `event` between the command and its reply. QEMU emits
 * the event of a state change the command makes (STOP for a `stop` that
 * paused a running VM) before the reply, and none when nothing changed, so
 * one round trip says both "done" and "it was me". Events the socket held
 * before the command are queued first and do not count. -ENOTSUP through
 * the libvirt passthrough, whose events come on their own stream. */
int qmp_execute_watch(struct qmp *q, const char *command, struct json_object *args,
		      const char *event, bool *seen, int timeout_ms);

/* Dispatch queued events, then read whatever the socket has without
 * blocking and dispatch the events in it (fn may be NULL to discard them).
 * -EPIPE when QEMU has gone, after the events it sent before going. Late
 * replies to timed-out commands are dropped here. */
int qmp_read_events(struct qmp *q, qmp_event_fn *fn, void *opaque);

/* qom-get of path's property; *ret as for qmp_execute. */
int qmp_qom_get(struct qmp *q, const char *path, const char *property,
		struct json_object **ret, int timeout_ms);

/* Run an HMP command through human-monitor-command; *text (malloc'd)
 * receives its output. Same errors as qmp_execute, and -ENOMEM. */
int qmp_hmp(struct qmp *q, const char *command_line, char **text, int timeout_ms);

/* A QMP peer reached through another channel than a socket: libvirt's
 * monitor passthrough (common/virt.c). command() sends one request (a JSON
 * object's text, with nfds files passed along) and returns the reply's text
 * in *reply (malloc'd), or -errno with the reason in why. There is no
 * socket (qmp_fd() is -1) and no event stream: the owner hands events in
 * with qmp_push_event(), qmp_read_events() dispatches them. libvirt gives
 * no per-command deadline: timeout_ms is not enforced there (libvirt's own
 * job timeout, about 30 s, bounds a command). */
struct qmp_passthrough {
	int (*command)(void *ctx, const char *request, const int *fds, unsigned nfds,
		       char **reply, char *why, size_t whylen);
	void (*close)(void *ctx);   /* at qmp_close; may be NULL */
	void *ctx;
	const char *what;           /* for messages, e.g. "libvirt domain vm1" */
	pid_t pid;                  /* QEMU's, for qmp_peer_pid() */
};
int qmp_open_passthrough(const struct qmp_passthrough *pt, struct qmp **out);
int qmp_push_event(struct qmp *q, const char *event, const char *data_json);
/* qmp_execute, passing fd to QEMU with the command (e.g. getfd): as
 * SCM_RIGHTS on a socket, through libvirt's passthrough otherwise. */
int qmp_execute_with_fd(struct qmp *q, const char *command, struct json_object *args,
			int fd, struct json_object **ret, int timeout_ms);

const char *qmp_last_error(const struct qmp *q);
int qmp_fd(const struct qmp *q);
/* QEMU's pid, from SO_PEERCRED of the unix socket; -1 if unknown. For a
 * socketpair it is the pid of the process that created the pair. */
pid_t qmp_peer_pid(const struct qmp *q);
void qmp_close(struct qmp *q);

#endif
