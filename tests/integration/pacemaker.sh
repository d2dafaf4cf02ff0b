# A real two-node Pacemaker + Corosync cluster on this one machine, for the
# integration tests. Source it after lib.sh (it uses $T, PIDS, log, die and
# wait_for). Debian packages: pacemaker corosync pacemaker-cli-utils
# resource-agents.
#
# Each node is a long-lived "holder" process (`sleep infinity`) that owns
# the node's namespaces:
#   network  PREFIX-NODE (ip netns), eth0 10.77.0.N/24 on a bridge in
#            PREFIX-lan; corosync's knet and libqb's abstract unix sockets
#            (cib_rw, crmd, cpg, ...) are per network namespace, so two
#            nodes' daemons cannot meet through them.
#   UTS      hostname NODE.
#   mount    private (nothing propagates to the host): per-node dirs under
#            $T/pcmk/NODE bound on /etc/corosync, /var/lib/corosync,
#            /var/lib/pacemaker, /var/log/corosync, /var/log/pacemaker (kept
#            across a node's "reboot", like a disk); a fresh tmpfs on /run
#            (corosync.pid, /run/crm, /run/resource-agents where Stateful
#            keeps its role: gone at "power off", like a real /run) with the
#            host's /run/netns bound back in (the fence agent needs it); a
#            fresh tmpfs on /dev/shm (libqb's shared-memory IPC files: a
#            SIGKILLed node would otherwise leave them in the host's
#            /dev/shm) with $T bound back in at the same path (logs, test
#            files); /usr/sbin as an overlay with the stand-in fence agent on
#            top (pacemaker-fenced only runs fence_* agents from there);
#            /usr/lib/ocf/resource.d likewise with $PCMK_DIR/ocf on top, if
#            the test made one (its own resource agents).
# Every process of a node runs in its network namespace, so `ip netns pids`
# lists all of them, whatever started them (corosync, pacemakerd and its
# children, resource agents, QEMU...): that is what the fence agent kills
# ("power off") and what pcmk_cleanup kills, by pid.
#
# The caller chains pcmk_cleanup before lib.sh's cleanup (see
# test_pacemaker.sh):
#   trap 'pcmk_cleanup; cleanup' EXIT; trap 'exit 143' TERM; trap 'exit 130' INT

# The whole pid: two runs never share a name (namespace names may be long;
# interface names live inside the namespaces).
PCMK_PREFIX=pk$$
PCMK_DIR=$T/pcmk
PCMK_NET=10.77.0
PCMK_NODES=()
# The namespaces this run created (only these are removed).
PCMK_NETNS=()
# Node name -> holder pid (its namespaces).
declare -A PCMK_HOLDER=()
# How long a node has to join, and Pacemaker to settle (seconds).
PCMK_START_TIMEOUT=${PCMK_START_TIMEOUT:-60}

pcmk_ns() { echo "$PCMK_PREFIX-$1"; }

# pcmk_on NODE CMD...: run CMD inside NODE (its network, mount and UTS
# namespaces), e.g. `pcmk_on node1 crm_mon -1`. Fails if NODE is down.
pcmk_on() {
	local node=$1 h=${PCMK_HOLDER[$1]:-}
	shift
	[ -n "$h" ] && kill -0 "$h" 2>/dev/null || { echo "pcmk_on: node $node is down" >&2; return 1; }
	nsenter -t "$h" -n -m -u -r --wd=/ -- "$@"
}

# pcmk_spawn NODE LOGFILE CMD...: start a long-lived CMD inside NODE in the
# background, output appended to LOGFILE (host path; $T is visible in the
# node at the same path); sets SPAWN_PID and records it in PIDS.
# SPAWN_PID is CMD's own pid (nsenter execs it), not a subshell's.
pcmk_spawn() {
	local node=$1 logf=$2 h=${PCMK_HOLDER[$1]:-}
	shift 2
	pcmk_node_up "$node" || die "pcmk_spawn: node $node is down"
	nsenter -t "$h" -n -m -u -r --wd=/ -- "$@" >> "$logf" 2>&1 &
	SPAWN_PID=$!
	PIDS+=("$SPAWN_PID")
}

# _pcmk_daemon NODE LOGFILE CMD...: pcmk_spawn for the node's own daemons,
# which a fence kills: disowned, so that bash does not print "Killed" for
# each (bash still reaps them).
_pcmk_daemon() {
	pcmk_spawn "$@"
	disown "$SPAWN_PID"
}

# pcmk_node_pids NODE: every process of NODE, one pid per line.
pcmk_node_pids() { ip netns pids "$(pcmk_ns "$1")" 2>/dev/null; }

