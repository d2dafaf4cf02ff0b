/* Service manager notifications (sd_notify(3)): READY=1 once a daemon does
 * its job, STATUS= lines for `systemctl status`, STOPPING=1 on the way out.
 * Without systemd (NOTIFY_SOCKET unset) every call does nothing. */
#ifndef REMUS_NOTIFY_H
#define REMUS_NOTIFY_H

void notify_ready(const char *status);
/* Sent only when the text differs from the last one sent, so callers may
 * call it on every event that could change it. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void notify_stopping(const char *status);

#endif
