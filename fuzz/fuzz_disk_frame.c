/* libFuzzer harness for the DISK frame parser (common/proto.c,
 * proto_parse_disk): any bytes as a payload; an accepted one must describe
 * itself exactly (op known, WRITE data inside the payload and of its
 * length, no range overflow) and re-encode to the same header.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-disk
 *   build/fuzz/fuzz_disk_frame -max_total_time=60 build/fuzz/corpus-disk
 */
#include "proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct disk_op op;
	uint8_t hdr[PROTO_DISK_HDR_SIZE];

	if (size > PROTO_MAX_PAYLOAD || proto_parse_disk(data, (uint32_t)size, &op))
		return 0;
	if (op.op < DISK_OP_WRITE || op.op > DISK_OP_FLUSH || op.offset + op.length < op.offset)
		abort();
	if (op.op == DISK_OP_WRITE) {
		if (op.data != data + PROTO_DISK_HDR_SIZE || op.length != size - PROTO_DISK_HDR_SIZE ||
		    op.length > PROTO_DISK_MAX_WRITE)
			abort();
	} else if (op.data || size != PROTO_DISK_HDR_SIZE) {
		abort();
	}
	if (op.op == DISK_OP_FLUSH && (op.offset || op.length))
		abort();
	proto_encode_disk_hdr(hdr, &op);
	if (memcmp(hdr, data, PROTO_DISK_HDR_SIZE))
		abort();
	return 0;
}
