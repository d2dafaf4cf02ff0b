#include "restore_cmdline.h"
#include "block_graph.h"
#include "log.h"
#include "qemu_argv.h"
#include "qemu_opts.h"
#include "restore_allow.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Chardev backends that open something on the primary's host. */
static const char *const host_backends[] = {
	"socket", "udp", "pipe", "file", "pty", "stdio", "serial", "tty",
	"parallel", "parport", "braille", "spicevmc", "spiceport", "dbus",
};

static const char *const ram_backends[] = {
	"memory-backend-file", "memory-backend-memfd", "memory-backend-ram",
};

/* Keys only memory-backend-memfd has. */
static const char *const memfd_keys[] = { "hugetlb", "hugetlbsize", "seal" };

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static bool in_list(const char *s, const char *const *list, size_t n)
{
	size_t i;

	for (i = 0; s && i < n; i++)
		if (!strcmp(s, list[i]))
			return true;
	return false;
}

static bool streq(const char *a, const char *b)
{
	return a && b && !strcmp(a, b);
}

struct builder {
	const struct restore_spec *spec;
	char *const *argv;
	int argc;
	char **out;
	size_t n, cap;
	char *err;
	size_t errlen;
	char *qmp_dir; /* state_dir with commas doubled, for key=value text */
	int nserials;  /* -serial ports, "none" excepted */
	int serials, parallels, debugcons; /* ports rewritten so far */
	bool serial_opt, isa_serial, nodefaults;
	bool nographic, need_display, display_done, found_ram;
	/* what becomes of each -drive and -blockdev (block_graph.h) */
	struct block_graph plan;
	bool overlay_as_raw; /* the test hook RESTORE_TEST_OVERLAY_AS_RAW */
};

static int fail(struct builder *b, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct builder *b, int err, const char *fmt, ...)
{
	va_list ap;

	if (b->errlen) {
		va_start(ap, fmt);
		vsnprintf(b->err, b->errlen, fmt, ap);
		va_end(ap);
	}
	return err;
}

static void iter_init(struct builder *b, struct qemu_argv_iter *it)
{
	qemu_argv_iter_init(it, b->argv, b->argc);
}

/* 1 and the next option in it, 0 at the end, -EINVAL if the last option
 * lacks its argument. */
static int next_opt(struct builder *b, struct qemu_argv_iter *it)
{
	int ret = qemu_argv_next(it);

	return ret < 0 ? fail(b, ret, "option %s requires an argument", it->opt) : ret;
}

static bool is_opt(const struct qemu_argv_iter *it, const char *name)
{
	return qemu_argv_is(it, name);
}

/* An option's argument: "key=value,..." or, as QEMU 7.2 accepts for
 * -object, -device and friends, a JSON object. Text neither parses as is
 * left empty: QEMU will reject it itself. */
struct optval {
	struct qemu_opts kv;
	struct json_object *json;
};

static int optval_parse(const char *arg, struct optval *v)
{
	int ret;

	memset(v, 0, sizeof(*v));
	if (arg[0] == '{') {
		v->json = json_tokener_parse(arg);
		if (v->json && !json_object_is_type(v->json, json_type_object)) {
			json_object_put(v->json);
			v->json = NULL;
		}
		return 0;
	}
	ret = qemu_opts_parse(arg, &v->kv);
	return ret == -ENOMEM ? ret : 0;
}

/* Value of key; with implied, also the bare leading value QEMU gives that
 * name (the driver of -device, the type of -object, ...). */
static const char *optval_get(const struct optval *v, const char *key, bool implied)
{
	struct json_object *j;

	if (v->json) {
		if (!json_object_object_get_ex(v->json, key, &j) ||
		    !json_object_is_type(j, json_type_string))
			return NULL;
		return json_object_get_string(j);
	}
	if (implied && qemu_opts_first_bare(&v->kv))
		return qemu_opts_first_bare(&v->kv);
	return qemu_opts_get(&v->kv, key);
}

static void optval_free(struct optval *v)
{
	qemu_opts_free(&v->kv);
	json_object_put(v->json);
}

/* 1 if arg's key (or implied value) equals want, 0 if not, -ENOMEM. */
static int optval_is(const char *arg, const char *key, bool implied, const char *want)
{
	struct optval v;
	int ret;

	ret = optval_parse(arg, &v);
	if (!ret)
		ret = streq(optval_get(&v, key, implied), want);
	optval_free(&v);
	return ret;
}

