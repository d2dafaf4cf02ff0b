/* remusctl's status output from canned replies: the text for a human, for
 * the replicator and for the agent in its states, and the Prometheus text
 * exposition, checked line by line and by a small checker of the format as
 * node_exporter's textfile collector reads it (every sample `name{labels}
 * value`, HELP and TYPE once each before a metric's samples, its samples
 * together, no series twice, counters named _total). The checker is
 * tested on bad input too. Also: remusctl's lists of states agree with
 * the daemons', and the agent's real status reply goes through both. */
#include "../backup-agent/agent.h"
#include "../remusctl/remusctl.h"
#include "../replicator/replicator.h"

#include <check.h>
#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char replicator_reply[] =
	"{\"daemon\":\"replicator\",\"vm\":\"vm1\",\"qemu_pid\":4321,\"backup\":\"192.0.2.20:7700\","
	"\"protection\":\"protected\",\"state_reason\":\"epoch 1200 committed\","
	"\"epoch_policy\":\"hybrid\",\"epoch_length_ms\":48.4,"
	"\"epoch_reason\":\"output waits\",\"vcpu_busy_pct\":12.5,\"vcpu_threads\":1,"
	"\"epoch_ms\":50,\"epoch\":1236,\"epochs_committed\":1234,\"last_acked_epoch\":1235,"
	"\"epochs_resent\":2,\"resyncs\":1,\"pause_p50_ms\":1.25,\"pause_p99_ms\":4.2,"
	"\"pause_max_ms\":7.5,\"pause_mean_ms\":1.5,\"pauses_recent\":1024,"
	"\"pause_stop_p50_ms\":0.25,\"pause_capture_p50_ms\":0.75,\"pause_capture_p99_ms\":3.5,"
	"\"pause_resume_p50_ms\":0.13,\"ack_p50_ms\":0.5,\"ack_p99_ms\":2.5,"
	"\"dirty_pages_per_epoch\":12.5,\"dirty_bytes_per_epoch\":51200,"
	"\"dirty_pages_total\":20000,\"checkpoint_bytes_per_epoch\":60000,"
	"\"checkpoint_bytes_p99\":120000,\"link_bytes_per_s\":2500000,\"link_queued_bytes\":0,"
	"\"ram_bytes\":134217728,\"early_epochs\":3,\"pause_state\":\"off\",\"handover\":\"none\","
	"\"vm_left_paused\":false,\"backup_operator\":true,\"tracker\":\"compare\","
	"\"tracker_reason\":\"no soft-dirty log\",\"net\":[{\"netdev\":\"n0\","
	"\"port\":\"packet:eth1\",\"output_commit\":true,\"frames_held\":3,\"bytes_held\":4500,"
	"\"frames_queued\":3,\"high_water_bytes\":9000,\"frames_out\":100,\"bytes_out\":150000,"
	"\"delay_p50_ms\":1.5,\"delay_p99_ms\":6,\"dropped_malformed\":0,"
	"\"dropped_oversized\":0,\"dropped_output\":0,\"inbound_frames\":50,"
	"\"inbound_dropped\":1},{\"netdev\":\"n1\",\"port\":\"tap:tap1\",\"output_commit\":false,"
	"\"frames_held\":0,\"bytes_held\":0,\"frames_queued\":0,\"high_water_bytes\":0,"
	"\"frames_out\":7,\"bytes_out\":700,\"delay_p50_ms\":0,\"delay_p99_ms\":0,"
	"\"dropped_malformed\":0,\"dropped_oversized\":0,\"dropped_output\":0,"
	"\"inbound_frames\":0,\"inbound_dropped\":0}],\"disk_pending_bytes\":0,\"disks\":[],"
	"\"disk_early_epochs\":0,\"disk_write_stalls\":0,\"disk_overflows\":0}";

