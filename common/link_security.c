#include "link_security.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* TLS 1.3 only, and only key exchanges that add an ephemeral (EC)DH share
 * to the PSK: a key stolen later does not decrypt recorded sessions. */
/* AES-GCM first: the hosts this runs on have AES instructions, which make
 * it the cheapest AEAD per byte (GnuTLS would otherwise pick ChaCha20). */
#define LINK_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK:+DHE-PSK:" \
	"-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define KEY_FILE_MAX 1024

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int link_key_parse(const char *text, unsigned char *out, size_t outlen)
{
	size_t n = 0;

	while (isspace((unsigned char)*text))
		text++;
	for (;;) {
		int hi = hexval(text[0]), lo = hi < 0 ? -1 : hexval(text[1]);

		if (hi < 0 || lo < 0)
			break;
		if (n == outlen)
			return -EINVAL;
		out[n++] = (unsigned char)(hi << 4 | lo);
		text += 2;
	}
	while (isspace((unsigned char)*text))
		text++;
	return *text ? -EINVAL : (int)n;
}

/* The key file must be ours alone: anyone who reads it can be the primary. */
static int check_key_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "key file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "key file %s is not a regular file", path);
		return -EINVAL;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		snprintf(err, errlen, "key file %s is owned by uid %u, not by root or us: "
			 "anyone who can replace it can impersonate the peer", path,
			 (unsigned)st.st_uid);
		return -EPERM;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "key file %s can be read by others (mode %04o): "
			 "chmod 600 %s", path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	return 0;
}

static int read_key(const char *path, unsigned char *key, char *err, size_t errlen)
{
	char text[KEY_FILE_MAX + 1];
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	ssize_t n;
	int rc;

	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "key file %s: %s%s%s", path, strerror(errno),
			 errno == ELOOP ? " (a symbolic link: name the file itself)" : "",
			 errno == ENOENT ? "; " LINK_KEY_HINT : "");
		return rc;
	}
	rc = check_key_file(fd, path, err, errlen);
	n = rc ? 0 : read(fd, text, KEY_FILE_MAX);
	close(fd);
	if (rc)
		return rc;
	if (n < 0 || n == KEY_FILE_MAX) {
		snprintf(err, errlen, "key file %s: %s", path,
			 n < 0 ? strerror(errno) : "too long for a key");
		return -EINVAL;
	}
	text[n] = '\0';
	rc = link_key_parse(text, key, LINK_KEY_BYTES * 2);
	if (rc < LINK_KEY_MIN_BYTES) {
		snprintf(err, errlen, "key file %s does not hold a key (%d to %d hex digits); %s",
			 path, LINK_KEY_MIN_BYTES * 2, LINK_KEY_BYTES * 4, LINK_KEY_HINT);
		return -EINVAL;
	}
	return rc;
}

/* The primary's PSK identity is the first thing an unauthenticated peer
 * sends: printable ASCII only, or the handshake fails. */
static bool identity_ok(const char *id)
{
	size_t n = strlen(id);

	if (!n || n > LINK_IDENTITY_MAX)
		return false;
	for (; *id; id++)
		if (*id < 0x21 || *id > 0x7e)
			return false;
	return true;
}

/* Every identity gets the pair key: a peer without it fails the handshake
 * (the PSK binder does not verify), whatever name it gives. */
static int server_key(gnutls_session_t session, const char *username, gnutls_datum_t *key)
{
	const struct link_security *s = gnutls_session_get_ptr(session);

	if (!s || !identity_ok(username))
		return -1;
	key->data = gnutls_malloc(s->key.size);
	if (!key->data)
		return -1;
	memcpy(key->data, s->key.data, s->key.size);
	key->size = s->key.size;
	return 0;
}

