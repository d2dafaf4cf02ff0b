/* libFuzzer harness for the agent's HELLO parser (backup-agent/replica.c,
 * replica_parse_hello: the JSON a primary sends, as on_hello gets it, cut
 * at the first NUL). A HELLO it accepts must have what a session uses
 * (ram_size, the strings, at most DISKFILE_MAX disks), and must come back
 * whole from vm.json, which keeps it for a restore: written as
 * vm_json_text does, read back as replica_load_info does (json-c's
 * default depth), checked again. Must neither crash nor leak.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-hello
 *   build/fuzz/fuzz_hello -dict=fuzz/fuzz_hello.dict -max_total_time=60 \
 *       build/fuzz/corpus-hello fuzz/corpus/hello
 */
#include "../backup-agent/replica.h"

#include <stdlib.h>
#include <string.h>

/* What a restore would read back: {"vm": HELLO, ...} as vm.json holds it. */
static void check_vm_json(struct json_object *h)
{
	struct json_object *o = json_object_new_object(), *back, *vm;
	struct json_object *again = NULL;
	char err[256];

	if (!o)
		abort();
	json_object_object_add(o, "vm", json_object_get(h));
	json_object_object_add(o, "epoch", json_object_new_uint64(1));
	back = json_tokener_parse(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	if (!back || !json_object_object_get_ex(back, "vm", &vm))
		abort(); /* a committed replica that no restore could read */
	if (replica_parse_hello(json_object_to_json_string_ext(vm, JSON_C_TO_STRING_PLAIN),
				&again, err, sizeof(err)))
		abort();
	json_object_put(again);
	json_object_put(back);
	json_object_put(o);
}

static void check_hello(struct json_object *h)
{
	struct json_object *v;

	if (!json_object_object_get_ex(h, "ram_size", &v) || json_object_get_int64(v) <= 0 ||
	    json_object_get_int64(v) % PROTO_PAGE_SIZE)
		abort();
	if (json_object_object_get_ex(h, "disks", &v) &&
	    json_object_array_length(v) > DISKFILE_MAX)
		abort();
	check_vm_json(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *h = (struct json_object *)1;
	char err[256] = "", *text = strndup((const char *)data, size);

	if (!text)
		return 0;
	if (replica_parse_hello(text, &h, err, sizeof(err))) {
		if (h || !err[0])
			abort(); /* refused: nothing to free, and a reason for the primary */
	} else {
		check_hello(h);
		json_object_put(h);
	}
	free(text);
	return 0;
}