/* ---- output vector ---- */

/* Takes s (NULL meaning allocation failed). */
static int out_push(struct builder *b, char *s)
{
	char **v;
	size_t cap;

	if (!s)
		return fail(b, -ENOMEM, "out of memory");
	if (b->n + 2 > b->cap) {
		cap = b->cap ? b->cap * 2 : 32;
		v = realloc(b->out, cap * sizeof(*v));
		if (!v) {
			free(s);
			return fail(b, -ENOMEM, "out of memory");
		}
		b->out = v;
		b->cap = cap;
	}
	b->out[b->n++] = s;
	b->out[b->n] = NULL;
	return 0;
}

static int out_dup(struct builder *b, const char *s)
{
	return out_push(b, strdup(s));
}

static int out_fmt(struct builder *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int out_fmt(struct builder *b, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return out_push(b, n < 0 ? NULL : s);
}

static int out_pair(struct builder *b, const char *opt, const char *arg)
{
	int ret = out_dup(b, opt);

	return ret ? ret : out_dup(b, arg);
}

static int keep(struct builder *b, struct qemu_argv_iter *it)
{
	int ret = out_dup(b, it->opt);

	if (!ret && it->name && it->arg)
		ret = out_dup(b, it->arg);
	return ret;
}

static int drop(struct builder *b, struct qemu_argv_iter *it)
{
	return 0;
}

static int drop_boot(struct builder *b, struct qemu_argv_iter *it)
{
	log_info("restore: %s %s dropped, the guest kernel is in the replica RAM",
		  it->opt, it->arg);
	return 0;
}

/* The user a restored QEMU runs as is this host's business, not the
 * primary's: the restore runs it as the agent's user, which can open the
 * state dir's files (a QEMU that dropped to another user could not). */
static int drop_runas(struct builder *b, struct qemu_argv_iter *it)
{
	log_info("restore: %s %s dropped: the restored QEMU runs as the agent's user",
		 it->opt, it->arg);
	return 0;
}

/* "serial.log" for the first port, "serial1.log", ... after. */
static int port_file(struct builder *b, const char *opt, const char *kind, int index)
{
	int ret = out_dup(b, opt);

	if (ret)
		return ret;
	/* The text after "file:" is taken literally: no comma escaping. */
	if (!index)
		return out_fmt(b, "file:%s/%s.log", b->spec->state_dir, kind);
	return out_fmt(b, "file:%s/%s%d.log", b->spec->state_dir, kind, index);
}

/* ---- the first pass: what the command line has ---- */

static int prescan_one(struct builder *b, struct qemu_argv_iter *it)
{
	int ret;

	if (is_opt(it, "nodefaults"))
		b->nodefaults = true;
	if (is_opt(it, "serial")) {
		b->serial_opt = true;
		/* -serial is no flag_opts: it has an argument */
		if (it->arg && strcmp(it->arg, "none"))
			b->nserials++;
	}
	if (!is_opt(it, "device"))
		return 0;
	ret = optval_is(it->arg, "driver", true, "isa-serial");
	if (ret > 0)
		b->isa_serial = true;
	return ret < 0 ? fail(b, ret, "out of memory") : 0;
}

static int prescan(struct builder *b)
{
	struct qemu_argv_iter it;
	int ret;

	iter_init(b, &it);
	while ((ret = next_opt(b, &it)) > 0) {
		ret = prescan_one(b, &it);
		if (ret)
			return ret;
	}
	return ret;
}

/* ---- chardevs: who uses them ---- */

struct chardev_refs {
	int monitors;     /* dropped monitors using it */
	int users;        /* everything else using it */
	int serial_index; /* the serial port using it, or -1 */
};

static bool chardev_prefix_is(const char *arg, const char *id)
{
	return !strncmp(arg, "chardev:", 8) && !strcmp(arg + 8, id);
}

static int count_device_ref(struct qemu_argv_iter *it, const char *id, int *isa,
			    struct chardev_refs *r)
{
	struct optval v;
	bool serial;
	int ret;

	ret = optval_parse(it->arg, &v);
	if (ret)
		return ret;
	serial = streq(optval_get(&v, "driver", true), "isa-serial");
	if (streq(optval_get(&v, "chardev", false), id)) {
		r->users++;
		if (serial && r->serial_index < 0)
			r->serial_index = *isa;
	}
	/* QEMU numbers -serial ports first, at machine creation, then
	 * isa-serial devices in command-line order. */
	if (serial)
		(*isa)++;
	optval_free(&v);
	return 0;
}

static int count_ref(struct qemu_argv_iter *it, const char *id, int *serial, int *isa,
		     struct chardev_refs *r)
{
	int ret;

	if (is_opt(it, "serial") && strcmp(it->arg, "none")) {
		if (chardev_prefix_is(it->arg, id) && r->serial_index < 0)
			r->serial_index = *serial;
		r->users += chardev_prefix_is(it->arg, id);
		(*serial)++;
	} else if (is_opt(it, "qmp") || is_opt(it, "qmp-pretty") || is_opt(it, "monitor")) {
		r->monitors += chardev_prefix_is(it->arg, id);
	} else if (is_opt(it, "parallel") || is_opt(it, "debugcon") || is_opt(it, "gdb")) {
		r->users += chardev_prefix_is(it->arg, id);
	} else if (is_opt(it, "mon")) {
		ret = optval_is(it->arg, "chardev", true, id);
		if (ret < 0)
			return ret;
		r->monitors += ret;
	} else if (is_opt(it, "device")) {
		return count_device_ref(it, id, isa, r);
	} else if (is_opt(it, "netdev") || is_opt(it, "object") || is_opt(it, "tpmdev")) {
		ret = optval_is(it->arg, "chardev", false, id);
		if (ret < 0)
			return ret;
		r->users += ret;
	}
	return 0;
}

static int chardev_refs(struct builder *b, const char *id, struct chardev_refs *r)
{
	int serial = 0, isa = b->nserials, ret;
	struct qemu_argv_iter it;

	memset(r, 0, sizeof(*r));
	r->serial_index = -1;
	iter_init(b, &it);
	while ((ret = next_opt(b, &it)) > 0) {
		if (!it.name)
			continue;
		ret = count_ref(&it, id, &serial, &isa, r);
		if (ret)
			return fail(b, ret, "out of memory");
	}
	return ret;
}

static bool opt_on(const char *v)
{
	return streq(v, "on") || streq(v, "yes") || streq(v, "true") || streq(v, "y");
}

/* -chardev ID,... becomes "file,id=ID,path=PATH". */
static int chardev_to_file(struct builder *b, const struct qemu_opts *old,
			   const char *id, const char *path, bool mux)
{
	struct qemu_opts o = { NULL, 0 };
	char *text = NULL;
	int ret;

	ret = qemu_opts_set(&o, NULL, "file");
	if (!ret)
		ret = qemu_opts_set(&o, "id", id);
	if (!ret)
		ret = qemu_opts_set(&o, "path", path);
	/* Two frontends still share it once the monitors are gone. */
	if (!ret && mux && opt_on(qemu_opts_get(old, "mux")))
		ret = qemu_opts_set(&o, "mux", "on");
	if (!ret) {
		text = qemu_opts_print(&o);
		ret = out_dup(b, "-chardev");
	}
	if (!ret)
		ret = out_push(b, text);
	else
		free(text);
	qemu_opts_free(&o);
	return ret ? fail(b, ret, "out of memory") : 0;
}

static int chardev_new_path(struct builder *b, const char *id, const char *backend,
			    const struct chardev_refs *r, char **path)
{
	const char *dir = b->spec->state_dir;
	int n = 0;

	*path = NULL;
	if (r->serial_index == 0)
		n = asprintf(path, "%s/serial.log", dir);
	else if (r->serial_index > 0)
		n = asprintf(path, "%s/serial%d.log", dir, r->serial_index);
	else if (in_list(backend, host_backends, ARRAY_SIZE(host_backends)))
		n = asprintf(path, "%s/chardev-%s.log", dir, id);
	if (n < 0) {
		*path = NULL;
		return fail(b, -ENOMEM, "out of memory");
	}
	return 0;
}

static int rewrite_chardev(struct builder *b, struct qemu_argv_iter *it)
{
	struct qemu_opts o = { NULL, 0 };
	struct chardev_refs r;
	const char *id, *backend;
	char *path = NULL;
	int ret;

	ret = qemu_opts_parse(it->arg, &o);
	if (ret == -ENOMEM)
		goto out;
	id = qemu_opts_get(&o, "id");
	backend = qemu_opts_first_bare(&o) ?: qemu_opts_get(&o, "backend");
	if (ret || !id) {
		/* restore_allow refused it already */
		ret = fail(b, -EINVAL, "-chardev %s: no id", it->arg);
		goto out;
	}
	ret = chardev_refs(b, id, &r);
	if (ret || (r.monitors && !r.users))
		goto out;
	ret = chardev_new_path(b, id, backend, &r, &path);
	if (ret)
		goto out;
	if (path)
		ret = chardev_to_file(b, &o, id, path, r.users > 1);
	else
		ret = keep(b, it);
out:
	free(path);
	qemu_opts_free(&o);
	return ret == -ENOMEM ? fail(b, ret, "out of memory") : ret;
}

/* ---- serial, parallel, debug console ---- */

static int rewrite_serial(struct builder *b, struct qemu_argv_iter *it)
{
	if (!strcmp(it->arg, "none"))
		return keep(b, it);
	/* Counted in order so the chardev behind it gets this index. */
	if (!strncmp(it->arg, "chardev:", 8)) {
		b->serials++;
		return keep(b, it);
	}
	return port_file(b, "-serial", "serial", b->serials++);
}

static int rewrite_parallel(struct builder *b, struct qemu_argv_iter *it)
{
	if (!strcmp(it->arg, "none") || !strncmp(it->arg, "chardev:", 8))
		return keep(b, it);
	return port_file(b, "-parallel", "parallel", b->parallels++);
}

static int rewrite_debugcon(struct builder *b, struct qemu_argv_iter *it)
{
	if (!strcmp(it->arg, "none") || !strncmp(it->arg, "chardev:", 8))
		return keep(b, it);
	return port_file(b, "-debugcon", "debugcon", b->debugcons++);
}

/* ---- display ---- */

static int display_none(struct builder *b)
{
	if (b->display_done)
		return 0;
	b->display_done = true;
	return out_pair(b, "-display", "none");
}

static int rewrite_display(struct builder *b, struct qemu_argv_iter *it)
{
	int ret = optval_is(it->arg, "type", true, "none");

	if (ret < 0)
		return fail(b, ret, "out of memory");
	if (ret)
		return display_none(b);
	b->need_display = true;
	return 0;
}

static int drop_display(struct builder *b, struct qemu_argv_iter *it)
{
	b->need_display = true;
	return 0;
}

static int rewrite_nographic(struct builder *b, struct qemu_argv_iter *it)
{
	int ret;

	b->nographic = true;
	ret = display_none(b);
	/* -nographic also sets the machine's graphics=off, which the guest
	 * sees through fw_cfg: keep the hardware identical. */
	return ret ? ret : out_pair(b, "-machine", "graphics=off");
}

/* ---- files of the primary ---- */

static int rewrite_pidfile(struct builder *b, struct qemu_argv_iter *it)
{
	int ret = out_dup(b, "-pidfile");

	return ret ? ret : out_fmt(b, "%s/qemu.pid", b->spec->state_dir);
}

static int rewrite_logfile(struct builder *b, struct qemu_argv_iter *it)
{
	int ret = out_dup(b, "-D");

	return ret ? ret : out_fmt(b, "%s/qemu.log", b->spec->state_dir);
}

/* ---- the main memory backend ---- */

static bool is_main_ram(struct builder *b, const char *type, const char *id)
{
	return in_list(type, ram_backends, ARRAY_SIZE(ram_backends)) &&
	       streq(id, b->spec->ram_backend_id);
}

static int ram_json(struct builder *b, struct json_object *obj)
{
	const char *text;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(memfd_keys); i++)
		json_object_object_del(obj, memfd_keys[i]);
	if (json_object_object_add(obj, "qom-type",
				   json_object_new_string("memory-backend-file")) ||
	    json_object_object_add(obj, "mem-path",
				   json_object_new_string(b->spec->ram_path)) ||
	    json_object_object_add(obj, "share", json_object_new_boolean(1)))
		return fail(b, -ENOMEM, "out of memory");
	text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
	return out_dup(b, text ? text : "");
}

