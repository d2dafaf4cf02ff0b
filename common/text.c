/* Control characters out of outside text: see text.h. */
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t text_sanitize(char *dst, size_t len, const char *src)
{
	size_t i;

	if (!len)
		return 0;
	for (i = 0; i + 1 < len && src[i]; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	dst[i] = 0;
	return i;
}

char *text_sanitize_dup(const char *src)
{
	size_t len = strlen(src) + 1;
	char *dst = malloc(len);

	if (dst)
		text_sanitize(dst, len, src);
	return dst;
}

int text_error(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}
