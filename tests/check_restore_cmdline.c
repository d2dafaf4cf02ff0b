/* The restored QEMU's command line, built from the primary's. */
#include "../backup-agent/restore_cmdline.h"
#include "../backup-agent/restore.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"

#define EMU "/usr/bin/qemu-system-x86_64"

static const struct restore_spec spec = {
	.emulator = EMU,
	.state_dir = "/b",
	.ram_path = "/dev/shm/remus-b.ram",
	.ram_backend_id = "ram0",
};

#define PRIMARY_HEAD "qemu-system-x86_64", "-accel", "tcg", \
	"-machine", "pc,memory-backend=ram0", "-m", "128M"
#define PRIMARY_RAM "-object", \
	"memory-backend-file,id=ram0,size=128M,mem-path=/dev/shm/remus-t1.ram,share=on"
#define RESTORED_RAM \
	"-object|memory-backend-file,id=ram0,size=128M,mem-path=/dev/shm/remus-b.ram,share=on"
#define TAIL "-qmp|unix:/b/qmp.sock,server=on,wait=off|-incoming|defer"

static int count(const char *const *v)
{
	int n = 0;

	while (v[n])
		n++;
	return n;
}

/* The vector as "a|b|c": one string, so that a mismatch shows it whole. */
static char *joined(char **v)
{
	size_t len = 1;
	char *s;
	int i;

	for (i = 0; v[i]; i++)
		len += strlen(v[i]) + 1;
	s = calloc(1, len);
	ck_assert_ptr_nonnull(s);
	for (i = 0; v[i]; i++) {
		if (i)
			strcat(s, "|");
		strcat(s, v[i]);
	}
	return s;
}

static void assert_restored(const char *const *in, const struct restore_spec *sp,
			    const char *want)
{
	char err[256] = "unset", **out = NULL, *got;
	int ret;

	ret = restore_cmdline_build((char *const *)in, count(in), sp, &out, err, sizeof(err));
	ck_assert_msg(ret == 0, "build: %d %s", ret, err);
	ck_assert_str_eq(err, "");
	got = joined(out);
	ck_assert_str_eq(got, want);
	free(got);
	restore_cmdline_free(out);
}

static void assert_fails(const char *const *in, const char *want)
{
	char err[256] = "", **out = (char **)&err;

	ck_assert_int_eq(restore_cmdline_build((char *const *)in, count(in), &spec, &out,
					       err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_str_eq(err, want);
}

START_TEST(test_realistic_primary)
{
	const char *in[] = {
		PRIMARY_HEAD, PRIMARY_RAM,
		"-kernel", "/g/vmlinuz", "-initrd", "/g/initrd.img",
		"-append", "console=ttyS0 quiet", "-nodefaults", "-vga", "none",
		"-runas", "nobody", "-display", "none", "-serial", "file:/r/serial.log",
		"-qmp", "unix:/r/qmp.sock,server=on,wait=off", "-pidfile", "/r/qemu.pid",
		"-no-reboot", "-daemonize", NULL
	};

	assert_restored(in, &spec,
		EMU "|-accel|tcg|-machine|pc,memory-backend=ram0|-m|128M|"
		RESTORED_RAM "|-nodefaults|-vga|none|-display|none|"
		"-serial|file:/b/serial.log|-pidfile|/b/qemu.pid|-no-reboot|" TAIL);
}
END_TEST

START_TEST(test_memfd_backend)
{
	const char *in[] = {
		PRIMARY_HEAD, "-nodefaults",
		"-object", "memory-backend-memfd,id=ram0,size=128M,share=on,hugetlb=on,"
			   "hugetlbsize=2M,seal=on,prealloc=on,merge=off,dump=off,"
			   "host-nodes=0,policy=bind",
		"-object", "memory-backend-memfd,id=ram1,size=64M,seal=on",
		NULL
	};

	assert_restored(in, &spec,
		EMU "|-accel|tcg|-machine|pc,memory-backend=ram0|-m|128M|"
		"-nodefaults|-object|memory-backend-file,id=ram0,size=128M,share=on,"
		"prealloc=on,merge=off,dump=off,host-nodes=0,policy=bind,"
		"mem-path=/dev/shm/remus-b.ram|"
		"-object|memory-backend-memfd,id=ram1,size=64M,seal=on|" TAIL);
}
END_TEST

START_TEST(test_ram_backend_forms)
{
	const char *ram[] = {
		"qemu", "-object", "qom-type=memory-backend-ram,id=ram0,size=1G", NULL
	};
	const char *json[] = {
		"qemu", "-object", "{\"qom-type\":\"memory-backend-memfd\",\"id\":\"ram0\","
				   "\"size\":134217728,\"hugetlb\":true,\"share\":false}", NULL
	};

	assert_restored(ram, &spec, EMU "|-object|qom-type=memory-backend-file,id=ram0,"
			"size=1G,mem-path=/dev/shm/remus-b.ram,share=on|" TAIL);
	assert_restored(json, &spec, EMU "|-object|{\"qom-type\":\"memory-backend-file\","
			"\"id\":\"ram0\",\"size\":134217728,\"share\":true,"
			"\"mem-path\":\"/dev/shm/remus-b.ram\"}|" TAIL);
}
END_TEST

START_TEST(test_missing_backend)
{
	const char *legacy[] = { "qemu", "-m", "128M", "-mem-path", "/dev/shm", NULL };
	const char *other_id[] = {
		"qemu", "-object", "memory-backend-file,id=mem,size=1G,mem-path=/x", NULL
	};
	const char *not_memory[] = { "qemu", "-object", "iothread,id=ram0", NULL };

	assert_fails(legacy, "-mem-path: names a host path, program or device; not allowed on "
		     "the backup");
	assert_fails(other_id, "-object memory-backend-file: only the main RAM backend 'ram0' may "
		     "be a file on the backup");
	assert_fails(not_memory, "the primary's command line has no memory backend 'ram0'");
}
END_TEST

START_TEST(test_missing_argument)
{
	const char *in[] = { "qemu", PRIMARY_RAM, "-no-reboot", "-m", NULL };

	assert_fails(in, "option -m requires an argument");
}
END_TEST

START_TEST(test_nographic_without_serial)
{
	const char *in[] = { PRIMARY_HEAD, PRIMARY_RAM, "-nographic", "-no-shutdown", NULL };

	assert_restored(in, &spec,
		EMU "|-accel|tcg|-machine|pc,memory-backend=ram0|-m|128M|"
		RESTORED_RAM "|-display|none|-machine|graphics=off|-no-shutdown|"
		"-serial|file:/b/serial.log|" TAIL);
}
END_TEST

/* -nodefaults, -serial or an isa-serial device: -nographic adds no port. */
START_TEST(test_nographic_no_default_serial)
{
	const char *nodefaults[] = { "qemu", PRIMARY_RAM, "-nodefaults", "-nographic", NULL };
	const char *serial[] = { "qemu", PRIMARY_RAM, "-nographic", "-serial", "pty", NULL };
	const char *none[] = { "qemu", PRIMARY_RAM, "-serial", "none", "-nographic", NULL };
	const char *isa[] = {
		"qemu", PRIMARY_RAM, "-nographic", "-device", "isa-serial", NULL
	};

	assert_restored(nodefaults, &spec, EMU "|" RESTORED_RAM "|-nodefaults|-display|none|"
			"-machine|graphics=off|" TAIL);
	assert_restored(serial, &spec, EMU "|" RESTORED_RAM "|-display|none|"
			"-machine|graphics=off|-serial|file:/b/serial.log|" TAIL);
	assert_restored(none, &spec, EMU "|" RESTORED_RAM "|-serial|none|-display|none|"
			"-machine|graphics=off|" TAIL);
	assert_restored(isa, &spec, EMU "|" RESTORED_RAM "|-display|none|"
			"-machine|graphics=off|-device|isa-serial|" TAIL);
}
END_TEST

START_TEST(test_chardev_serial)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM,
		"-device", "isa-serial,chardev=s2",
		"-chardev", "socket,id=s0,path=/r/console.sock,server=on,wait=off,logfile=/r/c.log",
		"-serial", "chardev:s0",
		"-serial", "stdio",
		"-chardev", "pty,id=s2",
		"-chardev", "socket,id=vc0,path=/r/vport.sock,server=on,wait=off",
		"-device", "virtio-serial", "-device", "virtconsole,chardev=vc0",
		"-chardev", "null,id=n0", "-chardev", "ringbuf,id=rb0,size=64K",
		"-chardev", "vc,id=v0",
		"-parallel", "/dev/parport0", "-debugcon", "file:/r/debug.log",
		NULL
	};

	/* -serial ports come first (serial.log, serial1.log), the isa-serial
	 * device after them (serial2.log). */
	assert_restored(in, &spec, EMU "|" RESTORED_RAM "|"
		"-device|isa-serial,chardev=s2|"
		"-chardev|file,id=s0,path=/b/serial.log|"
		"-serial|chardev:s0|"
		"-serial|file:/b/serial1.log|"
		"-chardev|file,id=s2,path=/b/serial2.log|"
		"-chardev|file,id=vc0,path=/b/chardev-vc0.log|"
		"-device|virtio-serial|-device|virtconsole,chardev=vc0|"
		"-chardev|null,id=n0|-chardev|ringbuf,id=rb0,size=64K|-chardev|vc,id=v0|"
		"-parallel|file:/b/parallel.log|-debugcon|file:/b/debugcon.log|" TAIL);
}
END_TEST

