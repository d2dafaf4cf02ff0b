/* One line per event on stderr, with a timestamp and the program name;
 * or to syslog when running as a service. */
#ifndef REMUS_LOG_H
#define REMUS_LOG_H

#include <syslog.h>

void log_init(const char *ident, int use_syslog);
void log_set_level(int level); /* LOG_ERR .. LOG_DEBUG; default LOG_INFO */
/* The message is stripped of control characters (text.h): a name from the
 * wire or the VM cannot forge a line. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Our own text of several lines (the XML to put in a domain), one log line
 * each. */
void log_lines(int level, const char *text);

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
