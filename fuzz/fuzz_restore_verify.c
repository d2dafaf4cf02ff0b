/* libFuzzer harness for the restore's block graph check
 * (backup-agent/restore_verify.c): the query-block reply of the restored
 * QEMU, or of libvirt's, walked as a tree. Must neither crash nor leak;
 * a refusal must say why, an acceptance must leave no reason.
 *
 * The input is the reply's "return" value (JSON). The first byte picks
 * what is expected: bit 0 two disks instead of one, bit 1 the primary's
 * qdev given. The seeds (fuzz/make-seeds) are replies of QEMU 7.2 over
 * /srv/state/disk-0.qcow2 (see tests/check_restore_verify.c).
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-restore_verify
 *   build/fuzz/fuzz_restore_verify -dict=fuzz/fuzz_restore_verify.dict -max_total_time=60 \
 *       build/fuzz/corpus-restore_verify fuzz/corpus/restore_verify
 */
#include "../backup-agent/restore_verify.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const struct verify_disk disks[] = {
	{ "disk0", "/srv/state/disk-0.qcow2", "/srv/state/disk-0.img", 67108864, NULL },
	{ "disk1", "/srv/state/disk-1.qcow2", "/srv/state/disk-1.img", 1048576, NULL },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verify_disk want[2] = { disks[0], disks[1] };
	struct json_tokener *tok;
	struct json_object *blocks;
	char err[512];
	int rc;

	if (size < 1)
		return 0;
	if (data[0] & 2)
		want[0].qdev = "/machine/peripheral/vdisk0/virtio-backend";
	tok = json_tokener_new();
	if (!tok)
		return 0;
	blocks = json_tokener_parse_ex(tok, (const char *)data + 1, (int)(size - 1));
	json_tokener_free(tok);
	memset(err, 'x', sizeof(err));
	rc = restore_verify_block_graph(blocks, want, data[0] & 1 ? 2 : 1, err, sizeof(err));
	if (!memchr(err, '\0', sizeof(err)) || (rc && (rc != -EINVAL || !err[0])) ||
	    (!rc && err[0]))
		abort();
	json_object_put(blocks);
	return 0;
}
