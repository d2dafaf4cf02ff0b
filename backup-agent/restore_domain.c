/* The restored VM's libvirt domain XML: the primary's migratable XML with
 * what names a resource of the primary's host moved to the backup's (the
 * serial log into the state dir, a UDP NIC onto a TAP of the backup's LAN)
 * and, for the start only, QEMU told to wait for an incoming checkpoint and
 * a mark in <metadata> that says where the domain was restored.
 *
 * The domain keeps its name and UUID: to libvirt and to the operator it
 * is the same VM, now running here.
 */
#include "restore_domain.h"

#include "log.h"
#include "text.h"

#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"
/* <metadata><remus:restored xmlns:remus="urn:remus:restored:1"
 * state-dir="DIR"/>: the live domain was restored into DIR. */
#define RESTORED_NS "urn:remus:restored:1"
#define RESTORED_ELEMENT "restored"

static xmlNodePtr child(xmlNodePtr n, const char *name)
{
	for (xmlNodePtr c = n->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE && !strcmp((const char *)c->name, name))
			return c;
	return NULL;
}

static xmlXPathObjectPtr select_nodes(xmlDocPtr doc, const char *xpath)
{
	xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
	xmlXPathObjectPtr o = ctx ? xmlXPathEvalExpression((const xmlChar *)xpath, ctx) : NULL;

	xmlXPathFreeContext(ctx);
	return o;
}

static int nodes_count(xmlXPathObjectPtr o)
{
	return o && o->nodesetval ? o->nodesetval->nodeNr : 0;
}

/* File-backed serial ports and consoles write into the state dir:
 * serial.log for the first, serialN.log for the others. */
static int move_serial_logs(xmlDocPtr doc, const char *dir, char *err, size_t errlen)
{
	xmlXPathObjectPtr o = select_nodes(doc, "/domain/devices/*[(self::serial or "
					   "self::console) and @type='file']");
	int rc = 0;

	for (int i = 0; i < nodes_count(o); i++) {
		xmlNodePtr dev = o->nodesetval->nodeTab[i], src = child(dev, "source");
		xmlNodePtr target = child(dev, "target");
		xmlChar *port = target ? xmlGetProp(target, (const xmlChar *)"port") : NULL;
		char path[4096];

		if (!src)
			continue;
		if (!port || !strcmp((const char *)port, "0"))
			snprintf(path, sizeof(path), "%s/serial.log", dir);
		else
			snprintf(path, sizeof(path), "%s/serial%s.log", dir, (const char *)port);
		xmlFree(port);
		if (!xmlSetProp(src, (const xmlChar *)"path", (const xmlChar *)path))
			rc = text_error(err, errlen, -ENOMEM, "out of memory");
	}
	xmlXPathFreeObject(o);
	return rc;
}

/* The TAP for this NIC: "ID=NAME" where ID is its alias (net0) or MAC, or
 * a lone "NAME" when the domain has one NIC. NULL: none given. */
static const char *tap_for(xmlNodePtr nic, const struct restore_domain_spec *s, int nnics)
{
	xmlNodePtr alias = child(nic, "alias"), mac = child(nic, "mac");
	xmlChar *id = alias ? xmlGetProp(alias, (const xmlChar *)"name") : NULL;
	xmlChar *addr = mac ? xmlGetProp(mac, (const xmlChar *)"address") : NULL;
	const char *found = NULL;

	for (int i = 0; i < s->ntaps && !found; i++) {
		const char *eq = strchr(s->taps[i], '=');
		size_t len = eq ? (size_t)(eq - s->taps[i]) : 0;

		if (!eq)
			found = nnics == 1 ? s->taps[i] : NULL;
		else if ((id && strlen((const char *)id) == len &&
			  !strncmp(s->taps[i], (const char *)id, len)) ||
			 (addr && strlen((const char *)addr) == len &&
			  !strncasecmp(s->taps[i], (const char *)addr, len)))
			found = eq + 1;
	}
	xmlFree(id);
	xmlFree(addr);
	return found;
}

static void drop_node(xmlNodePtr n)
{
	xmlUnlinkNode(n);
	xmlFreeNode(n);
}

static void drop_children(xmlNodePtr n, const char *name)
{
	for (xmlNodePtr c; (c = child(n, name));) {
		xmlUnlinkNode(c);
		xmlFreeNode(c);
	}
}

/* A UDP NIC (the primary's net buffer) comes back on a TAP of the
 * backup's LAN: <interface type='ethernet'><target dev='TAP'
 * managed='no'/>. Without a TAP it stays a UDP socket to a peer that does
 * not exist here, i.e. cut off, as the command-line restore does. */
