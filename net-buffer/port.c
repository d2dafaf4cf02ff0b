#include "port.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int port_parse(const char *spec, struct port *p, char *err, size_t errlen)
{
	const char *name;

	memset(p, 0, sizeof(*p));
	p->fd = -1;
	if (!strncmp(spec, "tap:", 4)) {
		p->kind = PORT_TAP;
		name = spec + 4;
	} else if (!strncmp(spec, "packet:", 7)) {
		p->kind = PORT_PACKET;
		name = spec + 7;
	} else {
		snprintf(err, errlen, "'%s' is not tap:NAME or packet:IFACE", spec);
		return -EINVAL;
	}
	if (!*name || strlen(name) >= IFNAMSIZ) {
		snprintf(err, errlen, "bad interface name in '%s'", spec);
		return -EINVAL;
	}
	snprintf(p->name, sizeof(p->name), "%s", name);
	return 0;
}

static int open_tap(struct port *p, char *err, size_t errlen)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "cannot open /dev/net/tun: %s", strerror(errno));
		return -errno;
	}
	memcpy(ifr.ifr_name, p->name, IFNAMSIZ - 1); /* port_parse checked the length */
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int rc = -errno;
		snprintf(err, errlen, "cannot attach to TAP %s: %s", p->name, strerror(errno));
		close(fd);
		return rc;
	}
	p->fd = fd;
	return 0;
}

static int open_packet(struct port *p, char *err, size_t errlen)
{
	unsigned ifindex = if_nametoindex(p->name);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	struct packet_mreq mr = { .mr_type = PACKET_MR_PROMISC };
	int fd, rc;

	if (!ifindex) {
		snprintf(err, errlen, "no interface %s: %s", p->name, strerror(errno));
		return -ENODEV;
	}
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (fd < 0) {
		snprintf(err, errlen, "cannot open a packet socket: %s", strerror(errno));
		return -errno;
	}
	sll.sll_ifindex = (int)ifindex;
	mr.mr_ifindex = (int)ifindex;
	/* The VM has its own MAC address: without promiscuous mode the
	 * interface would not hand us the frames sent to it. */
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot bind a packet socket to %s: %s", p->name, strerror(errno));
		close(fd);
		return rc;
	}
	p->fd = fd;
	return 0;
}

int port_open(struct port *p, char *err, size_t errlen)
{
	return p->kind == PORT_TAP ? open_tap(p, err, errlen) : open_packet(p, err, errlen);
}

void port_close(struct port *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

int port_send(struct port *p, const uint8_t *frame, size_t len)
{
	ssize_t n = p->kind == PORT_TAP ? write(p->fd, frame, len)
					: send(p->fd, frame, len, MSG_DONTWAIT);

	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return 0;
}

ssize_t port_recv(struct port *p, uint8_t *buf, size_t cap)
{
	for (;;) {
		/* recvfrom fills it on a packet socket; the analyzer does not
		 * know that, and a defined value costs nothing. */
		struct sockaddr_ll from = { .sll_pkttype = PACKET_HOST };
		socklen_t fl = sizeof(from);
		ssize_t n;

		if (p->kind == PORT_TAP)
			n = read(p->fd, buf, cap);
		else
			n = recvfrom(p->fd, buf, cap, MSG_TRUNC, (struct sockaddr *)&from, &fl);
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
		/* A packet socket also sees what we sent: that is not inbound. */
		if (p->kind == PORT_PACKET && from.sll_pkttype == PACKET_OUTGOING)
			continue;
		if ((size_t)n > cap)
			return -EMSGSIZE;
		return n;
	}
}