pcmk_node_up() { local h=${PCMK_HOLDER[$1]:-}; [ -n "$h" ] && kill -0 "$h" 2>/dev/null; }

# pcmk_any [NODE...]: the first of the nodes (all if none given) that is up.
pcmk_any() {
	local n nodes=("$@")
	[ $# -gt 0 ] || nodes=("${PCMK_NODES[@]}")
	for n in "${nodes[@]}"; do
		pcmk_node_up "$n" && { echo "$n"; return 0; }
	done
	return 1
}

# --- Network: PREFIX-lan holds a bridge; each node a veth into it. Nothing
# is added to the host's network namespace.

pcmk_net_up() {
	local lan i=0 n ns
	lan=$(pcmk_ns lan)
	ip netns add "$lan" || die "pcmk: cannot add netns $lan"
	PCMK_NETNS+=("$lan")
	"$ROOT/scripts/in-netns" "$lan" ip link add br0 type bridge forward_delay 0 stp_state 0
	"$ROOT/scripts/in-netns" "$lan" ip link set br0 up
	for n in "${PCMK_NODES[@]}"; do
		i=$((i + 1))
		ns=$(pcmk_ns "$n")
		ip netns add "$ns" || die "pcmk: cannot add netns $ns"
		PCMK_NETNS+=("$ns")
		"$ROOT/scripts/in-netns" "$lan" ip link add "p$i" type veth peer name eth0 netns "$ns" || die "pcmk: veth for $n"
		"$ROOT/scripts/in-netns" "$lan" ip link set "p$i" master br0 up
		"$ROOT/scripts/in-netns" "$ns" ip link set lo up
		"$ROOT/scripts/in-netns" "$ns" ip addr add "$PCMK_NET.$i/24" dev eth0
		"$ROOT/scripts/in-netns" "$ns" ip link set eth0 up
	done
}

# pcmk_net_cut NODE / pcmk_net_mend NODE: unplug / plug NODE's cable (its
# bridge port), e.g. for a split brain.
pcmk_net_cut() { "$ROOT/scripts/in-netns" "$(pcmk_ns lan)" ip link set "p$(_pcmk_index "$1")" down; }
pcmk_net_mend() { "$ROOT/scripts/in-netns" "$(pcmk_ns lan)" ip link set "p$(_pcmk_index "$1")" up; }

_pcmk_index() {
	local i
	for i in "${!PCMK_NODES[@]}"; do
		[ "${PCMK_NODES[$i]}" = "$1" ] && { echo $((i + 1)); return 0; }
	done
	return 1
}

# --- Per-node files.

# Corosync 3 over knet, encrypted with this run's authkey. token 1000 ms
# (default 3000; consensus follows at 1.2 x token): a dead node leaves the
# membership ~2 s after its last token, so failover tests stay short.
# two_node (implies wait_for_all): the survivor keeps quorum, and a node
# started alone waits for its peer instead of fencing it at startup.
_pcmk_corosync_conf() {
	local i=0 n
	cat <<-EOF
	totem {
		version: 2
		cluster_name: $PCMK_PREFIX
		transport: knet
		crypto_cipher: aes256
		crypto_hash: sha256
		token: 1000
	}
	nodelist {
	EOF
	for n in "${PCMK_NODES[@]}"; do
		i=$((i + 1))
		printf '\tnode {\n\t\tname: %s\n\t\tnodeid: %d\n\t\tring0_addr: %s\n\t}\n' "$n" "$i" "$PCMK_NET.$i"
	done
	cat <<-EOF
	}
	quorum {
		provider: corosync_votequorum
		two_node: 1
	}
	logging {
		to_stderr: no
		to_syslog: no
		to_logfile: yes
		logfile: /var/log/corosync/corosync.log
		timestamp: hires
	}
	EOF
}

# The first CIB, on both nodes' disks before they start: Pacemaker's timing
# defaults are for real machines, and a test should fail fast. dc-deadtime
# (default 20 s) is how long a starting controller waits for a DC before
# an election: with the default every cluster start took 26 s ("Input
# I_DC_TIMEOUT received in state S_PENDING"), with 2 s it takes ~8. The
# agent of the stand-in power switch answers in well under a second:
# stonith-timeout 20 s (default 60). cluster-recheck-interval 30 s (default
# 15 min), for time-based rules and failure timeouts. No .sig file: based
# accepts the file and writes its own digest later.
_pcmk_initial_cib() {
	local p
	echo '<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">'
	echo ' <configuration><crm_config><cluster_property_set id="cib-bootstrap-options">'
	for p in dc-deadtime=2s stonith-timeout=20s cluster-recheck-interval=30s; do
		printf '  <nvpair id="cib-bootstrap-options-%s" name="%s" value="%s"/>\n' "${p%%=*}" "${p%%=*}" "${p#*=}"
	done
	echo ' </cluster_property_set></crm_config><nodes/><resources/><constraints/></configuration><status/></cib>'
}

# The directories a node keeps across reboots, owned as Debian's packages
# own them (pacemaker-controld refuses to run with wrong permissions on
# cib/ and pengine/).
_pcmk_node_dirs() {
	local nd=$PCMK_DIR/$1 d
	mkdir -p "$nd"/{etc-corosync,lib-corosync,log-corosync,log-pacemaker/bundles,boot} || return 1
	for d in blackbox cib cores pengine; do
		mkdir -p "$nd/lib-pacemaker/$d"
		chown hacluster:haclient "$nd/lib-pacemaker/$d"
		chmod 750 "$nd/lib-pacemaker/$d"
	done
	chown -R hacluster:haclient "$nd/log-pacemaker"
	chmod 770 "$nd/log-pacemaker"
	_pcmk_initial_cib > "$nd/lib-pacemaker/cib/cib.xml"
	chown hacluster:haclient "$nd/lib-pacemaker/cib/cib.xml"
	chmod 600 "$nd/lib-pacemaker/cib/cib.xml"
	_pcmk_corosync_conf > "$nd/etc-corosync/corosync.conf"
	install -m 0400 "$PCMK_DIR/authkey" "$nd/etc-corosync/authkey"
	echo "$(pcmk_ns "$1")" > "$nd/netns"
}

# _pcmk_boot NODE NODEDIR T SBIN: run by the holder, in its new mount and
# UTS namespaces; sets the node up (see the top of this file), then waits
# forever. Bound mounts die with the namespace: nothing to unmount later.
# mount -n: libmount must not record them in the host's /run/mount/utab
# (and once /run is replaced it fails to: "filesystem was mounted, but
# failed to update userspace mount table").
_pcmk_boot() {
	set -e
	local node=$1 nd=$2 t=$3 sbin=$4 r="" d m
	hostname "$node"
	# Nothing mounted here may reach the host (or the other node). Where /
	# is a mount point, make it private. In a chroot it is not (and the
	# mount the chroot lives on, outside it, may propagate): every mount
	# seen here is made private, / is bound onto a private directory of
	# our own, and the node runs chrooted there.
	if mountpoint -q /; then
		mount -n --make-rprivate /
	else
		for m in $(awk '{ print $5 }' /proc/self/mountinfo | sort -u); do
			mount -n --make-private "$m" 2>/dev/null || true
		done
		r=$nd/root
		mkdir -p "$r"
		mount -n --rbind / "$r"
		mount -n --make-rprivate "$r"
	fi
	mount -n --bind "$nd/etc-corosync" "$r/etc/corosync"
	mount -n --bind "$nd/lib-corosync" "$r/var/lib/corosync"
	mount -n --bind "$nd/log-corosync" "$r/var/log/corosync"
	mount -n --bind "$nd/lib-pacemaker" "$r/var/lib/pacemaker"
	mount -n --bind "$nd/log-pacemaker" "$r/var/log/pacemaker"
	mount -n -t overlay overlay -o "lowerdir=$sbin:/usr/sbin" "$r/usr/sbin"
	# The test's own resource agents (PCMK_DIR/ocf/PROVIDER/TYPE, made
	# before pcmk_start), where pacemaker-execd looks for ocf:PROVIDER:TYPE.
	if [ -d "$nd/../ocf" ]; then
		mount -n -t overlay overlay -o "lowerdir=$nd/../ocf:/usr/lib/ocf/resource.d" \
			"$r/usr/lib/ocf/resource.d"
	fi
	# The new /run is built aside, then moved over /run: once there the
	# host's /run/netns and $T (under the /dev/shm about to be covered) are
	# out of reach.
	mount -n -t tmpfs -o mode=755,size=64m tmpfs "$nd/boot"
	mkdir "$nd/boot/netns" "$nd/boot/host-t"
	mount -n --rbind /run/netns "$nd/boot/netns"
	mount -n --bind "$t" "$nd/boot/host-t"
	mount -n --move "$nd/boot" "$r/run"
	mount -n -t tmpfs -o mode=1777,size=256m tmpfs "$r/dev/shm"
	mkdir -p "$r$t"
	mount -n --move "$r/run/host-t" "$r$t"
	rmdir "$r/run/host-t"
	# What Debian's tmpfiles.d would make at boot.
	mkdir -m 1777 "$r/run/lock"
	for d in resource-agents fence-agents; do mkdir -m 1755 "$r/run/$d"; done
	mkdir -m 750 "$r/run/crm"
	chown hacluster:haclient "$r/run/crm"
	touch "$nd/booted"
	if [ -n "$r" ]; then
		cd "$r"
		exec chroot "$r" sleep infinity
	fi
	exec sleep infinity
}

# --- Stand-in power switch: a fence agent speaking the fence-agents stdin
# protocol (action=, port=/plug=/nodename=; or -o ACTION -n NODE). "off"
# SIGKILLs every process in the node's network namespace until none is left
# and marks the node's power off; "on" only marks it on (booting the node is
# the test's job: pcmk_node_start). It runs in the surviving node's
# namespaces; the target's netns is seen through the /run/netns bound into
# every node, the node -> netns map and power marks in $PCMK_DIR.
_pcmk_write_fence_agent() {
	mkdir -p "$PCMK_DIR/sbin"
	cat > "$PCMK_DIR/sbin/fence_remus_netns" <<-EOF
	#!/bin/bash
	STATE_DIR='$PCMK_DIR'
	NODES='${PCMK_NODES[*]}'
	EOF
	cat >> "$PCMK_DIR/sbin/fence_remus_netns" <<-'EOF'
	action=reboot port= nodename=
	if [ $# -eq 0 ]; then
		while IFS= read -r line; do
			case $line in
				action=*|option=*) action=${line#*=} ;;
				port=*|plug=*) port=${line#*=} ;;
				nodename=*) nodename=${line#*=} ;;
			esac
		done
	fi
	while [ $# -gt 0 ]; do
		case $1 in
			-o|--action) action=$2; shift ;;
			-n|--plug) port=$2; shift ;;
			--action=*) action=${1#*=} ;;
			--plug=*) port=${1#*=} ;;
		esac
		shift
	done
	port=${port:-$nodename}

	# TIME EPOCH_MS NODE_RUNNING_IT ACTION TARGET: RESULT
	say() { echo "$(date +'%T.%3N %s%3N') $(hostname) $action $port: $*" >> "$STATE_DIR/fence.log"; }

	metadata() {
		cat <<-XML
		<?xml version="1.0" ?>
		<resource-agent name="fence_remus_netns" shortdesc="Test power switch: kills every process of a node's network namespace">
		<longdesc>Stand-in power switch for the Remus integration tests.</longdesc>
		<vendor-url>none</vendor-url>
		<parameters>
		<parameter name="action" unique="0" required="1"><getopt mixed="-o, --action=[action]"/><content type="string" default="reboot"/><shortdesc lang="en">Fencing action</shortdesc></parameter>
		<parameter name="plug" unique="0" required="1" obsoletes="port"><getopt mixed="-n, --plug=[id]"/><content type="string"/><shortdesc lang="en">Node to fence</shortdesc></parameter>
		<parameter name="port" unique="0" required="0" deprecated="1"><getopt mixed="-n, --plug=[id]"/><content type="string"/><shortdesc lang="en">Node to fence</shortdesc></parameter>
		</parameters>
		<actions>
		<action name="on" automatic="0"/>
		<action name="off"/>
		<action name="reboot"/>
		<action name="status"/>
		<action name="list"/>
		<action name="monitor"/>
		<action name="metadata"/>
		<action name="validate-all"/>
		</actions>
		</resource-agent>
		XML
	}

	netns() {
		[ -n "$port" ] && [ -f "$STATE_DIR/$port/netns" ] || { say "no such node"; exit 1; }
		cat "$STATE_DIR/$port/netns"
	}

	power_off() {
		local ns pids i n=0
		ns=$(netns)
		echo off > "$STATE_DIR/$port/power"
		# Pacemaker respawns its children: kill until nothing is left.
		for i in $(seq 100); do
			pids=$(ip netns pids "$ns") || { say "cannot list $ns"; exit 1; }
			[ -z "$pids" ] && { say "off, killed $n process(es)"; return 0; }
			n=$((n + $(echo $pids | wc -w)))
			kill -KILL $pids 2>/dev/null
			sleep 0.05
		done
		say "processes still running in $ns"
		exit 1
	}

	case $action in
		metadata) metadata ;;
		list) for n in $NODES; do echo "$n,"; done ;;
		monitor|validate-all) [ -d "$STATE_DIR" ] ;;
		status)
			netns > /dev/null
			[ "$(cat "$STATE_DIR/$port/power" 2>/dev/null)" = off ] && exit 2
			exit 0 ;;
		off) power_off ;;
		on) netns > /dev/null; echo on > "$STATE_DIR/$port/power"; say on ;;
		reboot) power_off; echo on > "$STATE_DIR/$port/power" ;;
		*) say "unknown action"; exit 1 ;;
	esac
	EOF
	chmod 755 "$PCMK_DIR/sbin/fence_remus_netns"
}

