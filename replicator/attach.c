/* Attach to a running QEMU: find its pid, command line, machine type and
 * the shared file that backs guest RAM, and refuse a VM that cannot be
 * replicated safely, saying how to start it right. */
#include "domain_xml.h"
#include "log.h"
#include "page_hash.h"
#include "procfs.h"
#include "qemu_opts.h"
#include "qmp.h"
#include "replicator.h"
#include "vcpu_load.h"
#include "virt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define QMP_CONNECT_TIMEOUT_MS 5000
#define QMP_QUERY_TIMEOUT_MS   5000

static const char how_to_start[] =
	"start QEMU (under umask 077) with its RAM on a shared file, e.g. "
	"-object memory-backend-file,id=ram0,size=128M,mem-path=/dev/shm/NAME.ram,share=on "
	"-machine memory-backend=ram0";

void vm_info_free(struct vm_info *vm)
{
	free(vm->name);
	free(vm->ram_path);
	free(vm->libvirt_xml);
	free(vm->backend_id);
	free(vm->machine_type);
	for (int i = 0; vm->argv && i < vm->argc; i++)
		free(vm->argv[i]);
	free(vm->argv);
	if (vm->ram_locked)
		close(vm->ram_lock_fd);
	memset(vm, 0, sizeof(*vm));
}

/* qom-get PATH PROPERTY; *out receives the value (caller puts). */
static int qom_get(struct replicator *r, const char *path, const char *prop,
		   struct json_object **out)
{
	return qmp_qom_get(r->qmp, path, prop, out, QMP_QUERY_TIMEOUT_MS);
}

static int qom_get_string(struct replicator *r, const char *path, const char *prop, char **out)
{
	struct json_object *v = NULL;
	int rc = qom_get(r, path, prop, &v);

	if (!rc) {
		*out = strdup(json_object_get_string(v));
		rc = *out ? 0 : -ENOMEM;
	}
	json_object_put(v);
	return rc;
}

static int read_cmdline(struct vm_info *vm)
{
	char buf[65536];
	ssize_t n = proc_cmdline(vm->pid, buf, sizeof(buf));

	if (n < 0)
		return (int)n;
	for (ssize_t i = 0; i < n; i++)
		if (!buf[i])
			vm->argc++;
	vm->argv = calloc((size_t)vm->argc + 1, sizeof(char *));
	if (!vm->argv)
		return -ENOMEM;
	for (int i = 0, off = 0; i < vm->argc; i++) {
		vm->argv[i] = strdup(buf + off);
		if (!vm->argv[i])
			return -ENOMEM;
		off += (int)strlen(buf + off) + 1;
	}
	return 0;
}

