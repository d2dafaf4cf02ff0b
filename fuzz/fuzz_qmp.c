/* libFuzzer harness for the QMP client's parsers (common/qmp.c): what
 * QEMU, or libvirt's passthrough, answers. Must neither crash nor leak.
 *
 * The first input byte picks the peer:
 *   even  a QMP socket: the rest is everything QEMU sends (greeting,
 *         replies, events) on a socketpair, shut down after it; the client
 *         attaches (greeting, qmp_capabilities, id 1), runs query-status
 *         (id 2), an HMP command (id 3) and reads the events;
 *   odd   the libvirt passthrough: the rest is the reply text of each
 *         command, and the data of an event pushed in.
 * A command that fails must leave no return value and say why (the last
 * error text), an attach that fails too; an HMP command that succeeds
 * must give its text.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-qmp
 *   build/fuzz/fuzz_qmp -dict=fuzz/fuzz_qmp.dict -max_total_time=60 \
 *       build/fuzz/corpus-qmp fuzz/corpus/qmp
 */
#include "qmp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_INPUT (60u << 10) /* fits the socket's buffer: the write never blocks */

static void on_event(const char *event, struct json_object *data, void *opaque)
{
	if (!event)
		abort();
	(void)json_object_to_json_string(data);
	++*(unsigned *)opaque;
}

static void run_commands(struct qmp *q)
{
	struct json_object *ret = NULL;
	unsigned events = 0;
	char *text = NULL;

	if (!qmp_execute(q, "query-status", NULL, &ret, 1000))
		(void)json_object_to_json_string(ret);
	else if (ret || !qmp_last_error(q)[0])
		abort();
	json_object_put(ret);
	if (!qmp_hmp(q, "info status", &text, 1000) && !text)
		abort();
	free(text);
	qmp_read_events(q, on_event, &events);
}

static void over_socket(const uint8_t *data, size_t size)
{
	struct qmp *q;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (size && write(sv[1], data, size) != (ssize_t)size)
		abort();
	/* EOF after the input; the client's commands still fit the buffer. */
	shutdown(sv[1], SHUT_WR);
	if (qmp_attach_fd(sv[0], 1000, &q)) {
		if (!qmp_connect_error()[0])
			abort();
	} else {
		run_commands(q);
		qmp_close(q);
	}
	close(sv[1]);
}

struct reply {
	const uint8_t *data;
	size_t size;
};

static int pt_command(void *ctx, const char *request, const int *fds, unsigned nfds,
		      char **reply, char *why, size_t whylen)
{
	struct reply *r = ctx;

	*reply = strndup((const char *)r->data, r->size);
	return *reply ? 0 : -ENOMEM;
}

static void over_passthrough(const uint8_t *data, size_t size)
{
	struct reply r = { data, size };
	struct qmp_passthrough pt = { pt_command, NULL, &r, "fuzz", 1 };
	char *text = strndup((const char *)data, size);
	struct qmp *q = NULL;

	if (text && !qmp_open_passthrough(&pt, &q)) {
		qmp_push_event(q, "FUZZ", text);
		run_commands(q);
	}
	qmp_close(q);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size - 1 > MAX_INPUT)
		return 0;
	if (data[0] & 1)
		over_passthrough(data + 1, size - 1);
	else
		over_socket(data + 1, size - 1);
	return 0;
}
