/* libFuzzer harness for the NBD server's parsers of outside bytes
 * (common/nbd_server.c). The first input byte picks what the rest feeds:
 *   0  the request parser, 28 bytes at a time: a request it lets through
 *      must lie inside the export and under the payload limit, with flags
 *      its command takes;
 *   1  the option parser (header + data) and the option handler: replies
 *      must fit their buffer (ASan) and be well formed;
 *   2+ a whole session (greeting, options, requests) over an in-memory
 *      stream, with callbacks that abort on any range outside the export.
 * Must neither crash nor leak.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-nbd
 *   UBSAN_OPTIONS=halt_on_error=1 build/fuzz/fuzz_nbd -dict=fuzz/fuzz_nbd.dict \
 *       -max_total_time=60 build/fuzz/corpus-nbd
 * (halt_on_error: otherwise UBSan only prints and the run goes on.) With the
 * dictionary, an empty corpus gets through the handshake to every command
 * within 30 s (same coverage as a corpus seeded with a valid session).
 */
#include "nbd_server.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_PAYLOAD (64u << 10) /* small, so that big requests stay cheap */

static const uint64_t sizes[] = { 0, 1, 512, 1u << 20, UINT64_MAX - 1 };
static uint64_t export_size;

static void check_range(uint64_t off, uint32_t len)
{
	if (off > export_size || len > export_size - off)
		abort();
}

static int f_write(void *o, uint64_t off, const void *data, uint32_t len, bool fua)
{
	check_range(off, len);
	if (len > FUZZ_MAX_PAYLOAD || !len)
		abort();
	(void)((volatile const uint8_t *)data)[len - 1]; /* the whole buffer is readable */
	return (off & 1) ? -ENOSPC : 0;
}

static int f_zeroes(void *o, uint64_t off, uint32_t len, bool may_trim, bool fua)
{
	check_range(off, len);
	return 0;
}

static int f_trim(void *o, uint64_t off, uint32_t len)
{
	check_range(off, len);
	return (len & 1) ? -EIO : 0;
}

static int f_flush(void *o)
{
	return 0;
}

static int f_read(void *o, uint64_t off, void *buf, uint32_t len)
{
	check_range(off, len);
	if (len > FUZZ_MAX_PAYLOAD || !len)
		abort();
	memset(buf, 0xa5, len);
	return 0;
}

static const struct nbd_export_ops ops = { f_write, f_zeroes, f_trim, f_flush, f_read };

struct mem {
	const uint8_t *data;
	size_t size, pos;
};

static int mem_read(void *ctx, void *buf, size_t len)
{
	struct mem *m = ctx;

	if (len > m->size - m->pos)
		return -EPIPE;
	memcpy(buf, m->data + m->pos, len);
	m->pos += len;
	return 0;
}

static int mem_write(void *ctx, const void *buf, size_t len)
{
	(void)((volatile const uint8_t *)buf)[len ? len - 1 : 0];
	return 0;
}

static void fuzz_requests(const uint8_t *data, size_t size)
{
	struct nbd_request req;
	uint32_t err;

	for (; size >= NBD_REQUEST_SIZE; data += NBD_REQUEST_SIZE, size -= NBD_REQUEST_SIZE) {
		enum nbd_req_action act = nbd_parse_request(data, export_size, FUZZ_MAX_PAYLOAD,
							    &req, &err);

		if ((act == NBD_REQ_ERROR || act == NBD_REQ_ERROR_CLOSE) != (err != 0))
			abort();
		if (act != NBD_REQ_SERVE)
			continue;
		if (req.type != NBD_CMD_FLUSH)
			check_range(req.offset, req.length);
		if ((req.type == NBD_CMD_READ || req.type == NBD_CMD_WRITE) &&
		    req.length > FUZZ_MAX_PAYLOAD)
			abort();
		if ((req.flags & ~(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE)) ||
		    ((req.flags & NBD_CMD_FLAG_NO_HOLE) && req.type != NBD_CMD_WRITE_ZEROES))
			abort();
	}
}

static void fuzz_options(const uint8_t *data, size_t size)
{
	struct nbd_export_info exp = { .name = "drive0", .size = export_size, .tflags = 0x6d };
	struct nbd_opt_reply *out = malloc(sizeof(*out));
	uint32_t option, length;
	size_t off;

	if (!out)
		return;
	while (size >= NBD_OPT_HEADER_SIZE) {
		exp.no_zeroes = size & 1;
		if (nbd_parse_option_header(data, &option, &length))
			break;
		data += NBD_OPT_HEADER_SIZE;
		size -= NBD_OPT_HEADER_SIZE;
		if (length > size)
			length = size;
		nbd_handle_option(&exp, option, data, length, out);
		if (out->len > sizeof(out->data))
			abort();
		/* Fixed-newstyle replies chain exactly to the end (EXPORT_NAME
		 * answers with raw export data instead). */
		for (off = 0; option != NBD_OPT_EXPORT_NAME && off < out->len;)
			off += 20 + ((uint32_t)out->data[off + 16] << 24 |
				     (uint32_t)out->data[off + 17] << 16 |
				     (uint32_t)out->data[off + 18] << 8 | out->data[off + 19]);
		if (option != NBD_OPT_EXPORT_NAME && off != out->len)
			abort();
		data += length;
		size -= length;
	}
	free(out);
}

static void fuzz_session(const uint8_t *data, size_t size)
{
	struct mem m = { data, size, 0 };
	struct nbd_session s = {
		.name = "drive0", .size = export_size, .ops = &ops,
		.max_payload = FUZZ_MAX_PAYLOAD,
		.io = { mem_read, mem_write, &m },
	};
	struct nbd_server_stats st = { 0 };

	s.stats = &st;
	nbd_session_run(&s);
	if (st.connected)
		abort(); /* the session must have ended */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool quiet;

	if (!quiet) {
		log_set_level(LOG_ERR); /* refusals are logged as warnings: noise here */
		quiet = true;
	}
	if (size < 2)
		return 0;
	export_size = sizes[data[1] % (sizeof(sizes) / sizeof(sizes[0]))];
	switch (data[0]) {
	case 0:
		fuzz_requests(data + 2, size - 2);
		break;
	case 1:
		fuzz_options(data + 2, size - 2);
		break;
	default:
		fuzz_session(data + 2, size - 2);
		break;
	}
	return 0;
}
