/* The pair config parser: a key table, one line at a time, every error
 * reported with its file and line (see config.h). */
#include "config.h"
#include "netaddr.h"

#include <ctype.h>
#include <unistd.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum kind { STR, ADDR, UINT, BOOL, ENUM, LIST };

/* NULL when text is acceptable, else what is wrong with it. */
typedef const char *(*value_check)(const char *text);

struct key {
	const char *section, *name;
	enum kind kind;
	size_t offset;
	unsigned long min, max;
	const char *def;
	const char *const *values; /* ENUM: NULL-terminated */
	value_check check;
	const char *flags;
	unsigned needs;
};

static const char *const policy_values[] = { "fixed", "dirty-rate", "output-aware", "hybrid", NULL };
const char *const config_tracker_values[] = { "auto", "compare", "hash", "soft-dirty", NULL };
static const char *const log_target_values[] = { "stderr", "syslog", NULL };
static const char *const takeover_values[] = { "auto", "manual", NULL };
static const char *const compress_values[] = { "auto", "on", "off", NULL };
const char *const config_disk_capture_values[] = { "mirror", "bitmap", NULL };
static const char *const log_level_values[] = { "info", "debug", NULL };

/* [ID=]NAME, NAME a possible interface name (IFNAMSIZ 16 with its NUL). */
static const char *check_tap(const char *text)
{
	const char *name = strchr(text, '=');

	name = name ? name + 1 : text;
	if (name == text + 1 || !*name || strlen(name) > 15 || strpbrk(name, "/ \t"))
		return "is not [ID=]NAME with NAME a TAP device (at most 15 characters)";
	return NULL;
}

/* [ID=]tap:NAME or [ID=]packet:IFACE, as remus-replicator --net-out. */
static const char *check_net_out(const char *text)
{
	const char *spec = strchr(text, '=');

	spec = spec ? spec + 1 : text;
	/* the ID must fit struct net_out's netdev[64] */
	if (spec == text + 1 || spec - text > 64 ||
	    (strncmp(spec, "tap:", 4) && strncmp(spec, "packet:", 7)) || !strchr(spec, ':')[1])
		return "is not [ID=]tap:NAME or [ID=]packet:IFACE";
	return NULL;
}

#define RANGE_INIT(lo, hi) .min = (lo), .max = (hi)
#define KEY_ENTRY(id, sec, nam, knd, field, range, dflt, vals, chk, flg, nds) \
	[PC_##id] = { .section = sec, .name = nam, .kind = knd, \
		      .offset = offsetof(struct pair_config, field), RANGE_INIT(range), \
		      .def = dflt, .values = vals, .check = chk, .flags = flg, .needs = nds },
static const struct key keys[PC_NKEYS] = { PAIR_CONFIG_KEYS(KEY_ENTRY) };

/* The field of each key must have the type its kind stores into. */
#define FIELD_TYPE_OK(knd, field) _Generic(&((struct pair_config *)0)->field, \
	char **: knd == STR || knd == ADDR, \
	unsigned *: knd == UINT, \
	bool *: knd == BOOL, \
	const char **: knd == ENUM, \
	struct config_list *: knd == LIST, \
	default: 0)