/* -name guest=X or -name X; else "vm-PID". */
static int find_name(struct vm_info *vm)
{
	for (int i = 1; i + 1 < vm->argc; i++) {
		struct qemu_opts o;
		const char *n;
		if (strcmp(vm->argv[i], "-name") && strcmp(vm->argv[i], "--name"))
			continue;
		if (qemu_opts_parse(vm->argv[i + 1], &o))
			break;
		n = qemu_opts_get(&o, "guest");
		if (!n)
			n = qemu_opts_first_bare(&o);
		vm->name = n ? strdup(n) : NULL;
		qemu_opts_free(&o);
		if (vm->name)
			return 0;
	}
	if (asprintf(&vm->name, "vm-%d", (int)vm->pid) < 0) {
		vm->name = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* A memfd backend has no path: find QEMU's descriptor for it. */
static int find_memfd(struct vm_info *vm)
{
	char path[PATH_MAX];
	int found = proc_find_memfd(vm->pid, vm->ram_size, path, sizeof(path));

	if (found != 1) {
		log_err("cannot tell which memfd of QEMU (pid %d) holds guest RAM "
			"(%d candidates): pass --ram-file", (int)vm->pid, found < 0 ? 0 : found);
		return found < 0 ? found : -ENOENT;
	}
	free(vm->ram_path);
	vm->ram_path = strdup(path);
	return vm->ram_path ? 0 : -ENOMEM;
}

static bool is_rom_block(const char *name, const char *backend_id)
{
	static const char *const roms[] = { "pc.bios", "isa-bios", "pc.rom" };
	size_t len = strlen(name);

	if (!strcmp(name, backend_id) || !strncmp(name, "/rom@", 5))
		return true;
	for (size_t i = 0; i < sizeof(roms) / sizeof(roms[0]); i++)
		if (!strcmp(name, roms[i]))
			return true;
	return len > 4 && !strcmp(name + len - 4, ".rom");
}

/* Guest-writable RAM outside the backend (VGA vram, say) would come back
 * stale on the backup: refuse it. ROMs are rebuilt by the backup's QEMU. */
static int check_ramblocks(struct replicator *r)
{
	char *text = NULL, *line, *save = NULL;
	int rc = qmp_hmp(r->qmp, "info ramblock", &text, QMP_QUERY_TIMEOUT_MS);

	if (rc) {
		log_err("cannot list the VM's RAM blocks: %s", qmp_last_error(r->qmp));
		return rc;
	}
	for (line = strtok_r(text, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
		char name[256];
		if (sscanf(line, " %255s", name) != 1 || !strcmp(name, "Block"))
			continue;
		if (!is_rom_block(name, r->vm.backend_id)) {
			log_err("refusing VM %s: RAM block '%s' lies outside the shared memory "
				"backend and the guest can write it, so a restored VM would find it "
				"stale; start QEMU without the device that owns it (for VGA: -vga none)",
				r->vm.name, name);
			rc = -EPERM;
			break;
		}
	}
	free(text);
	return rc;
}


/* A path QEMU opened, as seen from here: libvirt may run QEMU in a mount
 * namespace of its own (qemu.conf namespaces), so go through its root. */
static int in_qemu_root(struct vm_info *vm)
{
	char *p;

	if (asprintf(&p, "/proc/%d/root%s", (int)vm->pid, vm->ram_path) < 0)
		return -ENOMEM;
	free(vm->ram_path);
	vm->ram_path = p;
	return 0;
}

static int find_backend(struct replicator *r)
{
	struct vm_info *vm = &r->vm;
	char *path = NULL, objpath[300];
	struct json_object *v = NULL;
	int rc;

	rc = qom_get_string(r, "/machine", "memory-backend", &path);
	if (rc || !path[0]) {
		log_err("refusing VM %s: its RAM is not on a memory backend (%s); %s",
			vm->name, rc ? qmp_last_error(r->qmp) : "none set", how_to_start);
		free(path);
		return -EPERM;
	}
	vm->backend_id = strdup(strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
	snprintf(objpath, sizeof(objpath), "%s", path);
	free(path);
	if (!vm->backend_id)
		return -ENOMEM;
	if (qom_get(r, objpath, "share", &v) || !json_object_get_boolean(v)) {
		json_object_put(v);
		log_err("refusing VM %s: memory backend '%s' is not shared (share=off), so "
			"nothing outside QEMU can read guest RAM; %s", vm->name,
			vm->backend_id, how_to_start);
		return -EPERM;
	}
	json_object_put(v);
	v = NULL;
	rc = qom_get(r, objpath, "size", &v);
	vm->ram_size = rc ? 0 : (uint64_t)json_object_get_int64(v);
	json_object_put(v);
	if (rc || !vm->ram_size || vm->ram_size % PROTO_PAGE_SIZE) {
		log_err("cannot read the size of memory backend '%s'", vm->backend_id);
		return -EPROTO;
	}
	if (r->cfg.ram_file) {
		vm->ram_path = strdup(r->cfg.ram_file);
		return vm->ram_path ? 0 : -ENOMEM;
	}
	if (qom_get_string(r, objpath, "mem-path", &vm->ram_path))
		return find_memfd(vm);
	return r->virt ? in_qemu_root(vm) : 0;
}

/* A memfd backend's path: /proc/PID/fd/N, reachable only as QEMU's
 * /proc allows (find_memfd). */
static bool memfd_path(const char *path)
{
	return !strncmp(path, "/proc/", 6) && strstr(path, "/fd/");
}

/* Who may read or write the file: QEMU's user or root owns it, nobody
 * else may write it, and guest RAM that others can read (a file QEMU made
 * under umask 022, say) is made private here, with a warning. A file
 * someone else made before QEMU opened it would let them write the guest's
 * memory; one others read hands them its secrets. */
static int check_ram_access(const struct vm_info *vm, int fd, const struct stat *st)
{
	uid_t quid;
	gid_t qgid;

	if (memfd_path(vm->ram_path))
		return 0;
	if (proc_ids(vm->pid, &quid, &qgid) == 0 && st->st_uid != 0 && st->st_uid != quid) {
		log_err("refusing VM %s: guest RAM file %s belongs to uid %u, neither root nor "
			"QEMU's user (%u): whoever made it can read and write guest memory; make "
			"it as QEMU's user (or root), mode 0600", vm->name, vm->ram_path,
			(unsigned)st->st_uid, (unsigned)quid);
		return -EPERM;
	}
	if (st->st_mode & S_IWOTH) {
		log_err("refusing VM %s: anyone may write guest RAM file %s (mode %04o); make it "
			"mode 0600", vm->name, vm->ram_path, (unsigned)(st->st_mode & 07777));
		return -EPERM;
	}
	if (!(st->st_mode & 077))
		return 0;
	if (fchmod(fd, st->st_mode & 07700) < 0) {
		int rc = -errno;

		log_err("refusing VM %s: others may read guest RAM file %s (mode %04o) and it "
			"cannot be made private: %s", vm->name, vm->ram_path,
			(unsigned)(st->st_mode & 07777), strerror(-rc));
		return rc;
	}
	log_warn("guest RAM file %s was readable by others (mode %04o): made it mode %04o; "
		 "create it mode 0600 before QEMU starts (umask 077)", vm->ram_path,
		 (unsigned)(st->st_mode & 07777), (unsigned)(st->st_mode & 07700));
	return 0;
}

/* The file at the path QEMU (or --ram-file) named must be the one QEMU
 * has open, of the backend's size, and private to QEMU. */
static int check_ram_file(const struct vm_info *vm, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		int rc = -errno;

		log_err("guest RAM file %s: %s", vm->ram_path, strerror(-rc));
		return rc;
	}
	if (!S_ISREG(st.st_mode) || !proc_has_open(vm->pid, &st)) {
		log_err("refusing VM %s: %s is not a file QEMU (pid %d) has open: not its guest "
			"RAM", vm->name, vm->ram_path, (int)vm->pid);
		return -EPERM;
	}
	if ((uint64_t)st.st_size != vm->ram_size) {
		log_err("guest RAM file %s holds %lld bytes but memory backend '%s' has %llu: "
			"wrong file?", vm->ram_path, (long long)st.st_size, vm->backend_id,
			(unsigned long long)vm->ram_size);
		return -EINVAL;
	}
	return check_ram_access(vm, fd, &st);
}

/* One replicator per VM: a second one would stop and resume the VM on its
 * own epochs, take the first one's mirror jobs for a dead replicator's
 * leftovers and cancel them, and, with soft-dirty, clear the log the first
 * one has not read (its next checkpoint would miss pages). The lock is on
 * the guest RAM file, the one thing that names the VM whichever way we
 * reach QEMU (its QMP socket, libvirt); held until we exit. */
static int lock_ram_file(struct vm_info *vm)
{
	int fd = open(vm->ram_path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0) {
		rc = -errno;
		log_err("guest RAM file %s: %s", vm->ram_path, strerror(-rc));
		return rc;
	}
	if ((rc = check_ram_file(vm, fd))) {
		close(fd);
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		rc = -errno;
		if (rc == -ENOLCK || rc == -EOPNOTSUPP) {
			log_warn("cannot lock guest RAM file %s (%s): going on without the guard "
				 "against a second replicator on this VM", vm->ram_path, strerror(-rc));
			close(fd);
			return 0;
		}
		if (rc == -EWOULDBLOCK)
			log_err("another remus-replicator is attached to VM %s (it holds the lock "
				"on the guest RAM file %s): one replicator per VM", vm->name,
				vm->ram_path);
		else
			log_err("cannot lock guest RAM file %s: %s", vm->ram_path, strerror(-rc));
		close(fd);
		return rc == -EWOULDBLOCK ? -EBUSY : rc;
	}
	vm->ram_lock_fd = fd;
	vm->ram_locked = true;
	return 0;
}

static int find_machine_type(struct replicator *r)
{
	char *type = NULL, *suffix;
	int rc = qom_get_string(r, "/machine", "type", &type);

	if (rc) {
		log_err("cannot read the machine type: %s", qmp_last_error(r->qmp));
		return rc;
	}
	/* QOM type "pc-i440fx-7.2-machine" is machine "pc-i440fx-7.2" */
	suffix = strstr(type, "-machine");
	if (suffix && !suffix[8])
		*suffix = 0;
	r->vm.machine_type = type;
	return 0;
}

/* The dirty-page trackers care who writes guest RAM (docs/SOFT-DIRTY.md). */
static int find_accelerator(struct replicator *r)
{
	struct json_object *ret = NULL, *enabled;
	int rc = qmp_execute(r->qmp, "query-kvm", NULL, &ret, QMP_QUERY_TIMEOUT_MS);

	if (rc) {
		log_err("cannot ask QEMU whether it uses KVM (query-kvm): %s", qmp_last_error(r->qmp));
		return rc;
	}
	r->vm.kvm = json_object_object_get_ex(ret, "enabled", &enabled) &&
		    json_object_get_boolean(enabled);
	json_object_put(ret);
	return 0;
}

/* The vCPU threads, for the epoch policy's view of how busy the guest is
 * (vcpu_load.h). Not knowing is not an error: the policy then takes the
 * vCPUs for busy, its old and safe bound. */
static void find_vcpu_threads(struct replicator *r)
{
	struct json_object *ret = NULL;
	int rc = qmp_execute(r->qmp, "query-cpus-fast", NULL, &ret, QMP_QUERY_TIMEOUT_MS);

	if (rc || vcpu_load_init(&r->vcpu_load, r->vm.pid, ret))
		log_warn("cannot find the VM's vCPU threads (query-cpus-fast: %s): the epoch "
			 "policy takes the vCPUs for busy", rc ? qmp_last_error(r->qmp) :
			 "no thread ids");
	else
		log_debug("%d vCPU thread(s) watched for the epoch policy", r->vcpu_load.nthreads);
	json_object_put(ret);
}

/* Nothing listens there: no QEMU, or a dead one's socket file. */
static bool no_qemu_at(int rc)
{
	return rc == -ENOENT || rc == -ECONNREFUSED;
}

static int attach_socket(struct replicator *r)
{
	int rc, state_rc = -ENOENT;

	/* A pair whose roles move: a VM our agent restored here runs on the
	 * state dir's socket, whatever [vm] qmp says (a restart of this
	 * daemon must find it, not take the host for empty). */
	if (r->cfg.state_qmp_path && strcmp(r->cfg.state_qmp_path, r->cfg.qmp_path)) {
		state_rc = qmp_connect(r->cfg.state_qmp_path, QMP_CONNECT_TIMEOUT_MS, &r->qmp);
		if (!state_rc) {
			log_info("attached to the VM restored here (%s)", r->cfg.state_qmp_path);
			r->cfg.qmp_path = r->cfg.state_qmp_path;
			return 0;
		}
		if (!no_qemu_at(state_rc))
			log_warn("QMP socket %s: %s", r->cfg.state_qmp_path, qmp_connect_error());
	}
	rc = qmp_connect(r->cfg.qmp_path, QMP_CONNECT_TIMEOUT_MS, &r->qmp);
	/* "no VM here" only when neither socket has a QEMU behind it: one
	 * that answered slowly may be running the VM */
	if (rc && no_qemu_at(rc) && no_qemu_at(state_rc) && r->cfg.host) {
		r->vm_absent = true;
		log_info("no VM runs here (QMP socket %s: %s)", r->cfg.qmp_path,
			 qmp_connect_error());
	} else if (rc) {
		log_err("cannot attach to QMP socket %s: %s", r->cfg.qmp_path, qmp_connect_error());
	}
	return rc;
}

/* QMP through libvirt's monitor passthrough; the domain XML, checked here,
 * goes to the backup so that it can restore into a libvirt domain. */
static int attach_libvirt(struct replicator *r)
{
	int rc;

	virt_events_init(r->loop);
	if (r->cfg.host) {
		/* A pair whose roles move: a domain that is not running here runs
		 * on the other host, or nowhere; one libvirt cannot tell about
		 * may run here, so that is an error, not "absent". */
		rc = virt_domain_active(r->cfg.libvirt_uri, r->cfg.domain);
		if (rc < 0) {
			/* exit 3: the unit starts us again (libvirtd restarting) */
			log_err("cannot tell whether libvirt domain %s runs here: libvirt at %s "
				"does not answer (%s); exiting to be started again",
				r->cfg.domain, r->cfg.libvirt_uri, strerror(-rc));
			return 3;
		}
		if (!rc) {
			r->vm_absent = true;
			log_info("no VM runs here (libvirt at %s runs no domain %s)",
				 r->cfg.libvirt_uri, r->cfg.domain);
			return -ENOENT;
		}
		/* libvirt would boot it afresh at the next start of a host it
		 * has moved away from: a second copy */
		if (virt_autostart_off(r->cfg.libvirt_uri, r->cfg.domain) == 1)
			log_warn("libvirt domain %s was set to autostart: turned off (libvirt "
				 "would boot a second copy of the VM at this host's next start "
				 "while it runs on the other host; the pair's daemons start it)",
				 r->cfg.domain);
	}
	rc = virt_open(r->cfg.libvirt_uri, r->cfg.domain, &r->virt);
	if (rc)
		return rc;
	r->vm.libvirt_xml = virt_xml(r->virt, true);
	if (!r->vm.libvirt_xml)
		return -EIO;
	rc = domain_xml_check(r->vm.libvirt_xml, r->cfg.domain);
	if (rc)
		return rc;
	rc = virt_qmp_open(r->virt, replicator_qemu_events, r, &r->qmp);
	if (rc)
		return rc;
	virt_on_close(r->virt, replicator_lost_libvirt, r);
	if (qmp_peer_pid(r->qmp) <= 0) {
		log_err("libvirt domain %s: its QEMU process (the process of its vCPU thread, "
			"with its UUID %s) is not on this host; the replicator must run on the "
			"domain's host", r->cfg.domain, virt_uuid(r->virt));
		return -ESRCH;
	}
	return 0;
}

int vm_attach(struct replicator *r)
{
	struct vm_info *vm = &r->vm;
	int rc = r->cfg.domain ? attach_libvirt(r) : attach_socket(r);

	if (rc)
		return rc;
	vm->pid = qmp_peer_pid(r->qmp);
	if (vm->pid <= 0 || (rc = read_cmdline(vm))) {
		log_err("cannot read the command line of QEMU (pid %d): %s; the replicator "
			"must run on the same host as QEMU", (int)vm->pid, strerror(rc ? -rc : ESRCH));
		return rc ? rc : -ESRCH;
	}
	if ((rc = find_name(vm)) || (rc = find_backend(r)) || (rc = lock_ram_file(vm)) ||
	    (rc = find_machine_type(r)) || (rc = find_accelerator(r)) || (rc = check_ramblocks(r)))
		return rc;
	find_vcpu_threads(r);
	log_info("attached to VM %s%s: QEMU pid %d, machine %s, %s, %llu MiB RAM in %s (backend %s)",
		 vm->name, r->virt ? " through libvirt" : "", (int)vm->pid, vm->machine_type,
		 vm->kvm ? "KVM" : "TCG", (unsigned long long)(vm->ram_size >> 20), vm->ram_path,
		 vm->backend_id);
	return 0;
}

char *vm_hello_json(const struct replicator *r)
{
	const struct vm_info *vm = &r->vm;
	struct json_object *o = json_object_new_object();
	struct json_object *argv = json_object_new_array();
	char *text, seed[17];

	for (int i = 0; i < vm->argc; i++)
		json_object_array_add(argv, json_object_new_string(vm->argv[i]));
	json_object_object_add(o, "protocol", json_object_new_int(PROTO_VERSION));
	json_object_object_add(o, "name", json_object_new_string(vm->name));
	json_object_object_add(o, "ram_size", json_object_new_int64((int64_t)vm->ram_size));
	json_object_object_add(o, "page_size", json_object_new_int(PROTO_PAGE_SIZE));
	json_object_object_add(o, "ram_backend", json_object_new_string(vm->backend_id));
	json_object_object_add(o, "machine_type", json_object_new_string(vm->machine_type));
	json_object_object_add(o, "qemu_argv", argv);
	json_object_object_add(o, "generation", json_object_new_int64((int64_t)r->generation + 1));
	page_hash_seed_format(r->delta.seed, seed);
	json_object_object_add(o, "ram_delta_seed", json_object_new_string(seed));
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->hello)
			r->devices[i].ops->hello(r->devices[i].state, o);
	if (vm->libvirt_xml)
		json_object_object_add(o, "libvirt_xml", json_object_new_string(vm->libvirt_xml));
	if (r->cfg.host) /* for the backup's fence command (REMUS_PEER_HOST) */
		json_object_object_add(o, "host", json_object_new_string(r->cfg.host->name));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}