static int ram_kv(struct builder *b, struct qemu_opts *o)
{
	size_t i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(memfd_keys); i++)
		qemu_opts_del(o, memfd_keys[i]);
	/* The type is either the bare leading value or qom-type=. */
	if (qemu_opts_first_bare(o))
		ret = qemu_opts_set(o, NULL, "memory-backend-file");
	else
		ret = qemu_opts_set(o, "qom-type", "memory-backend-file");
	/* Set in place: QEMU applies properties in the order given. */
	if (!ret)
		ret = qemu_opts_set(o, "mem-path", b->spec->ram_path);
	if (!ret)
		ret = qemu_opts_set(o, "share", "on");
	if (ret)
		return fail(b, ret, "out of memory");
	return out_push(b, qemu_opts_print(o));
}

static int rewrite_object(struct builder *b, struct qemu_argv_iter *it)
{
	struct optval v;
	int ret;

	ret = optval_parse(it->arg, &v);
	if (ret) {
		ret = fail(b, ret, "out of memory");
		goto out;
	}
	if (!is_main_ram(b, optval_get(&v, "qom-type", true), optval_get(&v, "id", false))) {
		ret = keep(b, it);
		goto out;
	}
	b->found_ram = true;
	ret = out_dup(b, "-object");
	if (!ret)
		ret = v.json ? ram_json(b, v.json) : ram_kv(b, &v.kv);
out:
	optval_free(&v);
	return ret;
}

