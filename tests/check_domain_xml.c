/* libvirt domain XML: the replicator's checks before attaching
 * (replicator/domain_xml.c) and the agent's rewrite for the restored
 * domain (backup-agent/restore_domain.c). */
#include "../backup-agent/restore_domain.h"
#include "../replicator/domain_xml.h"
#include "log.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD "<domain type='qemu'><name>vm1</name><uuid>8f0e7c4e-7b0b-4a4c-9b43-1a5a4c1b2d3e</uuid>" \
	"<memory unit='MiB'>128</memory>"
#define SHARED_MEMFD "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
#define SERIAL "<serial type='file'><source path='/var/log/vm1.serial'/><target port='0'/></serial>" \
	"<console type='file'><source path='/var/log/vm1.serial'/><target type='serial' port='0'/></console>"
#define UDP_NIC(alias, mac) "<interface type='udp'><mac address='" mac "'/>" \
	"<source address='127.0.0.1' port='5000'><local address='127.0.0.1' port='5001'/></source>" \
	"<model type='virtio'/><alias name='" alias "'/></interface>"
#define DOMAIN(backing, devices) HEAD backing "<devices>" devices "</devices></domain>"

START_TEST(test_check_accepts_shared_memfd_and_file)
{
	ck_assert_int_eq(domain_xml_check(DOMAIN(SHARED_MEMFD, SERIAL UDP_NIC("net0", "52:54:00:00:00:01")),
					  "vm1"), 0);
	ck_assert_int_eq(domain_xml_check(DOMAIN("<memoryBacking><source type='file'/>"
						 "<access mode='shared'/></memoryBacking>", ""), "vm1"), 0);
}
END_TEST

START_TEST(test_check_refuses_private_ram)
{
	/* none at all, memfd without shared access, hugepages only */
	ck_assert_int_eq(domain_xml_check(DOMAIN("", SERIAL), "vm1"), -EPERM);
	ck_assert_int_eq(domain_xml_check(DOMAIN("<memoryBacking><source type='memfd'/></memoryBacking>",
						 ""), "vm1"), -EPERM);
	ck_assert_int_eq(domain_xml_check(DOMAIN("<memoryBacking><hugepages/><access mode='shared'/>"
						 "</memoryBacking>", ""), "vm1"), -EPERM);
}
END_TEST

START_TEST(test_check_refuses_nics_it_cannot_own)
{
	static const char *const nics[] = {
		"<interface type='network'><source network='default'/></interface>",
		"<interface type='bridge'><source bridge='br0'/></interface>",
		"<interface type='user'/>",
		"<interface type='ethernet'><target dev='tap0'/></interface>",
		"<interface><mac address='52:54:00:00:00:09'/></interface>",
	};
	char xml[2048];

	for (size_t i = 0; i < sizeof(nics) / sizeof(nics[0]); i++) {
		snprintf(xml, sizeof(xml), DOMAIN(SHARED_MEMFD, UDP_NIC("net0", "52:54:00:00:00:01") "%s"),
			 nics[i]);
		ck_assert_msg(domain_xml_check(xml, "vm1") == -EPERM, "accepted %s", nics[i]);
	}
}
END_TEST

START_TEST(test_check_bad_xml)
{
	ck_assert_int_eq(domain_xml_check("<domain><name>vm1", "vm1"), -EPROTO);
	ck_assert_int_eq(domain_xml_check("", "vm1"), -EPROTO);
}
END_TEST

static const char *const one_tap[] = { "tapb0" };
#define EMU "/usr/bin/qemu-system-x86_64"

static char *restored(const char *xml, const char *const *taps, int ntaps, char **persistent)
{
	struct restore_domain_spec s = { .emulator = EMU, .state_dir = "/srv/remus/vm1", .taps = taps,
					 .ntaps = ntaps };
	char *start = NULL, err[256] = "";
	int rc = restore_domain_xml(xml, &s, &start, persistent, err, sizeof(err));

	ck_assert_msg(rc == 0, "restore_domain_xml: %d %s", rc, err);
	return start;
}

START_TEST(test_restore_serial_into_state_dir)
{
	char *p, *x = restored(DOMAIN(SHARED_MEMFD, SERIAL), NULL, 0, &p);

	ck_assert_ptr_nonnull(strstr(x, "path=\"/srv/remus/vm1/serial.log\""));
	ck_assert_ptr_null(strstr(x, "/var/log/vm1.serial"));
	ck_assert_ptr_nonnull(strstr(p, "path=\"/srv/remus/vm1/serial.log\""));
	free(x);
	free(p);
}
END_TEST