static const char agent_backup_reply[] =
	"{\"daemon\":\"agent\",\"vm\":\"vm1\",\"pair\":null,\"state\":\"backup\","
	"\"state_reason\":\"epoch 1 committed: failover armed\",\"state_age_s\":12.3,"
	"\"listen\":\"0.0.0.0:7700\",\"state_dir\":\"/var/lib/remus/vm1\","
	"\"peer\":\"192.0.2.10\",\"peer_identity\":\"psk:remus:vm1\",\"replica_epoch\":1235,"
	"\"replica_committed_unix_ms\":1764000000000,\"replica_age_s\":0.042,"
	"\"failover_armed\":true,\"fence\":\"command\",\"no_failover\":false,"
	"\"epochs_committed\":1234,\"epochs_discarded\":2,\"initial_copies_lost\":1,"
	"\"commit_p50_ms\":0.8,\"commit_p99_ms\":2.1,\"commits_recent\":1024,"
	"\"ram_bytes\":134217728,\"replica_disks\":1}";

static const char agent_waiting_reply[] =
	"{\"daemon\":\"agent\",\"vm\":null,\"pair\":null,\"state\":\"waiting\","
	"\"state_reason\":\"listening on 127.0.0.1:7700, no primary yet\",\"state_age_s\":1.4,"
	"\"listen\":\"127.0.0.1:7700\",\"state_dir\":\"/srv/st\",\"peer\":null,"
	"\"peer_identity\":null,\"replica_epoch\":null,\"replica_committed_unix_ms\":null,"
	"\"replica_age_s\":null,\"failover_armed\":false,\"fence\":\"unconfigured\","
	"\"no_failover\":false,\"epochs_committed\":0,\"epochs_discarded\":0,"
	"\"commit_p50_ms\":null,\"commit_p99_ms\":null,\"commits_recent\":0,\"ram_bytes\":0,"
	"\"replica_disks\":0}";

static const char agent_master_reply[] =
	"{\"daemon\":\"agent\",\"vm\":\"vm1\",\"pair\":\"web\",\"state\":\"master\","
	"\"state_reason\":\"primary lost: VM restored from epoch 1240 as QEMU pid 5555; the agent "
	"exits\",\"state_age_s\":0,\"listen\":\"0.0.0.0:7700\",\"state_dir\":\"/var/lib/remus/vm1\","
	"\"peer\":null,\"peer_identity\":null,\"replica_epoch\":1240,"
	"\"replica_committed_unix_ms\":1764000000000,\"replica_age_s\":1.0,"
	"\"failover_armed\":false,\"fence\":\"none\",\"no_failover\":false,"
	"\"epochs_committed\":1240,\"epochs_discarded\":0,\"commit_p50_ms\":0.8,"
	"\"commit_p99_ms\":2.1,\"commits_recent\":1024,\"ram_bytes\":0,\"replica_disks\":0,"
	"\"qemu_pid\":5555}";

/* What f would print for the reply, as a string (static). */
static const char *render(void (*fn)(FILE *, struct json_object *), const char *reply)
{
	static char *buf;
	size_t len;
	struct json_object *o = json_tokener_parse(reply);
	FILE *f;

	ck_assert_msg(json_object_is_type(o, json_type_object), "canned reply is not JSON");
	free(buf);
	f = open_memstream(&buf, &len);
	fn(f, o);
	fclose(f);
	json_object_put(o);
	return buf;
}

/* ---- the text ---- */

START_TEST(test_replicator_text)
{
	ck_assert_str_eq(render(remusctl_status_text, replicator_reply),
		"VM vm1 (QEMU pid 4321) -> backup 192.0.2.20:7700: protected\n"
		"state:   protected: epoch 1200 committed\n"
		"epochs:  1234 committed, last acked 1235, current 1236; 2 resent, 1 full syncs, "
		"3 ended early\n"
		"length:  48 ms, policy hybrid (output waits)\n"
		"pause:   p50 1.25 ms, p99 4.20 ms, max 7.50 ms (p50: stop 0.25, capture 0.75, "
		"resume 0.13)\n"
		"dirty:   12.5 pages/epoch (50.0 KiB), 20000 pages in all (tracker compare: no "
		"soft-dirty log)\n"
		"link:    2.50 MB/s, 0 bytes queued; ack p50 0.50 ms, p99 2.50 ms\n"
		"net n0:  output commit via packet:eth1; 3 frames (4500 bytes) held, high water "
		"9000 bytes; added delay p50 1.5 ms, p99 6.0 ms; 100 out, 50 in; dropped 1\n"
		"net n1:  UNBUFFERED via tap:tap1; 0 frames (0 bytes) held, high water 0 bytes; "
		"added delay p50 0.0 ms, p99 0.0 ms; 7 out, 0 in; dropped 0\n");
}
END_TEST

