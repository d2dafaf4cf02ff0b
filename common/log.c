#include "log.h"

#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *log_ident = "remus";
static int log_level = LOG_INFO;
static int log_to_syslog;

void log_init(const char *ident, int use_syslog)
{
	log_ident = ident;
	log_to_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID, LOG_DAEMON);
}

void log_set_level(int level)
{
	log_level = level;
}

static const char *level_name(int level)
{
	switch (level) {
	case LOG_ERR: return "error";
	case LOG_WARNING: return "warning";
	case LOG_INFO: return "info";
	default: return "debug";
	}
}

/* The message is formatted first and stripped of control characters
 * there, once for every caller: our own messages are single lines, and a
 * newline in a name from the wire or the VM must not forge a line. */
void log_msg(int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	text_sanitize(msg, sizeof(msg), msg);
	if (log_to_syslog) {
		syslog(level, "%s", msg);
	} else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		/* One write per event keeps lines from two processes sharing
		 * a terminal intact. */
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ld %s %s: %s\n", stamp, ts.tv_nsec / 1000000, log_ident,
			level_name(level), msg);
	}
}

void log_lines(int level, const char *text)
{
	while (*text) {
		size_t n = strcspn(text, "\n");

		log_msg(level, "%.*s", (int)n, text);
		text += n + (text[n] == '\n');
	}
}
