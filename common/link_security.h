/* How the replication link is secured: TLS 1.3 with a pre-shared pair key
 * (GnuTLS, PSK with (EC)DHE, so a stolen key does not open recorded
 * sessions), or, only when the operator names it, cleartext.
 *
 * The pair key is a file holding 32 random bytes as 64 hex digits, the same
 * on both hosts of a pair, owned by root (or the daemon's user) and not
 * readable by group or others: `remusctl keygen FILE` makes one. The PSK
 * identity each side sends is "remus:PAIR"; the backup pins the identity
 * its first primary used (docs/SECURITY.md). */
#ifndef REMUS_LINK_SECURITY_H
#define REMUS_LINK_SECURITY_H

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>

#define LINK_KEY_BYTES        32
#define LINK_KEY_MIN_BYTES    16
#define LINK_IDENTITY_MAX     80
/* What the daemons say when there is no key: how to make one. */
#define LINK_KEY_HINT "make one with `remusctl keygen FILE` on one host, copy it to the " \
	"other (mode 0600), and name it with --key-file FILE or [link] key-file"

struct link_security {
	bool cleartext;   /* --insecure-cleartext-link: no TLS at all */
	gnutls_psk_client_credentials_t psk_client;
	gnutls_psk_server_credentials_t psk_server;
	gnutls_priority_t priority;
	gnutls_datum_t key;
	char identity[LINK_IDENTITY_MAX + 1]; /* the PSK identity we send */
};

/* Read the key file (checked: a regular file, not a link, not readable by
 * group or others, owned by root or us, 32-128 hex digits) and set up the
 * credentials of both roles. identity_name: the pair's name (NULL: none).
 * 0, or -errno with the reason in err. */
int link_security_load(struct link_security *s, const char *key_file,
		       const char *identity_name, char *err, size_t errlen);
/* The name our identity carries ("remus:NAME", non-printables as '_'),
 * once it is known. 0 or -EIO. */
int link_security_set_identity(struct link_security *s, const char *name);
/* No TLS: for an operator who asked for it by name. */
void link_security_cleartext(struct link_security *s);
void link_security_free(struct link_security *s);

/* Parse a key file's text (hex digits, white space around them ignored)
 * into out (at most outlen bytes). Byte count, or -EINVAL. */
int link_key_parse(const char *text, unsigned char *out, size_t outlen);
/* Write a new random key to path, created with O_EXCL|O_NOFOLLOW, mode
 * 0600. 0, or -errno with the reason in err. */
int link_key_generate(const char *path, char *err, size_t errlen);

/* Start a TLS session over fd for a client (connects) or server (accepts),
 * non-blocking. 0 or a negative GnuTLS error. */
int link_security_session(const struct link_security *s, bool server, int fd,
			  gnutls_session_t *out);

#endif
