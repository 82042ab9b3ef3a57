/*
 * unit_lua.h - a Lua folder for the unit tests that run a real Lua host (test_host,
 * test_policy, test_pattern): a temporary directory made on first use and removed at
 * exit, and files written into its folders (policies/, roles/).
 *
 * Include after unit.h. Never include this from core/.
 */
#ifndef COUNTERD_TESTS_UNIT_LUA_H
#define COUNTERD_TESTS_UNIT_LUA_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char unit_lua_path[64];

static void unit_lua_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", unit_lua_path);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", unit_lua_path);
}

/* The test's Lua folder, /tmp/<test>.XXXXXX, made on first use. */
static inline const char *unit_lua_dir(const char *test)
{
    if (!unit_lua_path[0]) {
        snprintf(unit_lua_path, sizeof unit_lua_path, "/tmp/%s.XXXXXX", test);
        if (!mkdtemp(unit_lua_path)) {
            perror("mkdtemp");
            abort();
        }
        atexit(unit_lua_remove);
    }
    return unit_lua_path;
}

/* Writes <dir>/<folder>/<name>.lua (making the folder) with text. */
static inline void unit_lua_put(const char *test, const char *folder, const char *name,
                                const char *text)
{
    const char *dir = unit_lua_dir(test);
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, folder);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/%s/%s.lua", dir, folder, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        abort();
    }
    fputs(text, f);
    fclose(f);
}

#endif
