/* libFuzzer harness for the journal reader (backup-agent/journal.c,
 * journal_recover: what the agent replays at start and before a restore).
 * The input is written as DIR/journal beside a RAM image of RAM_PAGES pages
 * and two disk images (DIR made once in $TMPDIR, else /dev/shm, else /tmp;
 * removed at exit, which libFuzzer skips after a finding or
 * -max_total_time: scripts/run-fuzzers gives each run a TMPDIR of its own
 * and removes it), then recovered. A
 * journal it replays must have named only pages inside the RAM image and
 * left every file at its size and the journal gone; one it refuses must
 * come with a reason. Must neither crash nor leak.
 *
 * The first input byte picks the setup: bit 0 set, the rest gets the
 * version 2 magic, a vm_json_len that makes the sizes add up (when they
 * can) and its CRC fixed up, so that the fuzzer gets past the checksum to
 * the apply (without it, it exercises the refusal of torn journals);
 * bit 1, the files are those of a first commit (ram.sync, disk-N.sync).
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-journal
 *   build/fuzz/fuzz_journal $(cat fuzz/fuzz_journal.options) -max_total_time=60 \
 *       build/fuzz/corpus-journal fuzz/corpus/journal
 */
#include "../backup-agent/diskfile.h"
#include "../backup-agent/journal.h"
#include "crc32c.h"
#include "proto.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RAM_PAGES  16
#define DISK_BYTES (64u << 10)
#define NDISKS     2
/* The on-disk header (journal.c): version 2 is 64 bytes, version 1 40. */
#define HDR_SIZE   64
#define MAGIC_V1   0x314a4d52u
#define MAGIC_V2   0x324a4d52u

static char dir[PATH_MAX];

static void rm_dir(void)
{
	char path[PATH_MAX];
	static const char *const names[] = { "journal", "journal.tmp", "ram", "ram.sync",
					     "devstate", "devstate.tmp", "vm.json",
					     "vm.json.tmp" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	for (unsigned d = 0; d < DISKFILE_MAX; d++)
		for (int sync = 0; sync < 2; sync++)
			if (!diskfile_path(dir, d, sync, path))
				unlink(path);
}

static void rm_all(void)
{
	rm_dir();
	rmdir(dir);
}

static void make_file(const char *name, const void *data, size_t len, off_t size)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len) || ftruncate(fd, size) < 0)
		abort();
	close(fd);
}

static off_t file_size(const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) < 0 ? -1 : st.st_size;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* Version 2 magic, vm_json_len that closes the sum, CRC: what a torn
 * journal would not have. */
static void fix_up(uint8_t *j, size_t len)
{
	uint64_t fixed, npages, nops, vm;
	uint32_t magic = MAGIC_V2, crc;

	if (len < HDR_SIZE + 4)
		return;
	memcpy(j, &magic, 4);
	npages = get64(j + 16);
	nops = get64(j + 40);
	if (npages <= len / PROTO_PAGE_SIZE && nops <= len / 24 && get64(j + 24) <= len &&
	    get64(j + 48) <= len) {
		fixed = HDR_SIZE + npages * (8 + PROTO_PAGE_SIZE) + nops * 24 + get64(j + 24) +
			get64(j + 48);
		if (fixed <= len - 4) {
			vm = len - 4 - fixed;
			memcpy(j + 32, &vm, 8);
		}
	}
	crc = crc32c(0, j, len - 4);
	memcpy(j + len - 4, &crc, 4);
}

/* A journal that was replayed named pages of the RAM image only, and
 * left every file at its size. */
static void check_replayed(const uint8_t *j, size_t len)
{
	uint32_t magic, flags;
	size_t hlen;
	uint64_t npages;
	bool promote;

	memcpy(&magic, j, 4);
	memcpy(&flags, j + 4, 4);
	promote = flags & 1; /* the journal's own: a first commit */
	hlen = magic == MAGIC_V1 ? 40 : HDR_SIZE;
	npages = get64(j + 16);
	if (magic != MAGIC_V1 && magic != MAGIC_V2)
		abort();
	for (uint64_t i = 0; i < npages; i++)
		if (hlen + (i + 1) * 8 > len || get64(j + hlen + i * 8) >= RAM_PAGES)
			abort();
	if (file_size("journal") != -1 || file_size("ram") != RAM_PAGES * PROTO_PAGE_SIZE ||
	    (promote && file_size("ram.sync") != -1))
		abort();
	/* (a first commit removes the images of disks beyond its own) */
	for (unsigned d = 0; d < NDISKS; d++) {
		char name[32];
		off_t sz;

		snprintf(name, sizeof(name), "disk-%u.img", d);
		sz = file_size(name);
		if (sz != DISK_BYTES && sz != -1)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256] = "";
	uint8_t *j;
	size_t len;
	bool promote;
	int rc;

	if (!dir[0]) {
		const char *tmp = getenv("TMPDIR");

		if (!tmp || !*tmp)
			tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(dir, sizeof(dir), "%s/fuzz-journal.XXXXXX", tmp);
		if (!mkdtemp(dir))
			abort();
		atexit(rm_all);
	}
	if (size < 1)
		return 0;
	len = size - 1;
	promote = data[0] & 2;
	if (!(j = malloc(len ? len : 1)))
		return 0;
	memcpy(j, data + 1, len);
	if (data[0] & 1)
		fix_up(j, len);
	rm_dir();
	make_file(promote ? "ram.sync" : "ram", NULL, 0, RAM_PAGES * PROTO_PAGE_SIZE);
	if (promote)
		make_file("ram", NULL, 0, RAM_PAGES * PROTO_PAGE_SIZE);
	for (unsigned d = 0; d < NDISKS; d++) {
		char name[32];

		snprintf(name, sizeof(name), "disk-%u.%s", d, promote ? "sync" : "img");
		make_file(name, NULL, 0, DISK_BYTES);
	}
	make_file("journal", j, len, (off_t)len);
	rc = journal_recover(dir, err, sizeof(err));
	if (rc == 1)
		check_replayed(j, len);
	else if (rc >= 0 || !err[0])
		abort();
	free(j);
	return 0;
}