#define KEY_TYPE_CHECK(id, sec, nam, knd, field, ...) \
	_Static_assert(FIELD_TYPE_OK(knd, field), "pair_config." #field " does not suit " #knd);
PAIR_CONFIG_KEYS(KEY_TYPE_CHECK)

/* Sections in the order of their first key in the table. */
#define MAX_SECTIONS 16
static const char *sections[MAX_SECTIONS];
static int nsections;

enum { SECTION_NONE = -1, SECTION_BAD = -2, SECTION_HOST = -3 };

static void build_sections(void)
{
	if (nsections)
		return;
	for (int k = 0; k < PC_NKEYS; k++) {
		int s = 0;

		while (s < nsections && strcmp(sections[s], keys[k].section))
			s++;
		if (s == nsections && nsections < MAX_SECTIONS) /* 10 today */
			sections[nsections++] = keys[k].section;
	}
}

static int section_index(const char *name)
{
	for (int s = 0; s < nsections; s++)
		if (!strcmp(sections[s], name))
			return s;
	return SECTION_NONE;
}

/* The bit of section name in a mask of sections; 0 for a section not in
 * the table (none today: build_sections takes every key's, up to
 * MAX_SECTIONS), rather than a shift by -1. */
static unsigned section_bit(const char *name)
{
	int s = section_index(name);

	return s < 0 ? 0 : 1u << s;
}

static void *field_of(struct pair_config *cfg, int k)
{
	return (char *)cfg + keys[k].offset;
}

/* ---- messages ---- */

static void __attribute__((format(printf, 3, 4)))
config_error(struct config_parser *p, bool at_line, const char *fmt, ...)
{
	va_list ap;

	if (++p->errors > CONFIG_MAX_ERRORS || !p->errf)
		return;
	if (at_line)
		fprintf(p->errf, "%s:%u: ", p->file, p->lineno);
	else
		fprintf(p->errf, "%s: ", p->file);
	va_start(ap, fmt);
	vfprintf(p->errf, fmt, ap);
	va_end(ap);
	fputc('\n', p->errf);
}

/* Lower case, '_' and ' ' as '-': how a key would be spelt correctly. */
static void normalize(const char *in, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; in[i] && i + 1 < outlen; i++)
		out[i] = in[i] == '_' || in[i] == ' ' ? '-' : (char)tolower((unsigned char)in[i]);
	out[i] = 0;
}