static int move_nics(xmlDocPtr doc, const struct restore_domain_spec *s, char *err,
		     size_t errlen)
{
	xmlXPathObjectPtr o = select_nodes(doc, "/domain/devices/interface[@type='udp']");
	int n = nodes_count(o), used = 0, rc = 0;

	for (int i = 0; i < n && !rc; i++) {
		xmlNodePtr nic = o->nodesetval->nodeTab[i], t;
		const char *tap = tap_for(nic, s, n);

		if (!tap)
			continue;
		used++;
		drop_children(nic, "source");
		drop_children(nic, "target");
		xmlSetProp(nic, (const xmlChar *)"type", (const xmlChar *)"ethernet");
		t = xmlNewChild(nic, NULL, (const xmlChar *)"target", NULL);
		if (!t || !xmlSetProp(t, (const xmlChar *)"dev", (const xmlChar *)tap) ||
		    !xmlSetProp(t, (const xmlChar *)"managed", (const xmlChar *)"no"))
			rc = text_error(err, errlen, -ENOMEM, "out of memory");
	}
	xmlXPathFreeObject(o);
	if (!rc && used < s->ntaps)
		rc = text_error(err, errlen, -EINVAL, "%d of the %d --tap given match no UDP "
				"NIC of the domain (give ID=NAME with the NIC's alias, e.g. "
				"net0, or its MAC)", s->ntaps - used, s->ntaps);
	return rc;
}

/* The clone's identity and network (restore_domain_spec.clone_name): a
 * name and UUID of its own, so that libvirt never takes it for the VM (a
 * definition of the VM here keeps its own; without <uuid> libvirt would
 * take the SMBIOS one of <sysinfo>, the VM's: it goes too, and SMBIOS
 * gives the new one), and no NIC on any network: an ethernet NIC without
 * a <target> is a TAP libvirt makes and attaches to nothing. MAC, model
 * and PCI address stay: the device state needs them. */
static int make_clone(xmlDocPtr doc, const char *name, char *err, size_t errlen)
{
	xmlNodePtr root = xmlDocGetRootElement(doc), n = child(root, "name");
	xmlXPathObjectPtr o;
	int rc = 0;

	if (!n && !(n = xmlNewChild(root, NULL, (const xmlChar *)"name", NULL)))
		return text_error(err, errlen, -ENOMEM, "out of memory");
	xmlNodeSetContent(n, NULL);
	xmlNodeAddContent(n, (const xmlChar *)name);
	drop_children(root, "uuid");
	o = select_nodes(doc, "/domain/sysinfo/system/entry[@name='uuid']");
	for (int i = 0; i < nodes_count(o); i++)
		drop_node(o->nodesetval->nodeTab[i]);
	xmlXPathFreeObject(o);
	o = select_nodes(doc, "/domain/devices/interface");
	for (int i = 0; i < nodes_count(o); i++) {
		xmlNodePtr nic = o->nodesetval->nodeTab[i];

		drop_children(nic, "source");
		drop_children(nic, "target");
		drop_children(nic, "backend");
		drop_children(nic, "virtualport"); /* what a network would set up */
		drop_children(nic, "filterref");
		drop_children(nic, "vlan");
		if (!xmlSetProp(nic, (const xmlChar *)"type", (const xmlChar *)"ethernet"))
			rc = text_error(err, errlen, -ENOMEM, "out of memory");
	}
	xmlXPathFreeObject(o);
	return rc;
}

static int set_props(xmlNodePtr n, const char *const *kv, int count)
{
	for (int i = 0; i < count; i += 2)
		if (!xmlSetProp(n, (const xmlChar *)kv[i], (const xmlChar *)kv[i + 1]))
			return -ENOMEM;
	return 0;
}

/* Test hook, for tests/integration only: REMUS_TEST_RESTORE_OVERLAY_AS_RAW=1
 * in the agent's environment opens the overlay with driver type 'raw',
 * the wrong way, so that a test can see the restore's block graph check
 * (restore_verify.c) refuse it and stop the domain. Nothing else makes
 * that mistake on purpose, so nothing else could show the check works. */
static bool overlay_as_raw_hook(void)
{
	const char *hook = getenv("REMUS_TEST_RESTORE_OVERLAY_AS_RAW");

	if (!hook || strcmp(hook, "1"))
		return false;
	log_warn("test hook REMUS_TEST_RESTORE_OVERLAY_AS_RAW: the overlay is opened as raw "
		 "on purpose");
	return true;
}

