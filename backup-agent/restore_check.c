/* A HELLO's VM checked against what the backup allows, when the primary
 * says HELLO rather than when it dies: a primary whose VM could not be
 * restored here (or that asks for what the backup refuses) is told so at
 * once, and nothing is written to the state dir for it. */
#include "restore.h"

#include "restore_cmdline.h"
#include "restore_domain.h"
#include "shared_image.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The paths restore_disk_overlays will make, without making them. */
struct hello_disks {
	struct restore_disk d[RESTORE_MAX_DISKS];
	struct restore_domain_disk dd[RESTORE_MAX_DISKS];
	char overlay[RESTORE_MAX_DISKS][PATH_MAX], base[RESTORE_MAX_DISKS][PATH_MAX];
	int n;
};

static int hello_disks(const char *dir, struct json_object *vm, struct hello_disks *h,
		       char *err, size_t errlen)
{
	struct json_object *arr;
	size_t n;

	h->n = 0;
	if (!json_object_object_get_ex(vm, "disks", &arr) || !json_object_is_type(arr, json_type_array))
		return 0;
	n = json_object_array_length(arr);
	if (n > RESTORE_MAX_DISKS) {
		snprintf(err, errlen, "HELLO lists %zu disks; the backup restores at most %d",
			 n, RESTORE_MAX_DISKS);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		struct json_object *d = json_object_array_get_idx(arr, i);

		snprintf(h->overlay[i], PATH_MAX, "%s/disk-%zu.qcow2", dir, i);
		snprintf(h->base[i], PATH_MAX, "%s/disk-%zu.img", dir, i);
		h->d[i].file = restore_json_str(d, "file");
		h->d[i].id = restore_json_str(d, "id");
		h->d[i].node = restore_json_str(d, "node");
		h->d[i].overlay = h->overlay[i];
		h->dd[i] = (struct restore_domain_disk){ .file = h->d[i].file,
							 .overlay = h->overlay[i],
							 .base = h->base[i] };
	}
	h->n = (int)n;
	return 0;
}

static int check_xml(const struct restore_opts *o, const char *xml, const struct hello_disks *h,
		     char *err, size_t errlen)
{
	bool *as_qcow2 = calloc((size_t)o->nshared_disks + 1, sizeof(bool));
	struct restore_domain_spec spec = {
		.emulator = o->emulator, .state_dir = o->dir, .taps = o->taps,
		.ntaps = o->ntaps, .disks = h->dd, .ndisks = h->n,
		.shared_disks = o->shared_disks, .nshared_disks = o->nshared_disks,
		.shared_as_qcow2 = as_qcow2,
	};
	char *start = NULL, *persistent = NULL;
	int rc;

	if (!as_qcow2) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* the shared images' headers as the restore will check them */
	rc = restore_domain_xml(xml, &spec, &start, &persistent, err, errlen) ?:
	     shared_images_check(o->shared_disks, as_qcow2, o->nshared_disks, err, errlen);
	free(start);
	free(persistent);
	free(as_qcow2);
	return rc;
}

static int check_argv(const struct restore_opts *o, struct json_object *vm, struct json_object *a,
		      const struct hello_disks *h, char *err, size_t errlen)
{
	char ram[PATH_MAX], **out = NULL;
	const char *argv[4096];
	struct restore_spec spec = {
		.emulator = o->emulator, .state_dir = o->dir, .ram_path = ram,
		.ram_backend_id = restore_json_str(vm, "ram_backend"),
		.taps = o->taps, .ntaps = o->ntaps, .disks = h->d, .ndisks = h->n,
		.shared_disks = o->shared_disks, .nshared_disks = o->nshared_disks,
	};
	size_t n = json_object_array_length(a);
	int rc;

	if (n >= sizeof(argv) / sizeof(argv[0])) {
		snprintf(err, errlen, "the primary's command line has %zu arguments; at most %zu",
			 n, sizeof(argv) / sizeof(argv[0]) - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		argv[i] = json_object_get_string(json_object_array_get_idx(a, i)) ?: "";
	argv[n] = NULL;
	snprintf(ram, sizeof(ram), "%s/vm.ram", o->dir);
	rc = restore_cmdline_build((char *const *)argv, (int)n, &spec, &out, err, errlen);
	if (!rc)
		/* the shared images' headers as the restore will check
		 * them: a refusal now rather than at the failover */
		rc = shared_images_check_argv(out, o->shared_disks, o->nshared_disks, err,
					      errlen);
	restore_cmdline_free(out);
	return rc;
}

int restore_check_hello(const struct restore_opts *o, struct json_object *vm, char *err,
			size_t errlen)
{
	struct json_object *a, *xml;
	struct hello_disks *h;
	int rc;

	if (!json_object_object_get_ex(vm, "qemu_argv", &a) ||
	    !json_object_is_type(a, json_type_array) || json_object_array_length(a) < 1)
		return 0;
	h = malloc(sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = hello_disks(o->dir, vm, h, err, errlen);
	if (!rc && json_object_object_get_ex(vm, "libvirt_xml", &xml))
		rc = check_xml(o, json_object_get_string(xml) ?: "", h, err, errlen);
	else if (!rc)
		rc = check_argv(o, vm, a, h, err, errlen);
	free(h);
	return rc;
}
