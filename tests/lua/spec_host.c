/*
 * spec_host.c - runs busted specs inside the Lua host the server builds, so that a spec
 * loads a policy exactly as a node does: through host_load_policy (the sandbox, the
 * JIT off, the entry points of core/roles/policy.c, init()), with the real counterd
 * table. A policy that uses io or writes counterd.x then fails its spec, as it would fail
 * on reload, instead of passing against a hand-made stand-in.
 *
 *   lua_spec_host <lua_dir> <busted arguments...>
 *
 * The specs see, besides busted's globals and the host's own `counterd`:
 *
 *   counterd_spec.policy(name)         loads <lua_dir>/policies/<name>.lua afresh and
 *                                      returns its module table (raises the load error)
 *   counterd_spec.module(folder, name) runs <lua_dir>/<folder>/<name>.lua in a fresh
 *                                      sandbox and returns its value (raises on error)
 *   counterd_spec.reset()              empties counterd.shared
 *
 * busted itself runs in the host's main state, outside any sandbox. This file must never
 * build a sandbox of its own: what it tests is the host's.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>

#include "lua/host.h"
#include "roles/policy.h"

static struct host *spec_host;

static int l_policy(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    char err[1024];
    if (host_load_policy(spec_host, name, err, sizeof err) < 0)
        return luaL_error(L, "%s", err);
    lua_State *main = host_state(spec_host);
    host_push_policy(spec_host, name);
    if (main != L)
        lua_xmove(main, L, 1);
    return 1;
}

static int l_module(lua_State *L)
{
    const char *folder = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
    char err[1024];
    lua_State *main = host_state(spec_host);
    if (host_load_module(spec_host, folder, name, err, sizeof err) < 0)
        return luaL_error(L, "%s", err);
    if (main != L)
        lua_xmove(main, L, 1);
    return 1;
}

/* api_shared.c keeps counterd.shared's values in this registry table. */
static int l_reset(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.shared.data");
    return 0;
}

static const char runner[] = "require('busted.runner')({ standalone = false })";

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s <lua_dir> <busted arguments...>\n", argv[0]);
        return 2;
    }
    struct host_info info = {"spec", "spec-1", "us-east", 50};
    spec_host = host_new(argv[1], &info, NULL);
    policy_declare(spec_host);
    lua_State *L = host_state(spec_host);
    static const luaL_Reg fns[] = {
        {"policy", l_policy}, {"module", l_module}, {"reset", l_reset}, {NULL, NULL}};
    luaL_register(L, "counterd_spec", fns);
    lua_pop(L, 1);
    lua_createtable(L, argc - 2, 1);
    lua_pushstring(L, "busted");
    lua_rawseti(L, -2, 0);
    for (int i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    /* busted exits the process itself when a spec fails; it returns when all pass. */
    int rc = luaL_loadbuffer(L, runner, sizeof runner - 1, "=spec_host") || lua_pcall(L, 0, 0, 0);
    if (rc != 0)
        fprintf(stderr, "spec_host: %s\n",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "busted failed");
    host_free(spec_host);
    return rc == 0 ? 0 : 1;
}