/* A replicator from before the "daemon" key is still a replicator. */
START_TEST(test_reply_without_daemon_is_the_replicator)
{
	const char *text = render(remusctl_status_text,
				  "{\"vm\":\"old\",\"qemu_pid\":1,\"backup\":\"b:1\","
				  "\"protection\":\"syncing\"}");

	ck_assert(!strncmp(text, "VM old (QEMU pid 1) -> backup b:1: syncing\n", 43));
}
END_TEST

START_TEST(test_agent_text_backup)
{
	ck_assert_str_eq(render(remusctl_status_text, agent_backup_reply),
		"VM vm1 <- primary 192.0.2.10 (psk:remus:vm1): backup\n"
		"state:   backup for 12 s: epoch 1 committed: failover armed\n"
		"replica: epoch 1235, committed 0.0 s ago, in /var/lib/remus/vm1\n"
		"commits: 1234 committed, 2 discarded; commit p50 0.80 ms, p99 2.10 ms\n"
		"storage: 1 session(s) in a row lost their initial copy here (syncing it "
		"failed): check this host's storage\n"
		"failover: armed; fencing: the fence command runs before a takeover\n"
		"listen:  0.0.0.0:7700\n");
}
END_TEST

START_TEST(test_agent_text_waiting)
{
	ck_assert_str_eq(render(remusctl_status_text, agent_waiting_reply),
		"VM ? <- no primary: waiting\n"
		"state:   waiting for 1 s: listening on 127.0.0.1:7700, no primary yet\n"
		"replica: none committed yet, in /srv/st\n"
		"commits: 0 committed, 0 discarded\n"
		"failover: not armed; fencing: NOT CONFIGURED: a lost link with a live primary "
		"means two running VMs\n"
		"listen:  127.0.0.1:7700\n");
}
END_TEST

START_TEST(test_agent_text_master)
{
	ck_assert_str_eq(render(remusctl_status_text, agent_master_reply),
		"VM vm1: master: restored here, QEMU pid 5555\n"
		"state:   master for 0 s: primary lost: VM restored from epoch 1240 as QEMU pid 5555; "
		"the agent exits\n"
		"replica: epoch 1240, committed 1.0 s ago, in /var/lib/remus/vm1\n"
		"commits: 1240 committed, 0 discarded; commit p50 0.80 ms, p99 2.10 ms\n"
		"failover: not armed; fencing: none (--no-fence: a lost link is a lost primary)\n"
		"listen:  0.0.0.0:7700\n");
}
END_TEST

/* The VM's name comes from the other host: no escape sequence of it
 * reaches the terminal. */
START_TEST(test_agent_text_sanitized)
{
	const char *text = render(remusctl_status_text,
				  "{\"daemon\":\"agent\",\"vm\":\"vm\\u001b[2J\\nx\","
				  "\"state\":\"syncing\",\"peer\":\"h\",\"peer_identity\":\"i\"}");

	ck_assert(!strncmp(text, "VM vm?[2J?x <- primary h (i): syncing\n", 38));
	ck_assert_ptr_null(strchr(text, 0x1b));
}
END_TEST

/* ---- a checker of the text exposition format ---- */

#define MAX_FAMILIES 64
#define MAX_SERIES   512

static bool valid_name(const char *s, size_t n)
{
	if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
			return false;
	return true;
}

static bool valid_value(const char *s)
{
	char *end;

	if (!strcmp(s, "NaN") || !strcmp(s, "+Inf") || !strcmp(s, "-Inf"))
		return true;
	if (!*s || isspace((unsigned char)*s))
		return false;
	strtod(s, &end);
	return !*end;
}

/* NULL if text is a valid exposition of remus metrics, else the problem
 * (static). */
