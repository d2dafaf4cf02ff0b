/* libFuzzer harness for the net buffer's frame classifier
 * (net-buffer/frame_kind.c): any bytes the VM sends as a frame. It must
 * not read outside the frame, and a frame it calls a bare TCP ACK must be
 * at least the smallest one (Ethernet, IPv4 or IPv6, TCP headers).
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-frame_kind
 *   build/fuzz/fuzz_frame_kind -max_total_time=60 build/fuzz/corpus-frame_kind \
 *       fuzz/corpus/frame_kind
 */
#include "frame_kind.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (frame_is_bare_tcp_ack(data, size) && size < 14 + 20 + 20)
		abort();
	return 0;
}