START_TEST(test_restore_keeps_identity_and_waits_for_checkpoint)
{
	char *p, *x = restored(DOMAIN(SHARED_MEMFD, SERIAL), NULL, 0, &p);

	ck_assert_ptr_nonnull(strstr(x, "<name>vm1</name>"));
	ck_assert_ptr_nonnull(strstr(x, "<uuid>8f0e7c4e-7b0b-4a4c-9b43-1a5a4c1b2d3e</uuid>"));
	ck_assert_ptr_nonnull(strstr(x, "<source type=\"memfd\"/>"));
	ck_assert_ptr_nonnull(strstr(x, "xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\""));
	ck_assert_ptr_nonnull(strstr(x, "<qemu:arg value=\"-incoming\"/>"));
	ck_assert_ptr_nonnull(strstr(x, "<qemu:arg value=\"defer\"/>"));
	ck_assert_ptr_nonnull(strstr(x, "<qemu:arg value=\"migration.send-configuration=off\"/>"));
	/* what gets defined afterwards is the domain as it was, not the
	 * one-off start */
	ck_assert_ptr_null(strstr(p, "-incoming"));
	ck_assert_ptr_nonnull(strstr(p, "<name>vm1</name>"));
	free(x);
	free(p);
}
END_TEST

START_TEST(test_restore_udp_nic_onto_tap)
{
	static const char *const by_alias[] = { "net1=tapb1" };
	static const char *const by_mac[] = { "52:54:00:00:00:02=tapb1" };
	const char *xml = DOMAIN(SHARED_MEMFD, UDP_NIC("net0", "52:54:00:00:00:01")
				 UDP_NIC("net1", "52:54:00:00:00:02"));
	const char *const *ways[] = { by_alias, by_mac };

	for (int i = 0; i < 2; i++) {
		char *p, *x = restored(xml, ways[i], 1, &p);

		ck_assert_ptr_nonnull(strstr(x, "<target dev=\"tapb1\" managed=\"no\"/>"));
		/* net0 had no TAP: still a UDP socket (cut off here), net1 is
		 * ethernet without its socket */
		ck_assert_ptr_nonnull(strstr(x, "<interface type=\"udp\">"));
		ck_assert_ptr_nonnull(strstr(x, "<interface type=\"ethernet\">"));
		/* the udp one comes first and keeps its socket; only one remains */
		ck_assert(strstr(x, "type=\"udp\"") < strstr(x, "type=\"ethernet\""));
		ck_assert_ptr_nonnull(strstr(x, "port=\"5000\""));
		ck_assert_ptr_null(strstr(strstr(x, "port=\"5000\"") + 1, "port=\"5000\""));
		free(x);
		free(p);
	}
}
END_TEST

START_TEST(test_restore_single_nic_bare_tap)
{
	char *p, *x = restored(DOMAIN(SHARED_MEMFD, UDP_NIC("net0", "52:54:00:00:00:01")), one_tap, 1, &p);

	ck_assert_ptr_nonnull(strstr(x, "<target dev=\"tapb0\" managed=\"no\"/>"));
	ck_assert_ptr_null(strstr(x, "type=\"udp\""));
	ck_assert_ptr_null(strstr(x, "<source address="));
	free(x);
	free(p);
}
END_TEST