# --- Nodes.

# pcmk_node_start NODE: "power on and boot" NODE: holder, corosync,
# pacemakerd. Used by pcmk_start, and to bring a fenced node back.
pcmk_node_start() {
	local node=$1 nd=$PCMK_DIR/$1 ns h
	ns=$(pcmk_ns "$node")
	[ -z "$(pcmk_node_pids "$node")" ] || die "pcmk: node $node still has processes"
	rm -f "$nd/booted"
	nsenter --net="/run/netns/$ns" -- unshare --mount --uts --propagation unchanged -- \
		bash -c "$(declare -f _pcmk_boot); _pcmk_boot \"\$@\"" _pcmk_boot \
		"$node" "$nd" "$T" "$PCMK_DIR/sbin" > "$nd/boot.log" 2>&1 &
	h=$!
	disown "$h"
	PIDS+=("$h")
	PCMK_HOLDER[$node]=$h
	wait_for 10 test -e "$nd/booted" ||
		die "pcmk: node $node did not set up its namespaces: $(tail -n 3 "$nd/boot.log")"
	echo on > "$nd/power"
	_pcmk_daemon "$node" "$nd/log-corosync/corosync.out" corosync -f
	wait_for 20 pcmk_on "$node" corosync-cfgtool -s > /dev/null 2>&1 ||
		{ _pcmk_tails "$node"; die "pcmk: corosync on $node does not answer"; }
	# pacemakerd stays in the foreground in 2.1 (-f is ignored). Its log
	# (and its children's) is the bound /var/log/pacemaker; no syslog.
	_pcmk_daemon "$node" "$nd/log-pacemaker/pacemakerd.out" \
		env PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none pacemakerd
}

