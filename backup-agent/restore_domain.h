/* The restored VM's libvirt domain XML (restore_domain.c). */
#ifndef REMUS_RESTORE_DOMAIN_H
#define REMUS_RESTORE_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>

struct restore_domain_spec {
	const char *emulator;       /* the agent's QEMU, in place of <emulator> */
	const char *state_dir;      /* serial logs go here */
	const char *const *taps;    /* "[ID=]NAME", ID a NIC's alias or MAC */
	int ntaps;
	/* replicated disks: <source file='FILE'/> runs on OVERLAY (qcow2) with
	 * the replica BASE (raw) as its backing store */
	const struct restore_domain_disk { const char *file, *overlay, *base; } *disks;
	int ndisks;
	/* images both hosts see (--shared-disk): the only other disks allowed */
	const char *const *shared_disks;
	int nshared_disks;
	/* out, if not NULL: which of them the domain reads as qcow2 (a disk's
	 * <driver type='qcow2'>, a backing store's <format type='qcow2'>) */
	bool *shared_as_qcow2;
	/* A throwaway clone (remusctl test-failover), or NULL: checked as the
	 * restore would be (taps included), then named this, with a UUID of
	 * libvirt's making, and every NIC on a TAP libvirt makes and attaches
	 * to nothing (none of taps). */
	const char *clone_name;
};

/* From the primary's migratable XML, checked against what the backup
 * allows (no qemu: namespace, host devices, host paths outside the state
 * dir but replicated or shared disks, scripts, ...: refused with the
 * element named in err; the domain's <metadata> is kept as it is):
 * *start_xml to start the restored domain with (it waits for the incoming
 * checkpoint, and says where it was restored) and *persistent_xml
 * to define it with afterwards (malloc'd both). 0, or -EINVAL / -ENOMEM
 * with the reason in err. */
int restore_domain_xml(const char *primary_xml, const struct restore_domain_spec *s,
		       char **start_xml, char **persistent_xml, char *err, size_t errlen);

/* Whether a running domain's live XML says it runs on state_dir's files:
 * the mark *start_xml gives a domain restored there (a clone's has none),
 * or any path within state_dir (a disk's overlay over the replica, a
 * serial log), as the restored domain's own definition has them when it
 * is started again (virsh start, autostart, libvirt-guests). XML that does
 * not parse counts as using it. */
bool restore_domain_uses_dir(const char *live_xml, const char *state_dir);

#endif
