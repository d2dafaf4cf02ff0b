#include "restore_allow.h"
#include "restore_cmdline.h"
#include "qemu_opts.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* One option being checked: its properties, flattened ("a.b" for nested
 * JSON), the bare leading value under the key QEMU gives it. */
struct ctx {
	const struct restore_spec *spec;
	const char *name;   /* option, without dashes */
	char label[96];     /* "-netdev tap", for messages */
	struct qemu_opts o;
	const char *implied;
	char *err;
	size_t errlen;
	/* a -drive or -blockdev the restore keeps as it is: it is not the
	 * node of a replicated disk, so it may not name one's image */
	bool kept;
};

static bool streq(const char *a, const char *b)
{
	return a && b && !strcmp(a, b);
}

/* NULL-terminated lists; an entry ending in '.' allows every key under it. */
static bool listed(const char *s, const char *const *list)
{
	for (; s && *list; list++) {
		size_t n = strlen(*list);

		if (n && (*list)[n - 1] == '.' ? !strncmp(s, *list, n) : !strcmp(s, *list))
			return true;
	}
	return false;
}

static int refuse(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct ctx *c, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(c->err, c->errlen, "%s: ", c->label);

	if (n >= 0 && (size_t)n < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* ---- why a key or an option is refused, for the message ---- */

static const char *const program_keys[] = {
	"script", "downscript", "helper", "cmd", "smb", "guestfwd", "exec", NULL
};
static const char *const fd_keys[] = { "fd", "fds", "vhostfd", "vhostfds", NULL };
static const char *const device_keys[] = {
	"host", "sysfsdev", "hostbus", "hostaddr", "hostport", "hostdevice", NULL
};
static const char *const path_keys[] = {
	"file", "filename", "path", "mem-path", "logfile", "romfile", "splash", "rrfile",
	"dir", "data-file", "kernel", "initrd", "dtb", "dumpdtb", "bios", "events",
	"x509-dir", "tftp", "bootfile", "sock", "socket", "chroot", NULL
};

static const char *key_reason(const char *key)
{
	const char *leaf = strrchr(key, '.') ? strrchr(key, '.') + 1 : key;

	if (listed(leaf, program_keys))
		return "names a host program";
	if (listed(leaf, fd_keys))
		return "passes a host file descriptor";
	if (listed(leaf, device_keys))
		return "names a host device";
	if (listed(leaf, path_keys))
		return "names a host path";
	return "is not on the backup's allowlist";
}

static int refuse_key(struct ctx *c, const char *key)
{
	return refuse(c, "property '%s' %s; not allowed on the backup", key, key_reason(key));
}

static const char *const debug_opts[] = { "gdb", "s", "qtest", NULL };
static const char *const host_file_opts[] = {
	"L", "bios", "plugin", "readconfig", "writeconfig", "option-rom", "dtb", "add-fd",
	"fsdev", "virtfs", "chroot", "mem-path", "trace", "acpitable", "audiodev",
	"tpmdev", "k", "usbdevice", "icount", "iscsi", "net", "nic", "loadvm", "semihosting",
	"semihosting-config", "xen-domid", "seed", NULL
};

static int refuse_option(struct ctx *c)
{
	const char *why = "is not on the backup's allowlist";

	if (listed(c->name, debug_opts))
		why = "opens a debugger or test port on the guest";
	else if (listed(c->name, host_file_opts))
		why = "names a host path, program or device";
	return refuse(c, "%s; not allowed on the backup", why);
}

/* ---- properties ---- */

static const char *key_of(const struct ctx *c, size_t i)
{
	return c->o.v[i].key ? c->o.v[i].key : c->implied;
}

/* Keys whose only harmless values are these: the rest run or load something. */
static const struct {
	const char *key;
	const char *const values[3];
} fixed_values[] = {
	{ "script", { "no", "", NULL } },
	{ "downscript", { "no", "", NULL } },
	{ "romfile", { "", NULL } },
};

static bool value_ok(const char *key, const char *value)
{
	for (size_t i = 0; i < ARRAY_SIZE(fixed_values); i++)
		if (streq(key, fixed_values[i].key))
			return value && listed(value, fixed_values[i].values);
	return true;
}

/* As QEMU wants ids: a letter, then letters, digits, '-', '.', '_'. */
static bool is_identifier(const char *s)
{
	if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") ==
	       strlen(s);
}

/* Every property in allowed (keys; NULL: any key), none twice: QEMU
 * honours a repeated key, where the rewrite may see the other one. */
static int check_keys(struct ctx *c, const char *const *allowed)
{
	for (size_t i = 0; i < c->o.n; i++) {
		const char *key = key_of(c, i);

		if (!key)
			return refuse(c, "a value without a property name is not allowed on "
				      "the backup");
		for (size_t k = 0; k < i; k++)
			if (streq(key_of(c, k), key))
				return refuse(c, "property '%s' given twice; not allowed on the "
					      "backup", key);
		if ((allowed && !listed(key, allowed)) || !value_ok(key, c->o.v[i].value))
			return refuse_key(c, key);
		/* ids name files in the state dir (chardev-ID.log, netdev-ID.sock) */
		if (streq(key, "id") && !is_identifier(c->o.v[i].value))
			return refuse(c, "id '%s' is not an identifier; not allowed on the backup",
				      c->o.v[i].value ? c->o.v[i].value : "");
	}
	return 0;
}

static const char *get(const struct ctx *c, const char *key)
{
	for (size_t i = 0; i < c->o.n; i++)
		if (streq(key_of(c, i), key))
			return c->o.v[i].value;
	return NULL;
}

/* The type names the label: "-netdev tap". */
static const char *typed(struct ctx *c, const char *key)
{
	const char *type = get(c, key);

	if (type)
		snprintf(c->label, sizeof(c->label), "-%s %.64s", c->name, type);
	return type;
}

/* ---- disks ---- */

static bool is_replicated(const struct restore_spec *s, const char *file)
{
	for (int i = 0; file && i < s->ndisks; i++)
		if (streq(file, s->disks[i].file) || streq(file, s->disks[i].overlay))
			return true;
	return false;
}

static bool is_shared(const struct restore_spec *s, const char *file)
{
	for (int i = 0; file && i < s->nshared_disks; i++)
		if (streq(file, s->shared_disks[i]))
			return true;
	return false;
}

/* A replicated disk's image, here where the restore replaces it (the
 * HELLO names the image: any path the primary likes). */
static bool replaced_here(const struct ctx *c, const char *file)
{
	return !c->kept && is_replicated(c->spec, file);
}

static int check_image(struct ctx *c, const char *key, const char *file)
{
	if (c->kept && is_replicated(c->spec, file))
		return refuse(c, "%s '%s' is a replicated disk's image, but not in that disk's "
			      "own node: a second way to it is not allowed on the backup", key,
			      file);
	if (replaced_here(c, file) || is_shared(c->spec, file))
		return 0;
	return refuse(c, "%s '%s' is neither a replicated disk nor a shared disk of this agent "
		      "(--shared-disk); not allowed on the backup", key, file);
}

static const char *const drive_keys[] = {
	"file", "format", "if", "index", "media", "id", "node-name", "cache", "cache.", "aio",
	"discard", "detect-zeroes", "readonly", "read-only", "werror", "rerror", "bus", "unit",
	"serial", "copy-on-read", "snapshot", "auto-read-only", "cyls", "heads", "secs", "trans",
	"addr", "throttling.", "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr", NULL
};
static const char *const image_formats[] = { "raw", "qcow2", NULL };

static int check_drive(struct ctx *c)
{
	const char *file = get(c, "file"), *format = get(c, "format");
	int rc = check_keys(c, drive_keys);

	if (rc)
		return rc;
	/* other formats (vvfat, ...) read host directories or networks */
	if (format && !listed(format, image_formats))
		return refuse(c, "format '%s' is not allowed on the backup (raw or qcow2)", format);
	/* a probed format lets a guest-written raw image name a backing file;
	 * a replicated disk's format is set by the rewrite */
	if (file && !format && !replaced_here(c, file))
		return refuse(c, "file '%s' without format=; not allowed on the backup (its "
			      "format would be probed)", file);
	return file ? check_image(c, "file", file) : 0;
}

static const char *const blockdev_file[] = {
	"driver", "node-name", "read-only", "auto-read-only", "discard", "cache.",
	"detect-zeroes", "force-share", "filename", "aio", "locking", "aio-max-batch",
	"drop-cache", NULL
};
static const char *const blockdev_raw[] = {
	"driver", "node-name", "read-only", "auto-read-only", "discard", "cache.",
	"detect-zeroes", "force-share", "file", "offset", "size", NULL
};
static const char *const blockdev_qcow2[] = {
	"driver", "node-name", "read-only", "auto-read-only", "discard", "cache.",
	"detect-zeroes", "force-share", "file", "backing", "lazy-refcounts", "cache-size",
	"l2-cache-size", "l2-cache-entry-size", "refcount-cache-size", "cache-clean-interval",
	"pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
	"overlap-check", NULL
};

/* Image nodes over other -blockdev nodes (file=NODE, checked where it is
 * defined), or file nodes of a replicated or shared image. */
static int check_blockdev(struct ctx *c)
{
	const char *driver = typed(c, "driver");
	int rc;

	if (streq(driver, "file") || streq(driver, "host_device")) {
		rc = check_keys(c, blockdev_file);
		return rc ? rc : check_image(c, "filename", get(c, "filename") ?: "");
	}
	if (streq(driver, "raw"))
		return check_keys(c, blockdev_raw);
	if (streq(driver, "qcow2"))
		return check_keys(c, blockdev_qcow2);
	return refuse(c, "driver '%s' is not allowed on the backup (file, host_device, raw, "
		      "qcow2)", driver ? driver : "");
}

/* ---- NICs ---- */

static const char *const netdev_dgram[] = {
	"type", "id", "local.type", "local.path", "remote.type", "remote.path",
	"local.host", "local.port", "remote.host", "remote.port", NULL
};
static const char *const netdev_socket[] = { "type", "id", "udp", "localaddr", NULL };
static const char *const netdev_tap[] = {
	"type", "id", "ifname", "script", "downscript", "vnet_hdr", "vhost", "vhostforce",
	"queues", "sndbuf", "poll-us", NULL
};

const char *restore_tap_by_id(const struct restore_spec *s, const char *id)
{
	size_t len = id ? strlen(id) : 0;

	for (int i = 0; len && i < s->ntaps; i++)
		if (!strncmp(s->taps[i], id, len) && s->taps[i][len] == '=')
			return s->taps[i] + len + 1;
	return NULL;
}

/* One of the agent's --tap ("[ID=]NAME"). */
static bool is_agent_tap(const struct restore_spec *s, const char *ifname)
{
	for (int i = 0; i < s->ntaps; i++) {
		const char *eq = strchr(s->taps[i], '=');

		if (streq(eq ? eq + 1 : s->taps[i], ifname))
			return true;
	}
	return false;
}

/* A TAP names a host interface: only one the agent was given may carry
 * the guest's frames (the HELLO could name another VM's, or one on
 * another network of this host). A NIC with a --tap ID=NAME of its own is
 * moved onto it by the rewrite; without ifname QEMU makes a new TAP, on
 * no network. */
static int check_tap(struct ctx *c)
{
	const char *ifname = get(c, "ifname");
	int rc = check_keys(c, netdev_tap);

	if (!rc && ifname && !is_agent_tap(c->spec, ifname) &&
	    !restore_tap_by_id(c->spec, get(c, "id")))
		return refuse(c, "ifname '%s' is not a TAP of this agent (--tap); not allowed on "
			      "the backup", ifname);
	return rc;
}

/* The net buffer's datagram sockets (moved to a TAP or the state dir by
 * the rewrite), and a TAP without scripts (a restored VM's own line). */
static int check_netdev(struct ctx *c)
{
	const char *type = typed(c, "type");

	if (streq(type, "dgram"))
		return check_keys(c, netdev_dgram);
	if (streq(type, "socket")) {
		if (!get(c, "udp"))
			return refuse(c, "only udp= is allowed on the backup (the net buffer's "
				      "socket)");
		return check_keys(c, netdev_socket);
	}
	if (streq(type, "tap"))
		return check_tap(c);
	return refuse(c, "type '%s' is not allowed on the backup (dgram, socket udp=, tap)",
		      type ? type : "");
}

/* ---- objects ---- */

static const char *const ram_keys[] = {
	"qom-type", "id", "size", "share", "prealloc", "prealloc-threads", "merge", "dump",
	"host-nodes", "policy", "hugetlb", "hugetlbsize", "seal", "reserve", "align",
	"discard-data", "x-use-canonical-path-for-ramblock-id", NULL
};
static const char *const iothread_keys[] = {
	"qom-type", "id", "poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch",
	"thread-pool-min", "thread-pool-max", NULL
};
static const char *const plain_keys[] = { "qom-type", "id", NULL };
static const char *const throttle_keys[] = { "qom-type", "id", "limits.", NULL };

/* The main backend: every key but mem-path (rewritten to the replica
 * copy) from the allowlist. */
static int check_main_ram(struct ctx *c)
{
	for (size_t i = 0; i < c->o.n; i++) {
		const char *key = key_of(c, i);

		if (!streq(key, "mem-path") && !listed(key, ram_keys))
			return refuse_key(c, key);
	}
	return 0;
}

static int check_object(struct ctx *c)
{
	const char *type = typed(c, "qom-type");
	int rc;

	if (streq(type, "memory-backend-file") || streq(type, "memory-backend-memfd") ||
	    streq(type, "memory-backend-ram")) {
		rc = check_keys(c, NULL); /* no key twice */
		if (!rc && streq(get(c, "id"), c->spec->ram_backend_id))
			return check_main_ram(c);
		/* another file backend would map a host file into the guest */
		if (!rc && streq(type, "memory-backend-file"))
			return refuse(c, "only the main RAM backend '%s' may be a file on the "
				      "backup", c->spec->ram_backend_id);
		return rc ? rc : check_keys(c, ram_keys);
	}
	if (streq(type, "iothread"))
		return check_keys(c, iothread_keys);
	if (streq(type, "rng-builtin"))
		return check_keys(c, plain_keys);
	if (streq(type, "throttle-group"))
		return check_keys(c, throttle_keys);
	return refuse(c, "type not allowed on the backup");
}

/* ---- chardevs ---- */

/* Opened on the host: the rewrite makes each a file in the state dir (or
 * drops it with its monitor), keeping nothing but id and mux. */
static const char *const host_chardevs[] = {
	"socket", "udp", "pipe", "file", "pty", "stdio", "serial", "tty", "parallel",
	"parport", "braille", "spicevmc", "spiceport", "dbus", NULL
};
static const char *const inner_chardevs[] = {
	"null", "ringbuf", "memory", "vc", "msmouse", "wctablet", "testdev", NULL
};
static const char *const inner_chardev_keys[] = {
	"backend", "id", "size", "mux", "width", "height", "cols", "rows", NULL
};

static int check_chardev(struct ctx *c)
{
	const char *backend = typed(c, "backend");
	int rc = check_keys(c, NULL);

	if (rc)
		return rc;
	if (!get(c, "id"))
		return refuse(c, "no id; not allowed on the backup");
	if (listed(backend, host_chardevs))
		return 0;
	if (listed(backend, inner_chardevs))
		return check_keys(c, inner_chardev_keys);
	return refuse(c, "backend '%s' is not allowed on the backup", backend ? backend : "");
}

/* ---- devices ---- */

/* Emulated hardware only: nothing that passes a host device through
 * (vfio-*, usb-host, ...), loads host files (loader, guest-loader) or
 * talks to a host process (vhost-user-*). */
static const char *const device_drivers[] = {
	"virtio-net-pci", "virtio-net-pci-non-transitional", "virtio-net-device",
	"virtio-blk-pci", "virtio-blk-pci-non-transitional", "virtio-blk-device",
	"virtio-scsi-pci", "virtio-scsi-device", "virtio-serial-pci", "virtio-serial-device",
	"virtio-serial", "virtconsole", "virtserialport", "virtio-balloon-pci",
	"virtio-balloon-device", "virtio-rng-pci", "virtio-rng-device", "virtio-keyboard-pci",
	"virtio-mouse-pci", "virtio-tablet-pci", "virtio-vga", "virtio-gpu-pci",
	"virtio-net", "virtio-blk", "e1000", "e1000e", "rtl8139", "isa-serial",
	"isa-parallel", "isa-debugcon", "pci-serial", "scsi-hd", "scsi-cd", "ide-hd", "ide-cd",
	"ahci", "ich9-ahci", "usb-tablet", "usb-kbd", "usb-mouse", "qemu-xhci",
	"nec-usb-xhci", "piix3-usb-uhci", "ich9-usb-ehci1", "usb-ehci", "pcie-root-port",
	"pci-bridge", "i82801b11-bridge", "pvpanic", "i6300esb", "ib700", "VGA",
	"cirrus-vga", "isa-debug-exit", NULL
};

static int check_device(struct ctx *c)
{
	const char *driver = typed(c, "driver");

	if (!listed(driver, device_drivers))
		return refuse(c, "device not allowed on the backup (it may use a host device, "
			      "file or process)");
	/* their other properties name guest-side things or ids checked
	 * where they are defined; a ROM is a host file */
	return check_keys(c, NULL);
}

/* ---- -global DRIVER.PROP=VALUE ---- */

static const char *const globals[] = {
	"migration.", "kvm-pit.lost_tick_policy", "PIIX4_PM.disable_s3",
	"PIIX4_PM.disable_s4", "ICH9-LPC.disable_s3", "ICH9-LPC.disable_s4", NULL
};

static int check_global(struct ctx *c, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char prop[128];

	if (!eq || strstr(arg, "driver=") == arg || (size_t)(eq - arg) >= sizeof(prop))
		return refuse(c, "only DRIVER.PROPERTY=VALUE of a short list is allowed on the "
			      "backup");
	snprintf(prop, sizeof(prop), "%.*s", (int)(eq - arg), arg);
	if (!listed(prop, globals) || strchr(eq + 1, ','))
		return refuse(c, "'%s' is not allowed on the backup", prop);
	return 0;
}

/* ---- the options ---- */

enum kind {
	K_FLAG,      /* no argument */
	K_VALUE,     /* an argument taken as it is */
	K_REWRITTEN, /* dropped or replaced by the rewrite */
	K_KV,        /* key=value, keys from the list */
	K_FN,        /* key=value (JSON too if json), checked by fn */
	K_IMAGE,     /* a disk image path */
};

static const char *const name_keys[] = { "guest", "process", "debug-threads", NULL };
static const char *const accel_keys[] = {
	"accel", "thread", "tb-size", "kernel-irqchip", "kvm-shadow-mem", "split-wx",
	"dirty-ring-size", NULL
};
static const char *const machine_keys[] = {
	"type", "accel", "memory-backend", "graphics", "usb", "vmport", "dump-guest-core",
	"mem-merge", "kernel-irqchip", "kernel_irqchip", "kvm-shadow-mem", "smm", "acpi", "pit",
	"pic", "hpet", "sata", "smbus", "i8042", "fd-bootchk", "max-ram-below-4g", "nvdimm",
	"hmat", "suppress-vmdesc", "default-bus-bypass-iommu", "pflash0", "pflash1", NULL
};
static const char *const m_keys[] = { "size", "slots", "maxmem", NULL };
static const char *const smp_keys[] = {
	"cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus", NULL
};
static const char *const boot_keys[] = {
	"order", "once", "menu", "splash-time", "reboot-timeout", "strict", NULL
};
static const char *const rtc_keys[] = { "base", "clock", "driftfix", NULL };
static const char *const fw_cfg_keys[] = { "name", "string", NULL };
static const char *const smbios_keys[] = {
	"type", "vendor", "version", "date", "release", "uefi", "manufacturer", "product",
	"serial", "uuid", "sku", "family", "asset", "location", "part", "speed", NULL
};
static const char *const vga_types[] = {
	"std", "cirrus", "vmware", "qxl", "virtio", "none", NULL
};

static const struct rule {
	const char *name;
	enum kind kind;
	const char *implied;            /* K_KV, K_FN: the bare value's key */
	const char *const *keys;        /* K_KV */
	int (*fn)(struct ctx *c);       /* K_FN */
	bool json;                      /* K_FN: QEMU takes a JSON object too */
} rules[] = {
#define R(n, k) { n, k, NULL, NULL, NULL, false }
#define KV(n, implied, keys) { n, K_KV, implied, keys, NULL, false }
#define FN(n, implied, fn, json) { n, K_FN, implied, NULL, fn, json }
	R("nographic", K_REWRITTEN), R("S", K_REWRITTEN), R("daemonize", K_REWRITTEN),
	R("incoming", K_REWRITTEN), R("qmp", K_REWRITTEN), R("qmp-pretty", K_REWRITTEN),
	R("monitor", K_REWRITTEN), R("mon", K_REWRITTEN), R("serial", K_REWRITTEN),
	R("parallel", K_REWRITTEN), R("debugcon", K_REWRITTEN), R("display", K_REWRITTEN),
	R("vnc", K_REWRITTEN), R("spice", K_REWRITTEN), R("pidfile", K_REWRITTEN),
	R("D", K_REWRITTEN),
	/* the guest kernel is in the replica RAM already */
	R("kernel", K_REWRITTEN), R("initrd", K_REWRITTEN), R("append", K_REWRITTEN),
	R("runas", K_REWRITTEN),
	R("mem-prealloc", K_FLAG), R("snapshot", K_FLAG), R("usb", K_FLAG),
	R("no-fd-bootchk", K_FLAG), R("no-acpi", K_FLAG), R("no-hpet", K_FLAG),
	R("singlestep", K_FLAG), R("enable-kvm", K_FLAG), R("no-reboot", K_FLAG),
	R("no-shutdown", K_FLAG), R("only-migratable", K_FLAG), R("nodefaults", K_FLAG),
	R("no-user-config", K_FLAG), R("async-teardown", K_FLAG), R("win2k-hack", K_FLAG),
	R("cpu", K_VALUE), R("d", K_VALUE), R("uuid", K_VALUE), R("msg", K_VALUE),
	R("overcommit", K_VALUE), R("action", K_VALUE), R("watchdog-action", K_VALUE),
	R("sandbox", K_VALUE), R("vga", K_VALUE), R("global", K_VALUE),
	KV("name", "guest", name_keys), KV("accel", "accel", accel_keys),
	KV("machine", "type", machine_keys), KV("M", "type", machine_keys),
	KV("m", "size", m_keys), KV("smp", "cpus", smp_keys),
	KV("boot", "order", boot_keys), KV("rtc", NULL, rtc_keys),
	KV("fw_cfg", NULL, fw_cfg_keys), KV("smbios", NULL, smbios_keys),
	FN("drive", NULL, check_drive, false),
	FN("blockdev", "driver", check_blockdev, true),
	FN("netdev", "type", check_netdev, false),
	FN("object", "qom-type", check_object, true),
	FN("chardev", "backend", check_chardev, false),
	FN("device", "driver", check_device, true),
	R("hda", K_IMAGE), R("hdb", K_IMAGE), R("hdc", K_IMAGE), R("hdd", K_IMAGE),
	R("cdrom", K_IMAGE), R("fda", K_IMAGE), R("fdb", K_IMAGE), R("pflash", K_IMAGE),
#undef R
#undef KV
#undef FN
};

/* Members of obj as "prefix.key" = value. */
static int flatten(struct json_object *obj, const char *prefix, struct qemu_opts *o)
{
	json_object_object_foreach(obj, key, val) {
		char full[256];
		int rc;

		snprintf(full, sizeof(full), "%s%s%s", prefix, *prefix ? "." : "", key);
		if (json_object_is_type(val, json_type_object))
			rc = flatten(val, full, o);
		else
			rc = qemu_opts_set(o, full, json_object_get_string(val) ?: "");
		if (rc)
			return rc;
	}
	return 0;
}

static int parse(struct ctx *c, const char *arg, bool json)
{
	struct json_object *obj;
	int rc;

	if (arg[0] != '{')
		return qemu_opts_parse(arg, &c->o) == -ENOMEM ? -ENOMEM :
			c->o.n || !arg[0] ? 0 : refuse(c, "does not parse");
	if (!json)
		return refuse(c, "the JSON form is not allowed on the backup");
	obj = json_tokener_parse(arg);
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		return refuse(c, "does not parse as JSON");
	}
	rc = flatten(obj, "", &c->o);
	json_object_put(obj);
	return rc;
}

static int check_rule(struct ctx *c, const struct rule *r, const char *arg)
{
	int rc;

	switch (r->kind) {
	case K_FLAG: case K_REWRITTEN:
		return 0;
	case K_VALUE:
		if (streq(r->name, "global"))
			return check_global(c, arg);
		if (streq(r->name, "vga") && !listed(arg, vga_types))
			return refuse(c, "'%s' is not allowed on the backup", arg);
		return 0;
	case K_IMAGE:
		/* QEMU probes the image's format: a guest-written raw image could
		 * pass for a qcow2 naming a host file as its backing file */
		return refuse(c, "the image's format would be probed; give it as -drive "
			      "file=%s,format=... with --shared-disk on the backup", arg);
	case K_KV: case K_FN:
		c->implied = r->implied;
		rc = parse(c, arg, r->json);
		if (!rc)
			rc = r->kind == K_KV ? check_keys(c, r->keys) : r->fn(c);
		return rc;
	}
	return refuse_option(c);
}

static int allow_option(const struct restore_spec *spec, const char *name, const char *arg,
			char *err, size_t errlen, bool kept)
{
	struct ctx c = { .spec = spec, .name = name, .err = err, .errlen = errlen, .kept = kept };
	int rc = -EINVAL;
	size_t i;

	if (name)
		snprintf(c.label, sizeof(c.label), "-%.64s", name);
	else
		snprintf(c.label, sizeof(c.label), "disk image argument");
	if (!name)
		return check_rule(&c, &(const struct rule){ "", K_IMAGE, NULL, NULL, NULL, false },
				  arg);
	for (i = 0; i < ARRAY_SIZE(rules) && strcmp(rules[i].name, name); i++)
		;
	if (i == ARRAY_SIZE(rules))
		return refuse_option(&c);
	rc = check_rule(&c, &rules[i], arg);
	qemu_opts_free(&c.o);
	return rc;
}

int restore_allow_option(const struct restore_spec *spec, const char *name, const char *arg,
			 char *err, size_t errlen)
{
	return allow_option(spec, name, arg, err, errlen, false);
}

int restore_allow_kept_disk(const struct restore_spec *spec, const char *name, const char *arg,
			    char *err, size_t errlen)
{
	return allow_option(spec, name, arg, err, errlen, true);
}