START_TEST(test_monitors_dropped)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM,
		"-chardev", "socket,id=mon0,path=/r/mon.sock,server=on,wait=off",
		"-mon", "chardev=mon0,mode=control",
		/* the usual console: serial and HMP multiplexed on stdio */
		"-chardev", "stdio,id=con,mux=on,signal=off",
		"-mon", "con", "-serial", "chardev:con",
		"-monitor", "stdio",
		"-qmp", "tcp:localhost:4444,server=on,wait=off",
		"--qmp-pretty", "unix:/r/p.sock,server=on",
		"-chardev", "socket,id=m2,path=/r/m2.sock,server=on,wait=off",
		"-monitor", "chardev:m2",
		/* one chardev, two frontends besides a monitor: mux stays */
		"-chardev", "socket,id=sh,path=/r/sh.sock,server=on,wait=off,mux=on",
		"-mon", "sh", "-serial", "chardev:sh", "-device", "virtconsole,chardev=sh",
		NULL
	};

	assert_restored(in, &spec, EMU "|" RESTORED_RAM "|"
		"-chardev|file,id=con,path=/b/serial.log|-serial|chardev:con|"
		"-chardev|file,id=sh,path=/b/serial1.log,mux=on|-serial|chardev:sh|"
		"-device|virtconsole,chardev=sh|" TAIL);
}
END_TEST

START_TEST(test_displays)
{
	const char *removed[] = {
		"qemu", PRIMARY_RAM, "-vnc", ":1", "-spice", "port=5900,disable-ticketing=on",
		"-display", "gtk,gl=on", "-vga", "std", NULL
	};
	const char *explicit_none[] = {
		"qemu", PRIMARY_RAM, "-display", "none", "-vnc", ":1", "-nographic",
		"-display", "none", "-serial", "null", NULL
	};

	assert_restored(removed, &spec, EMU "|" RESTORED_RAM "|-vga|std|-display|none|" TAIL);
	assert_restored(explicit_none, &spec, EMU "|" RESTORED_RAM "|-display|none|"
			"-machine|graphics=off|-serial|file:/b/serial.log|" TAIL);
}
END_TEST

START_TEST(test_run_control_and_files)
{
	const char *in[] = {
		"qemu", "-S", PRIMARY_RAM, "--daemonize", "-incoming", "tcp:0:4444",
		"-D", "/r/qemu-debug.log", "-d", "guest_errors", "-pidfile", "/r/q.pid",
		"-name", "guest1,debug-threads=on", NULL
	};

	assert_restored(in, &spec, EMU "|" RESTORED_RAM "|-D|/b/qemu.log|-d|guest_errors|"
			"-pidfile|/b/qemu.pid|-name|guest1,debug-threads=on|" TAIL);
}
END_TEST

/* Flags take no argument; a bare word is a disk image; what the backup
 * allows passes. */
START_TEST(test_pass_through)
{
	static const char *const shared[] = { "/d/b.qcow2", "/d/c" };
	static const char *const taps[] = { "tap0" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"/bin/sh", "-snapshot", "-no-hpet", PRIMARY_RAM, "-usb",
		"-netdev", "tap,id=n0,ifname=tap0,script=no", "-device", "virtio-net,netdev=n0,romfile=",
		"-drive", "file=/d/b.qcow2,if=virtio,format=qcow2", "-blockdev",
		"{\"driver\":\"file\",\"filename\":\"/d/c\",\"node-name\":\"c\"}",
		"-enable-kvm", "-only-migratable", "-no-user-config", "-nodefaults",
		"-global", "migration.send-configuration=off", "-object", "iothread,id=io0",
		"-smp", "2", "-cpu", "max", "-rtc", "base=utc", NULL
	};

	sp.shared_disks = shared;
	sp.nshared_disks = 2;
	sp.taps = taps; /* the kept TAP is one of the agent's */
	sp.ntaps = 1;
	/* argv[0] is the agent's --emulator, never the primary's */
	assert_restored(in, &sp, EMU "|-snapshot|-no-hpet|" RESTORED_RAM "|-usb|"
		"-netdev|tap,id=n0,ifname=tap0,script=no|-device|virtio-net,netdev=n0,romfile=|"
		"-drive|file=/d/b.qcow2,if=virtio,format=qcow2|-blockdev|"
		"{\"driver\":\"file\",\"filename\":\"/d/c\",\"node-name\":\"c\"}|"
		"-enable-kvm|-only-migratable|-no-user-config|-nodefaults|"
		"-global|migration.send-configuration=off|-object|iothread,id=io0|"
		"-smp|2|-cpu|max|-rtc|base=utc|" TAIL);
}
END_TEST

/* ---- what the backup refuses: each option named in the error ---- */