static int occurrences(const char *s, const char *what)
{
	int n = 0;

	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

/* A test-failover clone: checked as a failover would be (the agent's
 * --tap given), then its own name, no UUID (libvirt makes one), every NIC
 * (udp, or moved onto the agent's TAP) on a TAP attached to nothing, MAC
 * and model kept. */
START_TEST(test_restore_clone_is_renamed_and_cut_off)
{
	static const char *const tap_nic[] = { "net1=tapb1" }, *const no_nic[] = { "net7=tapb7" };
	/* SMBIOS says the VM's UUID too: without <uuid>, libvirt would take it */
	const char *xml = HEAD "<sysinfo type='smbios'><system><entry name='manufacturer'>ACME"
		"</entry><entry name='uuid'>8f0e7c4e-7b0b-4a4c-9b43-1a5a4c1b2d3e</entry></system>"
		"</sysinfo>" SHARED_MEMFD "<devices>" SERIAL UDP_NIC("net0", "52:54:00:00:00:01")
		UDP_NIC("net1", "52:54:00:00:00:02") "</devices></domain>";
	struct restore_domain_spec s = { .emulator = EMU, .state_dir = "/srv/remus/vm1/test-failover",
					 .clone_name = "vm1-test-failover", .taps = tap_nic,
					 .ntaps = 1 };
	char *start = NULL, *persistent = NULL, err[256] = "";

	ck_assert_msg(restore_domain_xml(xml, &s, &start, &persistent, err, sizeof(err)) == 0,
		      "%s", err);
	ck_assert_ptr_nonnull(strstr(start, "<name>vm1-test-failover</name>"));
	ck_assert_ptr_null(strstr(start, "<uuid>"));
	ck_assert_ptr_null(strstr(start, "8f0e7c4e"));
	ck_assert_ptr_nonnull(strstr(start, "ACME"));
	ck_assert_ptr_null(strstr(start, "type=\"udp\""));
	ck_assert_ptr_null(strstr(start, "<source address="));
	ck_assert_ptr_null(strstr(start, "<target dev="));
	ck_assert_ptr_null(strstr(start, "tapb1"));
	ck_assert_ptr_nonnull(strstr(start, "<mac address=\"52:54:00:00:00:01\"/>"));
	ck_assert_ptr_nonnull(strstr(start, "<mac address=\"52:54:00:00:00:02\"/>"));
	ck_assert_ptr_nonnull(strstr(start, "path=\"/srv/remus/vm1/test-failover/serial.log\""));
	ck_assert_ptr_nonnull(strstr(start, "<qemu:arg value=\"-incoming\"/>"));
	/* not the VM restored: a cluster manager must not take it for one */
	ck_assert_ptr_null(strstr(start, "urn:remus:restored"));
	/* both NICs are ethernet now, with nothing to attach them to */
	ck_assert_int_eq(occurrences(start, "<interface type=\"ethernet\">"), 2);
	free(start);
	free(persistent);
	/* what a failover would refuse, the clone refuses too */
	s.taps = no_nic;
	ck_assert_int_eq(restore_domain_xml(xml, &s, &start, &persistent, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "match no UDP NIC"));
	ck_assert_ptr_null(start);
}
END_TEST

static void assert_refused(const char *xml, const char *want);

/* A shared qcow2 disk over a shared raw backing image, as libvirt's
 * migratable XML gives it (the chain ends with an empty <backingStore/>). */
START_TEST(test_restore_shared_disk_chain)
{
	static const char *const shared[] = { "/srv/shared/data.img", "/srv/shared/base.img" };
	bool as_qcow2[2] = { false, false };
	struct restore_domain_spec s = { .emulator = EMU, .state_dir = "/srv/remus/vm1",
					 .shared_disks = shared, .nshared_disks = 2,
					 .shared_as_qcow2 = as_qcow2 };
	char *start = NULL, *persistent = NULL, err[256] = "";
	int rc = restore_domain_xml(DOMAIN(SHARED_MEMFD, "<disk type='file' device='disk'>"
		"<driver name='qemu' type='qcow2'/><source file='/srv/shared/data.img'/>"
		"<backingStore type='file' index='1'><format type='raw'/>"
		"<source file='/srv/shared/base.img'/><backingStore/></backingStore>"
		"<target dev='vdb'/></disk>"), &s, &start, &persistent, err, sizeof(err));

	ck_assert_msg(rc == 0, "refused: %s", err);
	ck_assert_ptr_nonnull(strstr(start, "/srv/shared/base.img"));
	/* which images the domain reads as qcow2, whose headers the agent
	 * then checks: the disk, not its raw backing image */
	ck_assert(as_qcow2[0] && !as_qcow2[1]);
	free(start);
	free(persistent);
}
END_TEST

/* An ethernet NIC keeps its TAP only if it is the agent's (or names
 * none: libvirt makes one, on no network). */
START_TEST(test_restore_ethernet_nic_only_on_agents_tap)
{
	char *p, *x = restored(DOMAIN(SHARED_MEMFD, "<interface type='ethernet'/>"), NULL, 0, &p);

	ck_assert_ptr_nonnull(strstr(x, "<interface type=\"ethernet\"/>"));
	free(x);
	free(p);
	/* another VM's TAP, or one on another network of the backup */
	assert_refused(DOMAIN(SHARED_MEMFD, "<interface type='ethernet'><target dev='vnet3' "
			      "managed='no'/></interface>"),
		       "<interface type='ethernet'>: its <target dev> is not a TAP of this agent");
}
END_TEST

START_TEST(test_restore_errors)
{
	static const char *const stray[] = { "net7=tapb7" };
	struct restore_domain_spec s = { .emulator = EMU, .state_dir = "/d", .taps = stray, .ntaps = 1 };
	char *start = (char *)1, *persistent = (char *)1, err[256] = "";

	ck_assert_int_eq(restore_domain_xml(DOMAIN(SHARED_MEMFD, UDP_NIC("net0", "52:54:00:00:00:01")),
					    &s, &start, &persistent, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "match no UDP NIC"));
	ck_assert_ptr_null(start);
	ck_assert_ptr_null(persistent);
	/* a bare TAP is ambiguous with two NICs */
	s.taps = one_tap;
	ck_assert_int_eq(restore_domain_xml(DOMAIN(SHARED_MEMFD, UDP_NIC("net0", "52:54:00:00:00:01")
						   UDP_NIC("net1", "52:54:00:00:00:02")),
					    &s, &start, &persistent, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(restore_domain_xml("<domain", &s, &start, &persistent, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(restore_domain_xml("<other/>", &s, &start, &persistent, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "does not parse"));
}
END_TEST

START_TEST(test_restore_disk_onto_overlay)
{
	static const struct restore_domain_disk disks[] = {
		{ "/var/lib/libvirt/images/vm1.img", "/srv/remus/vm1/disk-0.qcow2",
		  "/srv/remus/vm1/disk-0.img" },
	};
	static const char *const shared[] = { "/iso/x.iso" };
	struct restore_domain_spec s = { .emulator = EMU, .state_dir = "/srv/remus/vm1", .disks = disks,
					 .ndisks = 1, .shared_disks = shared, .nshared_disks = 1 };
	const char *xml = DOMAIN(SHARED_MEMFD,
		"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
		"<source file='/var/lib/libvirt/images/vm1.img'/><target dev='vda' bus='virtio'/></disk>"
		"<disk type='file' device='cdrom'><source file='/iso/x.iso'/><readonly/></disk>");
	char *start = NULL, *persistent = NULL, err[256] = "";

	ck_assert_int_eq(restore_domain_xml(xml, &s, &start, &persistent, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(start, "<source file=\"/srv/remus/vm1/disk-0.qcow2\"/>"));
	ck_assert_ptr_nonnull(strstr(start, "<driver name=\"qemu\" type=\"qcow2\"/>"));
	ck_assert_ptr_nonnull(strstr(start, "<source file=\"/srv/remus/vm1/disk-0.img\"/>"));
	ck_assert_ptr_nonnull(strstr(start, "<format type=\"raw\"/>"));
	ck_assert_ptr_null(strstr(start, "/var/lib/libvirt/images/vm1.img"));
	ck_assert_ptr_nonnull(strstr(start, "/iso/x.iso")); /* the cdrom stays */
	ck_assert_ptr_nonnull(strstr(persistent, "disk-0.qcow2"));
	free(start);
	free(persistent);
	/* a block device on the primary becomes a file disk on its overlay */
	s.disks = (const struct restore_domain_disk[]){ { "/dev/vg0/vm1", "/o.qcow2", "/b.img" } };
	ck_assert_int_eq(restore_domain_xml(DOMAIN(SHARED_MEMFD,
		"<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
		"<source dev='/dev/vg0/vm1'/><target dev='vda' bus='virtio'/></disk>"),
		&s, &start, &persistent, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(start, "<disk type=\"file\" device=\"disk\">"));
	ck_assert_ptr_nonnull(strstr(start, "<source file=\"/o.qcow2\"/>"));
	ck_assert_ptr_null(strstr(start, "/dev/vg0/vm1"));
	free(start);
	free(persistent);
	/* a replicated disk the XML does not have */
	s.disks = (const struct restore_domain_disk[]){ { "/nope.img", "/o", "/b" } };
	ck_assert_int_eq(restore_domain_xml(DOMAIN(SHARED_MEMFD, "<disk type='file' device='cdrom'>"
						   "<source file='/iso/x.iso'/><readonly/></disk>"), &s, &start, &persistent, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "/nope.img"));
	ck_assert_ptr_null(start);
}
END_TEST

/* The test hook tests/integration uses to see the block graph check fail:
 * with REMUS_TEST_RESTORE_OVERLAY_AS_RAW=1 the overlay is opened as raw. */
START_TEST(test_restore_overlay_as_raw_hook)
{
	static const struct restore_domain_disk disks[] = {
		{ "/var/lib/libvirt/images/vm1.img", "/srv/remus/vm1/disk-0.qcow2",
		  "/srv/remus/vm1/disk-0.img" },
	};
	struct restore_domain_spec s = { .emulator = EMU, .state_dir = "/srv/remus/vm1",
					 .disks = disks, .ndisks = 1 };
	const char *xml = DOMAIN(SHARED_MEMFD,
		"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
		"<source file='/var/lib/libvirt/images/vm1.img'/><target dev='vda' bus='virtio'/></disk>");
	char *start = NULL, *persistent = NULL, err[256] = "";

	setenv("REMUS_TEST_RESTORE_OVERLAY_AS_RAW", "1", 1);
	ck_assert_int_eq(restore_domain_xml(xml, &s, &start, &persistent, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(start, "<driver name=\"qemu\" type=\"raw\"/>"));
	ck_assert_ptr_null(strstr(start, "type=\"qcow2\""));
	ck_assert_ptr_null(strstr(start, "<backingStore")); /* libvirt refuses it on raw */
	free(start);
	free(persistent);
	/* any other value: off */
	setenv("REMUS_TEST_RESTORE_OVERLAY_AS_RAW", "0", 1);
	ck_assert_int_eq(restore_domain_xml(xml, &s, &start, &persistent, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(start, "<driver name=\"qemu\" type=\"qcow2\"/>"));
	free(start);
	free(persistent);
	unsetenv("REMUS_TEST_RESTORE_OVERLAY_AS_RAW");
}
END_TEST


/* ---- what the backup refuses in the primary's XML ---- */

static void assert_refused(const char *xml, const char *want)
{
	static const struct restore_domain_disk disks[] = {
		{ "/var/lib/libvirt/images/vm1.img", "/srv/remus/vm1/disk-0.qcow2",
		  "/srv/remus/vm1/disk-0.img" },
	};
	static const char *const shared[] = { "/srv/shared/data.img" };
	struct restore_domain_spec s = { .emulator = EMU, .state_dir = "/srv/remus/vm1",
					 .disks = disks, .ndisks = 1, .shared_disks = shared,
					 .nshared_disks = 1 };
	char *start = (char *)1, *persistent = (char *)1, err[256] = "";

	ck_assert_msg(restore_domain_xml(xml, &s, &start, &persistent, err, sizeof(err)) == -EINVAL,
		      "accepted: %s", xml);
	ck_assert_msg(strstr(err, want), "'%s' does not name %s", err, want);
	ck_assert_ptr_null(start);
	ck_assert_ptr_null(persistent);
}

#define REPLICATED_DISK "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/vm1.img'/>" \
	"<target dev='vda' bus='virtio'/></disk>"
#define QEMU_XMLNS "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>" \
	"<name>vm1</name><memory unit='MiB'>128</memory>" SHARED_MEMFD

/* A domain this agent restored carries our own <qemu:commandline> in its
 * live XML; protected in turn, it is restored again (the arguments once),
 * while the same element with one argument more is refused. */
START_TEST(test_restore_own_incoming_again)
{
	static const char own[] = "<qemu:commandline><qemu:arg value='-incoming'/>"
		"<qemu:arg value='defer'/><qemu:arg value='-global'/>"
		"<qemu:arg value='migration.send-configuration=off'/>";
	char xml[2048], *p, *x, *first;

	snprintf(xml, sizeof(xml), "%s<devices/>%s</qemu:commandline></domain>", QEMU_XMLNS, own);
	x = restored(xml, NULL, 0, &p);
	first = strstr(x, "migration.send-configuration=off");
	ck_assert_ptr_nonnull(first);
	ck_assert_ptr_null(strstr(first + 1, "migration.send-configuration=off"));
	ck_assert_ptr_null(strstr(p, "qemu:commandline"));
	free(x);
	free(p);
	snprintf(xml, sizeof(xml), "%s<devices/>%s<qemu:arg value='-plugin'/></qemu:commandline>"
		 "</domain>", QEMU_XMLNS, own);
	assert_refused(xml, "<qemu:commandline>");
}
END_TEST

/* A restored domain runs with a mark of where it was restored, or paths
 * into its state dir, and its definition started again (virsh start,
 * autostart) has those paths too: restore_domain_uses_dir says both run on
 * the state dir's files. A domain with no path there is marked in its
 * live XML only. The mark goes with a domain restored again elsewhere;
 * the domain's other <metadata> (virt-install's libosinfo) is the
 * applications', kept as it is: libvirt never passes it to QEMU. */
START_TEST(test_restore_marks_the_live_domain)
{
	static const char osinfo[] = "<metadata><libosinfo:libosinfo xmlns:libosinfo="
		"'http://libosinfo.org/xmlns/libvirt/domain/1.0'><libosinfo:os "
		"id='http://debian.org/debian/12'/></libosinfo:libosinfo>"
		"<remus:restored xmlns:remus='urn:remus:restored:1' state-dir='/srv/elsewhere'/>"
		"</metadata>";
	char xml[2048], bare[2048], *p, *x, *again, *p2;
	struct restore_domain_spec other = { .emulator = EMU, .state_dir = "/srv/a&b\"c" };
	char err[256] = "";

	snprintf(xml, sizeof(xml), HEAD "%s" SHARED_MEMFD "<devices>" SERIAL "</devices></domain>",
		 osinfo);
	ck_assert(restore_domain_uses_dir(xml, "/srv/elsewhere"));
	x = restored(xml, NULL, 0, &p);
	ck_assert(restore_domain_uses_dir(x, "/srv/remus/vm1"));
	ck_assert(restore_domain_uses_dir(x, "/srv/remus/vm1/"));
	ck_assert(!restore_domain_uses_dir(x, "/srv/elsewhere"));
	ck_assert(!restore_domain_uses_dir(x, "/srv/remus/vm"));
	/* the definition: its serial log is in the state dir too */
	ck_assert(restore_domain_uses_dir(p, "/srv/remus/vm1"));
	ck_assert_int_eq(occurrences(x, "urn:remus:restored:1"), 1);
	ck_assert_ptr_null(strstr(p, "urn:remus:restored"));
	ck_assert_ptr_nonnull(strstr(x, "<libosinfo:os id=\"http://debian.org/debian/12\"/>"));
	ck_assert_ptr_nonnull(strstr(p, "<libosinfo:os id=\"http://debian.org/debian/12\"/>"));
	/* the live XML of a restored domain, protected in turn and restored
	 * on the other host (a state dir whose name needs escaping): marked
	 * there only */
	ck_assert_int_eq(restore_domain_xml(x, &other, &again, &p2, err, sizeof(err)), 0);
	ck_assert(restore_domain_uses_dir(again, "/srv/a&b\"c"));
	ck_assert(!restore_domain_uses_dir(again, "/srv/remus/vm1"));
	ck_assert_int_eq(occurrences(again, "urn:remus:restored:1"), 1);
	ck_assert_int_eq(occurrences(again, "libosinfo:os "), 1);
	free(again);
	free(p2);
	free(x);
	free(p);
	/* nothing of the domain in the state dir: only the mark says it */
	snprintf(bare, sizeof(bare), DOMAIN(SHARED_MEMFD, ""));
	x = restored(bare, NULL, 0, &p);
	ck_assert(restore_domain_uses_dir(x, "/srv/remus/vm1"));
	ck_assert(!restore_domain_uses_dir(p, "/srv/remus/vm1"));
	/* what does not parse is taken as using it */
	ck_assert(restore_domain_uses_dir("<domain", "/srv/remus/vm1"));
	ck_assert(restore_domain_uses_dir("", "/srv/remus/vm1"));
	free(x);
	free(p);
}
END_TEST

START_TEST(test_restore_refuses_host_resources)
{
	assert_refused(QEMU_XMLNS "<devices>" REPLICATED_DISK "</devices><qemu:commandline>"
		       "<qemu:arg value='-plugin'/><qemu:arg value='/tmp/x.so'/></qemu:commandline>"
		       "</domain>", "<qemu:commandline>");
	assert_refused(QEMU_XMLNS "<devices>" REPLICATED_DISK "</devices><qemu:override>"
		       "<qemu:device alias='x'/></qemu:override></domain>", "<qemu:override>");
	assert_refused(DOMAIN(SHARED_MEMFD, REPLICATED_DISK "<disk type='file' device='disk'>"
			      "<source file='/etc/shadow'/><target dev='vdb'/></disk>"),
		       "<disk type='file'>: its source is neither a replicated disk nor a shared");
	/* a UDP NIC off the loopback would send from the backup's address */
	assert_refused(DOMAIN(SHARED_MEMFD, "<interface type='udp'><source address='10.9.8.7' "
			      "port='161'><local address='127.0.0.1' port='5001'/></source>"
			      "</interface>"), "a UDP NIC's addresses must be the loopback");
	assert_refused(DOMAIN(SHARED_MEMFD, "<interface type='udp'><source address='127.0.0.1' "
			      "port='5000'><local address='0.0.0.0' port='53'/></source>"
			      "</interface>"), "a UDP NIC's addresses must be the loopback");
	/* the HELLO names the replicated image: a second <disk> on it would
	 * keep the path, whatever host file or device the primary named */
	assert_refused(DOMAIN(SHARED_MEMFD, REPLICATED_DISK "<disk type='block' device='disk'>"
			      "<source dev='/var/lib/libvirt/images/vm1.img'/><target dev='vdb'/>"
			      "</disk>"),
		       "2 <disk> elements name the image of replicated disk "
		       "/var/lib/libvirt/images/vm1.img: only one may");
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='network' device='disk'><source protocol='nbd' "
			      "name='x'><host name='10.0.0.1'/></source><target dev='vdb'/></disk>"),
		       "<disk type='network'>");
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='file' device='disk'>"
			      "<source file='/srv/shared/data.img'/><backingStore type='file'>"
			      "<source file='/etc/shadow'/></backingStore><target dev='vdb'/></disk>"),
		       "<backingStore type='file'>");
	/* a shared disk read as another format, or over a backing image that
	 * is not a shared file in raw or qcow2 */
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='file' device='disk'><driver name='qemu' "
			      "type='vmdk'/><source file='/srv/shared/data.img'/><target dev='vdb'/>"
			      "</disk>"), "a shared disk read as a format other than raw or qcow2");
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='file' device='disk'><driver name='qemu' "
			      "type='qcow2'/><source file='/srv/shared/data.img'/><backingStore "
			      "type='file'><format type='vmdk'/><source file='/srv/shared/data.img'/>"
			      "</backingStore><target dev='vdb'/></disk>"),
		       "a backing format other than raw or qcow2");
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='file' device='disk'>"
			      "<source file='/srv/shared/data.img'/><backingStore type='network'>"
			      "<source protocol='nbd'><host name='192.0.2.1'/></source></backingStore>"
			      "<target dev='vdb'/></disk>"), "a backing image that is not a shared");
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='network' device='disk'><source protocol='nbd'>"
			      "<host name='192.0.2.1' port='10809'/></source><target dev='vdb'/></disk>"),
		       "its source is neither a replicated disk nor a shared disk");
	/* a block disk reads dev=, not the shared file= checked beside it */
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='block' device='disk'><driver name='qemu' "
			      "type='qcow2'/><source file='/srv/shared/data.img' dev='/dev/sda'/>"
			      "<target dev='vdb'/></disk>"), "more than one path attribute");
	/* a slice moves the header away from byte 0, where the agent reads it */
	assert_refused(DOMAIN(SHARED_MEMFD, "<disk type='file' device='disk'><driver name='qemu' "
			      "type='qcow2'/><source file='/srv/shared/data.img'><slices><slice "
			      "type='storage' offset='1048576' size='1048576'/></slices></source>"
			      "<target dev='vdb'/></disk>"), "<slices>");
	/* a NIC that would configure the backup's own network */
	assert_refused(DOMAIN(SHARED_MEMFD, "<interface type='ethernet'><ip address='192.0.2.9' "
			      "prefix='24'/><route address='0.0.0.0' prefix='0' gateway='192.0.2.1'/>"
			      "</interface>"), "<ip> or <route> configures the host's network");
	assert_refused(DOMAIN(SHARED_MEMFD, "<hostdev mode='subsystem' type='pci'><source>"
			      "<address domain='0' bus='1' slot='0' function='0'/></source></hostdev>"),
		       "<hostdev type='pci'>");
	assert_refused(DOMAIN(SHARED_MEMFD, "<filesystem type='mount'><source dir='/'/>"
			      "<target dir='root'/></filesystem>"), "<filesystem type='mount'>");
	assert_refused(DOMAIN(SHARED_MEMFD, "<interface type='ethernet'><script path='/tmp/x.sh'/>"
			      "<target dev='tap9'/></interface>"),
		       "<interface type='ethernet'>: <script> names a host program");
	assert_refused(DOMAIN(SHARED_MEMFD, "<interface type='bridge'><source bridge='br0'/></interface>"),
		       "<interface type='bridge'>");
	assert_refused(DOMAIN(SHARED_MEMFD, "<parallel type='file'><source path='/etc/cron.d/x'/></parallel>"),
		       "<parallel type='file'>");
	assert_refused(DOMAIN(SHARED_MEMFD, "<channel type='unix'><source mode='bind' path='/etc/x.sock'/>"
			      "<target type='virtio' name='x'/></channel>"), "<channel type='unix'>");
	assert_refused(DOMAIN(SHARED_MEMFD, "<serial type='dev'><source path='/dev/ttyS0'/></serial>"),
		       "<serial type='dev'>");
	assert_refused(DOMAIN(SHARED_MEMFD, "<serial type='pty'><log file='/etc/x' append='on'/></serial>"),
		       "<log> names a host file");
	assert_refused(DOMAIN(SHARED_MEMFD, "<interface type='udp'><source address='127.0.0.1' port='1'/>"
			      "<rom file='/etc/shadow'/></interface>"), "<rom file> names a host file");
	assert_refused(HEAD SHARED_MEMFD "<os><type>hvm</type><loader>/tmp/x.fd</loader></os>"
		       "<devices/></domain>", "<loader>: names a host file");
}
END_TEST