/* <backingStore type='file'><format type='raw'/><source file='BASE'/> */
static int add_backing_store(xmlNodePtr disk, const char *base)
{
	const char *bs_kv[] = { "type", "file" };
	xmlNodePtr bs = xmlNewChild(disk, NULL, (const xmlChar *)"backingStore", NULL);
	xmlNodePtr fmt = bs ? xmlNewChild(bs, NULL, (const xmlChar *)"format", NULL) : NULL;
	xmlNodePtr src = bs ? xmlNewChild(bs, NULL, (const xmlChar *)"source", NULL) : NULL;

	if (!fmt || !src || set_props(bs, bs_kv, 2) ||
	    !xmlSetProp(fmt, (const xmlChar *)"type", (const xmlChar *)"raw") ||
	    !xmlSetProp(src, (const xmlChar *)"file", (const xmlChar *)base))
		return -ENOMEM;
	return 0;
}

/* <disk type='file'><driver type='raw'/><source file='IMAGE'/> of a
 * replicated disk: the restored domain runs on a qcow2 overlay whose
 * backing store is the replica. */
static int rewrite_disk(xmlNodePtr disk, const struct restore_domain_disk *d)
{
	xmlNodePtr drv = child(disk, "driver"), src = child(disk, "source");
	bool as_raw = overlay_as_raw_hook();
	const char *drv_kv[] = { "name", "qemu", "type", as_raw ? "raw" : "qcow2" };

	drop_children(disk, "backingStore");
	if (!drv)
		drv = xmlNewChild(disk, NULL, (const xmlChar *)"driver", NULL);
	/* a block device on the primary is a file (the overlay) here */
	xmlUnsetProp(src, (const xmlChar *)"dev");
	if (!drv || set_props(drv, drv_kv, 4) ||
	    !xmlSetProp(disk, (const xmlChar *)"type", (const xmlChar *)"file") ||
	    !xmlSetProp(src, (const xmlChar *)"file", (const xmlChar *)d->overlay))
		return -ENOMEM;
	/* libvirt refuses a raw disk with a backing store: the hook's has none,
	 * so that QEMU, not libvirt, opens the overlay wrongly */
	return as_raw ? 0 : add_backing_store(disk, d->base);
}

static int move_disks(xmlDocPtr doc, const struct restore_domain_spec *s, char *err,
		      size_t errlen)
{
	xmlXPathObjectPtr o = select_nodes(doc, "/domain/devices/disk[@type='file' or "
					   "@type='block']");
	int rc = 0;

	for (int i = 0; i < s->ndisks && !rc; i++) {
		bool found = false;

		for (int k = 0; k < nodes_count(o) && !found && !rc; k++) {
			xmlNodePtr disk = o->nodesetval->nodeTab[k], src = child(disk, "source");
			xmlChar *file = !src ? NULL : xmlHasProp(src, (const xmlChar *)"file") ?
				xmlGetProp(src, (const xmlChar *)"file") :
				xmlGetProp(src, (const xmlChar *)"dev");

			if (file && !strcmp((const char *)file, s->disks[i].file)) {
				found = true;
				rc = rewrite_disk(disk, &s->disks[i]) ?
					text_error(err, errlen, -ENOMEM, "out of memory") : 0;
			}
			xmlFree(file);
		}
		if (!found && !rc)
			rc = text_error(err, errlen, -EINVAL, "the primary's domain XML has no "
					"<disk type='file'> or <disk type='block'> with source %s",
					s->disks[i].file);
	}
	xmlXPathFreeObject(o);
	return rc;
}

/* ---- what the backup allows ---- */

static int refuse_node(char *err, size_t errlen, xmlNodePtr n, const char *why)
{
	xmlChar *type = xmlGetProp(n, (const xmlChar *)"type");

	snprintf(err, errlen, "<%s%s%s%s%s%s>: %s; not allowed on the backup",
		 n->ns && n->ns->prefix ? (const char *)n->ns->prefix : "",
		 n->ns && n->ns->prefix ? ":" : "", (const char *)n->name,
		 type ? " type='" : "", type ? (const char *)type : "", type ? "'" : "", why);
	xmlFree(type);
	return -EINVAL;
}

static bool prop_is(xmlNodePtr n, const char *name, const char *value)
{
	xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
	bool eq = v && !strcmp((const char *)v, value);

	xmlFree(v);
	return eq;
}

static bool name_in(xmlNodePtr n, const char *const *names)
{
	for (; *names; names++)
		if (!strcmp((const char *)n->name, *names))
			return true;
	return false;
}

/* The arguments add_incoming gives a domain this agent restores. */
static const char *const incoming_args[] = {
	"-incoming", "defer", "-global", "migration.send-configuration=off", NULL,
};

/* A restored domain runs with our own <qemu:commandline> (add_incoming),
 * and libvirt keeps it in the live XML: when that domain is protected in
 * turn, its HELLO carries it. Exactly those arguments, nothing else, are
 * ours; the restore adds them again. */