static void assert_refused(const char *opt, const char *arg, const char *want)
{
	const char *in[] = { "qemu", PRIMARY_RAM, opt, arg, NULL };
	char err[256] = "", **out = (char **)&err;
	int rc = restore_cmdline_build((char *const *)in, arg ? 5 : 4, &spec, &out, err,
				       sizeof(err));

	ck_assert_msg(rc == -EINVAL, "%s %s: accepted (%d)", opt, arg ? arg : "", rc);
	ck_assert_ptr_null(out);
	ck_assert_msg(strstr(err, want), "%s %s: '%s' lacks '%s'", opt, arg ? arg : "", err, want);
}

#define NOT_ALLOWED "not allowed on the backup"

START_TEST(test_refused_netdev)
{
	assert_refused("-netdev", "tap,id=n0,ifname=tap0,script=/tmp/m",
		       "-netdev tap: property 'script' names a host program; " NOT_ALLOWED);
	assert_refused("-netdev", "tap,id=n0,downscript=/tmp/m",
		       "-netdev tap: property 'downscript' names a host program");
	assert_refused("-netdev", "tap,id=n0,helper=/tmp/m",
		       "-netdev tap: property 'helper' names a host program");
	assert_refused("-netdev", "tap,id=n0,script=no,script=/tmp/m",
		       "-netdev tap: property 'script' given twice");
	assert_refused("-netdev", "tap,id=n0,fd=3", "-netdev tap: property 'fd' passes a host file");
	/* a TAP the agent was not given: another VM's, or another network's */
	assert_refused("-netdev", "tap,id=n0,ifname=vnet3,script=no",
		       "-netdev tap: ifname 'vnet3' is not a TAP of this agent (--tap); " NOT_ALLOWED);
	assert_refused("-netdev", "tap,id=n0,vhostfd=3", "-netdev tap: property 'vhostfd'");
	assert_refused("-netdev", "user,id=u0,guestfwd=tcp:10.0.2.1:1-cmd:/bin/sh",
		       "-netdev user: type 'user' is " NOT_ALLOWED);
	assert_refused("-netdev", "socket,id=s0,listen=:4444", "-netdev socket: only udp=");
	assert_refused("-netdev", "type=dgram,id=n0,type=user", "-netdev dgram: property 'type' given twice");
	assert_refused("-netdev", "{\"type\":\"user\",\"id\":\"u0\"}", "-netdev: the JSON form");
	assert_refused("-netdev", "dgram,id=n0,local.type=fd,local.str=3",
		       "-netdev dgram: property 'local.str'");
	assert_refused("-net", "user", "-net: names a host path, program or device");
	assert_refused("-nic", "user,guestfwd=tcp:10.0.2.1:1-cmd:/bin/sh", "-nic: ");
}
END_TEST

START_TEST(test_refused_chardev)
{
	/* QEMU takes the last backend=; the rewrite would see the first */
	assert_refused("-chardev", "null,id=c0,backend=file,path=/tmp/m",
		       "-chardev null: property 'backend' given twice; " NOT_ALLOWED);
	assert_refused("-chardev", "socket,id=c0,path=/a,path=/tmp/m",
		       "-chardev socket: property 'path' given twice");
	assert_refused("-chardev", "null,id=c0,logfile=/tmp/m",
		       "-chardev null: property 'logfile' names a host path");
	assert_refused("-chardev", "qemu-vdagent,id=c0", "-chardev qemu-vdagent: backend");
	assert_refused("-chardev", "null,path=/tmp/m", "-chardev null: no id");
}
END_TEST

START_TEST(test_refused_disks)
{
	assert_refused("-drive", "file=/etc/shadow,format=raw,if=virtio",
		       "-drive: file '/etc/shadow' is neither a replicated disk nor a shared disk");
	assert_refused("-drive", "file=fat:rw:/etc,format=vvfat", "-drive: format 'vvfat'");
	assert_refused("-drive", "file=/etc/shadow", "-drive: file '/etc/shadow' without format=");
	assert_refused("-drive", "file.driver=file,file.filename=/etc/shadow",
		       "-drive: property 'file.driver'");
	assert_refused("-drive", "file=/a.img,file=/etc/shadow", "-drive: property 'file' given twice");
	assert_refused("-blockdev", "driver=file,filename=/etc/shadow,node-name=f0",
		       "-blockdev file: filename '/etc/shadow' is neither a replicated");
	assert_refused("-blockdev", "driver=nbd,server.type=inet,server.host=10.0.0.1,node-name=n",
		       "-blockdev nbd: driver 'nbd' is " NOT_ALLOWED);
	assert_refused("-blockdev", "{\"driver\":\"qcow2\",\"node-name\":\"q\",\"file\":"
		       "{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}}",
		       "-blockdev qcow2: property 'file.");
	assert_refused("-blockdev", "driver=qcow2,node-name=q,file=f,data-file=/etc/shadow",
		       "-blockdev qcow2: property 'data-file' names a host path");
	assert_refused("-hda", "/etc/shadow", "-hda: the image's format would be probed");
	assert_refused("-cdrom", "/etc/shadow", "-cdrom: the image's format would be probed");
	assert_refused("-pflash", "/tmp/OVMF.fd", "-pflash: the image's format");
	assert_refused("/etc/shadow", NULL, "disk image argument: the image's format would be "
		       "probed; give it as -drive file=/etc/shadow");
	assert_refused("-chardev", "socket,id=../../etc/x,path=/tmp/m",
		       "-chardev socket: id '../../etc/x' is not an identifier");
	assert_refused("-netdev", "dgram,id=../x,local.type=unix,local.path=/tmp/m",
		       "-netdev dgram: id '../x' is not an identifier");
}
END_TEST

START_TEST(test_refused_objects_devices)
{
	assert_refused("-object", "memory-backend-file,id=m1,size=1M,mem-path=/tmp/m",
		       "-object memory-backend-file: only the main RAM backend 'ram0'");
	assert_refused("-object", "memory-backend-file,id=ram0,size=1M,mem-path=/a,mem-path=/tmp/m",
		       "-object memory-backend-file: property 'mem-path' given twice");
	assert_refused("-object", "filter-dump,id=f0,netdev=n0,file=/tmp/m",
		       "-object filter-dump: type " NOT_ALLOWED);
	assert_refused("-object", "{\"qom-type\":\"secret\",\"id\":\"s0\",\"file\":\"/etc/shadow\"}",
		       "-object secret: type");
	assert_refused("-object", "iothread,id=io0,file=/tmp/m",
		       "-object iothread: property 'file' names a host path");
	assert_refused("-device", "vfio-pci,host=01:00.0", "-device vfio-pci: device " NOT_ALLOWED);
	assert_refused("-device", "loader,file=/etc/shadow,addr=0x1000", "-device loader: device");
	assert_refused("-device", "usb-host,hostbus=1,hostaddr=2", "-device usb-host: device");
	assert_refused("-device", "vhost-user-fs-pci,chardev=c0,tag=t", "-device vhost-user-fs-pci");
	assert_refused("-device", "virtio-net-pci,netdev=n0,romfile=/etc/shadow",
		       "-device virtio-net-pci: property 'romfile' names a host path");
	assert_refused("-device", "e1000,driver=vfio-pci,host=01:00.0",
		       "-device e1000: property 'driver' given twice");
	assert_refused("-global", "virtio-net-pci.romfile=/etc/shadow",
		       "-global: 'virtio-net-pci.romfile' is " NOT_ALLOWED);
	assert_refused("-global", "driver=loader,property=file,value=/etc/shadow", "-global: only");
}
END_TEST