# pcmk_start [NODE...]: build the cluster (default nodes node1 node2) and
# wait until every node is online in crm_mon and a DC is elected. The EXIT
# trap must already call pcmk_cleanup.
pcmk_start() {
	local n t0 c
	case $(trap -p EXIT) in
		*pcmk_cleanup*) ;;
		*) die "pcmk_start: chain pcmk_cleanup into the EXIT trap first" ;;
	esac
	for c in corosync corosync-keygen pacemakerd crm_mon cibadmin stonith_admin nsenter unshare; do
		command -v "$c" > /dev/null ||
			die "pcmk: no $c (apt-get install pacemaker corosync pacemaker-cli-utils resource-agents)"
	done
	PCMK_NODES=(node1 node2)
	[ $# -gt 0 ] && PCMK_NODES=("$@")
	t0=$(now_ms)
	mkdir -p "$PCMK_DIR"
	corosync-keygen -k "$PCMK_DIR/authkey" > /dev/null 2>&1 || die "pcmk: corosync-keygen failed"
	_pcmk_write_fence_agent
	pcmk_net_up
	for n in "${PCMK_NODES[@]}"; do
		_pcmk_node_dirs "$n" || die "pcmk: cannot make the directories of $n"
	done
	for n in "${PCMK_NODES[@]}"; do
		pcmk_node_start "$n"
	done
	pcmk_wait_online "$PCMK_START_TIMEOUT" "${PCMK_NODES[@]}" ||
		{ _pcmk_tails "${PCMK_NODES[@]}"; die "pcmk: the cluster did not come up in ${PCMK_START_TIMEOUT}s"; }
	PCMK_UP_MS=$(( $(now_ms) - t0 ))
	log "pcmk: cluster $PCMK_PREFIX up in ${PCMK_UP_MS} ms (nodes ${PCMK_NODES[*]})"
}

