/*
 * Copies of the programs that a test runs as another user, where that
 * user can reach them. The build directory lies inside the checkout, and
 * a checkout in a directory others cannot enter (a home of mode 0700, a
 * `mktemp -d` folder) hides its binaries from them: exec fails for the
 * user, and so does what the kernel opens with the user's rights for them
 * (a process restored as the user maps its executable again).
 *
 * A test that needs this copies the programs once, before it starts any of
 * them, and then runs only the copies, as root too: a program that
 * re-executes itself (the engine's keeper, ckptfs's restore helper, both
 * through /proc/self/exe) stays the copy, and a restore finds the
 * executable that its image names.
 */
#ifndef CKPTFS_TESTS_EXE_COPY_H
#define CKPTFS_TESTS_EXE_COPY_H

#include <stddef.h>

/* Makes a fresh directory PARENT/ckptfs-exe.XXXXXX of mode 0755 (parent
 * NULL: /tmp; else a temp dir of the caller's that others can enter, so
 * that whatever removes it removes the copies too) and copies each of the
 * n files of paths into it under its own base name, mode 0755, with its
 * file capabilities (security.capability). dir receives the directory
 * (PATH_MAX). Returns 0, or -errno with nothing left behind and a line on
 * stderr naming the file. */
int exe_copy(const char *parent, const char *const *paths, size_t n, char *dir);

/* Writes to ret (PATH_MAX) the path that the copy of path has in dir.
 * Returns 0, or -ENAMETOOLONG when it does not fit. */
int exe_copy_path(const char *dir, const char *path, char *ret);

/* Removes a directory made by exe_copy() and empties dir; does nothing
 * when dir is empty. */
void exe_copy_remove(char *dir);

#endif