START_TEST(test_refused_host_files_and_programs)
{
	static const char *const opts[][3] = {
		{ "-gdb", "file:/tmp/m", "-gdb: opens a debugger" },
		{ "-gdb", "tcp::1234", "-gdb: opens a debugger" },
		{ "-s", NULL, "-s: opens a debugger" },
		{ "-plugin", "file=/tmp/m.so", "-plugin: names a host path, program or device" },
		{ "-readconfig", "/tmp/m.cfg", "-readconfig: names a host path" },
		{ "-L", "/tmp", "-L: names a host path" },
		{ "-bios", "/tmp/m.bin", "-bios: names a host path" },
		{ "-option-rom", "/tmp/m.rom", "-option-rom: names a host path" },
		{ "-trace", "file=/tmp/m", "-trace: names a host path" },
		{ "-add-fd", "fd=3,set=1", "-add-fd: names a host path" },
		{ "-fsdev", "local,id=f,path=/,security_model=none", "-fsdev: names" },
		{ "-virtfs", "local,path=/,mount_tag=r,security_model=none", "-virtfs: names" },
		{ "-mem-path", "/tmp", "-mem-path: names" },
		{ "-chroot", "/tmp", "-chroot: names" },
		{ "-audiodev", "wav,id=a0,path=/tmp/m", "-audiodev: names" },
		{ "-acpitable", "file=/etc/shadow", "-acpitable: names" },
		{ "-dtb", "/tmp/m", "-dtb: names" },
		{ "-icount", "shift=1,rr=record,rrfile=/tmp/m", "-icount: names" },
		{ "-qtest", "unix:/tmp/m", "-qtest: opens a debugger" },
		{ "-preconfig", NULL, "-preconfig: is not on the backup's allowlist" },
		{ "-machine", "pc,dumpdtb=/tmp/m", "-machine: property 'dumpdtb' names a host path" },
		{ "-machine", "pc,kernel=/tmp/m", "-machine: property 'kernel' names a host path" },
		{ "-fw_cfg", "name=opt/m,file=/etc/shadow", "-fw_cfg: property 'file' names a host path" },
		{ "-smbios", "file=/etc/shadow", "-smbios: property 'file' names a host path" },
		{ "-boot", "order=c,splash=/tmp/m", "-boot: property 'splash' names a host path" },
		{ "-vga", "/tmp/m", "-vga: '/tmp/m' is " NOT_ALLOWED },
		{ "-c", "touch /tmp/m", "-c: is not on the backup's allowlist" },
	};

	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		assert_refused(opts[i][0], opts[i][1], opts[i][2]);
}
END_TEST

START_TEST(test_comma_in_state_dir)
{
	const struct restore_spec sp = {
		.emulator = EMU, .state_dir = "/b,1", .ram_path = "/r,am", .ram_backend_id = "ram0",
	};
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-serial", "stdio", "-chardev", "pty,id=c",
		"-serial", "chardev:c", "-pidfile", "/r/p", NULL
	};

	/* key=value text doubles commas; "file:" and plain paths do not. */
	assert_restored(in, &sp, EMU "|-object|memory-backend-file,id=ram0,size=128M,"
		"mem-path=/r,,am,share=on|-serial|file:/b,1/serial.log|"
		"-chardev|file,id=c,path=/b,,1/serial1.log|-serial|chardev:c|"
		"-pidfile|/b,1/qemu.pid|-qmp|unix:/b,,1/qmp.sock,server=on,wait=off|"
		"-incoming|defer");
}
END_TEST

/* ---- NICs: the primary's net-buffer sockets ---- */

#define DGRAM_N0 "dgram,id=n0,local.type=unix,local.path=/r/n0.qemu.sock," \
	"remote.type=unix,remote.path=/r/n0.buf.sock"
#define DGRAM_N1 "dgram,id=n1,local.type=unix,local.path=/r/n1.qemu.sock," \
	"remote.type=unix,remote.path=/r/n1.buf.sock"
#define NIC_N0 "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"
#define NIC_N1 "virtio-net-pci,netdev=n1,mac=52:54:00:12:34:57"
/* A dgram netdev without a TAP: its socket files in the state dir. */
#define MOVED_N0 "-netdev|dgram,id=n0,local.type=unix,local.path=/b/netdev-n0.sock," \
	"remote.type=unix,remote.path=/b/netdev-n0.peer.sock"
#define MOVED_N1 "-netdev|dgram,id=n1,local.type=unix,local.path=/b/netdev-n1.sock," \
	"remote.type=unix,remote.path=/b/netdev-n1.peer.sock"

START_TEST(test_netdev_dgram_to_named_tap)
{
	const char *const taps[] = { "n0=tap7" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", DGRAM_N0, "-device", NIC_N0, NULL
	};

	sp.taps = taps;
	sp.ntaps = 1;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|"
		"-netdev|tap,id=n0,ifname=tap7,script=no,downscript=no|"
		"-device|" NIC_N0 "|" TAIL);
}
END_TEST

/* One NIC: the TAP may be given without the netdev's id. */
START_TEST(test_netdev_single_nic_bare_tap)
{
	const char *const taps[] = { "tap7" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", DGRAM_N0, "-device", NIC_N0, NULL
	};

	sp.taps = taps;
	sp.ntaps = 1;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|"
		"-netdev|tap,id=n0,ifname=tap7,script=no,downscript=no|"
		"-device|" NIC_N0 "|" TAIL);
}
END_TEST

/* Only n1 has a TAP: n0 keeps its dgram backend, on sockets of its own. */
START_TEST(test_netdev_two_nics_one_tap)
{
	const char *const taps[] = { "n1=tapB" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", DGRAM_N0, "-device", NIC_N0,
		"-netdev", DGRAM_N1, "-device", NIC_N1, NULL
	};

	sp.taps = taps;
	sp.ntaps = 1;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|" MOVED_N0 "|-device|" NIC_N0 "|"
		"-netdev|tap,id=n1,ifname=tapB,script=no,downscript=no|"
		"-device|" NIC_N1 "|" TAIL);
}
END_TEST

START_TEST(test_netdev_socket_udp_to_tap)
{
	const char *const taps[] = { "n2=tapC" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM,
		"-netdev", "socket,id=n2,udp=127.0.0.1:5555,localaddr=127.0.0.1:5556",
		"-device", "e1000,netdev=n2", NULL
	};

	sp.taps = taps;
	sp.ntaps = 1;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|"
		"-netdev|tap,id=n2,ifname=tapC,script=no,downscript=no|"
		"-device|e1000,netdev=n2|" TAIL);
}
END_TEST

/* A TAP without scripts (a restored VM's own line) stays, TAP given or not. */
/* Without a TAP, an inet datagram socket would send the restored guest's
 * frames wherever the primary named, from the backup's address: it
 * becomes a unix one in the state dir, as the primary's unix ones do. */
START_TEST(test_netdev_inet_without_tap_goes_to_the_state_dir)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM,
		"-netdev", "dgram,id=n0,local.type=inet,local.host=0.0.0.0,local.port=53,"
		"remote.type=inet,remote.host=10.9.8.7,remote.port=161",
		"-device", NIC_N0,
		"-netdev", "socket,id=n1,udp=127.0.0.1:5555,localaddr=127.0.0.1:5556",
		"-device", NIC_N1, NULL
	};

	assert_restored(in, &spec, EMU "|" RESTORED_RAM "|" MOVED_N0 "|-device|" NIC_N0 "|"
			MOVED_N1 "|-device|" NIC_N1 "|" TAIL);
}
END_TEST

