/* libvirt glue: see virt.h. */
#include "virt.h"
#include "clock.h"
#include "log.h"
#include "procfs.h"
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct virt {
	virConnectPtr conn;
	virDomainPtr dom;
	char *uri;
	char name[256];
	char uuid[VIR_UUID_STRING_BUFLEN];
	char what[300];
	pid_t pid;                  /* QEMU's, once virt_qmp_open found it */
	int event_cb;               /* monitor event callback id, -1 none */
	struct qmp *qmp;            /* events go here; not owned */
	void (*on_event)(void *);
	void *opaque;
	void (*on_close)(void *, const char *why);
	void *close_opaque;
	bool close_registered;
};

/* libvirt prints every error to stderr by default; we log the ones we
 * act on, with context, through virGetLastErrorMessage(). */
static void quiet(void *opaque, virErrorPtr err)
{
}

static const char *why(void)
{
	return virGetLastErrorMessage();
}

/* logged: whether a failure to connect is logged here */
static int connect_logged(const char *uri, struct virt **out, bool logged)
{
	struct virt *v = calloc(1, sizeof(*v));

	*out = v;
	if (!v)
		return -ENOMEM;
	v->event_cb = -1;
	v->uri = strdup(uri);
	if (!v->uri)
		return -ENOMEM;
	virSetErrorFunc(NULL, quiet);
	v->conn = virConnectOpen(uri);
	if (!v->conn) {
		if (logged)
			log_err("cannot connect to libvirt at %s: %s", uri, why());
		return -ECONNREFUSED;
	}
	/* Notice a dead libvirtd within seconds, not at the next call; this
	 * needs our event loop (the agent restores without one). */
	if (virt_events_ready() && virConnectSetKeepAlive(v->conn, 5, 3) < 0)
		log_warn("libvirt at %s: no keepalive: %s", uri, why());
	return 0;
}

static int connect_uri(const char *uri, struct virt **out)
{
	return connect_logged(uri, out, true);
}

static int take_domain(struct virt *v, virDomainPtr dom)
{
	const char *name = virDomainGetName(dom);

	v->dom = dom;
	if (!name || virDomainGetUUIDString(dom, v->uuid) < 0) {
		log_err("libvirt at %s: cannot read the domain's name or UUID: %s", v->uri, why());
		return -EIO;
	}
	snprintf(v->name, sizeof(v->name), "%s", name);
	snprintf(v->what, sizeof(v->what), "libvirt domain %s", v->name);
	return 0;
}

static const char *state_name(int state)
{
	static const char *const names[] = {
		[VIR_DOMAIN_NOSTATE] = "in no state",   [VIR_DOMAIN_RUNNING] = "running",
		[VIR_DOMAIN_BLOCKED] = "blocked",        [VIR_DOMAIN_PAUSED] = "paused",
		[VIR_DOMAIN_SHUTDOWN] = "shutting down", [VIR_DOMAIN_SHUTOFF] = "shut off",
		[VIR_DOMAIN_CRASHED] = "crashed",        [VIR_DOMAIN_PMSUSPENDED] = "suspended by the guest",
	};

	return state >= 0 && state < (int)(sizeof(names) / sizeof(names[0])) && names[state] ?
		       names[state] :
		       "in an unknown state";
}

int virt_open(const char *uri, const char *name, struct virt **out)
{
	virDomainPtr dom;
	int rc = connect_uri(uri, out), state, reason;

	if (rc)
		return rc;
	dom = virDomainLookupByName((*out)->conn, name);
	if (!dom) {
		log_err("libvirt at %s has no domain '%s': %s", uri, name, why());
		return -ENOENT;
	}
	rc = take_domain(*out, dom);
	if (rc)
		return rc;
	if (virDomainGetState(dom, &state, &reason, 0) < 0) {
		log_err("libvirt at %s: cannot read the state of domain %s: %s", uri, name, why());
		return -EIO;
	}
	if (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED) {
		/* "shutting down" is also a domain that libvirt is killing, e.g.
		 * after a guest reset with <on_reboot>destroy</on_reboot>. */
		log_err("libvirt domain %s is %s, not running: start it first (libvirt's "
			"QEMU log for the domain says why it stopped)", name, state_name(state));
		return -ESRCH;
	}
	return 0;
}

/* The domain called name on uri, defined or running, for one question:
 * 1 and *dom (virDomainFree it, then virt_close *v); 0 no such domain;
 * -errno when libvirt cannot tell (logged if logged). *v is always set
 * (virt_close it, NULL or not). */