static const char *prom_check(const char *text)
{
	static char why[512];
	char help[MAX_FAMILIES][80], type[MAX_FAMILIES][80], kind[MAX_FAMILIES][16];
	static char series[MAX_SERIES][400];
	int nhelp = 0, ntype = 0, nseries = 0, nsamples[MAX_FAMILIES] = { 0 };
	int current = -1, lineno = 0;
	char *copy = strdup(text), *save = NULL, *line;

	if (!*text || text[strlen(text) - 1] != '\n')
		return free(copy), "the text does not end with a newline";
#define BAD(...) do { snprintf(why, sizeof(why), __VA_ARGS__); free(copy); return why; } while (0)
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[80], labels[400] = "", seen[8][40];
		const char *p = line, *value;
		size_t n;
		int nseen = 0, fam = -1;
		bool vm = false, daemon = false;

		lineno++;
		if (!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7)) {
			bool is_help = line[2] == 'H';
			const char *rest = line + 7, *sp = strchr(rest, ' ');

			if (!sp || !valid_name(rest, (size_t)(sp - rest)) || !sp[1])
				BAD("line %d: bad comment '%s'", lineno, line);
			snprintf(name, sizeof(name), "%.*s", (int)(sp - rest), rest);
			for (int i = 0; i < (is_help ? nhelp : ntype); i++)
				if (!strcmp(is_help ? help[i] : type[i], name))
					BAD("line %d: second %s for %s", lineno, is_help ? "HELP" : "TYPE",
					    name);
			if (is_help) {
				snprintf(help[nhelp++], sizeof(help[0]), "%s", name);
				continue;
			}
			if (nhelp != ntype + 1 || strcmp(help[ntype], name))
				BAD("line %d: TYPE of %s not right after its HELP", lineno, name);
			if (strcmp(sp + 1, "counter") && strcmp(sp + 1, "gauge"))
				BAD("line %d: type '%s'", lineno, sp + 1);
			snprintf(kind[ntype], sizeof(kind[0]), "%s", sp + 1);
			if (!strcmp(sp + 1, "counter") && (strlen(name) < 6 ||
			    strcmp(name + strlen(name) - 6, "_total")))
				BAD("line %d: counter %s does not end in _total", lineno, name);
			if (current >= 0 && !nsamples[current])
				BAD("line %d: %s had no sample", lineno, type[current]);
			current = ntype;
			snprintf(type[ntype++], sizeof(type[0]), "%s", name);
			continue;
		}
		if (line[0] == '#')
			BAD("line %d: a comment that is neither HELP nor TYPE", lineno);
		/* a sample */
		n = strcspn(p, "{ ");
		if (!valid_name(p, n) || p[n] != '{')
			BAD("line %d: no name{labels}: '%s'", lineno, line);
		snprintf(name, sizeof(name), "%.*s", (int)n, p);
		if (strncmp(name, "remus_", 6))
			BAD("line %d: %s is not remus_...", lineno, name);
		for (int i = 0; i < ntype; i++)
			if (!strcmp(type[i], name))
				fam = i;
		if (fam < 0)
			BAD("line %d: %s has no HELP and TYPE before it", lineno, name);
		if (fam != current)
			BAD("line %d: a sample of %s away from its family", lineno, name);
		p += n + 1;
		for (;;) { /* label="value" (',' label="value")* '}' */
			const char *start = p;

			n = strcspn(p, "=");
			if (!valid_name(p, n) || p[n] != '=' || p[n + 1] != '"')
				BAD("line %d: bad label at '%s'", lineno, p);
			for (int i = 0; i < nseen; i++)
				if (strlen(seen[i]) == n && !strncmp(seen[i], p, n))
					BAD("line %d: label %.*s twice", lineno, (int)n, p);
			snprintf(seen[nseen < 8 ? nseen++ : 7], sizeof(seen[0]), "%.*s", (int)n, p);
			vm |= n == 2 && !strncmp(p, "vm", 2);
			daemon |= n == 6 && !strncmp(p, "daemon", 6);
			for (p += n + 2; *p && *p != '"'; p++)
				if (*p == '\\' && !strchr("\\\"n", *++p))
					BAD("line %d: bad escape in a label value", lineno);
			if (*p != '"')
				BAD("line %d: unterminated label value", lineno);
			p++;
			(void)start;
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p != '}')
				BAD("line %d: no '}' after the labels", lineno);
			break;
		}
		snprintf(labels, sizeof(labels), "%.*s", (int)(p + 1 - line), line);
		if (p[1] != ' ')
			BAD("line %d: no single space before the value", lineno);
		value = p + 2;
		if (!valid_value(value))
			BAD("line %d: value '%s' (or a timestamp)", lineno, value);
		if (!vm || !daemon)
			BAD("line %d: labels vm and daemon missing", lineno);
		for (int i = 0; i < nseries; i++)
			if (!strcmp(series[i], labels))
				BAD("line %d: series %s twice", lineno, labels);
		if (nseries < MAX_SERIES)
			snprintf(series[nseries++], sizeof(series[0]), "%s", labels);
		nsamples[fam]++;
	}
	if (nhelp != ntype)
		BAD("a HELP without its TYPE");
	if (current >= 0 && !nsamples[current])
		BAD("%s had no sample", type[current]);