/* The agent's own QEMU; no seclabel of the primary's; the guest kernel is
 * in the replica RAM already. */
START_TEST(test_restore_emulator_seclabel_kernel)
{
	const char *xml = HEAD SHARED_MEMFD "<os><type>hvm</type><kernel>/g/vmlinuz</kernel>"
		"<initrd>/g/initrd.img</initrd><cmdline>console=ttyS0</cmdline></os>"
		"<devices><emulator>/bin/sh</emulator>" SERIAL "<graphics type='vnc' port='-1'>"
		"<listen type='address' address='0.0.0.0'/></graphics></devices>"
		"<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel></domain>";
	char *p, *x = restored(xml, NULL, 0, &p);

	ck_assert_ptr_nonnull(strstr(x, "<emulator>" EMU "</emulator>"));
	ck_assert_ptr_null(strstr(x, "/bin/sh"));
	ck_assert_ptr_null(strstr(x, "seclabel"));
	ck_assert_ptr_null(strstr(x, "vmlinuz"));
	ck_assert_ptr_null(strstr(x, "<graphics"));
	ck_assert_ptr_nonnull(strstr(p, "<emulator>" EMU "</emulator>"));
	free(x);
	free(p);
}
END_TEST

static Suite *domain_xml_suite(void)
{
	Suite *s = suite_create("domain_xml");
	struct { const char *name; const TTest *t; } cases[] = {
		{ "check_accepts_shared_memfd_and_file", test_check_accepts_shared_memfd_and_file },
		{ "check_refuses_private_ram", test_check_refuses_private_ram },
		{ "check_refuses_nics_it_cannot_own", test_check_refuses_nics_it_cannot_own },
		{ "check_bad_xml", test_check_bad_xml },
		{ "restore_serial_into_state_dir", test_restore_serial_into_state_dir },
		{ "restore_keeps_identity_and_waits_for_checkpoint",
		  test_restore_keeps_identity_and_waits_for_checkpoint },
		{ "restore_udp_nic_onto_tap", test_restore_udp_nic_onto_tap },
		{ "restore_single_nic_bare_tap", test_restore_single_nic_bare_tap },
		{ "restore_clone_is_renamed_and_cut_off", test_restore_clone_is_renamed_and_cut_off },
		{ "restore_ethernet_nic_only_on_agents_tap", test_restore_ethernet_nic_only_on_agents_tap },
		{ "restore_shared_disk_chain", test_restore_shared_disk_chain },
		{ "restore_errors", test_restore_errors },
		{ "restore_disk_onto_overlay", test_restore_disk_onto_overlay },
		{ "restore_overlay_as_raw_hook", test_restore_overlay_as_raw_hook },
		{ "restore_refuses_host_resources", test_restore_refuses_host_resources },
		{ "restore_own_incoming_again", test_restore_own_incoming_again },
		{ "restore_marks_the_live_domain", test_restore_marks_the_live_domain },
		{ "restore_emulator_seclabel_kernel", test_restore_emulator_seclabel_kernel },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_add_test(tc, cases[i].t);
		suite_add_tcase(s, tc);
	}
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(domain_xml_suite());
	int failed;

	log_set_level(LOG_CRIT); /* the refusals print; the tests check them */
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
