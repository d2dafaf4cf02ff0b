/* Which host a replicator protects the VM to (backup_choice.h). */
#include "backup_choice.h"
#include "atomic_file.h"
#include "log.h"
#include "pair_role.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define RECORD_MAX 4096

static int index_of(const struct backup_choice *c, const char *name)
{
	for (int i = 0; name && i < c->n; i++)
		if (!strcmp(c->name[i], name))
			return i;
	return -1;
}

/* {"host": NAME, "hold_ms": N}, written whole. */
static void record_write(const struct backup_choice *c)
{
	char text[256];
	int len, rc;

	len = snprintf(text, sizeof(text), "{\"host\":\"%s\",\"hold_ms\":%u}\n",
		       c->name[c->bound], c->hold_ms);
	rc = atomic_file_write(c->record, text, (size_t)len);
	if (rc) /* kept in memory all the same: only a restart forgets it */
		log_warn("cannot record the backup host in %s: %s", c->record, strerror(-rc));
}

static void release(struct backup_choice *c, const char *why)
{
	if (c->bound < 0)
		return;
	log_info("backup host %s released: %s", c->name[c->bound], why);
	c->bound = -1;
	c->bound_until = 0;
	if (unlink(c->record) && errno != ENOENT)
		log_warn("cannot remove %s: %s", c->record, strerror(errno));
}

/* The last replicator's binding: kept until its host's window has passed
 * from now (when that replicator lost its link is not known, but it was
 * before now). A file that does not parse, or names a host the file
 * has not, binds nothing and says so. */
static void record_load(struct backup_choice *c, double now)
{
	char text[RECORD_MAX];
	struct json_object *o = NULL, *host, *hold;
	ssize_t n = -1;
	int fd, i = -1;

	fd = open(c->record, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("cannot read %s: %s", c->record, strerror(errno));
		return;
	}
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n > 0) {
		text[n] = 0;
		o = json_tokener_parse(text);
	}
	if (o && json_object_object_get_ex(o, "host", &host) &&
	    json_object_is_type(host, json_type_string) &&
	    json_object_object_get_ex(o, "hold_ms", &hold) &&
	    json_object_is_type(hold, json_type_int) && json_object_get_int64(hold) >= 0 &&
	    json_object_get_int64(hold) <= 24 * 3600 * 1000)
		i = index_of(c, json_object_get_string(host));
	if (i < 0) {
		log_warn("%s is not a record of another host of this pair's file: ignored", c->record);
	} else {
		c->bound = c->cur = i;
		c->hold_ms = (unsigned)json_object_get_int64(hold);
		c->bound_until = now + c->hold_ms / 1e3;
		log_info("backup host %s may still take over from the last replicator of this "
			 "host (%s): it alone is asked for %u ms", c->name[i], c->record, c->hold_ms);
	}
	json_object_put(o);
}

int backup_choice_init(struct backup_choice *c, const struct pair_config *pc,
		       const struct config_host *self, double now, char *err, size_t errlen)
{
	*c = (struct backup_choice){ .bound = -1 };
	if (!self)
		return 0;
	for (int h = 0; h < pc->nhosts; h++) {
		const struct config_host *host = &pc->hosts[h];
		char why[200];

		if (host == self)
			continue;
		if (netaddr_parse(host->address, &c->addr[c->n], why, sizeof(why))) {
			snprintf(err, errlen, "[host %s] address: %s", host->name, why);
			return -1;
		}
		c->name[c->n++] = host->name;
	}
	if ((size_t)snprintf(c->record, sizeof(c->record), "%s/%s", self->state_dir,
			     BACKUP_HOST_FILE) >= sizeof(c->record)) {
		snprintf(err, errlen, "[host %s] state-dir: too long", self->name);
		return -1;
	}
	record_load(c, now);
	return 0;
}

bool backup_choice_pick(struct backup_choice *c, double now, struct netaddr *out)
{
	if (!c->n)
		return false;
	if (c->bound >= 0 && c->bound_until > 0 && now >= c->bound_until) {
		char why[160];

		snprintf(why, sizeof(why), "its takeover window (%u ms) has passed and the VM "
			 "still runs here", c->hold_ms);
		release(c, why);
	}
	if (c->bound >= 0)
		c->cur = c->bound;
	*out = c->addr[c->cur];
	return true;
}

void backup_choice_failed(struct backup_choice *c)
{
	if (c->n < 2 || c->bound >= 0)
		return;
	c->cur = (c->cur + 1) % c->n;
	log_debug("next backup host to try: %s", c->name[c->cur]);
}

void backup_choice_committed(struct backup_choice *c, unsigned hold_ms)
{
	if (!c->n)
		return;
	c->bound = c->cur;
	c->bound_until = 0;
	c->committed = true;
	c->hold_ms = hold_ms;
	record_write(c);
}

void backup_choice_link_lost(struct backup_choice *c, bool may_take_over, double now)
{
	bool committed = c->committed;

	c->committed = false;
	if (c->bound < 0) {
		if (!committed)
			backup_choice_failed(c);
		return;
	}
	if (!may_take_over && committed)
		release(c, "it closed after our GOODBYE");
	else
		/* from this loss, whichever session it ends */
		c->bound_until = now + c->hold_ms / 1e3;
}

const char *backup_choice_bound(const struct backup_choice *c)
{
	return c->bound >= 0 ? c->name[c->bound] : NULL;
}