/* A TAP NIC (the primary's own, output commit off) comes back on the
 * agent's TAP for it; it keeps its TAP only if that is one of the agent's
 * (or names none); any other is refused. */
START_TEST(test_netdev_tap_only_the_agents)
{
	const char *const by_id[] = { "t0=tapT" };
	const char *const same[] = { "x" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", "tap,id=t0,ifname=x,script=no,downscript=no,vhost=on",
		"-device", "e1000,netdev=t0", NULL
	};
	const char *kept = EMU "|" RESTORED_RAM "|-netdev|tap,id=t0,ifname=x,script=no,"
		"downscript=no,vhost=on|-device|e1000,netdev=t0|" TAIL;
	char err[256] = "", **out = NULL;

	sp.taps = same;
	sp.ntaps = 1;
	assert_restored(in, &sp, kept);
	sp.taps = by_id;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|-netdev|tap,id=t0,ifname=tapT,script=no,"
			"downscript=no|-device|e1000,netdev=t0|" TAIL);
	ck_assert_int_eq(restore_cmdline_build((char *const *)in, 7, &spec, &out, err, sizeof(err)),
			 -EINVAL);
	ck_assert_msg(strstr(err, "ifname 'x' is not a TAP of this agent"), "%s", err);
	in[4] = "tap,id=t0,script=no";
	assert_restored(in, &spec, EMU "|" RESTORED_RAM "|-netdev|tap,id=t0,script=no|"
			"-device|e1000,netdev=t0|" TAIL);
}
END_TEST

/* A bare TAP name is for the only NIC: with two it names neither. */
START_TEST(test_netdev_bare_tap_ignored_with_two_nics)
{
	const char *const taps[] = { "tap7" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", DGRAM_N0, "-device", NIC_N0,
		"-netdev", DGRAM_N1, "-device", NIC_N1, NULL
	};

	sp.taps = taps;
	sp.ntaps = 1;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|" MOVED_N0 "|-device|" NIC_N0 "|"
		MOVED_N1 "|-device|" NIC_N1 "|" TAIL);
}
END_TEST

/* "ID=NAME" names the netdev whose id is all of ID, not one it begins. */
START_TEST(test_netdev_tap_id_matched_whole)
{
	const char *const taps[] = { "n00=tapX", "n=tapY" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", DGRAM_N0, "-device", NIC_N0, NULL
	};

	sp.taps = taps;
	sp.ntaps = 2;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|" MOVED_N0 "|-device|" NIC_N0 "|" TAIL);
}
END_TEST

/* The restored line, restored again, is the same: TAPs and moved sockets
 * alike. */
START_TEST(test_netdev_rewrite_idempotent)
{
	const char *const taps[] = { "n1=tapB" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", DGRAM_N0, "-device", NIC_N0,
		"-netdev", DGRAM_N1, "-device", NIC_N1, NULL
	};
	char err[256], **once = NULL, **twice = NULL, *a, *b;

	sp.taps = taps;
	sp.ntaps = 1;
	ck_assert_int_eq(restore_cmdline_build((char *const *)in, count(in), &sp, &once,
					       err, sizeof(err)), 0);
	ck_assert_int_eq(restore_cmdline_build(once, count((const char *const *)once), &sp,
					       &twice, err, sizeof(err)), 0);
	a = joined(once);
	b = joined(twice);
	ck_assert_str_eq(a, b);
	ck_assert_ptr_nonnull(strstr(a, MOVED_N0));
	free(a);
	free(b);
	restore_cmdline_free(once);
	restore_cmdline_free(twice);
}
END_TEST

/* The TAP name goes into key=value text with its commas doubled, as every
 * other value written there (see comma_in_state_dir): Linux allows ',' in
 * an interface name, and "ifname=tap,1" would read as ifname=tap plus a
 * stray "1". (A regression test: this was once wrong.) */
START_TEST(test_netdev_tap_name_comma_doubled)
{
	const char *const taps[] = { "n0=tap,1" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-netdev", DGRAM_N0, "-device", NIC_N0, NULL
	};

	sp.taps = taps;
	sp.ntaps = 1;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|"
		"-netdev|tap,id=n0,ifname=tap,,1,script=no,downscript=no|"
		"-device|" NIC_N0 "|" TAIL);
}
END_TEST

/* After a failover the restored VM is the next primary. */
START_TEST(test_idempotent)
{
	const char *in[] = {
		PRIMARY_HEAD, PRIMARY_RAM, "-nographic", "-chardev", "pty,id=c0",
		"-device", "isa-serial,chardev=c0", "-vnc", ":0", "-S", NULL
	};
	char err[256], **once = NULL, **twice = NULL, *a, *b;

	ck_assert_int_eq(restore_cmdline_build((char *const *)in, count(in), &spec, &once,
					       err, sizeof(err)), 0);
	ck_assert_int_eq(restore_cmdline_build(once, count((const char *const *)once), &spec,
					       &twice, err, sizeof(err)), 0);
	a = joined(once);
	b = joined(twice);
	ck_assert_str_eq(a, b);
	free(a);
	free(b);
	restore_cmdline_free(once);
	restore_cmdline_free(twice);
}
END_TEST