static int find_domain(const char *uri, const char *name, bool logged, struct virt **v,
		       virDomainPtr *dom)
{
	int rc = connect_logged(uri, v, logged);

	if (rc)
		return rc;
	*dom = virDomainLookupByName((*v)->conn, name);
	if (*dom)
		return 1;
	if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN)
		return 0;
	if (logged)
		log_err("libvirt at %s: cannot look up domain %s: %s", uri, name, why());
	return -EIO;
}

int virt_domain_active(const char *uri, const char *name)
{
	struct virt *v = NULL;
	virDomainPtr dom;
	int rc = find_domain(uri, name, false, &v, &dom);

	if (rc == 1) {
		rc = virDomainIsActive(dom);
		if (rc < 0)
			rc = -EIO;
		virDomainFree(dom);
	}
	virt_close(v);
	return rc;
}

int virt_domain_live_xml(const char *uri, const char *name, char **xml, bool *running)
{
	struct virt *v = NULL;
	virDomainPtr dom;
	int rc = find_domain(uri, name, false, &v, &dom), state, reason;

	*xml = NULL;
	if (rc == 0)
		rc = -ESRCH;
	if (rc == 1) {
		rc = virDomainIsActive(dom);
		if (rc == 1)
			rc = (*xml = virDomainGetXMLDesc(dom, 0)) ? 0 : -EIO;
		else
			rc = rc == 0 ? -ESRCH : -EIO;
		/* after the XML: a domain that stopped meanwhile is not running */
		*running = !rc && virDomainGetState(dom, &state, &reason, 0) == 0 &&
			   state == VIR_DOMAIN_RUNNING;
		virDomainFree(dom);
	}
	virt_close(v);
	return rc;
}

/* One question to libvirt at a time, in a thread of its own, so that a
 * libvirtd that hangs holds that thread and not the caller's loop; the
 * next question waits until it has an answer. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t answered;
	bool asking, done;
	int result;
	char *uri, *name;
} probe = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, 0, NULL, NULL };

/* Under probe.lock, or before the thread starts. */
static void forget_question(void)
{
	free(probe.uri);
	free(probe.name);
	probe.uri = probe.name = NULL;
}

static void *probe_thread(void *unused)
{
	int rc;

	(void)unused;
	rc = virt_domain_active(probe.uri, probe.name);
	pthread_mutex_lock(&probe.lock);
	forget_question();
	probe.result = rc;
	probe.done = true;
	pthread_cond_signal(&probe.answered);
	pthread_mutex_unlock(&probe.lock);
	return NULL;
}

static int start_probe(const char *uri, const char *name)
{
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	probe.uri = strdup(uri);
	probe.name = strdup(name);
	if (!probe.uri || !probe.name) {
		forget_question();
		return -ENOMEM;
	}
	probe.asking = true;
	probe.done = false;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = -pthread_create(&t, &attr, probe_thread, NULL);
	pthread_attr_destroy(&attr);
	if (rc) {
		forget_question();
		probe.asking = false;
	}
	return rc;
}

int virt_domain_active_within(const char *uri, const char *name, unsigned timeout_ms)
{
	struct timespec until = mono_deadline(timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&probe.lock);
	/* the late answer to a question given up on is too old to use */
	if (probe.asking && probe.done)
		probe.asking = false;
	/* one still in flight (its asker gave up) is the same question, of
	 * the daemon's one domain: wait for its answer */
	if (!probe.asking)
		rc = start_probe(uri, name);
	while (!rc && !probe.done)
		rc = pthread_cond_clockwait(&probe.answered, &probe.lock, CLOCK_MONOTONIC, &until);
	if (probe.done) {
		rc = probe.result;
		probe.asking = false;
	} else {
		rc = rc > 0 ? -rc : rc; /* ETIMEDOUT, or start_probe's -errno */
	}
	pthread_mutex_unlock(&probe.lock);
	return rc;
}

int virt_autostart_off(const char *uri, const char *name)
{
	struct virt *v = NULL;
	virDomainPtr dom;
	int rc = find_domain(uri, name, true, &v, &dom), on = 0;

	if (rc != 1)
		goto out;
	if (virDomainGetAutostart(dom, &on) < 0 || (on && virDomainSetAutostart(dom, 0) < 0)) {
		log_err("libvirt at %s: cannot turn autostart of domain %s off: %s", uri, name,
			why());
		rc = -EIO;
	} else {
		rc = on ? 1 : 0;
	}
	/* a managed save (libvirt-guests at shutdown) would start it again
	 * from that old state at the next `virsh start` or boot */
	if (virDomainHasManagedSaveImage(dom, 0) == 1) {
		if (virDomainManagedSaveRemove(dom, 0) < 0) {
			log_err("libvirt at %s: cannot remove the managed save image of domain "
				"%s: %s", uri, name, why());
			rc = -EIO;
		} else {
			log_warn("libvirt at %s: removed a managed save image of domain %s: it "
				 "would start the VM again from an old state", uri, name);
		}
	}
	virDomainFree(dom);
out:
	virt_close(v);
	return rc;
}