static bool is_own_incoming(xmlNodePtr n)
{
	const char *const *want = incoming_args;
	xmlNodePtr a;

	if (!n->ns || !n->ns->href || strcmp((const char *)n->ns->href, QEMU_NS) ||
	    strcmp((const char *)n->name, "commandline"))
		return false;
	for (a = n->children; a; a = a->next) {
		xmlChar *v;
		bool same;

		if (a->type != XML_ELEMENT_NODE)
			continue;
		v = xmlGetProp(a, (const xmlChar *)"value");
		same = *want && a->ns == n->ns && !strcmp((const char *)a->name, "arg") && v &&
		       !strcmp((const char *)v, *want);
		xmlFree(v);
		if (!same)
			return false;
		want++;
	}
	return !*want;
}

/* Our mark on a domain this agent restored (mark_restored). */
static bool is_restored_mark(xmlNodePtr n)
{
	return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
	       !strcmp((const char *)n->ns->href, RESTORED_NS) &&
	       !strcmp((const char *)n->name, RESTORED_ELEMENT);
}

/* The domain's own <metadata>: applications keep their data there, each
 * in a namespace of its own (virt-install's libosinfo:libosinfo, ...),
 * and libvirt never passes it to QEMU. */
static bool is_domain_metadata(xmlNodePtr n)
{
	return !n->ns && !strcmp((const char *)n->name, "metadata") && n->parent &&
	       n->parent->parent && n->parent->parent->type == XML_DOCUMENT_NODE;
}

/* Any element of another namespace (<qemu:commandline>, <qemu:override>,
 * ...) passes options to QEMU that no check here sees, except in the
 * domain's <metadata>, kept as it is. Our own incoming arguments and our
 * mark of a restored domain are dropped (the restore adds them again). */
static int check_namespaces(xmlNodePtr n, char *err, size_t errlen)
{
	for (xmlNodePtr next; n; n = next) {
		next = n->next;
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (is_own_incoming(n)) {
			xmlUnlinkNode(n);
			xmlFreeNode(n);
			continue;
		}
		if (is_domain_metadata(n)) {
			for (xmlNodePtr c = n->children, cnext; c; c = cnext) {
				cnext = c->next;
				if (is_restored_mark(c))
					drop_node(c);
			}
			continue;
		}
		if (n->ns)
			return refuse_node(err, errlen, n, "passes options to QEMU behind libvirt");
		if (check_namespaces(n->children, err, errlen))
			return -EINVAL;
	}
	return 0;
}

static bool is_shared(const struct restore_domain_spec *s, const char *path)
{
	for (int i = 0; path && i < s->nshared_disks; i++)
		if (!strcmp(path, s->shared_disks[i]))
			return true;
	return false;
}

/* A shared image read with this format element (<driver> or <format>):
 * say so when qcow2, whose header libvirt and QEMU parse. */
static void note_format(const struct restore_domain_spec *s, const char *path, xmlNodePtr format)
{
	for (int i = 0; s->shared_as_qcow2 && path && i < s->nshared_disks; i++)
		if (!strcmp(path, s->shared_disks[i]) && prop_is(format, "type", "qcow2"))
			s->shared_as_qcow2[i] = true;
}

static bool is_replicated(const struct restore_domain_spec *s, const char *path)
{
	for (int i = 0; path && i < s->ndisks; i++)
		if (!strcmp(path, s->disks[i].file))
			return true;
	return false;
}

static const char *const source_attrs[] = { "file", "dev", "dir", "path", "volume", "name" };

/* The host file or device a <source> names, if any (xmlFree it). */
static xmlChar *source_path(xmlNodePtr src)
{
	for (size_t i = 0; src && i < sizeof(source_attrs) / sizeof(source_attrs[0]); i++)
		if (xmlHasProp(src, (const xmlChar *)source_attrs[i]))
			return xmlGetProp(src, (const xmlChar *)source_attrs[i]);
	return NULL;
}

/* A <source> that says one thing: one path attribute (libvirt reads the
 * one its disk type names, `dev` for a block disk, whatever comes first
 * here) and no <slices> (a slice's offset would put the image's header
 * elsewhere than where the agent reads it). */
static int check_source(xmlNodePtr owner, xmlNodePtr src, char *err, size_t errlen)
{
	int paths = 0;

	for (size_t i = 0; src && i < sizeof(source_attrs) / sizeof(source_attrs[0]); i++)
		paths += xmlHasProp(src, (const xmlChar *)source_attrs[i]) != NULL;
	if (paths > 1)
		return refuse_node(err, errlen, owner, "a <source> with more than one path "
				   "attribute");
	if (src && child(src, "slices"))
		return refuse_node(err, errlen, owner, "a <source> with <slices>");
	return 0;
}

