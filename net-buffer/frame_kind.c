/* See frame_kind.h. Lengths come from the IP headers, not from the frame:
 * a short frame is padded to Ethernet's 60 bytes. */
#include "frame_kind.h"

#define ETH_HLEN_PLAIN 14u
#define ETHERTYPE_VLAN 0x8100u
#define ETHERTYPE_IPV4 0x0800u
#define ETHERTYPE_IPV6 0x86ddu
#define IPPROTO_TCP_NUM 6u
#define IPV6_HLEN 40u
#define TCP_HLEN_MIN 20u

#define TCP_FIN 0x01u
#define TCP_SYN 0x02u
#define TCP_RST 0x04u
#define TCP_ACK 0x10u
#define TCP_URG 0x20u

static unsigned be16_at(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* tcp: the segment, seg_len: its length by the IP header. */
static bool tcp_is_bare_ack(const uint8_t *tcp, size_t seg_len, size_t avail)
{
	size_t doff;
	unsigned flags;

	if (seg_len < TCP_HLEN_MIN || avail < TCP_HLEN_MIN)
		return false;
	doff = (size_t)(tcp[12] >> 4) * 4;
	flags = tcp[13];
	return doff >= TCP_HLEN_MIN && seg_len == doff &&
	       (flags & TCP_ACK) && !(flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG));
}

static bool ipv4_is_bare_ack(const uint8_t *ip, size_t avail)
{
	size_t ihl, total;

	if (avail < 20 || ip[0] >> 4 != 4)
		return false;
	ihl = (size_t)(ip[0] & 0x0f) * 4;
	total = be16_at(ip + 2);
	/* a fragment (MF set or an offset) is not a whole segment */
	if (ihl < 20 || total < ihl || total > avail || (be16_at(ip + 6) & 0x3fff) ||
	    ip[9] != IPPROTO_TCP_NUM)
		return false;
	return tcp_is_bare_ack(ip + ihl, total - ihl, avail - ihl);
}

static bool ipv6_is_bare_ack(const uint8_t *ip, size_t avail)
{
	size_t payload;

	if (avail < IPV6_HLEN || ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP_NUM)
		return false;
	payload = be16_at(ip + 4);
	if (payload > avail - IPV6_HLEN)
		return false;
	return tcp_is_bare_ack(ip + IPV6_HLEN, payload, avail - IPV6_HLEN);
}

bool frame_is_bare_tcp_ack(const uint8_t *frame, size_t len)
{
	size_t off = ETH_HLEN_PLAIN;
	unsigned type;

	if (len < ETH_HLEN_PLAIN)
		return false;
	type = be16_at(frame + 12);
	if (type == ETHERTYPE_VLAN) {
		if (len < ETH_HLEN_PLAIN + 4)
			return false;
		type = be16_at(frame + 16);
		off += 4;
	}
	if (type == ETHERTYPE_IPV4)
		return ipv4_is_bare_ack(frame + off, len - off);
	if (type == ETHERTYPE_IPV6)
		return ipv6_is_bare_ack(frame + off, len - off);
	return false;
}
