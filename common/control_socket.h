/* A daemon's control socket, remusctl's way in (remus-replicator and
 * remus-agent alike): a unix stream socket where a client writes one
 * command line, reads one JSON reply line, and the connection closes.
 *
 * Root alone may use it, and the members of a control group: the socket is
 * bound under a umask of 077 and then made mode 0600, or 0660 owned by the
 * group, so that it is never open wider even for a moment; and every
 * connection's peer is checked (SO_PEERCRED, SO_PEERGROUPS), so that a
 * socket opened wider by mistake still refuses anyone else. A refusal is
 * logged and answered with {"ok":false,"refused":true,...}.
 *
 * The socket is watched on the daemon's one event loop; commands go to the
 * daemon's handler, which returns the reply. Replies are small and the
 * client waits for them: they are written blocking, with a short send
 * timeout. */
#ifndef REMUS_CONTROL_SOCKET_H
#define REMUS_CONTROL_SOCKET_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* The longest command line read; the rest of a longer one is ignored. */
#define CONTROL_MAX_COMMAND 127

/* One command line from an allowed peer (without its newline): the reply
 * (malloc'd JSON, written and freed by the caller; NULL: no reply, e.g.
 * out of memory). Setting *keep hands the connection fd over to the
 * daemon, which replies (control_reply) and closes it later. */
typedef char *(*control_handler)(void *data, int fd, const char *cmd, bool *keep);

struct control_socket {
	const char *daemon;      /* "replicator", "agent": named in refusals */
	const char *path;        /* the socket; NULL: no control socket */
	const char *group;       /* --control-group; NULL: root alone */
	gid_t gid;               /* group's, (gid_t)-1 without one */
	control_handler handler;
	void *data;
	struct ev_loop *loop;
	ev_io watch;
	int fd;                  /* the listening socket; -1: not open */
};

/* Fill cs; nothing is opened (fd -1). path NULL: the daemon has none, and
 * control_socket_open does nothing. */
void control_socket_init(struct control_socket *cs, const char *daemon, const char *path,
			 const char *group, gid_t gid, control_handler handler, void *data);
/* Bind, restrict and listen, and watch it on loop. 0, or -errno (logged:
 * "cannot listen on control socket PATH: ..."). An old socket at path is
 * replaced. */
int control_socket_open(struct control_socket *cs, struct ev_loop *loop);
/* Stop watching, close and remove the socket (nothing if not open). */
void control_socket_close(struct control_socket *cs);
/* Answer every connection waiting now, without waiting for more: for a
 * daemon about to block its loop (a fence, a restore) or to exit, so that
 * clients that asked meanwhile hear the state it is in. */
void control_socket_serve_pending(struct control_socket *cs);

/* One reply line to a control client (blocking, bounded by a 200 ms send
 * timeout per write). */
void control_reply(int fd, const char *text);

/* The peer of fd may use the socket: root, or a member of cs->group (its
 * primary group or one of its supplementary groups). Otherwise logged
 * ("control socket: refused 'CMD' from uid U (pid P): not root ..."),
 * *uid set (-1 when the peer cannot be told). */
bool control_peer_allowed(const struct control_socket *cs, int fd, const char *cmd, uid_t *uid);
/* The client's refusal line for uid (malloc'd; NULL without memory). */
char *control_refusal(const struct control_socket *cs, uid_t uid);

/* --control-group NAME: needs a --control PATH, and NAME must exist; its
 * gid in *gid ((gid_t)-1 without a group). 0, or -1 after printing
 * "PROG: --control-group ..." on stderr: at start, not at the first
 * remusctl. */
int control_group_resolve(const char *prog, const char *path, const char *group, gid_t *gid);

/* Fields of the daemons' status replies. */
struct json_object;
void json_add_u64(struct json_object *o, const char *key, uint64_t v);
void json_add_double(struct json_object *o, const char *key, double v);

#endif