/* The image formats a restored VM may read a shared disk or its backing
 * images as: others (vmdk, qed, ...) name more host files, or are read
 * from a host directory. No format: libvirt's own default, raw. */
static bool raw_or_qcow2(xmlNodePtr format_node)
{
	static const char *const formats[] = { "raw", "qcow2", NULL };
	xmlChar *type = format_node ? xmlGetProp(format_node, (const xmlChar *)"type") : NULL;
	bool ok = !type;

	for (int i = 0; type && formats[i] && !ok; i++)
		ok = !strcmp((const char *)type, formats[i]);
	xmlFree(type);
	return ok;
}

/* A backing image: a file or block device that is a shared disk, raw or
 * qcow2; or the empty <backingStore/> that ends a chain. */
static int check_backing_store(xmlNodePtr bs, const struct restore_domain_spec *s, char *err,
			       size_t errlen)
{
	xmlChar *path;
	bool ok;

	if (!bs->children && !bs->properties)
		return 0;
	if (check_source(bs, child(bs, "source"), err, errlen))
		return -EINVAL;
	path = source_path(child(bs, "source"));
	ok = path && (prop_is(bs, "type", "file") || prop_is(bs, "type", "block")) &&
	     is_shared(s, (const char *)path);
	xmlFree(path);
	if (!ok)
		return refuse_node(err, errlen, bs, "a backing image that is not a shared disk "
				   "of this agent");
	if (!raw_or_qcow2(child(bs, "format")))
		return refuse_node(err, errlen, bs, "a backing format other than raw or qcow2");
	path = source_path(child(bs, "source"));
	note_format(s, (const char *)path, child(bs, "format"));
	xmlFree(path);
	return 0;
}

/* A replicated disk (rewritten onto an overlay), a shared one, or none
 * (an empty CD-ROM drive: no <source> at all); a shared disk raw or
 * qcow2, its backing chain only of such shared images. */
static int check_disk(xmlNodePtr disk, const struct restore_domain_spec *s, char *err,
		      size_t errlen)
{
	xmlNodePtr src = child(disk, "source");
	xmlChar *path = source_path(src);
	bool file = prop_is(disk, "type", "file") || prop_is(disk, "type", "block");
	bool ok = !src || (path && file && (is_replicated(s, (const char *)path) ||
					    is_shared(s, (const char *)path)));
	bool replicated = ok && path && is_replicated(s, (const char *)path);
	int rc = check_source(disk, src, err, errlen);

	if (rc) {
		xmlFree(path);
		return rc;
	}
	if (ok && !replicated)
		note_format(s, (const char *)path, child(disk, "driver"));
	xmlFree(path);
	if (!ok)
		return refuse_node(err, errlen, disk, "its source is neither a replicated disk "
				   "nor a shared disk of this agent (--shared-disk)");
	if (!replicated && !raw_or_qcow2(child(disk, "driver")))
		return refuse_node(err, errlen, disk, "a shared disk read as a format other than "
				   "raw or qcow2");
	for (xmlNodePtr bs = child(disk, "backingStore"); bs && !replicated && !rc;
	     bs = child(bs, "backingStore"))
		rc = check_backing_store(bs, s, err, errlen);
	return rc;
}

/* Only the net buffer's UDP socket (moved to a TAP) or an unmanaged TAP,
 * with no script and no host descriptors. */
/* An address of a UDP NIC: the loopback, where the net buffer's socket
 * is (domain_xml.c asks the same of the primary). */
static bool loopback_or_none(xmlNodePtr n)
{
	xmlChar *a = n ? xmlGetProp(n, (const xmlChar *)"address") : NULL;
	bool ok = !a || !strcmp((const char *)a, "127.0.0.1") || !strcmp((const char *)a, "::1") ||
		  !strcmp((const char *)a, "localhost");

	xmlFree(a);
	return ok;
}

/* An ethernet NIC's TAP (<target dev>): none (libvirt makes a new one,
 * on no network) or one of the agent's --tap; the XML could name another
 * VM's TAP, or one on another network of this host. */
static bool agent_tap_or_none(xmlNodePtr nic, const struct restore_domain_spec *s)
{
	xmlNodePtr t = child(nic, "target");
	xmlChar *dev = t ? xmlGetProp(t, (const xmlChar *)"dev") : NULL;
	bool ok = !dev;

	/* an existing TAP, which libvirt neither makes nor deletes */
	if (dev && !prop_is(t, "managed", "no")) {
		xmlFree(dev);
		return false;
	}
	for (int i = 0; dev && i < s->ntaps && !ok; i++) {
		const char *eq = strchr(s->taps[i], '=');

		ok = !strcmp(eq ? eq + 1 : s->taps[i], (const char *)dev);
	}
	xmlFree(dev);
	return ok;
}

