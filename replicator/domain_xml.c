/* What a libvirt domain's XML must say for the replicator to protect it,
 * and the exact XML to change when it does not.
 *
 * The same facts are checked again through QMP once attached (attach.c);
 * checking the XML first lets the refusal speak the operator's language:
 * the element to put in `virsh edit`, not a QEMU option libvirt writes.
 */
#include "domain_xml.h"
#include "log.h"

#include <errno.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char shared_ram_xml[] =
	"  <memoryBacking>\n"
	"    <source type='memfd'/>\n"
	"    <access mode='shared'/>\n"
	"  </memoryBacking>\n"
	"(or <source type='file'/>), then restart the domain";

static const char udp_nic_xml_tail[] =
	"    <source address='127.0.0.1' port='PORT_OF_THE_REPLICATOR'>\n"
	"      <local address='127.0.0.1' port='PORT_OF_QEMU'/>\n"
	"    </source>\n"
	"    <model type='virtio'/>\n"
	"  </interface>";

/* The string value of xpath in doc, or NULL. Caller xmlFree()s. */
static xmlChar *xpath_string(xmlXPathContextPtr ctx, const char *xpath)
{
	xmlXPathObjectPtr o = xmlXPathEvalExpression((const xmlChar *)xpath, ctx);
	xmlChar *s = NULL;

	if (o && o->nodesetval && o->nodesetval->nodeNr > 0)
		s = xmlNodeGetContent(o->nodesetval->nodeTab[0]);
	xmlXPathFreeObject(o);
	return s;
}

static bool xpath_equals(xmlXPathContextPtr ctx, const char *xpath, const char *want)
{
	xmlChar *s = xpath_string(ctx, xpath);
	bool eq = s && !strcmp((const char *)s, want);

	xmlFree(s);
	return eq;
}

static int check_memory_backing(xmlXPathContextPtr ctx, const char *name)
{
	xmlChar *type = xpath_string(ctx, "/domain/memoryBacking/source/@type");
	bool shared = xpath_equals(ctx, "/domain/memoryBacking/access/@mode", "shared");
	bool ok = type && (!strcmp((const char *)type, "file") ||
			   !strcmp((const char *)type, "memfd")) && shared;

	if (!ok) {
		log_err("refusing libvirt domain %s: its RAM is %s, so the replicator cannot "
			"read guest memory. Put this in its XML (virsh edit %s):", name,
			!type ? "anonymous memory private to QEMU" :
			!shared ? "not shared (<access mode='shared'/> is missing)" :
				  "on a backing the replicator cannot read",
			name);
		log_lines(LOG_ERR, shared_ram_xml);
	}
	xmlFree(type);
	return ok ? 0 : -EPERM;
}

/* Every NIC must be one whose traffic passes through the replicator: a
 * UDP socket interface (QEMU's -netdev socket,udp=), owned by the net
 * buffer. Anything else reaches the network directly, before the backup
 * has the checkpoint that explains it. */
static int check_interfaces(xmlXPathContextPtr ctx, const char *name)
{
	xmlXPathObjectPtr o = xmlXPathEvalExpression((const xmlChar *)"/domain/devices/interface",
						     ctx);
	int rc = 0;

	for (int i = 0; o && o->nodesetval && i < o->nodesetval->nodeNr; i++) {
		xmlNodePtr nic = o->nodesetval->nodeTab[i];
		xmlChar *type = xmlGetProp(nic, (const xmlChar *)"type");
		xmlChar *mac = NULL;

		for (xmlNodePtr c = nic->children; c; c = c->next)
			if (c->type == XML_ELEMENT_NODE && !strcmp((const char *)c->name, "mac"))
				mac = xmlGetProp(c, (const xmlChar *)"address");
		if (!type || strcmp((const char *)type, "udp")) {
			log_err("refusing libvirt domain %s: interface %s is <interface type='%s'>, "
				"which sends the guest's packets to the network before the backup "
				"has their checkpoint. Make it a UDP socket that the replicator's "
				"net buffer owns (virsh edit %s), and pass --net-out for it:",
				name, mac ? (const char *)mac : "(no MAC)",
				type ? (const char *)type : "?", name);
			/* one log line each: log_msg takes newlines out */
			log_err("  <interface type='udp'>");
			log_err("    <mac address='%s'/>", mac ? (const char *)mac : "52:54:00:xx:xx:xx");
			log_lines(LOG_ERR, udp_nic_xml_tail);
			rc = -EPERM;
		}
		xmlFree(type);
		xmlFree(mac);
	}
	xmlXPathFreeObject(o);
	return rc;
}

int domain_xml_check(const char *xml, const char *name)
{
	xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
				      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	xmlXPathContextPtr ctx = doc ? xmlXPathNewContext(doc) : NULL;
	int rc;

	if (!ctx) {
		log_err("libvirt domain %s: its XML does not parse", name);
		xmlFreeDoc(doc);
		return -EPROTO;
	}
	rc = check_memory_backing(ctx, name);
	if (!rc)
		rc = check_interfaces(ctx, name);
	xmlXPathFreeContext(ctx);
	xmlFreeDoc(doc);
	return rc;
}