# pcmk_wait_online SECONDS NODE...: until every NODE is online (and a DC is
# elected) in the view of the first of them that is up.
pcmk_wait_online() {
	local secs=$1
	shift
	wait_for "$secs" _pcmk_all_online "$@"
}

_pcmk_all_online() {
	local on n
	on=$(pcmk_mon online "" on "$(pcmk_any "$@")") || return 1
	for n in "$@"; do
		grep -qx "$n" <<< "$on" || return 1
	done
}

# pcmk_mon QUERY [ARG] [on NODE]: one fact from crm_mon's XML, one item per
# line, seen from NODE (default: the first node that is up). Fails if
# crm_mon fails (no DC yet, node down...).
#   online             nodes online (only once a DC is elected)
#   offline / unclean  nodes offline / unclean (to be fenced)
#   promoted RES       nodes where RES (primitive id or its clone's id) is
#                      promoted
#   active RES         nodes where RES runs in any role
#   dc                 the DC's name
pcmk_mon() {
	local q=$1 arg=${2:-} node xml
	[ "${3:-}" = on ] && node=$4 || node=$(pcmk_any) || return 1
	# Bounded: a frozen node's daemons would make crm_mon wait forever.
	xml=$(pcmk_on "$node" timeout 10 crm_mon --output-as=xml 2>/dev/null) || return 1
	python3 -c "$_PCMK_MON_PY" "$q" "$arg" <<< "$xml"
}

