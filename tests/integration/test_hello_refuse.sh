#!/bin/bash
# The backup decides what it runs: HELLOs whose VM asks for a host path, a
# program or a host device (a copy of the test guest's real command line
# with one dangerous option each, or a libvirt XML with <qemu:commandline>)
# are refused at HELLO, with the option named in the reply. No marker file
# appears, no program runs, and nothing is written to the state dir. The
# peer holds the pair key (remus-probe over TLS): a compromised primary.
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
mkdir -p "$T/backup"
# Shared disks, each with a qcow2 header naming /etc/hostname as its
# backing file (what a guest writes into a raw disk, or the primary's host
# into the shared storage): refused where the VM reads one as qcow2,
# accepted where it reads it as raw (the guest's data).
python3 - "$T/sh-q.qcow2" "$T/sh-raw.img" <<'PY'
import struct, sys
hdr = bytearray(1 << 20)
hdr[0:4] = b"QFI\xfb"
name = b"/etc/hostname"
struct.pack_into(">IQII", hdr, 4, 3, 512, len(name), 16)
struct.pack_into(">I", hdr, 100, 104)
hdr[512:512 + len(name)] = name
for path in sys.argv[1:]:
    open(path, "wb").write(hdr)
PY
start_agent "$PORT" "$T/backup" --no-fence --shared-disk "$T/sh-q.qcow2" --shared-disk "$T/sh-raw.img"
wait_for 10 grep -qs "listening on" "$T/agent.log" || die "agent did not start"
before=$(ls -A "$T/backup")

# Run as a hook, a script= or helper= would leave this marker.
cat > "$T/m-prog.sh" <<EOF
#!/bin/sh
touch "$T/m-ran"
EOF
chmod +x "$T/m-prog.sh"

# Each case: NAME, what the reply must name, the extra arguments (or the
# whole argv, or libvirt XML). Prints "NAME<TAB>ok<TAB>error" per HELLO.
python3 - "$PORT" "$T" "$ROOT/build/tests/remus-probe" "$KEY" > "$T/replies" <<'PY'
import json, subprocess, sys
port, T, probe, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

# What scripts/run-test-guest --net --disk gives QEMU, as the replicator
# reads it from /proc/PID/cmdline.
run = T + "/primary"
real = ["/usr/bin/qemu-system-x86_64", "-name", "primary", "-accel", "tcg",
        "-machine", "pc,memory-backend=ram0", "-m", "128M",
        "-object", "memory-backend-file,id=ram0,size=128M,mem-path=/dev/shm/remus-primary.ram,share=on",
        "-kernel", "/g/vmlinuz", "-initrd", "/g/initrd.img", "-append", "console=ttyS0 quiet panic=-1",
        "-nodefaults", "-vga", "none", "-display", "none", "-serial", "file:" + run + "/serial.log",
        "-qmp", "unix:" + run + "/qmp.sock,server=on,wait=off", "-pidfile", run + "/qemu.pid",
        "-no-reboot",
        "-netdev", "dgram,id=n0,local.type=unix,local.path=" + run + "/n0.qemu.sock,remote.type=unix,remote.path=" + run + "/n0.buf.sock",
        "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
        "-blockdev", "driver=file,filename=" + run + "/disk.img,node-name=disk0-file",
        "-blockdev", "driver=raw,file=disk0-file,node-name=disk0",
        "-device", "virtio-blk-pci,drive=disk0,id=vdisk0", "-daemonize"]
m = T + "/m-"
prog = T + "/m-prog.sh"
cases = [
    ("sh", "-c", ["/bin/sh", "-c", "touch " + m + "sh"]),
    ("script", "-netdev tap: property 'script' names a host program",
     ["-netdev", "tap,id=t9,ifname=remustap9,script=" + prog, "-device", "e1000,netdev=t9"]),
    ("downscript", "-netdev tap: property 'downscript'",
     ["-netdev", "tap,id=t9,ifname=remustap9,script=no,downscript=" + prog]),
    ("helper", "-netdev tap: property 'helper'", ["-netdev", "tap,id=t9,helper=" + prog]),
    ("tap-ifname", "-netdev tap: ifname 'remustap9' is not a TAP of this agent",
     ["-netdev", "tap,id=t9,ifname=remustap9,script=no", "-device", "e1000,netdev=t9"]),
    ("guestfwd", "-netdev user", ["-netdev", "user,id=u9,guestfwd=tcp:10.0.2.100:1-cmd:" + prog]),
    ("backend2", "-chardev null: property 'backend' given twice",
     ["-chardev", "null,id=c9,backend=file,path=" + m + "chardev"]),
    ("logfile", "-chardev null: property 'logfile'", ["-chardev", "null,id=c9,logfile=" + m + "log"]),
    ("drive", "-drive: file '/etc/shadow'", ["-drive", "file=/etc/shadow,format=raw,if=none,id=d9"]),
    ("blockdev", "-blockdev file: filename '/etc/shadow'",
     ["-blockdev", "driver=file,filename=/etc/shadow,node-name=x9"]),
    ("mem-path", "-object memory-backend-file: only the main RAM backend",
     ["-object", "memory-backend-file,id=m9,size=1M,mem-path=" + m + "mem,share=on"]),
    ("gdb", "-gdb", ["-gdb", "file:" + m + "gdb"]),
    ("plugin", "-plugin", ["-plugin", "file=" + m + "plugin.so"]),
    ("readconfig", "-readconfig", ["-readconfig", m + "cfg"]),
    ("L", "-L:", ["-L", T]),
    ("bios", "-bios", ["-bios", m + "bios"]),
    ("trace", "-trace", ["-trace", "file=" + m + "trace"]),
    ("add-fd", "-add-fd", ["-add-fd", "fd=3,set=1"]),
    ("loader", "-device loader", ["-device", "loader,file=/etc/shadow,addr=0x1000"]),
    ("romfile", "property 'romfile'", ["-device", "e1000,romfile=/etc/shadow"]),
    ("pidfile-dup", "property 'path' given twice",
     ["-chardev", "socket,id=c8,path=" + m + "a,path=" + m + "b,server=on,wait=off"]),
    ("shared-header", "shared disk " + T + "/sh-q.qcow2: its qcow2 header names the backing file '/etc/hostname'",
     ["-drive", "file=" + T + "/sh-q.qcow2,format=qcow2,if=none,id=d8"]),
    ("shared-offset", "block node 'q8' (qcow2) reads a shared disk's image through",
     ["-blockdev", "driver=file,filename=" + T + "/sh-raw.img,node-name=f8",
      "-blockdev", "driver=raw,file=f8,node-name=r8,offset=4096",
      "-blockdev", "driver=qcow2,file=r8,node-name=q8"]),
]
libvirt_xml = ("<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
               "<name>primary</name><memory unit='MiB'>128</memory><devices/>"
               "<qemu:commandline><qemu:arg value='-plugin'/><qemu:arg value='file=" + m +
               "qplugin.so'/></qemu:commandline></domain>")