int virt_create_paused(const char *uri, const char *xml, bool autodestroy, struct virt **out)
{
	virDomainPtr dom;
	int rc = connect_uri(uri, out);

	if (rc)
		return rc;
	dom = virDomainCreateXML((*out)->conn, xml, VIR_DOMAIN_START_PAUSED |
				 (autodestroy ? VIR_DOMAIN_START_AUTODESTROY : 0));
	if (!dom) {
		log_err("libvirt at %s cannot start the domain: %s", uri, why());
		return -EIO;
	}
	return take_domain(*out, dom);
}

static void on_conn_close(virConnectPtr conn, int reason, void *opaque)
{
	struct virt *v = opaque;
	static const char *const why[] = { "an error", "end of file", "keepalive timeout",
					   "a client request" };

	if (v->on_close)
		v->on_close(v->close_opaque, reason >= 0 && reason < 4 ? why[reason] : "unknown");
}

int virt_on_close(struct virt *v, void (*fn)(void *, const char *why), void *opaque)
{
	v->on_close = fn;
	v->close_opaque = opaque;
	if (virConnectRegisterCloseCallback(v->conn, on_conn_close, v, NULL) < 0) {
		log_warn("libvirt at %s: cannot watch the connection: %s", v->uri, why());
		return -EIO;
	}
	v->close_registered = true;
	return 0;
}

void virt_close(struct virt *v)
{
	if (!v)
		return;
	if (v->close_registered)
		virConnectUnregisterCloseCallback(v->conn, on_conn_close);
	if (v->event_cb >= 0)
		virConnectDomainQemuMonitorEventDeregister(v->conn, v->event_cb);
	if (v->dom)
		virDomainFree(v->dom);
	if (v->conn)
		virConnectClose(v->conn);
	free(v->uri);
	free(v);
}

const char *virt_name(const struct virt *v)
{
	return v->name;
}

const char *virt_uuid(const struct virt *v)
{
	return v->uuid;
}

char *virt_xml(struct virt *v, bool migratable)
{
	char *xml = virDomainGetXMLDesc(v->dom, migratable ? VIR_DOMAIN_XML_MIGRATABLE : 0);

	if (!xml)
		log_err("%s: cannot read its XML: %s", v->what, why());
	return xml;
}

/* Does /proc/PID/cmdline hold "-uuid" followed by uuid? */
static bool cmdline_has_uuid(const char *pid, const char *uuid)
{
	char buf[32768];
	ssize_t n = proc_cmdline((pid_t)atoi(pid), buf, sizeof(buf));

	if (n <= 0)
		return false;
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(buf + off) + 1)
		if (!strcmp(buf + off, "-uuid") && off + 6 < n && !strcmp(buf + off + 6, uuid))
			return true;
	return false;
}

/* The thread id of the domain's first vCPU (QMP query-cpus-fast), -1 if
 * QEMU cannot tell. */
static pid_t first_vcpu_thread(const struct virt *v)
{
	struct json_object *o, *ret, *cpu, *tid;
	char *reply = NULL;
	pid_t pid = -1;

	if (virDomainQemuMonitorCommand(v->dom, "{\"execute\":\"query-cpus-fast\"}", &reply,
					 0) < 0) {
		log_err("%s: query-cpus-fast: %s", v->what, why());
		return -1;
	}
	o = json_tokener_parse(reply);
	if (json_object_object_get_ex(o, "return", &ret) &&
	    json_object_is_type(ret, json_type_array) && json_object_array_length(ret) > 0 &&
	    (cpu = json_object_array_get_idx(ret, 0)) &&
	    json_object_object_get_ex(cpu, "thread-id", &tid) &&
	    json_object_is_type(tid, json_type_int))
		pid = (pid_t)json_object_get_int(tid);
	json_object_put(o);
	free(reply);
	return pid;
}

