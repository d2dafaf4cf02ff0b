#include "notify.h"

#include "log.h"
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

static char last_status[256];

static void send_state(const char *state)
{
	int rc = sd_notify(0, state);

	/* 0: no service manager listens; that is the normal case by hand. */
	if (rc < 0)
		log_debug("sd_notify(%s) failed: %s", state, strerror(-rc));
}

static void send_with_status(const char *what, const char *status)
{
	char msg[320];

	/* STATUS= carries the VM's name: a newline in it would add a line of
	 * its own to the message (READY=1, MAINPID=...). */
	text_sanitize(last_status, sizeof(last_status), status ? status : "");
	if (status)
		snprintf(msg, sizeof(msg), "%s\nSTATUS=%s", what, last_status);
	else
		snprintf(msg, sizeof(msg), "%s", what);
	send_state(msg);
}

void notify_ready(const char *status)
{
	send_with_status("READY=1", status);
}

void notify_stopping(const char *status)
{
	send_with_status("STOPPING=1", status);
}

void notify_status(const char *fmt, ...)
{
	char text[sizeof(last_status)], msg[sizeof(last_status) + 8];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	text_sanitize(text, sizeof(text), text);
	if (!strcmp(text, last_status))
		return;
	memcpy(last_status, text, sizeof(last_status));
	snprintf(msg, sizeof(msg), "STATUS=%s", text);
	send_state(msg);
}
