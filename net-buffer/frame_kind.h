/* What a frame from the VM is, as far as the epoch's end cares.
 *
 * Every frame waits for its epoch's ack (output commit), but not every
 * frame is worth ending the epoch early for. A bare TCP ACK (no payload,
 * no SYN, FIN, RST or URG) only tells the peer that data arrived; the reply
 * that usually follows it is what a client waits for. The epoch policy
 * ends an epoch soon after a reply, and gives a bare ACK the longer
 * --output-delay-ms to be joined by one (docs/EPOCHS.md). */
#ifndef REMUS_FRAME_KIND_H
#define REMUS_FRAME_KIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True only for an Ethernet frame (optionally one 802.1Q tag) carrying an
 * unfragmented IPv4 packet, or an IPv6 packet without extension headers,
 * whose TCP segment has ACK set, none of SYN, FIN, RST or URG, and no
 * payload. Anything else, malformed or not understood, is a reply: when
 * in doubt the epoch ends early, which costs a pause, never a delay. */
bool frame_is_bare_tcp_ack(const uint8_t *frame, size_t len);

#endif