/* ---- NICs: the net buffer's datagram sockets ---- */

static int count_netdevs(const struct builder *b)
{
	int n = 0;

	for (int i = 1; i < b->argc; i++)
		if (streq(b->argv[i], "-netdev") || streq(b->argv[i], "--netdev"))
			n++;
	return n;
}

static const char *tap_for(const struct builder *b, const char *id)
{
	const struct restore_spec *sp = b->spec;
	const char *tap = restore_tap_by_id(sp, id);

	if (tap)
		return tap;
	if (sp->ntaps == 1 && !strchr(sp->taps[0], '=') && count_netdevs(b) == 1)
		return sp->taps[0];
	return NULL;
}

static int rewrite_netdev(struct builder *b, struct qemu_argv_iter *it)
{
	struct qemu_opts o = { NULL, 0 };
	const char *type, *id, *tap;
	char path[PATH_MAX];
	int ret;

	if (it->arg[0] == '{' || qemu_opts_parse(it->arg, &o))
		return fail(b, -EINVAL, "-netdev %s: does not parse", it->arg);
	type = qemu_opts_first_bare(&o) ?: qemu_opts_get(&o, "type");
	id = qemu_opts_get(&o, "id");
	/* the primary's TAP, where the agent has one for that NIC */
	tap = id && streq(type, "tap") ? restore_tap_by_id(b->spec, id) : NULL;
	if (!tap && (!id || !type ||
		     !(streq(type, "dgram") || (streq(type, "socket") && qemu_opts_get(&o, "udp"))))) {
		qemu_opts_free(&o);
		return keep(b, it);
	}
	tap = tap ?: tap_for(b, id);
	ret = out_dup(b, "-netdev");
	if (!ret && tap) {
		/* The device state does not depend on the backend. */
		struct qemu_opts t = { NULL, 0 };
		ret = qemu_opts_set(&t, NULL, "tap") ?: qemu_opts_set(&t, "id", id) ?:
		      qemu_opts_set(&t, "ifname", tap) ?: qemu_opts_set(&t, "script", "no") ?:
		      qemu_opts_set(&t, "downscript", "no");
		ret = ret ? fail(b, ret, "out of memory") : out_push(b, qemu_opts_print(&t));
		qemu_opts_free(&t);
	} else if (!ret) {
		/* Unix sockets in the state dir: the primary's files may still
		 * exist (QEMU would fail to bind them), and an inet socket would
		 * send the guest's frames wherever the primary named, from the
		 * backup's own address. The net buffer of a pair whose roles
		 * move owns them next (dev_netbuf.c); else they lead nowhere. */
		struct qemu_opts u = { NULL, 0 };
		char local[PATH_MAX];

		snprintf(local, sizeof(local), "%s/netdev-%s.sock", b->spec->state_dir, id);
		snprintf(path, sizeof(path), "%s/netdev-%s.peer.sock", b->spec->state_dir, id);
		ret = qemu_opts_set(&u, NULL, "dgram") ?: qemu_opts_set(&u, "id", id) ?:
		      qemu_opts_set(&u, "local.type", "unix") ?:
		      qemu_opts_set(&u, "local.path", local) ?:
		      qemu_opts_set(&u, "remote.type", "unix") ?:
		      qemu_opts_set(&u, "remote.path", path);
		ret = ret ? fail(b, ret, "out of memory") : out_push(b, qemu_opts_print(&u));
		qemu_opts_free(&u);
	}
	qemu_opts_free(&o);
	return ret;
}

