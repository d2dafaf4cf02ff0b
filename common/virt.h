/* libvirt glue shared by the replicator (attach to a domain) and the agent
 * (restore into a domain): connection, domain lookup, the QMP passthrough
 * (libvirt-qemu's monitor command API, with its events), and finding the
 * domain's QEMU process. Errors are logged with libvirt's message. */
#ifndef REMUS_VIRT_H
#define REMUS_VIRT_H

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>

struct qmp;
struct virt;

/* The libvirt of a daemon given none: the host's system instance. */
#define VIRT_DEFAULT_URI "qemu:///system"

/* Run libvirt's event hooks on this loop (virt_events.c). Once per
 * process, before the first virt_connect. */
void virt_events_init(struct ev_loop *loop);
bool virt_events_ready(void);

/* Connect to uri and look up the domain called name (must be running). */
int virt_open(const char *uri, const char *name, struct virt **out);
/* Whether a QEMU of the domain called name runs on uri (libvirt counts it
 * active, in whatever state): 1 yes; 0 no (no such domain there, or shut
 * off); -errno when libvirt cannot tell (not logged: the caller says it). */
int virt_domain_active(const char *uri, const char *name);
/* virt_domain_active, asked in a thread: a libvirtd that hangs costs the
 * caller (an event loop) timeout_ms, then -ETIMEDOUT; the question stays
 * in flight, and the next call waits for its answer. */
int virt_domain_active_within(const char *uri, const char *name, unsigned timeout_ms);
/* The live XML of the active domain called name on uri: 0, *xml (free
 * it) and whether it still runs (not paused or stopping); -ESRCH not active
 * or no such domain; -errno when libvirt cannot tell (not logged). No
 * timeout: for a moment when libvirt has just answered. */
int virt_domain_live_xml(const char *uri, const char *name, char **xml, bool *running);
/* Keep libvirt from starting the domain called name on uri by itself:
 * turn its autostart off, remove a managed save image (said in the log).
 * 1 autostart was on, 0 it was off or there is no such domain, -errno
 * (logged). */
int virt_autostart_off(const char *uri, const char *name);
/* Start xml as a new transient domain, paused, on uri. autodestroy:
 * libvirt destroys it when this connection closes (virt_close, or this
 * process dying): for a throwaway clone that must not outlive its test. */
int virt_create_paused(const char *uri, const char *xml, bool autodestroy, struct virt **out);
void virt_close(struct virt *v);

const char *virt_name(const struct virt *v);
const char *virt_uuid(const struct virt *v);
/* The domain's XML; migratable: without what only this host knows
 * (VIR_DOMAIN_XML_MIGRATABLE). malloc'd, NULL on error (logged). */
char *virt_xml(struct virt *v, bool migratable);
/* QEMU's pid: the process of its first vCPU thread, which carries the
 * domain's -uuid. -1 if none (logged). */
pid_t virt_qemu_pid(const struct virt *v);
/* A QMP client over the passthrough; QEMU's events are pushed into it and
 * then on_event(opaque) is called (e.g. to run qmp_read_events). With
 * on_event NULL, no events (they need virt_events_init). */
int virt_qmp_open(struct virt *v, void (*on_event)(void *), void *opaque,
		  struct qmp **out);
/* fn(opaque, why) when the connection to libvirt breaks (libvirtd
 * restarted or died): no command reaches QEMU any more. Needs the events. */
int virt_on_close(struct virt *v, void (*fn)(void *, const char *why), void *opaque);
/* Let the paused domain run (after an incoming checkpoint). */
int virt_resume(struct virt *v);
/* Make the running domain persistent with this XML (virDomainDefineXML). */
int virt_define(struct virt *v, const char *xml);
/* Stop the domain at once (virDomainDestroy). */
int virt_destroy(struct virt *v);

#endif
