/* Where the VM's frames meet the network: the released output goes out
 * through a port and the inbound traffic comes in from it.
 *   tap:NAME     a TAP device (created if missing; attach it to a bridge)
 *   packet:IFACE a host interface through AF_PACKET, promiscuous, so that
 *                frames for the VM's MAC address come in too */
#ifndef REMUS_PORT_H
#define REMUS_PORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum port_kind { PORT_TAP, PORT_PACKET };

struct port {
	enum port_kind kind;
	char name[32];
	int fd;
};

/* Parse "tap:NAME" or "packet:IFACE". 0 or -EINVAL with the reason. */
int port_parse(const char *spec, struct port *p, char *err, size_t errlen);
/* Open it (non-blocking). 0 or -errno with the reason. */
int port_open(struct port *p, char *err, size_t errlen);
void port_close(struct port *p);
/* One frame out: 0, -EAGAIN, or -errno. */
int port_send(struct port *p, const uint8_t *frame, size_t len);
/* One frame in: its length, 0 if there is none now, -errno. Frames this
 * port sent itself are skipped. */
ssize_t port_recv(struct port *p, uint8_t *buf, size_t cap);

#endif