/* Levenshtein distance; b is short (a key or flag name). */
static size_t edit_distance(const char *a, const char *b)
{
	size_t lb = strlen(b), row[64], j;

	if (lb >= sizeof(row) / sizeof(row[0]))
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; a[i - 1]; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Distance from typed (normalized) to key k's name or any of its flags. */
static size_t key_distance(const char *typed, int k)
{
	size_t best = edit_distance(typed, keys[k].name);
	const char *f = keys[k].flags;

	while (f && *f) {
		char flag[64];
		size_t len = strcspn(f, "|"), d;

		if (len < sizeof(flag)) {
			memcpy(flag, f, len);
			flag[len] = 0;
			d = edit_distance(typed, flag);
			best = d < best ? d : best;
		}
		f += len + (f[len] == '|');
	}
	return best;
}

/* Close enough to be a typo rather than another word. */
static bool near(size_t distance, const char *typed)
{
	size_t len = strlen(typed);

	return distance <= (len < 6 ? 1 : len / 3);
}

static void unknown_key(struct config_parser *p, const char *name)
{
	const char *sec = sections[p->section];
	char typed[CONFIG_MAX_LINE + 1];
	size_t best = SIZE_MAX;
	int guess = -1;

	normalize(name, typed, sizeof(typed));
	for (int k = 0; k < PC_NKEYS; k++) {
		size_t d = strcmp(keys[k].section, sec) ? SIZE_MAX : key_distance(typed, k);

		if (d < best) {
			best = d;
			guess = k;
		}
	}
	if (guess >= 0 && near(best, typed)) {
		config_error(p, true, "unknown key '%s' in [%s]; did you mean '%s'?", name, sec,
			     keys[guess].name);
		return;
	}
	/* The right key in the wrong section. */
	for (int k = 0; k < PC_NKEYS; k++)
		if (!strcmp(typed, keys[k].name)) {
			config_error(p, true, "unknown key '%s' in [%s]; did you mean '%s' in [%s]?",
				     name, sec, keys[k].name, keys[k].section);
			return;
		}
	config_error(p, true, "unknown key '%s' in [%s]", name, sec);
}

static void unknown_section(struct config_parser *p, const char *name)
{
	char typed[CONFIG_MAX_LINE + 1];
	size_t best = SIZE_MAX;
	int guess = -1;

	normalize(name, typed, sizeof(typed));
	for (int s = 0; s < nsections; s++) {
		size_t d = edit_distance(typed, sections[s]);

		if (d < best) {
			best = d;
			guess = s;
		}
	}
	if (guess >= 0 && near(best, typed))
		config_error(p, true, "unknown section [%s]; did you mean [%s]?", name,
			     sections[guess]);
	else
		config_error(p, true, "unknown section [%s]", name);
}

/* ---- values ---- */

static int addr_check_netaddr(const char *text, char *err, size_t errlen)
{
	struct netaddr a;

	return netaddr_parse(text, &a, err, errlen);
}

/* The store_* functions: 0, or -EINVAL after saying what is wrong. */
static int store_uint(struct config_parser *p, const struct key *key, const char *text,
		      unsigned *dst)
{
	unsigned long v;
	int rc = cli_strtoul(text, key->min, key->max, &v);

	if (rc) {
		config_error(p, true, "[%s] %s: '%s' is %s (%lu-%lu)", key->section, key->name,
			     text, rc == -ERANGE ? "out of range" : "not a number", key->min,
			     key->max);
		return -EINVAL;
	}
	*dst = (unsigned)v;
	return 0;
}

static int store_bool(struct config_parser *p, const struct key *key, const char *text,
		      bool *dst)
{
	if (strcmp(text, "yes") && strcmp(text, "no")) {
		config_error(p, true, "[%s] %s: '%s' is not yes or no", key->section, key->name,
			     text);
		return -EINVAL;
	}
	*dst = !strcmp(text, "yes");
	return 0;
}

static int store_enum(struct config_parser *p, const struct key *key, const char *text,
		      const char **dst)
{
	char list[256] = "";

	for (int i = 0; key->values[i]; i++)
		if (!strcmp(text, key->values[i])) {
			*dst = key->values[i];
			return 0;
		}
	for (int i = 0; key->values[i]; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
			 i ? (key->values[i + 1] ? ", " : " or ") : "", key->values[i]);
	config_error(p, true, "[%s] %s: '%s' is not %s", key->section, key->name, text, list);
	return -EINVAL;
}

/* STR, ADDR and one value of a LIST: checked, then copied into *dst. */
static int store_text(struct config_parser *p, const struct key *key, const char *text,
		      char **dst)
{
	const char *why = NULL;
	char err[256], *copy;

	if (key->kind == ADDR && p->check_addr(text, err, sizeof(err))) {
		config_error(p, true, "[%s] %s: %s", key->section, key->name, err);
		return -EINVAL;
	}
	if (key->check)
		why = key->check(text);
	if (why) {
		config_error(p, true, "[%s] %s: '%s' %s", key->section, key->name, text, why);
		return -EINVAL;
	}
	copy = strdup(text);
	if (!copy) {
		config_error(p, true, "[%s] %s: out of memory", key->section, key->name);
		return -ENOMEM;
	}
	free(*dst);
	*dst = copy;
	return 0;
}

static int store_list(struct config_parser *p, const struct key *key, const char *text,
		      struct config_list *l)
{
	if (l->n == CONFIG_MAX_LIST) {
		config_error(p, true, "[%s] %s: at most %d, '%s' is one more", key->section,
			     key->name, CONFIG_MAX_LIST, text);
		return -EINVAL;
	}
	if (store_text(p, key, text, &l->v[l->n]))
		return -EINVAL;
	l->n++;
	return 0;
}

/* Store text as key k's value. */
static int store_value(struct config_parser *p, int k, const char *text)
{
	const struct key *key = &keys[k];
	void *dst = field_of(p->cfg, k);

	switch (key->kind) {
	case UINT: return store_uint(p, key, text, dst);
	case BOOL: return store_bool(p, key, text, dst);
	case ENUM: return store_enum(p, key, text, dst);
	case LIST: return store_list(p, key, text, dst);
	case STR:
	case ADDR: return store_text(p, key, text, dst);
	}
	return -EINVAL;
}

void pair_config_init(struct pair_config *cfg)
{
	/* Defaults go through the same code as the file's values; a parser
	 * that writes nowhere, since the table's defaults are valid (tested). */
	struct config_parser quiet = { .cfg = cfg, .file = "defaults",
				       .check_addr = addr_check_netaddr };

	memset(cfg, 0, sizeof(*cfg));
	quiet.errf = NULL;
	for (int k = 0; k < PC_NKEYS; k++)
		if (keys[k].def)
			store_value(&quiet, k, keys[k].def);
}

void pair_config_free(struct pair_config *cfg)
{
	for (int k = 0; k < PC_NKEYS; k++) {
		void *f = field_of(cfg, k);

		if (keys[k].kind == STR || keys[k].kind == ADDR) {
			free(*(char **)f);
		} else if (keys[k].kind == LIST) {
			struct config_list *l = f;

			for (int i = 0; i < l->n; i++)
				free(l->v[i]);
		}
	}
	for (int h = 0; h < cfg->nhosts; h++) {
		struct config_host *host = &cfg->hosts[h];

		free(host->name);
		free(host->address);
		free(host->state_dir);
		free(host->control_socket);
		free(host->libvirt_uri);
		for (int i = 0; i < host->net_out.n; i++)
			free(host->net_out.v[i]);
	}
	free(cfg->path);
	memset(cfg, 0, sizeof(*cfg));
}

/* ---- lines ---- */

void config_init(struct config_parser *p, struct pair_config *cfg, const char *file,
		 FILE *errf)
{
	build_sections();
	pair_config_init(cfg);
	cfg->path = strdup(file);
	*p = (struct config_parser){
		.cfg = cfg,
		.file = file,
		.errf = errf,
		.check_addr = addr_check_netaddr,
		.section = SECTION_NONE,
	};
}

static char *trim(char *s)
{
	char *end;

	/* *s first: the analyzer does not know that isspace(0) is false. */
	while (*s && isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	return s;
}

/* '#' or ';' at the start or after white space begins a comment, so that
 * a value can still hold "a#b". */
static void cut_comment(char *s)
{
	for (char *c = s; *c; c++)
		if ((*c == '#' || *c == ';') && (c == s || isspace((unsigned char)c[-1]))) {
			*c = 0;
			return;
		}
}

/* ---- [host NAME] ---- */

/* The keys of a host section: what differs between the hosts of a pair. */
static const struct host_key {
	const char *name;
	enum kind kind;
	size_t offset;
	value_check check;
} host_keys[] = {
	{ "address", ADDR, offsetof(struct config_host, address), NULL },
	{ "state-dir", STR, offsetof(struct config_host, state_dir), NULL },
	{ "net-out", LIST, offsetof(struct config_host, net_out), check_net_out },
	{ "control-socket", STR, offsetof(struct config_host, control_socket), NULL },
	{ "libvirt-uri", STR, offsetof(struct config_host, libvirt_uri), NULL },
};

/* Letters, digits, '.', '-' and '_': a host name, as --host takes it. */
static bool good_host_name(const char *name)
{
	size_t len = strlen(name);

	return len && len <= CONFIG_MAX_HOSTNAME &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

static void host_section(struct config_parser *p, const char *name)
{
	struct pair_config *c = p->cfg;
	struct config_host *h;

	p->section = SECTION_BAD;
	if (!good_host_name(name)) {
		config_error(p, true, "[host %s]: a host name is 1-%d of letters, digits, '.', '-' "
			     "and '_'", name, CONFIG_MAX_HOSTNAME);
		return;
	}
	for (int i = 0; i < c->nhosts; i++)
		if (!strcmp(c->hosts[i].name, name)) {
			config_error(p, true, "[host %s]: given twice (first on line %u)", name,
				     c->hosts[i].line);
			return;
		}
	if (c->nhosts == CONFIG_MAX_HOSTS) {
		config_error(p, true, "[host %s]: a pair has %d hosts, this is one more", name,
			     CONFIG_MAX_HOSTS);
		return;
	}
	h = &c->hosts[c->nhosts];
	h->name = strdup(name);
	if (!h->name) {
		config_error(p, true, "[host %s]: out of memory", name);
		return;
	}
	h->line = p->lineno;
	p->host = c->nhosts++;
	p->section = SECTION_HOST;
}

static void host_key_line(struct config_parser *p, const char *name, const char *value)
{
	struct config_host *h = &p->cfg->hosts[p->host];
	char section[sizeof("host ") + CONFIG_MAX_HOSTNAME];
	const struct host_key *hk = NULL;
	struct key key;
	void *dst;

	snprintf(section, sizeof(section), "host %s", h->name);
	for (size_t i = 0; i < sizeof(host_keys) / sizeof(host_keys[0]); i++)
		if (!strcmp(host_keys[i].name, name))
			hk = &host_keys[i];
	if (!hk) {
		config_error(p, true, "unknown key '%s' in [%s]; a host has address, state-dir, "
			     "net-out, control-socket and libvirt-uri", name, section);
		return;
	}
	dst = (char *)h + hk->offset;
	if (hk->kind != LIST && *(char **)dst) {
		config_error(p, true, "[%s] %s: given twice", section, name);
		return;
	}
	if (!*value) {
		config_error(p, true, "[%s] %s: value missing", section, name);
		return;
	}
	key = (struct key){ .section = section, .name = hk->name, .kind = hk->kind,
			    .check = hk->check };
	if (dst == &h->libvirt_uri)
		h->libvirt_uri_line = p->lineno;
	if (hk->kind == LIST)
		store_list(p, &key, value, dst);
	else
		store_text(p, &key, value, dst);
}

static void section_line(struct config_parser *p, char *text)
{
	size_t len = strlen(text);
	char *name;

	p->section = SECTION_BAD; /* keys under a bad header are not checked */
	if (text[len - 1] != ']') {
		config_error(p, true, "bad section header '%s'; want [NAME]", text);
		return;
	}
	text[len - 1] = 0;
	name = trim(text + 1);
	if (!strncmp(name, "host", 4) && isspace((unsigned char)name[4])) {
		host_section(p, trim(name + 4));
		return;
	}
	p->section = section_index(name);
	if (p->section == SECTION_NONE) {
		p->section = SECTION_BAD;
		unknown_section(p, name);
		return;
	}
	p->seen_sections |= 1u << p->section;
}

static void key_line(struct config_parser *p, char *text)
{
	char *eq = strchr(text, '='), *name, *value;
	int k;

	if (!eq) {
		config_error(p, true, "missing '=' in '%s'; want key = value", text);
		return;
	}
	*eq = 0;
	name = trim(text);
	value = trim(eq + 1);
	if (!*name) {
		config_error(p, true, "missing key before '= %s'", value);
		return;
	}
	if (p->section == SECTION_NONE) {
		config_error(p, true, "key '%s' outside any section", name);
		return;
	}
	if (p->section == SECTION_BAD)
		return;
	if (p->section == SECTION_HOST) {
		host_key_line(p, name, value);
		return;
	}
	for (k = 0; k < PC_NKEYS; k++)
		if (!strcmp(keys[k].section, sections[p->section]) && !strcmp(keys[k].name, name))
			break;
	if (k == PC_NKEYS) {
		unknown_key(p, name);
		return;
	}
	if (p->given[k] && keys[k].kind != LIST) {
		config_error(p, true, "[%s] %s: given twice (first on line %u)", keys[k].section,
			     name, p->given[k]);
		return;
	}
	if (!p->given[k])
		p->given[k] = p->lineno; /* given, if badly: not also "required" */
	if (!*value) {
		config_error(p, true, "[%s] %s: value missing", keys[k].section, name);
		return;
	}
	if (store_value(p, k, value))
		return;
	if (!p->cfg->set[k])
		p->cfg->line[k] = p->lineno;
	p->cfg->set[k] = true;
}

void config_line(struct config_parser *p, const char *line, size_t len)
{
	char buf[CONFIG_MAX_LINE + 2], *text;

	p->lineno++;
	if (len && line[len - 1] == '\n')
		len--;
	if (len && line[len - 1] == '\r')
		len--;
	if (len > CONFIG_MAX_LINE) {
		config_error(p, true, "line too long (%zu characters, at most %d)", len,
			     CONFIG_MAX_LINE);
		return;
	}
	if (memchr(line, 0, len)) {
		config_error(p, true, "NUL byte in the line (is this a text file?)");
		return;
	}
	memcpy(buf, line, len);
	buf[len] = 0;
	cut_comment(buf);
	text = trim(buf);
	if (!*text)
		return;
	if (*text == '[')
		section_line(p, text);
	else
		key_line(p, text);
}

/* ---- across keys ---- */

/* The line of whichever of a and b the file gave (a first), 0 if neither. */
static unsigned line_of(const struct pair_config *c, int a, int b)
{
	return c->set[a] ? c->line[a] : c->set[b] ? c->line[b] : 0;
}

static void error_at(struct config_parser *p, unsigned line, const char *msg)
{
	unsigned saved = p->lineno;

	p->lineno = line;
	config_error(p, line != 0, "%s", msg);
	p->lineno = saved;
}

static void check_ranges(struct config_parser *p)
{
	const struct pair_config *c = p->cfg;
	char msg[160];

	if (c->epoch_min_ms > c->epoch_max_ms) {
		snprintf(msg, sizeof(msg), "[epoch] min-ms (%u) is above max-ms (%u)",
			 c->epoch_min_ms, c->epoch_max_ms);
		error_at(p, line_of(c, PC_EPOCH_MIN_MS, PC_EPOCH_MAX_MS), msg);
	}
	if (c->heartbeat_timeout_ms <= c->heartbeat_interval_ms) {
		snprintf(msg, sizeof(msg), "[heartbeat] timeout-ms (%u) must be longer than "
			 "interval-ms (%u)", c->heartbeat_timeout_ms, c->heartbeat_interval_ms);
		error_at(p, line_of(c, PC_HEARTBEAT_TIMEOUT_MS, PC_HEARTBEAT_INTERVAL_MS), msg);
	}
}

/* The replicator drives either a plain QEMU or a libvirt domain. */
static void check_vm(struct config_parser *p)
{
	if (!(p->seen_sections & section_bit("vm")))
		config_error(p, false, "missing section [vm]");
	else if (!p->given[PC_VM_QMP] && !p->given[PC_VM_DOMAIN])
		config_error(p, false, "[vm] qmp (plain QEMU) or domain (libvirt) is required");
	else if (p->given[PC_VM_QMP] && p->given[PC_VM_DOMAIN])
		error_at(p, p->given[PC_VM_DOMAIN] > p->given[PC_VM_QMP] ? p->given[PC_VM_DOMAIN]
									 : p->given[PC_VM_QMP],
			 "[vm] qmp and domain are both given; give exactly one");
}

/* [backup] takeover = manual: a cluster manager (Pacemaker) decides
 * which host runs the VM, and fences with its own stonith. */
static bool takeover_manual(const struct config_parser *p)
{
	return p->given[PC_BACKUP_TAKEOVER] && p->cfg->backup_takeover &&
	       !strcmp(p->cfg->backup_takeover, "manual");
}

/* Two fencers would race: under a cluster manager, only its own fences. */
static void check_takeover(struct config_parser *p)
{
	if (takeover_manual(p) && p->given[PC_HOOKS_FENCE] && p->cfg->hooks_fence &&
	    strcmp(p->cfg->hooks_fence, "none"))
		error_at(p, p->given[PC_HOOKS_FENCE], "[hooks] fence: with [backup] takeover = "
			 "manual the cluster manager fences (Pacemaker's stonith); write 'none' or "
			 "leave the key out");
}

static void check_needed(struct config_parser *p, enum config_role role)
{
	unsigned reported = 0; /* sections already said to be missing */

	/* the agent of a pair whose roles move becomes the VM's replicator */
	if (role == CONFIG_REPLICATOR || (role == CONFIG_AGENT && p->cfg->nhosts))
		check_vm(p);
	for (int k = 0; k < PC_NKEYS; k++) {
		unsigned bit = section_bit(keys[k].section);

		if (!(keys[k].needs & (unsigned)role) || p->given[k])
			continue;
		if (p->cfg->nhosts && (k == PC_BACKUP_ADDRESS || k == PC_BACKUP_STATE_DIR))
			continue; /* each [host] says it (check_hosts) */
		if (k == PC_HOOKS_FENCE && takeover_manual(p))
			continue; /* the cluster manager fences (check_takeover) */
		if (k == PC_HOOKS_FENCE)
			/* always by name: the operator must decide, see configs/ */
			config_error(p, false, "[hooks] fence is required: a command that fences "
				     "the primary before the backup takes over, or 'none'");
		else if (p->seen_sections & bit)
			config_error(p, false, "[%s] %s is required", keys[k].section, keys[k].name);
		else if (!(reported & bit))
			config_error(p, false, "missing section [%s]", keys[k].section);
		reported |= bit;
	}
}

/* A file with [host] sections names both hosts, each with what its
 * daemon needs, and nothing that would say it twice. */
static void check_hosts(struct config_parser *p, enum config_role role)
{
	static const int per_host[] = { PC_BACKUP_ADDRESS, PC_BACKUP_STATE_DIR, PC_BACKUP_TAP,
					PC_NETBUF_NET_OUT };
	const struct pair_config *c = p->cfg;
	char msg[200];

	if (!c->nhosts)
		return;
	if (c->nhosts < 2)
		error_at(p, c->hosts[0].line, "a pair with [host] sections needs two of them, "
			 "one for each host");
	/* A cluster manager promotes one of two replicas, and a parked VM is
	 * given up by the one other host (backup-agent/takeover.c). */
	if (c->nhosts > 2 && takeover_manual(p))
		error_at(p, p->given[PC_BACKUP_TAKEOVER], "[backup] takeover = manual: a cluster "
			 "manager promotes one of two hosts; a pair with a spare host (three "
			 "[host] sections) takes over by itself (takeover = auto)");
	for (size_t i = 0; i < sizeof(per_host) / sizeof(per_host[0]); i++) {
		int k = per_host[i];

		if (!p->given[k])
			continue;
		snprintf(msg, sizeof(msg), "[%s] %s: with [host] sections, each host's section "
			 "says it (%s)", keys[k].section, keys[k].name,
			 k == PC_BACKUP_ADDRESS ? "address" : k == PC_BACKUP_STATE_DIR ? "state-dir" :
			 "net-out; the restored VM's NICs go through a net buffer on that host too");
		error_at(p, p->given[k], msg);
	}
	for (int h = 0; h < c->nhosts; h++) {
		if (c->hosts[h].libvirt_uri && !p->given[PC_VM_DOMAIN]) {
			snprintf(msg, sizeof(msg), "[host %s] libvirt-uri: the host's libvirt "
				 "runs a libvirt domain ([vm] domain), which this file does not name",
				 c->hosts[h].name);
			error_at(p, c->hosts[h].libvirt_uri_line, msg);
		}
		if (!c->hosts[h].address) {
			snprintf(msg, sizeof(msg), "[host %s] address is required", c->hosts[h].name);
			error_at(p, c->hosts[h].line, msg);
		}
		if (!c->hosts[h].state_dir && role != CONFIG_ANY) {
			/* both roles: the replicator becomes this host's agent */
			snprintf(msg, sizeof(msg), "[host %s] state-dir is required", c->hosts[h].name);
			error_at(p, c->hosts[h].line, msg);
		}
	}
}

const struct config_host *config_host_find(const struct pair_config *cfg, const char *name)
{
	for (int h = 0; name && h < cfg->nhosts; h++)
		if (!strcmp(cfg->hosts[h].name, name))
			return &cfg->hosts[h];
	return NULL;
}

const struct config_host *config_host_peer(const struct pair_config *cfg,
					   const struct config_host *self)
{
	for (int h = 0; h < cfg->nhosts; h++)
		if (&cfg->hosts[h] != self)
			return &cfg->hosts[h];
	return NULL;
}

int config_host_self(const struct pair_config *cfg, const char *name, const char *prog,
		     FILE *errf, const struct config_host **self)
{
	char uts[256] = "";
	const struct config_host *h;

	*self = NULL;
	if (!cfg->nhosts) {
		if (!name)
			return 0;
		fprintf(errf, "%s: --host needs --config FILE with [host] sections\n", prog);
		return -1;
	}
	if (!name) {
		if (gethostname(uts, sizeof(uts) - 1) < 0)
			uts[0] = 0;
		uts[strcspn(uts, ".")] = 0;
		name = uts;
	}
	h = config_host_find(cfg, name);
	if (!h) {
		fprintf(errf, "%s: %s: this host is '%s', which is none of the file's [host] "
			"sections (%s, %s%s%s): give --host NAME\n", prog, cfg->path, name,
			cfg->hosts[0].name, cfg->nhosts > 1 ? cfg->hosts[1].name : "-",
			cfg->nhosts > 2 ? ", " : "", cfg->nhosts > 2 ? cfg->hosts[2].name : "");
		return -1;
	}
	*self = h;
	return 0;
}

int config_finish(struct config_parser *p, enum config_role role)
{
	check_ranges(p);
	check_hosts(p, role);
	check_needed(p, role);
	check_takeover(p);
	if (p->errors > CONFIG_MAX_ERRORS)
		fprintf(p->errf, "%s: %u more errors not shown\n", p->file,
			p->errors - CONFIG_MAX_ERRORS);
	return p->errors ? -EINVAL : 0;
}

int config_read_file(const char *path, enum config_role role, struct pair_config *cfg,
		     FILE *errf)
{
	struct config_parser p;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int rc;

	config_init(&p, cfg, path, errf);
	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		fprintf(errf, "%s: cannot read: %s\n", path, strerror(-rc));
		return rc;
	}
	while ((n = getline(&line, &cap, f)) >= 0)
		config_line(&p, line, (size_t)n);
	rc = ferror(f) ? -EIO : 0;
	if (rc)
		fprintf(errf, "%s: read error after line %u\n", path, p.lineno);
	free(line);
	fclose(f);
	if (config_finish(&p, role))
		rc = -EINVAL;
	return rc;
}
