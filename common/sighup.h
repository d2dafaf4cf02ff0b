/* SIGHUP asks a daemon, by habit, to reload (a log rotation's postrotate,
 * an operator's `kill -HUP`); its default action would end the process,
 * and with it the VM's protection. The daemons read their settings at
 * start only: SIGHUP is logged, with what to do instead, and ignored. */
#ifndef REMUS_SIGHUP_H
#define REMUS_SIGHUP_H

#include <ev.h>

/* Watch SIGHUP on loop for the daemon `who` ("remus-agent", ...): each
 * one is logged. The watcher is the caller's; do not stop it (see below). */
void sighup_ignore_start(struct ev_loop *loop, ev_signal *w, const char *who);
/* Before a loop runs (start-up) and once it has run (libev's handler
 * would then point at a loop that is gone, and stopping the watcher
 * gives the signal back to its default action): SIGHUP does nothing,
 * silently. A handler, not SIG_IGN, so that a program we exec gets the
 * default action back. */
void sighup_ignore_quietly(void);

#endif
