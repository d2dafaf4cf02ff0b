/* A state directory belongs to one HA pair: DIR/pair.json pins the VM
 * (its UUID, or its name when it has none) and the primary's identity
 * from the link layer (TLS-PSK identity or certificate DN). The first
 * session that commits writes it; a HELLO of another VM or from another
 * peer is refused before anything in the directory changes, so that a
 * second primary (a mistake, or an attacker on the replication network)
 * cannot overwrite the committed replica. Only the operator lifts the pin
 * (remus-agent --forget-pair --state-dir DIR).
 *
 *   {"vm_uuid": "UUID" or null, "vm_name": "NAME", "peer": "ID" or null,
 *    "pinned_at": "YYYY-MM-DDTHH:MM:SSZ"}
 *
 * A null peer (a session without a link identity) pins no peer; the first
 * later session with one that commits adds it. */
#ifndef REMUS_PAIR_H
#define REMUS_PAIR_H

#include <json-c/json.h>
#include <stddef.h>

#define PAIR_FILE "pair.json"

/* The VM's UUID a HELLO names: its "uuid" key, else the argument of
 * QEMU's -uuid in "qemu_argv" (libvirt always passes one); NULL if none.
 * Points into hello. */
const char *pair_hello_uuid(struct json_object *hello);
/* Does the pin in dir (if any) admit this VM and peer? 0 yes (or no pin),
 * -EPERM no, -EINVAL pair.json unreadable or damaged; reason in err.
 * peer NULL or "": no identity. Reads only. */
int pair_check(const char *dir, const char *uuid, const char *name, const char *peer,
	       char *err, size_t errlen);
/* At a commit: write the pin if there is none yet, or add a peer to a pin
 * without one. The check passed before, so an existing pin names this VM.
 * pair.json.tmp (O_EXCL|O_NOFOLLOW), fsync, rename, fsync of dir. 0 or
 * -errno. */
int pair_pin(const char *dir, const char *uuid, const char *name, const char *peer);
/* The operator's reset: remove the pin. 1 removed (what it said in msg),
 * 0 there was none, -errno (msg says why; -EWOULDBLOCK: an agent or a
 * restored VM holds the directory). */
int pair_forget(const char *dir, char *msg, size_t msglen);

#endif
