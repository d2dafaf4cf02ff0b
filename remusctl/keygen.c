/* remusctl keygen FILE: a new pair key (common/link_security.h). */
#include "remusctl.h"

#include "link_security.h"

#include <stdio.h>
#include <string.h>

int keygen_main(const struct remusctl_opts *o, int argc, char **argv)
{
	char err[512];

	if (argc != 2 || !strcmp(argv[1], "--help")) {
		fprintf(argc == 2 ? stdout : stderr,
			"Usage: remusctl keygen FILE\n\n"
			"Write a new random pair key to FILE (created, mode 0600; an existing\n"
			"file is never overwritten). Copy it to the other host of the pair\n"
			"(scp -p, same mode) and name it in both hosts' config ([link] key-file)\n"
			"or with --key-file. To rotate, make a new key, copy it, restart the\n"
			"agent and then the replicator (docs/SECURITY.md).\n");
		return argc == 2 ? 0 : 2;
	}
	if (link_key_generate(argv[1], err, sizeof(err))) {
		fprintf(stderr, "remusctl: keygen: %s\n", err);
		return 1;
	}
	printf("pair key written to %s (mode 0600): copy it to the other host, same mode\n",
	       argv[1]);
	return 0;
}
