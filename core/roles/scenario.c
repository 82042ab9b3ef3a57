/*
 * scenario.c - the scenario runner (see scenario.h).
 *
 * The C side only loads: lua/scenario/lib.lua and lua/scenario/run.lua (sandboxed like
 * every module of the host), and the scenario file itself, compiled into an environment
 * of its own that run.lua fills with the library's functions. Then run.main(lib, chunk,
 * env, host) runs as one task; its result is the exit status. Output goes to stdout
 * (progress, PASS) and stderr (FAIL, a lab that is not running), never through the log.
 */
#include "scenario.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"
#include "../lua/host.h"
#include "../lua/task.h"
#include "../net/client.h"
#include "../obs/metrics.h"
#include "config.h"

struct scenario {
    struct event_base *base;
    struct metrics *metrics;
    struct client *client;
    struct host *lua;
    int task_args; /* run.main and its arguments wait on the main stack until the loop runs */
    int status;    /* -1 while the scenario runs */
};

/* host.write(fd, text): 1 is stdout, 2 stderr; flushed at once, so progress shows live. */
static int l_write(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    FILE *f = fd == 2 ? stderr : stdout;
    fwrite(s, 1, len, f);
    fflush(f);
    return 0;
}

static void on_done(lua_State *co, int nresults, const char *err, void *arg)
{
    struct scenario *sc = arg;
    if (err) {
        fprintf(stderr, "scenario runner failed: %s\n", err);
        sc->status = 1;
    } else {
        int st = nresults >= 1 && lua_isnumber(co, 1) ? (int)lua_tointeger(co, 1) : 1;
        sc->status = st >= 0 && st <= 2 ? st : 1;
    }
    event_base_loopbreak(sc->base);
}

/* Starts the task from inside the loop: a scenario that ended at once could not break a
 * loop that had not started yet. */
static void start(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct scenario *sc = arg;
    task_spawn(sc->lua, sc->task_args, on_done, sc);
    sc->task_args = -1;
}

/* counterd.config as run.lua reads it: the role, and the admin token when there is one. */
static void push_config(lua_State *L, const struct config *cfg)
{
    lua_getglobal(L, "counterd");
    lua_createtable(L, 0, 3);
    lua_pushstring(L, cfg->role);
    lua_setfield(L, -2, "role");
    lua_pushinteger(L, cfg->base_port);
    lua_setfield(L, -2, "base_port");
    if (cfg->admin_token[0]) {
        lua_pushstring(L, cfg->admin_token);
        lua_setfield(L, -2, "admin_token");
    }
    lua_setfield(L, -2, "config");
    lua_pop(L, 1);
}

struct scenario *scenario_new(struct event_base *base, const struct config *cfg, char *err,
                              size_t errlen)
{
    struct scenario *sc = xcalloc(1, sizeof *sc);
    sc->base = base;
    sc->status = -1;
    sc->task_args = -1;
    sc->metrics = metrics_new();
    sc->client = client_new(base);
    struct host_info li = {cfg->role, cfg->node_id, cfg->region, cfg->policy_budget_ms};
    sc->lua = host_new(cfg->lua_dir, &li, sc->metrics);
    host_set_client(sc->lua, sc->client);
    host_set_base(sc->lua, base);
    lua_State *L = host_state(sc->lua);
    push_config(L, cfg);
    int top = lua_gettop(L);

    /* run.main, lib, the scenario's chunk, its environment, the host table. */
    if (host_load_module(sc->lua, "scenario", "run", err, errlen) < 0)
        goto fail;
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "%s/scenario/run.lua has no main function", cfg->lua_dir);
        goto fail;
    }
    if (host_load_module(sc->lua, "scenario", "lib", err, errlen) < 0)
        goto fail;
    if (luaL_loadfile(L, cfg->script) != 0) {
        snprintf(err, errlen, "cannot load the scenario: %s", lua_tostring(L, -1));
        goto fail;
    }
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfenv(L, -3);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, cfg->script);
    lua_setfield(L, -2, "script");
    lua_pushinteger(L, cfg->base_port);
    lua_setfield(L, -2, "base_port");
    lua_pushcfunction(L, l_write);
    lua_setfield(L, -2, "write");
    /* How a failure names the scenario's file:line (the sandbox has no debug library). */
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "getinfo");
    lua_remove(L, -2);
    lua_setfield(L, -2, "getinfo");
    sc->task_args = 4;
    if (event_base_once(base, -1, EV_TIMEOUT, start, sc, NULL) < 0) {
        snprintf(err, errlen, "cannot schedule the scenario");
        goto fail;
    }
    return sc;
fail:
    lua_settop(L, top);
    sc->task_args = -1;
    scenario_free(sc);
    return NULL;
}

int scenario_status(const struct scenario *sc)
{
    return sc->status >= 0 ? sc->status : 130;
}

void scenario_free(struct scenario *sc)
{
    if (!sc)
        return;
    /* Tasks first (they own pending calls and timers), then curl. */
    host_free(sc->lua);
    client_free(sc->client);
    metrics_free(sc->metrics);
    free(sc);
}
