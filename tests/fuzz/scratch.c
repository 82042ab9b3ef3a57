/*
 * scratch.c - scratch directories for fuzz targets (see scratch.h).
 */
#define _XOPEN_SOURCE 700
#include "scratch.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX "counterd-fuzz-"

static char made[PATH_MAX];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_made(void)
{
    if (made[0])
        rm_tree(made);
}

/* Directories PREFIX<target>-<pid> of processes that are gone. */
static void remove_stale(const char *parent)
{
    DIR *d = opendir(parent);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) != 0)
            continue;
        const char *dash = strrchr(e->d_name, '-');
        long pid = dash ? strtol(dash + 1, NULL, 10) : 0;
        if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", parent, e->d_name);
            rm_tree(path);
        }
    }
    if (d)
        closedir(d);
}

const char *scratch_dir(const char *target)
{
    struct stat sb;
    const char *parent = "/dev/shm";
    if (stat(parent, &sb) < 0 || !S_ISDIR(sb.st_mode) || access(parent, W_OK) < 0)
        parent = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    remove_stale(parent);
    snprintf(made, sizeof made, "%s/" PREFIX "%s-%ld", parent, target, (long)getpid());
    rm_tree(made);
    if (mkdir(made, 0700) < 0) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", made, strerror(errno));
        exit(1);
    }
    atexit(remove_made);
    return made;
}

void scratch_empty(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        rm_tree(p);
    }
    if (d)
        closedir(d);
}