/* ---- replicated disks: an overlay over the replica in place of the image ---- */

/* Keys of a replicated disk's -drive that name its image and how to read
 * it: all replaced by the overlay. */
static bool image_key(const char *key)
{
	static const char *const keys[] = { "file", "format", "driver", "backing", "snapshot" };

	for (size_t i = 0; key && i < ARRAY_SIZE(keys); i++) {
		size_t n = strlen(keys[i]);

		if (!strncmp(key, keys[i], n) && (!key[n] || key[n] == '.'))
			return true;
	}
	return false;
}

/* -drive file=IMAGE,format=raw,... -> file=OVERLAY,format=qcow2: the
 * drive's id, interface and cache stay, its image options go. */
static int rewrite_drive(struct builder *b, const char *arg, int disk)
{
	struct qemu_opts o = { NULL, 0 };
	size_t i = 0;
	char *text;
	int ret = qemu_opts_parse(arg, &o);

	while (!ret && i < o.n) {
		char *key = image_key(o.v[i].key) ? strdup(o.v[i].key) : NULL;

		if (key)
			qemu_opts_del(&o, key); /* it frees o.v[i].key */
		else if (image_key(o.v[i].key))
			ret = -ENOMEM;
		else
			i++;
		free(key);
	}
	if (!ret)
		ret = qemu_opts_set(&o, "file", b->spec->disks[disk].overlay);
	if (!ret)
		ret = qemu_opts_set(&o, "format", b->overlay_as_raw ? "raw" : "qcow2");
	text = ret ? NULL : qemu_opts_print(&o);
	qemu_opts_free(&o);
	if (!text)
		return fail(b, -ENOMEM, "out of memory");
	/* what the primary gave besides the image (if=, cache=, ...) is
	 * judged as any -drive is */
	ret = restore_allow_option(b->spec, "drive", text, b->err, b->errlen);
	ret = ret ? ret : out_dup(b, "-drive");
	if (ret) {
		free(text);
		return ret;
	}
	return out_push(b, text);
}