static void set_identity(struct link_security *s, const char *name)
{
	char *p;

	snprintf(s->identity, sizeof(s->identity), "remus:%s", name && *name ? name : "pair");
	for (p = s->identity; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			*p = '_';
}

int link_security_set_identity(struct link_security *s, const char *name)
{
	if (s->cleartext)
		return 0;
	set_identity(s, name);
	return gnutls_psk_set_client_credentials(s->psk_client, s->identity, &s->key,
						 GNUTLS_PSK_KEY_RAW) ? -EIO : 0;
}

int link_security_load(struct link_security *s, const char *key_file,
		       const char *identity_name, char *err, size_t errlen)
{
	unsigned char key[LINK_KEY_BYTES * 2];
	const char *where = NULL;
	int n, rc;

	memset(s, 0, sizeof(*s));
	if (!key_file) {
		snprintf(err, errlen, "no pair key: the replication link is encrypted and "
			 "authenticated with a key shared by both hosts; " LINK_KEY_HINT);
		return -ENOKEY;
	}
	n = read_key(key_file, key, err, errlen);
	if (n < 0)
		return n;
	set_identity(s, identity_name);
	s->key.data = gnutls_malloc((size_t)n);
	rc = s->key.data ? 0 : GNUTLS_E_MEMORY_ERROR;
	if (!rc) {
		memcpy(s->key.data, key, (size_t)n);
		s->key.size = (unsigned)n;
		rc = gnutls_psk_allocate_client_credentials(&s->psk_client);
	}
	explicit_bzero(key, sizeof(key));
	if (!rc)
		rc = gnutls_psk_set_client_credentials(s->psk_client, s->identity, &s->key,
						       GNUTLS_PSK_KEY_RAW);
	if (!rc)
		rc = gnutls_psk_allocate_server_credentials(&s->psk_server);
	if (!rc) {
		gnutls_psk_set_server_credentials_function(s->psk_server, server_key);
		rc = gnutls_priority_init(&s->priority, LINK_PRIORITY, &where);
	}
	if (rc) {
		snprintf(err, errlen, "TLS setup: %s", gnutls_strerror(rc));
		link_security_free(s);
		return -EIO;
	}
	return 0;
}

void link_security_cleartext(struct link_security *s)
{
	memset(s, 0, sizeof(*s));
	s->cleartext = true;
}

void link_security_free(struct link_security *s)
{
	if (s->psk_client)
		gnutls_psk_free_client_credentials(s->psk_client);
	if (s->psk_server)
		gnutls_psk_free_server_credentials(s->psk_server);
	if (s->priority)
		gnutls_priority_deinit(s->priority);
	if (s->key.data) {
		explicit_bzero(s->key.data, s->key.size);
		gnutls_free(s->key.data);
	}
	memset(s, 0, sizeof(*s));
}

/* GnuTLS's own send() raises SIGPIPE on a peer that reset us; ours does
 * not, in any program that links this. */
static ssize_t push_nosignal(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };

	return sendmsg((int)(intptr_t)ptr, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

int link_security_session(const struct link_security *s, bool server, int fd,
			  gnutls_session_t *out)
{
	gnutls_session_t t;
	int rc = gnutls_init(&t, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);

	if (rc)
		return rc;
	rc = gnutls_priority_set(t, s->priority);
	if (!rc)
		rc = server ? gnutls_credentials_set(t, GNUTLS_CRD_PSK, s->psk_server) :
			gnutls_credentials_set(t, GNUTLS_CRD_PSK, s->psk_client);
	if (rc) {
		gnutls_deinit(t);
		return rc;
	}
	gnutls_session_set_ptr(t, (void *)s);
	gnutls_transport_set_int(t, fd);
	gnutls_transport_set_vec_push_function(t, push_nosignal);
	*out = t;
	return 0;
}

int link_key_generate(const char *path, char *err, size_t errlen)
{
	unsigned char key[LINK_KEY_BYTES];
	char text[LINK_KEY_BYTES * 2 + 2];
	int fd, rc = 0;

	if (getrandom(key, sizeof(key), 0) != sizeof(key)) {
		snprintf(err, errlen, "no random bytes: %s", strerror(errno));
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(key); i++)
		snprintf(text + 2 * i, 3, "%02x", key[i]);
	text[LINK_KEY_BYTES * 2] = '\n';
	text[LINK_KEY_BYTES * 2 + 1] = '\0';
	explicit_bzero(key, sizeof(key));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create %s: %s%s", path, strerror(errno),
			 errno == EEXIST ? " (a key is never overwritten: remove the old one "
			 "first if you mean to replace it)" : "");
	} else if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fsync(fd) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		unlink(path);
	}
	if (fd >= 0)
		close(fd);
	explicit_bzero(text, sizeof(text));
	return rc;
}