#undef BAD
	free(copy);
	return NULL;
}

#define assert_prom_ok(text) do { const char *why_ = prom_check(text); \
	ck_assert_msg(!why_, "%s in:\n%s", why_, text); } while (0)

START_TEST(test_checker_catches_bad_text)
{
	static const char *const bad[] = {
		"remus_x{vm=\"a\",daemon=\"b\"} 1\n",                       /* no HELP/TYPE */
		"# HELP remus_x h\n# TYPE remus_x gauge\nremus_x 1\n",       /* no labels */
		"# HELP remus_x h\n# TYPE remus_x gauge\nremus_x{vm=\"a\"} 1\n", /* no daemon */
		"# HELP remus_x h\n# TYPE remus_x gauge\n"
		"remus_x{vm=\"a\",daemon=\"b\"} 1\nremus_x{vm=\"a\",daemon=\"b\"} 2\n", /* twice */
		"# HELP remus_x_total h\n# TYPE remus_x_total counter\n"
		"remus_x_total{vm=\"a\",daemon=\"b\"} 1 1700000000\n",       /* a timestamp */
		"# HELP remus_x h\n# TYPE remus_x counter\n"
		"remus_x{vm=\"a\",daemon=\"b\"} 1\n",                        /* counter, no _total */
		"# TYPE remus_x gauge\n# HELP remus_x h\n"
		"remus_x{vm=\"a\",daemon=\"b\"} 1\n",                        /* TYPE first */
		"# HELP remus_x h\n# TYPE remus_x gauge\n"
		"remus_x{vm=\"a\",daemon=\"b\"} one\n",                      /* not a number */
		"# HELP remus_x h\n# TYPE remus_x gauge\n"
		"remus_x{vm=\"a\"b\",daemon=\"b\"} 1\n",                     /* bad quoting */
		"# HELP remus_x h\n# TYPE remus_x gauge\n# HELP remus_y h\n# TYPE remus_y gauge\n"
		"remus_y{vm=\"a\",daemon=\"b\"} 1\n",                        /* x has no sample */
		"# HELP remus_x h\n# TYPE remus_x gauge\nremus_x{vm=\"a\",daemon=\"b\"} 1\n"
		"# HELP remus_y h\n# TYPE remus_y gauge\nremus_y{vm=\"a\",daemon=\"b\"} 1\n"
		"remus_x{vm=\"c\",daemon=\"b\"} 1\n",                        /* x apart */
		"# HELP remus_x h\n# TYPE remus_x gauge\nremus_x{vm=\"a\",daemon=\"b\"} 1",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(prom_check(bad[i]), "the checker passed bad text %zu", i);
	ck_assert_ptr_null(prom_check("# HELP remus_x h\n# TYPE remus_x gauge\n"
				      "remus_x{vm=\"a\\\"\\\\\",daemon=\"b\",s=\"c\"} 1.5e-05\n"
				      "remus_x{vm=\"a\",daemon=\"b\",s=\"c\"} NaN\n"));
}
END_TEST

/* ---- the exposition ---- */

/* The sample lines of text (not HELP/TYPE), in order. */
static const char *samples(const char *text)
{
	static char out[16384];
	const char *p = text;

	out[0] = 0;
	while (*p) {
		size_t n = strcspn(p, "\n");

		if (*p != '#')
			snprintf(out + strlen(out), sizeof(out) - strlen(out), "%.*s\n", (int)n, p);
		p += n + (p[n] == '\n');
	}
	return out;
}

START_TEST(test_replicator_prometheus)
{
	const char *text = render(remusctl_status_prometheus, replicator_reply);

	assert_prom_ok(text);
	ck_assert_str_eq(samples(text),
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"connecting\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"syncing\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"protected\"} 1\n"
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"unprotected\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"pausing\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"paused\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"handing-over\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"replicator\",state=\"handover-unknown\"} 0\n"
		"remus_epochs_committed_total{vm=\"vm1\",daemon=\"replicator\"} 1234\n"
		"remus_epochs_resent_total{vm=\"vm1\",daemon=\"replicator\"} 2\n"
		"remus_resyncs_total{vm=\"vm1\",daemon=\"replicator\"} 1\n"
		"remus_last_acked_epoch{vm=\"vm1\",daemon=\"replicator\"} 1235\n"
		"remus_epoch_length_seconds{vm=\"vm1\",daemon=\"replicator\"} 0.0484\n"
		"remus_pause_p50_seconds{vm=\"vm1\",daemon=\"replicator\"} 0.00125\n"
		"remus_pause_p99_seconds{vm=\"vm1\",daemon=\"replicator\"} 0.0042\n"
		"remus_ack_p50_seconds{vm=\"vm1\",daemon=\"replicator\"} 0.0005\n"
		"remus_ack_p99_seconds{vm=\"vm1\",daemon=\"replicator\"} 0.0025\n"
		"remus_dirty_pages_per_epoch{vm=\"vm1\",daemon=\"replicator\"} 12.5\n"
		"remus_dirty_pages_total{vm=\"vm1\",daemon=\"replicator\"} 20000\n"
		"remus_link_bytes_per_second{vm=\"vm1\",daemon=\"replicator\"} 2500000\n"
		"remus_link_queued_bytes{vm=\"vm1\",daemon=\"replicator\"} 0\n"
		"remus_netbuf_frames_held{vm=\"vm1\",daemon=\"replicator\",netdev=\"n0\"} 3\n"
		"remus_netbuf_frames_held{vm=\"vm1\",daemon=\"replicator\",netdev=\"n1\"} 0\n"
		"remus_netbuf_bytes_held{vm=\"vm1\",daemon=\"replicator\",netdev=\"n0\"} 4500\n"
		"remus_netbuf_bytes_held{vm=\"vm1\",daemon=\"replicator\",netdev=\"n1\"} 0\n"
		"remus_netbuf_delay_p50_seconds{vm=\"vm1\",daemon=\"replicator\",netdev=\"n0\"} 0.0015\n"
		"remus_netbuf_delay_p50_seconds{vm=\"vm1\",daemon=\"replicator\",netdev=\"n1\"} 0\n"
		"remus_netbuf_delay_p99_seconds{vm=\"vm1\",daemon=\"replicator\",netdev=\"n0\"} 0.006\n"
		"remus_netbuf_delay_p99_seconds{vm=\"vm1\",daemon=\"replicator\",netdev=\"n1\"} 0\n"
		"remus_netbuf_frames_out_total{vm=\"vm1\",daemon=\"replicator\",netdev=\"n0\"} 100\n"
		"remus_netbuf_frames_out_total{vm=\"vm1\",daemon=\"replicator\",netdev=\"n1\"} 7\n"
		"remus_netbuf_bytes_out_total{vm=\"vm1\",daemon=\"replicator\",netdev=\"n0\"} 150000\n"
		"remus_netbuf_bytes_out_total{vm=\"vm1\",daemon=\"replicator\",netdev=\"n1\"} 700\n");
	ck_assert_ptr_nonnull(strstr(text, "# HELP remus_pause_p99_seconds "));
	ck_assert_ptr_nonnull(strstr(text, "\n# TYPE remus_epochs_committed_total counter\n"));
	ck_assert_ptr_nonnull(strstr(text, "\n# TYPE remus_last_acked_epoch gauge\n"));
}
END_TEST

START_TEST(test_agent_prometheus)
{
	const char *text = render(remusctl_status_prometheus, agent_backup_reply);

	assert_prom_ok(text);
	ck_assert_str_eq(samples(text),
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"waiting\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"syncing\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"backup\"} 1\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"paused\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"reconnecting\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"fencing\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"restoring\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"master\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"fault\"} 0\n"
		"remus_state{vm=\"vm1\",daemon=\"agent\",state=\"ready\"} 0\n"
		"remus_epochs_committed_total{vm=\"vm1\",daemon=\"agent\"} 1234\n"
		"remus_epochs_discarded_total{vm=\"vm1\",daemon=\"agent\"} 2\n"
		"remus_initial_copies_lost{vm=\"vm1\",daemon=\"agent\"} 1\n"
		"remus_replica_epoch{vm=\"vm1\",daemon=\"agent\"} 1235\n"
		"remus_replica_age_seconds{vm=\"vm1\",daemon=\"agent\"} 0.042\n"
		"remus_failover_armed{vm=\"vm1\",daemon=\"agent\"} 1\n"
		"remus_commit_p50_seconds{vm=\"vm1\",daemon=\"agent\"} 0.0008\n"
		"remus_commit_p99_seconds{vm=\"vm1\",daemon=\"agent\"} 0.0021\n");
}
END_TEST

/* What the reply does not hold is left out, not written as 0. */
START_TEST(test_agent_prometheus_leaves_out_nulls)
{
	const char *text = render(remusctl_status_prometheus, agent_waiting_reply);

	assert_prom_ok(text);
	ck_assert_ptr_null(strstr(text, "remus_replica_epoch"));
	ck_assert_ptr_null(strstr(text, "remus_replica_age_seconds"));
	ck_assert_ptr_null(strstr(text, "remus_commit_p50_seconds"));
	ck_assert_ptr_nonnull(strstr(text, "\nremus_state{vm=\"\",daemon=\"agent\",state=\"waiting\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nremus_epochs_committed_total{vm=\"\",daemon=\"agent\"} 0\n"));
}
END_TEST

/* A name with quotes, backslashes and control characters stays one label
 * value; a state remusctl does not know yet is still said. */
START_TEST(test_prometheus_labels_escaped)
{
	const char *text = render(remusctl_status_prometheus,
				  "{\"daemon\":\"agent\",\"vm\":\"a\\\"b\\\\c\\nd\","
				  "\"state\":\"promoted\",\"epochs_committed\":1}");

	assert_prom_ok(text);
	ck_assert_ptr_nonnull(strstr(text, "\nremus_state{vm=\"a\\\"b\\\\c?d\",daemon=\"agent\","
				     "state=\"promoted\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nremus_epochs_committed_total{vm=\"a\\\"b\\\\c?d\","
				     "daemon=\"agent\"} 1\n"));
}
END_TEST

/* The two daemons' outputs in one textfile directory: a metric both write
 * has the same HELP and TYPE (the collector refuses them otherwise). */
START_TEST(test_shared_metrics_agree)
{
	char *rep = strdup(render(remusctl_status_prometheus, replicator_reply));
	const char *p = render(remusctl_status_prometheus, agent_backup_reply);
	int shared = 0;

	for (; *p; p += strcspn(p, "\n") + 1) {
		char line[512], name[80], prefix[100];

		if (*p != '#')
			continue;
		snprintf(line, sizeof(line), "%.*s\n", (int)strcspn(p, "\n"), p);
		ck_assert_int_eq(sscanf(line + 7, "%79s", name), 1);
		snprintf(prefix, sizeof(prefix), "%.7s%s ", line, name); /* "# HELP name " */
		if (!strstr(rep, prefix))
			continue;
		shared++;
		ck_assert_msg(strstr(rep, line), "the daemons differ on: %s", line);
	}
	/* remus_state and remus_epochs_committed_total, HELP and TYPE each */
	ck_assert_int_eq(shared, 4);
	free(rep);
}
END_TEST

/* ---- the states, and the agent's own reply ---- */

START_TEST(test_state_lists_agree_with_the_daemons)
{
	const char *const *agent = remusctl_daemon_states("agent");
	const char *const *rep = remusctl_daemon_states("replicator");
	int i;

	for (i = 0; i < AGENT_NSTATES; i++) {
		ck_assert_ptr_nonnull(agent[i]);
		ck_assert_str_eq(agent[i], agent_state_name((enum agent_state)i));
	}
	ck_assert_ptr_null(agent[i]);
	/* every name the replicator's state machine can show, in its order */
	for (i = 0; prot_state_names[i]; i++) {
		ck_assert_ptr_nonnull(rep[i]);
		ck_assert_str_eq(rep[i], prot_state_names[i]);
	}
	ck_assert_ptr_null(rep[i]);
}
END_TEST

START_TEST(test_agent_reply_goes_through_both)
{
	static struct agent a;
	struct json_object *o;
	char *reply;
	const char *text;

	a.cfg.state_dir = "/srv/st";
	snprintf(a.cfg.listen.text, sizeof(a.cfg.listen.text), "127.0.0.1:7700");
	a.state = AGENT_BACKUP;
	snprintf(a.vm_name, sizeof(a.vm_name), "vm9");
	a.replica_known = true;
	a.replica_epoch = 77;
	a.replica.commits = 70;
	reply = agent_status_json(&a);
	o = json_tokener_parse(reply);
	ck_assert_str_eq(remusctl_daemon(o), "agent");
	ck_assert_str_eq(remusctl_str(o, "state"), "backup");
	ck_assert_str_eq(remusctl_str(o, "vm"), "vm9");
	ck_assert_str_eq(remusctl_str_or(o, "peer", "none"), "none");
	ck_assert(!remusctl_has(o, "replica_age_s"));
	ck_assert(!remusctl_has(o, "qemu_pid"));
	json_object_put(o);
	text = render(remusctl_status_prometheus, reply);
	assert_prom_ok(text);
	ck_assert_ptr_nonnull(strstr(text, "\nremus_replica_epoch{vm=\"vm9\",daemon=\"agent\"} 77\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nremus_epochs_committed_total{vm=\"vm9\",daemon=\"agent\"} 70\n"));
	text = render(remusctl_status_text, reply);
	ck_assert(!strncmp(text, "VM vm9 <- no primary: backup\n", 29));
	free(reply);
	a.state = AGENT_MASTER;
	a.master_pid = 4242;
	reply = agent_status_json(&a);
	o = json_tokener_parse(reply);
	ck_assert_int_eq((int)remusctl_num(o, "qemu_pid"), 4242);
	json_object_put(o);
	free(reply);
}
END_TEST

static Suite *remusctl_suite(void)
{
	Suite *s = suite_create("remusctl");
	TCase *tc = tcase_create("remusctl");

	tcase_add_test(tc, test_replicator_text);
	tcase_add_test(tc, test_reply_without_daemon_is_the_replicator);
	tcase_add_test(tc, test_agent_text_backup);
	tcase_add_test(tc, test_agent_text_waiting);
	tcase_add_test(tc, test_agent_text_master);
	tcase_add_test(tc, test_agent_text_sanitized);
	tcase_add_test(tc, test_checker_catches_bad_text);
	tcase_add_test(tc, test_replicator_prometheus);
	tcase_add_test(tc, test_agent_prometheus);
	tcase_add_test(tc, test_agent_prometheus_leaves_out_nulls);
	tcase_add_test(tc, test_prometheus_labels_escaped);
	tcase_add_test(tc, test_shared_metrics_agree);
	tcase_add_test(tc, test_state_lists_agree_with_the_daemons);
	tcase_add_test(tc, test_agent_reply_goes_through_both);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(remusctl_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