static int check_interface(xmlNodePtr nic, const struct restore_domain_spec *s, char *err,
			   size_t errlen)
{
	xmlNodePtr b = child(nic, "backend"), src = child(nic, "source");

	/* not restored onto a TAP, it would send the guest's frames from
	 * the backup's own address to wherever the primary named */
	if (prop_is(nic, "type", "udp") && (!loopback_or_none(src) ||
					    !loopback_or_none(src ? child(src, "local") : NULL)))
		return refuse_node(err, errlen, nic, "a UDP NIC's addresses must be the loopback "
				   "(the net buffer's socket)");
	if (!prop_is(nic, "type", "udp") && !prop_is(nic, "type", "ethernet"))
		return refuse_node(err, errlen, nic, "only udp (the net buffer's) or ethernet");
	if (child(nic, "script") || child(nic, "downscript"))
		return refuse_node(err, errlen, nic, "<script> names a host program");
	if (b && (xmlHasProp(b, (const xmlChar *)"tap") || xmlHasProp(b, (const xmlChar *)"vhost")))
		return refuse_node(err, errlen, nic, "<backend> names a host device");
	if (prop_is(nic, "type", "ethernet") && !agent_tap_or_none(nic, s))
		return refuse_node(err, errlen, nic, "its <target dev> is not a TAP of this agent "
				   "(--tap) with managed='no'");
	/* libvirt would set these up on the host's side of the TAP: an
	 * address, or a route that sends the backup's own traffic to the
	 * guest */
	if (child(nic, "ip") || child(nic, "route"))
		return refuse_node(err, errlen, nic, "<ip> or <route> configures the host's "
				   "network");
	return 0;
}

/* Serial ports and consoles to files are moved into the state dir; other
 * character devices may only be ones that open nothing on the host. */
static int check_chardev(xmlNodePtr dev, char *err, size_t errlen)
{
	static const char *const inner[] = { "pty", "null", "vc", NULL };
	xmlNodePtr src = child(dev, "source");
	bool moved = prop_is(dev, "type", "file") && (!strcmp((const char *)dev->name, "serial") ||
						      !strcmp((const char *)dev->name, "console"));
	xmlChar *type = xmlGetProp(dev, (const xmlChar *)"type");
	bool ok = moved || !type;

	for (int i = 0; type && inner[i] && !ok; i++)
		ok = !strcmp((const char *)type, inner[i]);
	/* libvirt picks the path of a guest agent's unix channel itself */
	if (!ok && type && !strcmp((const char *)type, "unix"))
		ok = !src || !xmlHasProp(src, (const xmlChar *)"path");
	xmlFree(type);
	if (!ok)
		return refuse_node(err, errlen, dev, "it opens a host file, socket or device");
	if (child(dev, "log"))
		return refuse_node(err, errlen, dev, "<log> names a host file");
	return 0;
}

static int check_device(xmlNodePtr d, const struct restore_domain_spec *s, char *err,
			size_t errlen)
{
	static const char *const host[] = {
		"hostdev", "filesystem", "smartcard", "shmem", "tpm", "redirdev", "vsock",
		"crypto", "iommu", NULL
	};
	static const char *const chardevs[] = { "serial", "console", "parallel", "channel", NULL };
	xmlNodePtr rom = child(d, "rom");

	if (name_in(d, host))
		return refuse_node(err, errlen, d, "a host device, path or process");
	if (rom && xmlHasProp(rom, (const xmlChar *)"file"))
		return refuse_node(err, errlen, d, "<rom file> names a host file");
	if (!strcmp((const char *)d->name, "disk"))
		return check_disk(d, s, err, errlen);
	if (!strcmp((const char *)d->name, "interface"))
		return check_interface(d, s, err, errlen);
	if (name_in(d, chardevs))
		return check_chardev(d, err, errlen);
	if (!strcmp((const char *)d->name, "input") &&
	    (prop_is(d, "type", "passthrough") || prop_is(d, "type", "evdev")))
		return refuse_node(err, errlen, d, "a host input device");
	if (!strcmp((const char *)d->name, "memory") && child(d, "source"))
		return refuse_node(err, errlen, d, "its source is a host path");
	if (!strcmp((const char *)d->name, "audio") && !prop_is(d, "type", "none"))
		return refuse_node(err, errlen, d, "only type='none'");
	return 0;
}

/* <os>: firmware files are refused; the guest kernel is in the replica
 * RAM already, so <kernel>, <initrd> and <cmdline> are dropped. */