_PCMK_MON_PY=$(cat <<-'EOF'
	import sys, xml.etree.ElementTree as ET
	q, arg = sys.argv[1], sys.argv[2]
	r = ET.fromstring(sys.stdin.read())
	dc = r.find("summary/current_dc")
	if dc is None or dc.get("present") != "true":
	    sys.exit(1)
	nodes = r.findall("nodes/node")
	def rsc():
	    for c in r.iter("clone"):
	        for p in c.findall("resource"):
	            if arg in (c.get("id"), p.get("id"), p.get("id").split(":")[0]):
	                yield p
	    for p in r.findall("resources/resource"):
	        if p.get("id") == arg:
	            yield p
	out = []
	if q == "online":
	    out = [n.get("name") for n in nodes if n.get("online") == "true"]
	elif q == "offline":
	    out = [n.get("name") for n in nodes if n.get("online") != "true"]
	elif q == "unclean":
	    out = [n.get("name") for n in nodes if n.get("unclean") == "true"]
	elif q == "dc":
	    out = [dc.get("name")]
	elif q in ("promoted", "active"):
	    for p in rsc():
	        if p.get("active") != "true" or p.get("failed") == "true":
	            continue
	        if q == "promoted" and p.get("role") not in ("Promoted", "Master"):
	            continue
	        out += [n.get("name") for n in p.findall("node")]
	else:
	    sys.exit(2)
	print("\n".join(out))
	EOF
)

# pcmk_wait_promoted RES NODE SECONDS: until RES is promoted on NODE, and
# only there, in NODE's view (the node that would promote it must be up;
# another one may be frozen or fenced).
pcmk_wait_promoted() {
	wait_for "$3" _pcmk_promoted_only "$1" "$2"
}

_pcmk_promoted_only() { [ "$(pcmk_mon promoted "$1" on "$2")" = "$2" ]; }

# pcmk_wait_promoted_any RES SECONDS: until RES is promoted on exactly one
# node; sets PROMOTED to it.
pcmk_wait_promoted_any() {
	wait_for "$2" _pcmk_promoted_one "$1" || return 1
	PROMOTED=$(pcmk_mon promoted "$1")
}

_pcmk_promoted_one() {
	local p
	p=$(pcmk_mon promoted "$1") || return 1
	[ -n "$p" ] && [ "$(wc -l <<< "$p")" = 1 ]
}

# pcmk_cib_apply SECTION XML: add XML (one element) to the CIB's SECTION
# (resources, constraints, crm_config, ...), or replace the element of the
# same id if there is one. Through the first node that is up.
pcmk_cib_apply() {
	local node out
	node=$(pcmk_any) || { echo "pcmk_cib_apply: no node up" >&2; return 1; }
	out=$(pcmk_on "$node" cibadmin --create --scope "$1" --xml-text "$2" 2>&1) && return 0
	case $out in
		*"exists"*|*"Name not unique"*) pcmk_on "$node" cibadmin --replace --scope "$1" --xml-text "$2" ;;
		*) echo "$out" >&2; return 1 ;;
	esac
}

# pcmk_property NAME VALUE: a cluster property (crm_config).
pcmk_property() {
	pcmk_on "$(pcmk_any)" crm_attribute --type crm_config --name "$1" --update "$2"
}

# pcmk_setup_fencing: the stand-in power switch as one stonith device for
# every node (like a shared PDU, pcmk_host_list: no "list" call needed to
# know whom it fences), fencing on.
pcmk_setup_fencing() {
	pcmk_cib_apply resources "<primitive id='fence-remus' class='stonith' type='fence_remus_netns'>
		<instance_attributes id='fence-remus-ia'>
			<nvpair id='fence-remus-hosts' name='pcmk_host_list' value='${PCMK_NODES[*]}'/>
		</instance_attributes>
		<operations><op id='fence-remus-monitor' name='monitor' interval='10s'/></operations>
	</primitive>" &&
	pcmk_property stonith-enabled true
}

