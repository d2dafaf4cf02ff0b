/* SIGHUP: logged and ignored (sighup.h). */
#include "sighup.h"
#include "log.h"

#include <signal.h>
#include <string.h>

static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)revents;
	log_warn("%s: SIGHUP ignored: settings are read at start only; restart the daemon to "
		 "change them (its replica and protection resume by themselves)",
		 (const char *)w->data);
}

void sighup_ignore_start(struct ev_loop *loop, ev_signal *w, const char *who)
{
	ev_signal_init(w, on_sighup, SIGHUP);
	w->data = (void *)who;
	ev_signal_start(loop, w);
}

static void on_sighup_quiet(int sig)
{
	(void)sig;
}

void sighup_ignore_quietly(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sighup_quiet;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);
}