json.dump(real, open(T + "/real.json", "w"))

def hello(argv, xml=None):
    h = {"protocol": 1, "name": "primary", "ram_size": 128 << 20, "page_size": 4096,
         "ram_backend": "ram0", "machine_type": "pc-i440fx-7.2", "qemu_argv": argv,
         "disks": [{"id": "disk0", "size": 64 << 20, "node": "disk0", "file": run + "/disk.img"}]}
    if xml:
        h["libvirt_xml"] = xml
    return json.dumps(h).encode()

def send(payload):
    out = subprocess.run([probe, "--connect", "127.0.0.1:%d" % port, "--key-file", key,
                          payload.decode()], capture_output=True, text=True, timeout=30).stdout
    try:
        return json.loads(out)
    except ValueError:
        return {"ok": None, "error": "no reply: " + out.strip()}

for name, want, extra in cases:
    argv = extra if extra[0].startswith("/") else real[:-1] + extra + real[-1:]
    r = send(hello(argv))
    print("%s\t%s\t%s\t%s" % (name, r.get("ok"), want, r.get("error", "")), flush=True)
r = send(hello(real, libvirt_xml))
print("libvirt\t%s\t%s\t%s" % (r.get("ok"), "<qemu:commandline>", r.get("error", "")), flush=True)
PY
[ -s "$T/replies" ] || die "the raw peer got no replies"
while IFS=$'\t' read -r name ok want error; do
	if [ "$ok" = False ] && [[ "$error" == *"$want"* ]]; then
		pass "$name refused at HELLO: $error"
	else
		fail "$name: ok=$ok, error '$error', wanted '$want'"
	fi
done < "$T/replies"
markers=$(ls "$T" | grep '^m-' | grep -v '^m-prog.sh$')
[ -z "$markers" ] && pass "no marker file created, no program run" || fail "markers: $markers"
[ "$(ls -A "$T/backup")" = "$before" ] && pass "state dir untouched: '$before'" ||
	fail "state dir now holds: $(ls -A "$T/backup")"
grep -q "refusing primary .*-netdev tap: property 'script'" "$T/agent.log" &&
	pass "agent logged the refusals" || fail "agent did not log the refusal"
kill -0 "$AGENT_PID" 2>/dev/null && pass "agent still listening" || fail "agent died"

# The real command line, plus a raw shared disk whose bytes look like a
# qcow2 header naming a host file (read as raw: the guest's data), is
# accepted (its state files then appear: it is the refusals that kept the
# directory clean).
hello=$(python3 - "$T" <<'PY'
import json, sys
T = sys.argv[1]
argv = json.load(open(T + "/real.json"))
argv = argv[:-1] + ["-drive", "file=" + T + "/sh-raw.img,format=raw,if=none,id=d7"] + argv[-1:]
run = T + "/primary"
print(json.dumps({"protocol": 1, "name": "good", "ram_size": 128 << 20, "page_size": 4096,
                  "ram_backend": "ram0", "machine_type": "pc-i440fx-7.2", "qemu_argv": argv,
                  "disks": [{"id": "disk0", "size": 64 << 20, "node": "disk0",
                             "file": run + "/disk.img"}]}))
PY
)
reply=$("$ROOT/build/tests/remus-probe" --connect "127.0.0.1:$PORT" --key-file "$KEY" "$hello")
echo "$reply" | grep -q '"ok":true' &&
	pass "the real command line, with a raw shared disk holding a forged qcow2 header, is accepted" ||
	fail "the real command line: $reply"
finish