# pcmk_wait_fence_device NODE SECONDS: until NODE's fencer has the device.
pcmk_wait_fence_device() {
	wait_for "$2" _pcmk_has_device "$1"
}

_pcmk_has_device() { pcmk_on "$1" stonith_admin --list-registered 2>/dev/null | grep -q fence-remus; }

# pcmk_log_ms FILE REGEX [AFTER_MS]: when the first line of a Corosync or
# Pacemaker log ("Dec 04 22:35:58.436 ...") matching REGEX, logged at or
# after AFTER_MS, was logged (unix ms); fails if there is none.
pcmk_log_ms() {
	local line ms
	while IFS= read -r line; do
		ms=$(date -d "${line:0:19}" +%s%3N 2>/dev/null) || continue
		[ "$ms" -ge "${3:-0}" ] && { echo "$ms"; return 0; }
	done < <(grep -E "$2" "$1" 2>/dev/null)
	return 1
}

# --- ocf:remus:remus resources (scripts/ocf/remus, installed by the test
# under $PCMK_DIR/ocf before pcmk_start).

# remus_clone_xml PAIR: the promotable clone of PAIR (its config $T/PAIR.conf). The promoted monitor fences the
# node on failure: a VM lost on its host is that host's fault, and the
# other host may restore the VM only once it is sure this one is off.
remus_clone_xml() {
	local p=$1
	cat <<-EOF
	<clone id="$p-clone">
	  <meta_attributes id="$p-clone-meta">
	    <nvpair id="$p-promotable" name="promotable" value="true"/>
	    <nvpair id="$p-promoted-max" name="promoted-max" value="1"/>
	    <nvpair id="$p-clone-max" name="clone-max" value="2"/>
	    <nvpair id="$p-clone-node-max" name="clone-node-max" value="1"/>
	  </meta_attributes>
	  <primitive id="$p" class="ocf" provider="remus" type="remus">
	    <instance_attributes id="$p-ia">
	      <nvpair id="$p-config" name="config" value="$T/$p.conf"/>
	      <nvpair id="$p-control" name="control" value="/run/remus/$p.ctl"/>
	      <nvpair id="$p-sbindir" name="sbindir" value="$BIN"/>
	      <nvpair id="$p-remusctl" name="remusctl" value="$BIN/remusctl"/>
	      <nvpair id="$p-log" name="log" value="/var/log/pacemaker/remus-$p.log"/>
	    </instance_attributes>
	    <operations>
	      <op id="$p-start" name="start" interval="0s" timeout="60s"/>
	      <op id="$p-stop" name="stop" interval="0s" timeout="120s"/>
	      <op id="$p-promote" name="promote" interval="0s" timeout="120s"/>
	      <op id="$p-demote" name="demote" interval="0s" timeout="120s"/>
	      <op id="$p-mon-p" name="monitor" role="Promoted" interval="2s" timeout="20s" on-fail="fence"/>
	      <op id="$p-mon-u" name="monitor" role="Unpromoted" interval="3s" timeout="20s"/>
	    </operations>
	  </primitive>
	</clone>
	EOF
}

# remus_status PAIR NODE FIELD: one field of the pair's daemon on NODE.
remus_status() {
	pcmk_on "$2" "$BIN/remusctl" --control "/run/remus/$1.ctl" --json status 2>/dev/null |
		python3 -c "import json,sys; v=json.load(sys.stdin).get('$3'); print('' if v is None else v)" 2>/dev/null
}

remus_protected() { [ "$(remus_status "$1" "$2" protection)" = protected ]; }