/* Options of the replaced node the guest notices, kept if they say
 * something QEMU accepts: how discards and zero writes are handled. */
static int copy_guest_visible(struct json_object *to, const struct qemu_opts *from)
{
	static const char *const discard[] = { "ignore", "off", "unmap", "on", NULL };
	static const char *const zeroes[] = { "off", "on", "unmap", NULL };
	const char *d = qemu_opts_get(from, "discard"), *z = qemu_opts_get(from, "detect-zeroes");
	int ret = 0;

	for (const char *const *v = discard; d && *v && !ret; v++)
		if (!strcmp(d, *v))
			ret = json_object_object_add(to, "discard", json_object_new_string(d));
	for (const char *const *v = zeroes; z && *v && !ret; v++)
		if (!strcmp(z, *v))
			ret = json_object_object_add(to, "detect-zeroes", json_object_new_string(z));
	return ret ? -ENOMEM : 0;
}

/* A replicated disk's -blockdev node, whatever its driver and children:
 * a qcow2 node of the same name (the guest's device refers to it) over
 * the overlay, whose own header names the replica as its raw backing
 * file. The nodes that were below it are dropped (block_graph.h). */
static struct json_object *overlay_node(struct builder *b, const struct qemu_opts *from,
					int disk)
{
	struct json_object *node = json_object_new_object(), *file = json_object_new_object();
	const char *overlay = b->spec->disks[disk].overlay, *name = qemu_opts_get(from, "node-name");
	int ret = !node || !file || !name; /* planned by its name: it has one */

	ret = ret || json_object_object_add(node, "node-name",
					    json_object_new_string(name));
	if (b->overlay_as_raw) {
		/* the bug this hook recreates: the overlay read as a raw file */
		ret = ret || json_object_object_add(node, "driver", json_object_new_string("file"));
		ret = ret || json_object_object_add(node, "filename", json_object_new_string(overlay));
		json_object_put(file);
		file = NULL;
	} else {
		ret = ret || json_object_object_add(node, "driver", json_object_new_string("qcow2"));
		ret = ret || json_object_object_add(file, "driver", json_object_new_string("file"));
		ret = ret || json_object_object_add(file, "filename", json_object_new_string(overlay));
		ret = ret || json_object_object_add(node, "file", file);
		file = NULL;
	}
	ret = ret || copy_guest_visible(node, from);
	json_object_put(file);
	if (ret) {
		json_object_put(node);
		return NULL;
	}
	return node;
}

