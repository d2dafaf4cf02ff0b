/* libFuzzer harness for the other host's PEER_QUERY / PEER_STATE payload
 * (backup-agent/cold_facts.c, cold_facts_parse): any bytes. An accepted
 * payload must survive a round trip (cold_facts_json, parsed again, gives
 * the same facts), and the cold-start decision on it must be one-sided:
 * of two agents, at most one restores.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-peer
 *   build/fuzz/fuzz_peer_state -dict=fuzz/fuzz_peer_state.dict \
 *       -max_total_time=60 build/fuzz/corpus-peer fuzz/corpus/peer_state
 */
#include "../backup-agent/cold_start.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same(const struct cold_facts *a, const struct cold_facts *b)
{
	return !strcmp(a->host, b->host) && a->waiting == b->waiting && a->replica == b->replica &&
	       a->ready == b->ready && a->restored == b->restored &&
	       a->generation == b->generation && a->epoch == b->epoch;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cold_facts f, g, us = { .host = "alpha", .waiting = true, .replica = true,
				       .generation = 3, .epoch = 7 };
	struct json_object *owner = NULL, *owner2 = NULL;
	char *text;

	if (size > 4096 || cold_facts_parse(data, (uint32_t)size, &f, &owner))
		return 0;
	if (!f.host)
		abort();
	text = cold_facts_json(&f, "waiting");
	if (!text || cold_facts_parse((const uint8_t *)text, (uint32_t)strlen(text), &g, &owner2) ||
	    !same(&f, &g))
		abort();
	if (strcmp(f.host, us.host) && cold_start_wins(&us, &f) && cold_start_wins(&f, &us))
		abort();
	free(text);
	json_object_put(owner2);
	json_object_put(owner);
	return 0;
}