static int check_os(xmlNodePtr os, char *err, size_t errlen)
{
	static const char *const files[] = { "loader", "nvram", "dtb", "acpi", NULL };
	static const char *const boot[] = { "kernel", "initrd", "cmdline", NULL };

	for (xmlNodePtr c = os ? os->children : NULL, next; c; c = next) {
		next = c->next;
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (name_in(c, files))
			return refuse_node(err, errlen, c, "names a host file");
		if (name_in(c, boot))
			drop_node(c);
	}
	return 0;
}

/* <seclabel> (anywhere): the backup's libvirt confines its QEMU its own
 * way; the primary's may say "run as root" or "do not confine". */
static void drop_seclabels(xmlNodePtr n)
{
	for (xmlNodePtr next; n; n = next) {
		next = n->next;
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (!strcmp((const char *)n->name, "seclabel"))
			drop_node(n);
		else
			drop_seclabels(n->children);
	}
}

static int set_emulator(xmlNodePtr devices, const char *emulator, char *err, size_t errlen)
{
	xmlNodePtr e = child(devices, "emulator");

	if (!e)
		e = xmlNewChild(devices, NULL, (const xmlChar *)"emulator", NULL);
	if (!e)
		return text_error(err, errlen, -ENOMEM, "out of memory");
	xmlNodeSetContent(e, NULL);
	xmlNodeAddContent(e, (const xmlChar *)emulator);
	return 0;
}

/* The HELLO names each replicated disk's image, any path the primary
 * likes, and move_disks rewrites the first <disk> on it: a second one
 * would keep that path, and hand the guest whatever host file or device
 * the primary called a disk. */
static int check_replicated_once(xmlDocPtr doc, const struct restore_domain_spec *s, char *err,
				 size_t errlen)
{
	xmlXPathObjectPtr o = select_nodes(doc, "/domain/devices/disk");
	int rc = 0;

	for (int i = 0; i < s->ndisks && !rc; i++) {
		int uses = 0;

		for (int k = 0; k < nodes_count(o); k++) {
			xmlChar *path = source_path(child(o->nodesetval->nodeTab[k], "source"));

			uses += path && !strcmp((const char *)path, s->disks[i].file);
			xmlFree(path);
		}
		if (uses > 1)
			rc = text_error(err, errlen, -EINVAL, "%d <disk> elements name the image "
					"of replicated disk %s: only one may", uses,
					s->disks[i].file);
	}
	xmlXPathFreeObject(o);
	return rc;
}

static int check_domain(xmlDocPtr doc, const struct restore_domain_spec *s, char *err,
			size_t errlen)
{
	xmlNodePtr root = xmlDocGetRootElement(doc), devices = child(root, "devices");
	int rc = check_namespaces(root, err, errlen);

	if (!rc)
		rc = check_os(child(root, "os"), err, errlen);
	if (!rc)
		rc = check_replicated_once(doc, s, err, errlen);
	for (xmlNodePtr d = devices ? devices->children : NULL, next; d && !rc; d = next) {
		next = d->next;
		/* as -display none for plain QEMU: no console opened on this host */
		if (d->type == XML_ELEMENT_NODE && !strcmp((const char *)d->name, "graphics"))
			drop_node(d);
		else if (d->type == XML_ELEMENT_NODE)
			rc = check_device(d, s, err, errlen);
	}
	if (rc)
		return rc;
	drop_seclabels(root);
	if (!devices)
		devices = xmlNewChild(root, NULL, (const xmlChar *)"devices", NULL);
	return devices ? set_emulator(devices, s->emulator, err, errlen) :
		text_error(err, errlen, -ENOMEM, "out of memory");
}

/* <qemu:commandline> with -incoming defer (QEMU waits for the checkpoint)
 * and send-configuration=off (the device state has no configuration
 * section; the agent compares the machine type itself). */
static int add_incoming(xmlDocPtr doc, char *err, size_t errlen)
{
	const char *const *args = incoming_args;
	xmlNodePtr root = xmlDocGetRootElement(doc), cl;
	xmlNsPtr ns = xmlSearchNsByHref(doc, root, (const xmlChar *)QEMU_NS);

	if (!ns)
		ns = xmlNewNs(root, (const xmlChar *)QEMU_NS, (const xmlChar *)"qemu");
	cl = ns ? xmlNewChild(root, ns, (const xmlChar *)"commandline", NULL) : NULL;
	for (size_t i = 0; cl && args[i]; i++) {
		xmlNodePtr a = xmlNewChild(cl, ns, (const xmlChar *)"arg", NULL);
		if (!a || !xmlSetProp(a, (const xmlChar *)"value", (const xmlChar *)args[i]))
			cl = NULL;
	}
	return cl ? 0 : text_error(err, errlen, -ENOMEM, "out of memory");
}

/* The live domain says it was restored into state_dir, for a domain with
 * nothing else there (no disk, no serial log): restore_domain_uses_dir. */