/* libvirt has no API for the QEMU pid. The process of its first vCPU
 * thread is it (thread ids are unique on the host), if that process
 * carries the domain's UUID on its command line. The UUID alone is not
 * enough: two QEMUs of one domain run side by side during a handover
 * between two libvirts of one machine (the tests' two hosts in network
 * namespaces), and the new one's RAM would be looked for in the old. */
pid_t virt_qemu_pid(const struct virt *v)
{
	pid_t tid = first_vcpu_thread(v), pid = tid > 0 ? proc_tgid(tid) : -1;
	char text[24];

	snprintf(text, sizeof(text), "%d", (int)pid);
	if (pid > 0 && cmdline_has_uuid(text, v->uuid))
		return pid;
	log_err("%s: its QEMU process is not found (vCPU thread %d, process %d)", v->what,
		(int)tid, (int)pid);
	return -1;
}

/* libvirt fails a command at once when the monitor hits EOF, maybe before
 * the dying QEMU is a zombie: give it a moment. A live QEMU costs this
 * wait only on a libvirt-level failure, never on a QMP error reply. */
static bool qemu_goes(pid_t pid)
{
	for (int i = 0; i < 20; i++) {
		if (proc_exited(pid))
			return true;
		usleep(10000);
	}
	return false;
}

static int passthrough(void *ctx, const char *request, const int *fds, unsigned nfds,
		       char **reply, char *whybuf, size_t whylen)
{
	struct virt *v = ctx;
	int r;

	*reply = NULL;
	/* A command to a QEMU that is already dead can wait seconds in
	 * libvirtd while it cleans the domain up: do not send it. */
	if (proc_exited(v->pid)) {
		snprintf(whybuf, whylen, "QEMU (pid %d) has exited", (int)v->pid);
		return -EPIPE;
	}
	if (nfds)
		r = virDomainQemuMonitorCommandWithFiles(v->dom, request, nfds, (int *)fds,
							 NULL, NULL, reply, 0);
	else
		r = virDomainQemuMonitorCommand(v->dom, request, reply, 0);
	if (r < 0 || !*reply) {
		virErrorPtr e = virGetLastError();

		snprintf(whybuf, whylen, "%s", why());
		free(*reply);
		*reply = NULL;
		/* The domain is gone (QEMU died or was destroyed): like EOF on
		 * a QMP socket. Asking QEMU's process too spares the next
		 * command a wait while libvirtd cleans the domain up. */
		if ((e && (e->code == VIR_ERR_NO_DOMAIN || e->code == VIR_ERR_OPERATION_INVALID)) ||
		    qemu_goes(v->pid))
			return -EPIPE;
		return -EIO;
	}
	return 0;
}

static void on_monitor_event(virConnectPtr conn, virDomainPtr dom, const char *event,
			     long long seconds, unsigned int micros, const char *details,
			     void *opaque)
{
	struct virt *v = opaque;

	if (!v->qmp || qmp_push_event(v->qmp, event, details))
		return;
	if (v->on_event)
		v->on_event(v->opaque);
}

int virt_qmp_open(struct virt *v, void (*on_event)(void *), void *opaque,
		  struct qmp **out)
{
	struct qmp_passthrough pt = {
		.command = passthrough, .ctx = v, .what = v->what, .pid = virt_qemu_pid(v),
	};
	int rc = qmp_open_passthrough(&pt, out);

	if (rc)
		return rc;
	v->pid = pt.pid;
	v->qmp = *out;
	v->on_event = on_event;
	v->opaque = opaque;
	if (!on_event)
		return 0;
	v->event_cb = virConnectDomainQemuMonitorEventRegister(v->conn, v->dom, NULL,
							       on_monitor_event, v, NULL, 0);
	if (v->event_cb < 0)
		log_warn("%s: no QMP events from libvirt (%s); a guest shutdown will be "
			 "noticed only at the next checkpoint", v->what, why());
	return 0;
}

int virt_resume(struct virt *v)
{
	if (virDomainResume(v->dom) < 0) {
		log_err("%s: cannot resume: %s", v->what, why());
		return -EIO;
	}
	return 0;
}

int virt_define(struct virt *v, const char *xml)
{
	virDomainPtr d = virDomainDefineXML(v->conn, xml);

	if (!d) {
		log_err("%s: cannot make it persistent: %s", v->what, why());
		return -EIO;
	}
	virDomainFree(d);
	return 0;
}

int virt_destroy(struct virt *v)
{
	if (!v->dom)
		return -ENOENT;
	if (virDomainDestroy(v->dom) < 0) {
		log_err("%s: cannot destroy: %s", v->what, why());
		return -EIO;
	}
	return 0;
}