START_TEST(test_bad_input)
{
	const char *in[] = { "qemu", NULL };
	const struct restore_spec incomplete = { .state_dir = "/b" };
	char err[128], **out = NULL;

	ck_assert_int_eq(restore_cmdline_build((char *const *)in, 0, &spec, &out,
					       err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(restore_cmdline_build((char *const *)in, 1, &incomplete, &out,
					       err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(out);
	/* no room for a message is fine too */
	ck_assert_int_eq(restore_cmdline_build((char *const *)in, 1, &spec, &out, NULL, 0),
			 -EINVAL);
	restore_cmdline_free(NULL);
}
END_TEST

/* ---- the restored command line, run by a real QEMU ---- */

/* ---- replicated disks: the whole graph becomes a qcow2 overlay over the
 * replica, whatever form the primary gave it */
#define OVERLAY_NODE(name) "-blockdev|{\"node-name\":\"" name "\",\"driver\":\"qcow2\"," \
	"\"file\":{\"driver\":\"file\",\"filename\":\"/b/disk-0.qcow2\"}}|"

/* A -blockdev disk as query-block names it: no id, its device's node. */
static void assert_disk_restored(const char *const *in, const char *id, const char *node,
				 const char *file, const char *want)
{
	struct restore_disk d = { .id = id, .node = node, .file = file,
				  .overlay = "/b/disk-0.qcow2" };
	struct restore_spec sp = spec;

	sp.disks = &d;
	sp.ndisks = 1;
	assert_restored(in, &sp, want);
}

START_TEST(test_disk_drive_to_overlay)
{
	static const char *const shared[] = { "/iso/other.iso" };
	struct restore_disk d = { .id = "d0", .node = "#block123", .file = "/var/lib/vm/d0.img",
				  .overlay = "/b/disk-0.qcow2" };
	struct restore_spec sp = spec;
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-drive", "file=/var/lib/vm/d0.img,format=raw,if=virtio,id=d0",
		"-drive", "file=/iso/other.iso,media=cdrom,readonly=on,format=raw", NULL
	};

	sp.disks = &d;
	sp.ndisks = 1;
	sp.shared_disks = shared;
	sp.nshared_disks = 1;
	assert_restored(in, &sp, EMU "|" RESTORED_RAM "|"
		"-drive|if=virtio,id=d0,file=/b/disk-0.qcow2,format=qcow2|"
		"-drive|file=/iso/other.iso,media=cdrom,readonly=on,format=raw|" TAIL);
}
END_TEST

/* A qcow2 -drive with its own backing chain and protocol options: only the
 * overlay is left, the chain is in the replica. A drive QEMU named itself
 * (virtio0) is found by its image. */
START_TEST(test_disk_drive_qcow2_chain)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-drive", "file.filename=/v/top.qcow2,file.driver=file,"
		"format=qcow2,backing.file.filename=/v/base.img,if=virtio,cache=writeback", NULL
	};

	assert_disk_restored(in, "virtio0", "#block9", "/v/top.qcow2", EMU "|" RESTORED_RAM "|"
		"-drive|if=virtio,cache=writeback,file=/b/disk-0.qcow2,format=qcow2|" TAIL);
}
END_TEST

/* The form of the bug: the device directly on a file node. */
START_TEST(test_disk_blockdev_file_node)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM, "-blockdev", "driver=file,filename=/v/d0.img,node-name=disk0",
		"-device", "virtio-blk-pci,drive=disk0,id=vdisk0", NULL
	};

	assert_disk_restored(in, "", "disk0", "/v/d0.img", EMU "|" RESTORED_RAM "|"
		OVERLAY_NODE("disk0") "-device|virtio-blk-pci,drive=disk0,id=vdisk0|" TAIL);
}
END_TEST

START_TEST(test_disk_blockdev_to_overlay)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM,
		"-blockdev", "driver=file,filename=/var/lib/vm/d0.img,node-name=d0-file",
		"-blockdev", "driver=raw,file=d0-file,node-name=d0,discard=unmap,detect-zeroes=bogus",
		"-device", "virtio-blk-pci,drive=d0,id=vdisk0", NULL
	};

	/* discard reaches the guest and is kept; an invalid value is not */
	assert_disk_restored(in, "", "d0", "/var/lib/vm/d0.img", EMU "|" RESTORED_RAM "|"
		"-blockdev|{\"node-name\":\"d0\",\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\","
		"\"filename\":\"/b/disk-0.qcow2\"},\"discard\":\"unmap\"}|"
		"-device|virtio-blk-pci,drive=d0,id=vdisk0|" TAIL);
}
END_TEST

/* file -> qcow2 over a backing chain of its own: every node below the
 * disk's goes, the base image path never reaches the backup's QEMU. */
START_TEST(test_disk_blockdev_qcow2_backing_chain)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM,
		"-blockdev", "driver=file,filename=/v/base.img,node-name=base-file",
		"-blockdev", "driver=raw,file=base-file,node-name=base",
		"-blockdev", "driver=file,filename=/v/top.qcow2,node-name=top-file",
		"-blockdev", "driver=qcow2,file=top-file,backing=base,node-name=disk0",
		"-device", "virtio-blk-pci,drive=disk0", NULL
	};

	assert_disk_restored(in, "", "disk0", "/v/top.qcow2", EMU "|" RESTORED_RAM "|"
		OVERLAY_NODE("disk0") "-device|virtio-blk-pci,drive=disk0|" TAIL);
}
END_TEST

/* JSON, children written inline; and the names libvirt gives. */
START_TEST(test_disk_blockdev_json_to_overlay)
{
	const char *inline_json[] = {
		"qemu", PRIMARY_RAM, "-blockdev",
		"{\"driver\":\"qcow2\",\"node-name\":\"disk0\",\"file\":{\"driver\":\"file\","
		"\"filename\":\"/v/top.qcow2\"},\"backing\":{\"driver\":\"raw\",\"file\":"
		"{\"driver\":\"file\",\"filename\":\"/v/base.img\"}}}", NULL
	};
	const char *libvirt[] = {
		"qemu", PRIMARY_RAM,
		"-blockdev", "{\"driver\":\"file\",\"filename\":\"/var/lib/libvirt/images/d.img\","
		"\"node-name\":\"libvirt-1-storage\",\"auto-read-only\":true,\"discard\":\"unmap\"}",
		"-blockdev", "{\"node-name\":\"libvirt-1-format\",\"read-only\":false,"
		"\"driver\":\"raw\",\"file\":\"libvirt-1-storage\"}",
		"-device", "{\"driver\":\"virtio-blk-pci\",\"drive\":\"libvirt-1-format\","
		"\"id\":\"virtio-disk0\"}", NULL
	};

	assert_disk_restored(inline_json, "", "disk0", "/v/top.qcow2",
			     EMU "|" RESTORED_RAM "|" OVERLAY_NODE("disk0") TAIL);
	assert_disk_restored(libvirt, "", "libvirt-1-format", "/var/lib/libvirt/images/d.img",
			     EMU "|" RESTORED_RAM "|" OVERLAY_NODE("libvirt-1-format")
			     "-device|{\"driver\":\"virtio-blk-pci\",\"drive\":\"libvirt-1-format\","
			     "\"id\":\"virtio-disk0\"}|" TAIL);
}
END_TEST

/* The driver as the bare leading value, and a block device on the primary. */
START_TEST(test_disk_blockdev_implied_driver_and_host_device)
{
	const char *in[] = {
		"qemu", PRIMARY_RAM,
		"-blockdev", "host_device,filename=/dev/vg0/vm1,node-name=d0-file",
		"-blockdev", "raw,file=d0-file,node-name=d0", NULL
	};

	assert_disk_restored(in, "", "d0", "/dev/vg0/vm1",
			     EMU "|" RESTORED_RAM "|" OVERLAY_NODE("d0") TAIL);
}
END_TEST

/* The test hook recreates the bug, so that the restored graph check can be
 * seen to catch it. */
START_TEST(test_disk_overlay_as_raw_hook)
{
	const char *drive[] = { "qemu", PRIMARY_RAM, "-drive", "file=/v/d.img,format=raw,id=d0", NULL };
	const char *bdev[] = { "qemu", PRIMARY_RAM, "-blockdev",
			       "driver=file,filename=/v/d.img,node-name=disk0", NULL };

	setenv(RESTORE_TEST_OVERLAY_AS_RAW, "1", 1);
	assert_disk_restored(drive, "d0", "#block1", "/v/d.img", EMU "|" RESTORED_RAM "|"
			     "-drive|id=d0,file=/b/disk-0.qcow2,format=raw|" TAIL);
	assert_disk_restored(bdev, "", "disk0", "/v/d.img", EMU "|" RESTORED_RAM "|"
			     "-blockdev|{\"node-name\":\"disk0\",\"driver\":\"file\","
			     "\"filename\":\"/b/disk-0.qcow2\"}|" TAIL);
	unsetenv(RESTORE_TEST_OVERLAY_AS_RAW);
}
END_TEST

