/* Checks on a libvirt domain's XML before attaching (domain_xml.c). */
#ifndef REMUS_DOMAIN_XML_H
#define REMUS_DOMAIN_XML_H

/* 0 if the domain can be protected; -EPERM with the reason and the XML to
 * change logged; -EPROTO if xml does not parse. */
int domain_xml_check(const char *xml, const char *name);

#endif
