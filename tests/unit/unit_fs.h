/*
 * unit_fs.h - removing a test's data directory (a flat folder of files: a log's segments
 * and snapshots), for the unit tests that open real ones (test_wal, test_tokset).
 *
 * Include after unit.h. Never include this from core/.
 */
#ifndef COUNTERD_TESTS_UNIT_FS_H
#define COUNTERD_TESTS_UNIT_FS_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Removes dir and the files in it (not folders below it: a data directory has none). */
static inline void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

#endif
