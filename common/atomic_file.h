/* A small file replaced whole: PATH.new written, fsynced and renamed over
 * PATH, so that a reader (the next daemon, after a crash) finds the old
 * content or the new, never a part. */
#ifndef REMUS_ATOMIC_FILE_H
#define REMUS_ATOMIC_FILE_H

#include <stddef.h>

/* 0, or -errno (-EIO: a short write, no room); PATH.new is gone either
 * way. Mode 0600; a symbolic link at PATH.new is refused. */
int atomic_file_write(const char *path, const void *buf, size_t len);

#endif