/* A disk the replica has but the command line does not: refuse, rather
 * than start the VM on the primary's image path. */
START_TEST(test_disk_missing_is_error)
{
	struct restore_disk d = { .id = "d0", .node = "#block1", .file = "/var/lib/vm/d0.img",
				  .overlay = "/b/disk-0.qcow2" };
	struct restore_spec sp = spec;
	static const char *const shared[] = { "/elsewhere.img" };
	const char *in[] = { "qemu", PRIMARY_RAM, "-drive", "file=/elsewhere.img,format=raw", NULL };
	char **out = NULL, err[256];

	sp.disks = &d;
	sp.ndisks = 1;
	sp.shared_disks = shared;
	sp.nshared_disks = 1;
	ck_assert_int_eq(restore_cmdline_build((char *const *)in, count(in), &sp, &out, err,
					       sizeof(err)), -EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_ptr_nonnull(strstr(err, "/var/lib/vm/d0.img"));
}
END_TEST

/* What stays of a replicated -drive still passes the allowlist. */
START_TEST(test_disk_drive_rest_still_checked)
{
	struct restore_disk d = { .id = "d0", .node = "#b", .file = "/v/d.img",
				  .overlay = "/b/disk-0.qcow2" };
	struct restore_spec sp = spec;
	const char *in[] = { "qemu", PRIMARY_RAM, "-drive",
			     "file=/v/d.img,format=raw,id=d0,bogus-key=1", NULL };
	char **out = NULL, err[256];

	sp.disks = &d;
	sp.ndisks = 1;
	ck_assert_int_eq(restore_cmdline_build((char *const *)in, count(in), &sp, &out, err,
					       sizeof(err)), -EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_msg(strstr(err, "bogus-key"), "%s", err);
}
END_TEST

/* The HELLO names each replicated disk's image, any path the primary
 * likes: only the node the restore replaces may use it. A second drive or
 * node on that path (or on the overlay) would hand the guest whatever host
 * file or device the primary called a disk. */
START_TEST(test_disk_second_path_to_replicated_image_refused)
{
	static const char *const seconds[][2] = {
		{ "-drive", "file=/dev/sda,format=raw,if=virtio,id=evil" },
		{ "-drive", "file=/b/disk-0.qcow2,format=qcow2,if=virtio,id=evil" },
		{ "-blockdev", "driver=host_device,node-name=e,filename=/dev/sda" },
		{ "-blockdev", "driver=file,node-name=e,filename=/b/disk-0.qcow2" },
	};
	struct restore_disk d = { .id = "d0", .node = "#b", .file = "/dev/sda",
				  .overlay = "/b/disk-0.qcow2" };
	struct restore_spec sp = spec;
	char **out = NULL, err[256];

	sp.disks = &d;
	sp.ndisks = 1;
	for (size_t i = 0; i < sizeof(seconds) / sizeof(seconds[0]); i++) {
		const char *in[] = { "qemu", PRIMARY_RAM, "-drive",
				     "file=/dev/sda,format=raw,id=d0,if=virtio",
				     seconds[i][0], seconds[i][1], NULL };

		ck_assert_int_eq(restore_cmdline_build((char *const *)in, count(in), &sp, &out,
						       err, sizeof(err)), -EINVAL);
		ck_assert_ptr_null(out);
		ck_assert_msg(strstr(err, "is a replicated disk's image, but not in that disk's "
				     "own node"), "%s %s: %s", seconds[i][0], seconds[i][1], err);
	}
}
END_TEST

/* ---- at HELLO: the HELLO's VM, dry-run ---- */

static int check_hello_json(const char *json, char *err, size_t errlen)
{
	struct restore_opts o = { .dir = "/b", .emulator = EMU };
	struct json_object *vm = json_tokener_parse(json);
	int rc;

	ck_assert_ptr_nonnull(vm);
	rc = restore_check_hello(&o, vm, err, errlen);
	json_object_put(vm);
	return rc;
}

#define HELLO_RAM "\"ram_backend\":\"ram0\",\"qemu_argv\":[\"/bin/sh\",\"-object\"," \
	"\"memory-backend-file,id=ram0,size=1M,mem-path=/r/ram,share=on\""

START_TEST(test_check_hello)
{
	char err[256];

	ck_assert_int_eq(check_hello_json("{" HELLO_RAM "]}", err, sizeof(err)), 0);
	/* a replicated disk is found on the command line, as at failover */
	ck_assert_int_eq(check_hello_json("{" HELLO_RAM ",\"-drive\",\"file=/d0,format=raw\"],"
					  "\"disks\":[{\"id\":\"d0\",\"file\":\"/d0\"}]}",
					  err, sizeof(err)), 0);
	ck_assert_int_eq(check_hello_json("{" HELLO_RAM "],\"disks\":[{\"id\":\"d0\",\"file\":\"/d0\"}]}",
					  err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "/d0"));
	ck_assert_int_eq(check_hello_json("{" HELLO_RAM ",\"-gdb\",\"file:/tmp/m\"]}", err,
					  sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "-gdb: opens a debugger or test port on the guest; not allowed on "
			 "the backup");
	ck_assert_int_eq(check_hello_json("{" HELLO_RAM "],\"libvirt_xml\":\"<domain><name>x</name>"
					  "<devices><hostdev type='pci'/></devices></domain>\"}",
					  err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "<hostdev type='pci'>"));
	/* not a HELLO the agent takes at all: its own checks say why */
	ck_assert_int_eq(check_hello_json("{\"protocol\":2}", err, sizeof(err)), 0);
}
END_TEST

static int find_qemu(char *out, size_t size)
{
	const char *path = getenv("PATH");
	char *dirs, *dir, *save = NULL;
	int found = 0;

	dirs = strdup(path ? path : "/usr/bin:/bin");
	ck_assert_ptr_nonnull(dirs);
	for (dir = strtok_r(dirs, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, size, "%s/qemu-system-x86_64", dir);
		found = access(out, X_OK) == 0;
	}
	free(dirs);
	return found;
}

static pid_t spawn(char **argv)
{
	pid_t pid = fork();
	int null;

	ck_assert_int_ge(pid, 0);
	if (pid)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	null = open("/dev/null", O_RDWR);
	dup2(null, 0);
	dup2(null, 1);
	execv(argv[0], argv);
	_exit(127);
}

static struct qmp *connect_retry(const char *sock, pid_t pid)
{
	struct timespec pause = { 0, 50 * 1000 * 1000 };
	struct qmp *q = NULL;
	int ret = -ENOENT, i, status;

	for (i = 0; i < 200 && ret; i++) {
		ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "QEMU exited early");
		ret = qmp_connect(sock, 2000, &q);
		if (ret)
			nanosleep(&pause, NULL);
	}
	ck_assert_msg(ret == 0, "connect: %s", qmp_connect_error());
	return q;
}

static const char *query_string(struct qmp *q, const char *cmd, const char *path,
				const char *prop, char *buf, size_t size)
{
	struct json_object *args = json_object_new_object(), *ret = NULL;
	int err;

	if (path) {
		json_object_object_add(args, "path", json_object_new_string(path));
		json_object_object_add(args, "property", json_object_new_string(prop));
	}
	err = qmp_execute(q, cmd, path ? args : NULL, &ret, 5000);
	ck_assert_msg(err == 0, "%s: %s", cmd, qmp_last_error(q));
	snprintf(buf, size, "%s", json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN |
				  JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(ret);
	json_object_put(args);
	return buf;
}

START_TEST(test_real_qemu_accepts_it)
{
	char qemu[PATH_MAX], dir[] = "/tmp/check_restore.XXXXXX", ram[256];
	char sock[PATH_MAX], log[PATH_MAX], buf[4096], err[256], **out = NULL;
	struct restore_spec sp = { .ram_backend_id = "ram0" };
	struct qmp *q;
	struct stat st;
	int status;
	pid_t pid;

	if (!find_qemu(qemu, sizeof(qemu))) {
		fprintf(stderr, "real_qemu_accepts_it: qemu-system-x86_64 not found, skipped\n");
		return;
	}
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(ram, sizeof(ram), "%s/ram", dir);
	sp.state_dir = dir;
	sp.ram_path = ram;
	sp.emulator = qemu;
	{
		const char *in[] = {
			qemu, "-accel", "tcg", "-machine", "pc,memory-backend=ram0",
			"-m", "64M", "-object", "memory-backend-memfd,id=ram0,size=64M,share=on",
			"-vga", "none", "-nographic", "-chardev", "pty,id=con",
			"-device", "isa-serial,chardev=con", "-qmp", "unix:/nonexistent/q.sock,server=on,wait=off",
			"-pidfile", "/nonexistent/qemu.pid", "-daemonize", "-S", NULL
		};

		ck_assert_int_eq(restore_cmdline_build((char *const *)in, count(in), &sp, &out,
						       err, sizeof(err)), 0);
	}
	pid = spawn(out);
	snprintf(sock, sizeof(sock), "%s/qmp.sock", dir);
	q = connect_retry(sock, pid);

	ck_assert_str_eq(query_string(q, "query-status", NULL, NULL, buf, sizeof(buf)),
			 "{\"status\":\"inmigrate\",\"singlestep\":false,\"running\":false}");
	snprintf(log, sizeof(log), "\"%s\"", ram);
	ck_assert_str_eq(query_string(q, "qom-get", "/objects/ram0", "mem-path", buf, sizeof(buf)),
			 log);
	ck_assert_str_eq(query_string(q, "qom-get", "/objects/ram0", "share", buf, sizeof(buf)),
			 "true");
	ck_assert_str_eq(query_string(q, "qom-get", "/machine", "graphics", buf, sizeof(buf)),
			 "false");
	query_string(q, "query-chardev", NULL, NULL, buf, sizeof(buf));
	ck_assert_msg(strstr(buf, "{\"frontend-open\":true,\"filename\":\"file\",\"label\":\"con\"}"),
		      "%s", buf);
	snprintf(log, sizeof(log), "%s/serial.log", dir);
	ck_assert_int_eq(stat(log, &st), 0);
	snprintf(log, sizeof(log), "%s/qemu.pid", dir);
	ck_assert_int_eq(stat(log, &st), 0);

	ck_assert_int_eq(qmp_execute(q, "quit", NULL, NULL, 5000), 0);
	qmp_close(q);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	restore_cmdline_free(out);
	unlink(ram);
	snprintf(log, sizeof(log), "%s/serial.log", dir);
	unlink(log);
	rmdir(dir);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *test, int timeout)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout);
	tcase_add_test(tc, test);
	suite_add_tcase(s, tc);
}

static Suite *restore_cmdline_suite(void)
{
	Suite *s = suite_create("restore_cmdline");

	add(s, "realistic_primary", test_realistic_primary, 5);
	add(s, "memfd_backend", test_memfd_backend, 5);
	add(s, "ram_backend_forms", test_ram_backend_forms, 5);
	add(s, "missing_backend", test_missing_backend, 5);
	add(s, "missing_argument", test_missing_argument, 5);
	add(s, "nographic_without_serial", test_nographic_without_serial, 5);
	add(s, "nographic_no_default_serial", test_nographic_no_default_serial, 5);
	add(s, "chardev_serial", test_chardev_serial, 5);
	add(s, "monitors_dropped", test_monitors_dropped, 5);
	add(s, "displays", test_displays, 5);
	add(s, "run_control_and_files", test_run_control_and_files, 5);
	add(s, "pass_through", test_pass_through, 5);
	add(s, "refused_netdev", test_refused_netdev, 5);
	add(s, "refused_chardev", test_refused_chardev, 5);
	add(s, "refused_disks", test_refused_disks, 5);
	add(s, "refused_objects_devices", test_refused_objects_devices, 5);
	add(s, "refused_host_files_and_programs", test_refused_host_files_and_programs, 5);
	add(s, "comma_in_state_dir", test_comma_in_state_dir, 5);
	add(s, "netdev_dgram_to_named_tap", test_netdev_dgram_to_named_tap, 5);
	add(s, "netdev_single_nic_bare_tap", test_netdev_single_nic_bare_tap, 5);
	add(s, "netdev_two_nics_one_tap", test_netdev_two_nics_one_tap, 5);
	add(s, "netdev_socket_udp_to_tap", test_netdev_socket_udp_to_tap, 5);
	add(s, "netdev_inet_without_tap_goes_to_the_state_dir",
	    test_netdev_inet_without_tap_goes_to_the_state_dir, 5);
	add(s, "netdev_tap_only_the_agents", test_netdev_tap_only_the_agents, 5);
	add(s, "netdev_bare_tap_ignored_with_two_nics", test_netdev_bare_tap_ignored_with_two_nics, 5);
	add(s, "netdev_tap_id_matched_whole", test_netdev_tap_id_matched_whole, 5);
	add(s, "netdev_rewrite_idempotent", test_netdev_rewrite_idempotent, 5);
	add(s, "netdev_tap_name_comma_doubled", test_netdev_tap_name_comma_doubled, 5);
	add(s, "idempotent", test_idempotent, 5);
	add(s, "disk_drive_to_overlay", test_disk_drive_to_overlay, 5);
	add(s, "disk_drive_qcow2_chain", test_disk_drive_qcow2_chain, 5);
	add(s, "disk_blockdev_file_node", test_disk_blockdev_file_node, 5);
	add(s, "disk_blockdev_to_overlay", test_disk_blockdev_to_overlay, 5);
	add(s, "disk_blockdev_qcow2_backing_chain", test_disk_blockdev_qcow2_backing_chain, 5);
	add(s, "disk_blockdev_json_to_overlay", test_disk_blockdev_json_to_overlay, 5);
	add(s, "disk_overlay_as_raw_hook", test_disk_overlay_as_raw_hook, 5);
	add(s, "disk_drive_rest_still_checked", test_disk_drive_rest_still_checked, 5);
	add(s, "disk_second_path_to_replicated_image_refused",
	    test_disk_second_path_to_replicated_image_refused, 5);
	add(s, "disk_missing_is_error", test_disk_missing_is_error, 5);
	add(s, "disk_blockdev_implied_driver_and_host_device",
	    test_disk_blockdev_implied_driver_and_host_device, 5);
	add(s, "bad_input", test_bad_input, 5);
	add(s, "check_hello", test_check_hello, 5);
	add(s, "real_qemu_accepts_it", test_real_qemu_accepts_it, 60);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(restore_cmdline_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