# remus_fenced_or_demoted PAIR FROM TO QEMU_PID: after PAIR's QEMU (pid
# QEMU_PID) was killed on FROM. Pacemaker fences FROM when FROM's instance
# fails to demote or stop (its replicator went with the VM). If FROM's
# daemon has already become PAIR's backup when Pacemaker looks (what a
# primary whose VM died does), the instance demotes cleanly and TO is
# promoted with no fence: FROM then runs no copy either. Which comes first
# is a race; both are safe, and the test says which it saw. Sets FENCE_MS
# when fenced. The stand-in's log: "... node2 reboot node1: off, killed N
# process(es)".
remus_fenced_or_demoted() {
	local pair=$1 from=$2 to=$3 qemu=$4 state
	_remus_fenced() { grep -sqE "(reboot|off) $from: off" "$PCMK_DIR/fence.log"; }
	_remus_fenced_or_moved() { _remus_fenced || _pcmk_promoted_only "$pair" "$to"; }
	_remus_demoted() {
		! process_running "$qemu" &&
			case $(remus_status "$pair" "$from" state) in backup|waiting|syncing) true ;; *) false ;; esac
	}
	_remus_fenced_or_demoted() { _remus_fenced || _remus_demoted; }
	wait_for 60 _remus_fenced_or_moved
	_remus_fenced || wait_for 5 _remus_fenced # a fence may still follow the promotion
	_remus_fenced || wait_for 10 _remus_fenced_or_demoted # a demoted daemon settles
	if _remus_fenced; then
		FENCE_MS=$(now_ms)
		pass "Pacemaker fenced $from through the stand-in power switch"
		wait_for 10 sh -c "[ -z \"\$(ip netns pids $(pcmk_ns "$from"))\" ]" &&
			pass "$from is off: none of its processes is left" ||
			fail "$from still has processes: $(pcmk_node_pids "$from" | tr '\n' ' ')"
		return
	fi
	state=$(remus_status "$pair" "$from" state)
	_remus_demoted &&
		pass "$from not fenced: its $pair instance demoted cleanly ($from's daemon is $pair's $state, no $pair QEMU on $from) and $to was promoted" ||
		fail "$from neither fenced nor cleanly demoted (daemon state '$state'; fence log: $(cat "$PCMK_DIR/fence.log" 2>/dev/null))"
}

# process_running PID: alive and not a zombie.
process_running() { [ -r "/proc/$1/stat" ] && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat"; }

# remus_carries_on SERIAL TICK WHAT: the console SERIAL of a VM restored
# from its last checkpoint goes on from about TICK (the primary's last):
# consecutive, at most one ahead and at most 40 behind, no reboot.
remus_carries_on() {
	local serial=$1 tick=$2 what=$3 first
	wait_for 30 sh -c "[ \$(tr -d '\r' < '$serial' 2>/dev/null | grep -ac '^tick') -ge 5 ]" ||
		fail "$what's console shows no ticks"
	first=$(first_tick "$serial")
	if [ "$first" -ge 0 ] && [ "$first" -le $((tick + 1)) ] && [ "$first" -ge $((tick - 40)) ] &&
		ticks_consecutive "$serial"; then
		pass "$what carries on from its last checkpoint: tick $first after $tick, consecutive"
	else
		fail "$what's counter: first tick $first after $tick"
	fi
	grep -qa 'guest: ready' "$serial" && fail "$what rebooted" || pass "$what did not reboot"
}

# --- Teardown and diagnostics.

_pcmk_tails() {
	local n nd
	for n in "$@"; do
		nd=$PCMK_DIR/$n
		for f in "$nd/boot.log" "$nd/log-corosync/corosync.log" "$nd/log-pacemaker/pacemaker.log" \
			"$nd/log-pacemaker/pacemakerd.out"; do
			[ -s "$f" ] && { echo "--- tail of $f"; tail -n 15 "$f"; }
		done
	done
	[ -s "$PCMK_DIR/fence.log" ] && { echo "--- $PCMK_DIR/fence.log"; cat "$PCMK_DIR/fence.log"; }
}

# pcmk_node_freeze NODE: a hung machine: SIGSTOP to every process of NODE.
# Only fencing (SIGKILL) makes them go; its peers see it lost after
# Corosync's token timeout.
pcmk_node_freeze() {
	local pids
	pids=$(pcmk_node_pids "$1")
	[ -n "$pids" ] && kill -STOP $pids
}

# pcmk_node_kill NODE: SIGKILL every process of NODE until none is left
# (what the fence agent does, from the host). Bounded: 5 s.
pcmk_node_kill() {
	local ns pids i
	ns=$(pcmk_ns "$1")
	for i in $(seq 100); do
		pids=$(ip netns pids "$ns" 2>/dev/null)
		[ -z "$pids" ] && return 0
		kill -KILL $pids 2>/dev/null
		sleep 0.05
	done
	return 1
}

# pcmk_cleanup: kill every process of every node (they are ours: they run in
# our namespaces), then remove the namespaces; mounts die with the nodes'
# mount namespaces. Before lib.sh's cleanup, which removes $T.
pcmk_cleanup() {
	local n ns
	[ ${#PCMK_NETNS[@]} -gt 0 ] || return 0
	if [ "$FAILS" -gt 0 ] || [ -n "${KEEP:-}" ]; then
		_pcmk_tails "${PCMK_NODES[@]}"
	fi
	for n in "${PCMK_NODES[@]}"; do
		pcmk_node_kill "$n" || log "pcmk: processes of $n would not die: $(pcmk_node_pids "$n" | tr '\n' ' ')"
	done
	for ns in "${PCMK_NETNS[@]}"; do
		ip netns del "$ns"
	done
	PCMK_NETNS=()
	return 0
}