static int rewrite_blockdev(struct builder *b, const char *arg, int disk)
{
	struct qemu_opts o = { NULL, 0 };
	struct json_object *node = NULL;
	int ret = block_graph_parse(arg, &o);

	if (!ret)
		node = overlay_node(b, &o, disk);
	qemu_opts_free(&o);
	if (!node)
		return fail(b, ret == -EINVAL ? ret : -ENOMEM, "%s", ret == -EINVAL ?
			    "a replicated disk's -blockdev does not parse" : "out of memory");
	ret = out_dup(b, "-blockdev");
	if (!ret)
		ret = out_dup(b, json_object_to_json_string_ext(node, JSON_C_TO_STRING_PLAIN |
								JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(node);
	return ret;
}

/* -drive and -blockdev, as the plan says: a replicated disk's definition
 * is rebuilt over its overlay, the nodes below it dropped, the rest is
 * the allowlist's to judge. */
static int rewrite_disk_option(struct builder *b, struct qemu_argv_iter *it)
{
	int argi = qemu_argv_arg_index(it), disk = b->plan.disk[argi];

	switch (b->plan.action[argi]) {
	case BLOCK_GRAPH_DROP:
		log_info("restore: %s %s dropped: it lies under a replicated disk, whose replica "
			 "holds what the guest saw through it", it->opt, it->arg);
		return 0;
	case BLOCK_GRAPH_REPLACE:
		return is_opt(it, "drive") ? rewrite_drive(b, it->arg, disk) :
					     rewrite_blockdev(b, it->arg, disk);
	default:
		return 0;
	}
}

/* Everything but the disks, against the allowlist, before the disks are
 * planned: a HELLO whose command line is not QEMU's at all is refused for
 * what it is, not for the disks it lacks. */
static int allow_other_options(struct builder *b)
{
	struct qemu_argv_iter it;
	int ret;

	iter_init(b, &it);
	while ((ret = next_opt(b, &it)) > 0)
		if (!is_opt(&it, "drive") && !is_opt(&it, "blockdev") &&
		    (ret = restore_allow_option(b->spec, it.name, it.arg, b->err, b->errlen)))
			return ret;
	return ret;
}

static int plan_disks(struct builder *b)
{
	struct block_graph_disk d[RESTORE_MAX_DISKS];
	const char *v = getenv(RESTORE_TEST_OVERLAY_AS_RAW);

	for (int i = 0; i < b->spec->ndisks; i++)
		d[i] = (struct block_graph_disk){ .id = b->spec->disks[i].id,
						  .node = b->spec->disks[i].node,
						  .file = b->spec->disks[i].file };
	b->overlay_as_raw = v && !strcmp(v, "1");
	if (b->overlay_as_raw)
		log_warn("restore: test hook %s=1: replicated disks are opened wrongly on purpose",
			 RESTORE_TEST_OVERLAY_AS_RAW);
	return block_graph_plan(b->argv, b->argc, d, b->spec->ndisks, &b->plan, b->err, b->errlen);
}

/* ---- putting it together ---- */

static const struct rule {
	const char *name;
	int (*fn)(struct builder *b, struct qemu_argv_iter *it);
} rules[] = {
	/* the agent runs QEMU in the foreground and starts the guest */
	{ "daemonize", drop },
	{ "S", drop },
	{ "incoming", drop },
	/* the agent's own -qmp replaces every monitor */
	{ "qmp", drop },
	{ "qmp-pretty", drop },
	{ "monitor", drop },
	{ "mon", drop },
	{ "chardev", rewrite_chardev },
	{ "serial", rewrite_serial },
	{ "parallel", rewrite_parallel },
	{ "debugcon", rewrite_debugcon },
	{ "display", rewrite_display },
	{ "vnc", drop_display },
	{ "spice", drop_display },
	{ "nographic", rewrite_nographic },
	/* the guest kernel is in the replica RAM: nothing boots again */
	{ "kernel", drop_boot },
	{ "initrd", drop_boot },
	{ "append", drop_boot },
	{ "runas", drop_runas },
	{ "pidfile", rewrite_pidfile },
	{ "D", rewrite_logfile },
	{ "object", rewrite_object },
	{ "netdev", rewrite_netdev },
};

static int rewrite_one(struct builder *b, struct qemu_argv_iter *it)
{
	size_t i;
	int ret;

	/* every other option passed the allowlist before the plan
	 * (allow_other_options); a disk the plan keeps is judged here */
	if (is_opt(it, "drive") || is_opt(it, "blockdev")) {
		if (b->plan.action[qemu_argv_arg_index(it)] != BLOCK_GRAPH_KEEP)
			return rewrite_disk_option(b, it);
		ret = restore_allow_kept_disk(b->spec, it->name, it->arg, b->err, b->errlen);
		if (ret)
			return ret;
	}
	for (i = 0; it->name && i < ARRAY_SIZE(rules); i++)
		if (!strcmp(it->name, rules[i].name))
			return rules[i].fn(b, it);
	return keep(b, it);
}

static int append_tail(struct builder *b)
{
	int ret = 0;

	if (b->need_display)
		ret = display_none(b);
	/* -nographic puts the default serial port on stdio; with no
	 * -serial, no isa-serial and defaults on, the primary has that one
	 * port, which must keep existing (-nodefaults has none). */
	if (!ret && b->nographic && !b->serial_opt && !b->isa_serial && !b->nodefaults)
		ret = port_file(b, "-serial", "serial", 0);
	if (!ret)
		ret = out_dup(b, "-qmp");
	if (!ret)
		ret = out_fmt(b, "unix:%s/qmp.sock,server=on,wait=off", b->qmp_dir);
	if (!ret)
		ret = out_pair(b, "-incoming", "defer");
	return ret;
}

/* state_dir inside key=value text: commas doubled. */
static int escape_dir(struct builder *b)
{
	struct qemu_opts o = { NULL, 0 };
	int ret;

	ret = qemu_opts_set(&o, NULL, b->spec->state_dir);
	if (!ret) {
		b->qmp_dir = qemu_opts_print(&o);
		if (!b->qmp_dir)
			ret = -ENOMEM;
	}
	qemu_opts_free(&o);
	return ret ? fail(b, ret, "out of memory") : 0;
}

static int build(struct builder *b)
{
	struct qemu_argv_iter it;
	int ret;

	ret = escape_dir(b);
	if (!ret)
		ret = prescan(b);
	if (!ret)
		ret = allow_other_options(b);
	if (!ret)
		ret = plan_disks(b);
	if (ret)
		return ret;
	/* Never the wire's program: the agent's own QEMU. */
	if (strcmp(b->argv[0], b->spec->emulator))
		log_debug("restore: runs %s, not the primary's %s", b->spec->emulator, b->argv[0]);
	ret = out_dup(b, b->spec->emulator);
	iter_init(b, &it);
	while (!ret && (ret = next_opt(b, &it)) > 0)
		ret = rewrite_one(b, &it);
	if (ret)
		return ret;
	if (!b->found_ram)
		return fail(b, -EINVAL, "the primary's command line has no memory backend '%s'",
			    b->spec->ram_backend_id);
	return append_tail(b);
}

int restore_cmdline_build(char *const *argv_in, int argc_in,
			  const struct restore_spec *spec, char ***argv_out,
			  char *err, size_t errlen)
{
	struct builder b = {
		.spec = spec, .argv = argv_in, .argc = argc_in,
		.err = err, .errlen = errlen,
	};
	int ret;

	*argv_out = NULL;
	if (errlen)
		err[0] = '\0';
	if (!argv_in || argc_in < 1 || !spec || !spec->state_dir || !spec->emulator ||
	    !spec->ram_path || !spec->ram_backend_id)
		return fail(&b, -EINVAL, "no command line or an incomplete restore spec");
	if (spec->ndisks < 0 || spec->ndisks > RESTORE_MAX_DISKS)
		return fail(&b, -EINVAL, "%d disks: at most %d", spec->ndisks, RESTORE_MAX_DISKS);
	ret = build(&b);
	free(b.qmp_dir);
	block_graph_free(&b.plan);
	if (ret) {
		restore_cmdline_free(b.out);
		return ret;
	}
	*argv_out = b.out;
	return 0;
}

void restore_cmdline_free(char **argv)
{
	char **p;

	if (!argv)
		return;
	for (p = argv; *p; p++)
		free(*p);
	free(argv);
}
