/* libFuzzer harness for the pair config parser (common/config.c): any
 * bytes, cut into lines as config_read_file does, through config_line and
 * config_finish; must neither crash nor leak.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-config
 *   build/fuzz/fuzz_config -dict=fuzz/fuzz_config.dict -max_total_time=60 \
 *       build/fuzz/corpus-config configs
 */
#include "config.h"
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* No DNS while fuzzing: netaddr_parse sees numeric hosts only (getaddrinfo
 * then answers without asking anyone); a name is refused unresolved. The
 * host is cut out of HOST:PORT as netaddr_parse does. */
static int numeric_only(const char *addr, char *err, size_t errlen)
{
	const char *text = addr, *colon = strrchr(text, ':');
	unsigned char bin[sizeof(struct in6_addr)];
	struct netaddr a;
	char host[128];
	size_t len;

	if (!colon || colon == text || !colon[1])
		return netaddr_parse(addr, &a, err, errlen); /* refused before resolving */
	len = (size_t)(colon - text);
	if (text[0] == '[' && colon[-1] == ']' && len >= 2) {
		text++;
		len -= 2;
	}
	if (len >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, len);
	host[len] = 0;
	if (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1) {
		snprintf(err, errlen, "'%s' is not numeric (fuzzing)", host);
		return -EINVAL;
	}
	return netaddr_parse(addr, &a, err, errlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *sink;
	static const enum config_role roles[] = { CONFIG_ANY, CONFIG_REPLICATOR, CONFIG_AGENT };
	const char *text = (const char *)data, *end = text + size;
	struct pair_config cfg;
	struct config_parser p;

	if (!sink)
		sink = fopen("/dev/null", "w");
	config_init(&p, &cfg, "fuzz.conf", sink);
	p.check_addr = numeric_only;
	while (text < end) {
		const char *nl = memchr(text, '\n', (size_t)(end - text));
		size_t n = nl ? (size_t)(nl - text) + 1 : (size_t)(end - text);

		config_line(&p, text, n);
		text += n;
	}
	config_finish(&p, roles[size % 3]);
	pair_config_free(&cfg);
	return 0;
}
