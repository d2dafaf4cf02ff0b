/* Text that came from outside (the wire, the VM, QEMU, libvirt) on its way
 * to a log line, sd_notify, or a hook's arguments and environment: a VM
 * named "vm1\nSTATUS=protected" must not forge a line of its own there. */
#ifndef REMUS_TEXT_H
#define REMUS_TEXT_H

#include <stddef.h>

/* Copy src into dst (len bytes with the NUL, truncated if need be), every
 * control character (bytes below 0x20, and 0x7f) replaced with '?'. The
 * length is kept, so dst may be src. Returns the length written. Bytes of
 * 0x80 and up pass: names may be UTF-8. */
size_t text_sanitize(char *dst, size_t len, const char *src);

/* strdup(src), sanitized; NULL when out of memory. */
char *text_sanitize_dup(const char *src);

/* The reason for a refusal, formatted into err (errlen bytes with the
 * NUL, truncated if need be); returns rc, so that a check can say
 * `return text_error(err, errlen, -EINVAL, "...", ...)`. */
int text_error(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