static int mark_restored(xmlDocPtr doc, const char *state_dir, char *err, size_t errlen)
{
	xmlNodePtr root = xmlDocGetRootElement(doc), md = child(root, "metadata"), m;
	xmlNsPtr ns;

	if (!md)
		md = xmlNewChild(root, NULL, (const xmlChar *)"metadata", NULL);
	m = md ? xmlNewChild(md, NULL, (const xmlChar *)RESTORED_ELEMENT, NULL) : NULL;
	ns = m ? xmlNewNs(m, (const xmlChar *)RESTORED_NS, (const xmlChar *)"remus") : NULL;
	if (!ns || !xmlSetProp(m, (const xmlChar *)"state-dir", (const xmlChar *)state_dir))
		return text_error(err, errlen, -ENOMEM, "out of memory");
	xmlSetNs(m, ns);
	return 0;
}

/* value names dir or a path inside it (dir without trailing slashes). */
static bool path_within(const char *value, const char *dir, size_t dirlen)
{
	return !strncmp(value, dir, dirlen) && (value[dirlen] == '/' || !value[dirlen]);
}

/* Any attribute or text under n (n included) that names a path within dir. */
static bool names_path_within(xmlNodePtr n, const char *dir, size_t dirlen)
{
	for (; n; n = n->next) {
		if (n->type == XML_TEXT_NODE && n->content &&
		    path_within((const char *)n->content, dir, dirlen))
			return true;
		if (n->type != XML_ELEMENT_NODE)
			continue;
		for (xmlAttrPtr a = n->properties; a; a = a->next) {
			xmlChar *v = xmlNodeListGetString(n->doc, a->children, 1);
			bool in = v && path_within((const char *)v, dir, dirlen);

			xmlFree(v);
			if (in)
				return true;
		}
		if (names_path_within(n->children, dir, dirlen))
			return true;
	}
	return false;
}

bool restore_domain_uses_dir(const char *live_xml, const char *state_dir)
{
	xmlDocPtr doc = xmlReadMemory(live_xml, (int)strlen(live_xml), "domain.xml", NULL,
				      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	size_t len = strlen(state_dir);
	bool uses;

	while (len > 1 && state_dir[len - 1] == '/')
		len--;
	/* a document that does not parse says nothing: taken as using it */
	uses = !doc || !xmlDocGetRootElement(doc) ||
	       names_path_within(xmlDocGetRootElement(doc), state_dir, len);
	xmlFreeDoc(doc);
	return uses;
}

static char *dump(xmlDocPtr doc)
{
	xmlChar *mem = NULL;
	char *s;
	int len = 0;

	xmlDocDumpFormatMemory(doc, &mem, &len, 1);
	s = mem ? strndup((const char *)mem, (size_t)len) : NULL;
	xmlFree(mem);
	return s;
}

int restore_domain_xml(const char *primary_xml, const struct restore_domain_spec *s,
		       char **start_xml, char **persistent_xml, char *err, size_t errlen)
{
	xmlDocPtr doc;
	int rc;

	*start_xml = *persistent_xml = NULL;
	doc = xmlReadMemory(primary_xml, (int)strlen(primary_xml), "domain.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
			    XML_PARSE_NOBLANKS);
	if (!doc || !xmlDocGetRootElement(doc) ||
	    strcmp((const char *)xmlDocGetRootElement(doc)->name, "domain")) {
		xmlFreeDoc(doc);
		return text_error(err, errlen, -EINVAL, "the primary's domain XML does not parse");
	}
	rc = s->emulator ? check_domain(doc, s, err, errlen) :
		text_error(err, errlen, -EINVAL, "no emulator to restore the domain with");
	if (!rc)
		rc = move_serial_logs(doc, s->state_dir, err, errlen);
	if (!rc)
		rc = move_nics(doc, s, err, errlen);
	/* after the checks and moves a restore would make, so that a clone
	 * fails where a failover would */
	if (!rc && s->clone_name)
		rc = make_clone(doc, s->clone_name, err, errlen);
	if (!rc)
		rc = move_disks(doc, s, err, errlen);
	if (!rc && !(*persistent_xml = dump(doc)))
		rc = text_error(err, errlen, -ENOMEM, "out of memory");
	if (!rc && !s->clone_name)
		rc = mark_restored(doc, s->state_dir, err, errlen);
	if (!rc)
		rc = add_incoming(doc, err, errlen);
	if (!rc && !(*start_xml = dump(doc)))
		rc = text_error(err, errlen, -ENOMEM, "out of memory");
	xmlFreeDoc(doc);
	if (rc) {
		free(*start_xml);
		free(*persistent_xml);
		*start_xml = *persistent_xml = NULL;
	}
	return rc;
}
