/*
 * test_host.c - the Lua host (core/lua/host.c, sandbox.c, task.c) on its own, with no
 * policy of the product: loading a file and calling a named function of it, a reload that
 * keeps every old file when one new file fails, the budget stopping a runaway call, the
 * sandbox refusing io and writes to the counterd table, tasks that yield and are resumed,
 * and pending work cancelled when the host closes.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "lua/host.h"
#include "obs/metrics.h"
#include "unit.h"
#include "unit_lua.h"
#include "lua/task.h"
#include "lua/sandbox.h"

/* The test's Lua folder and its files (unit_lua.h). */
static const char *lua_dir(void)
{
    return unit_lua_dir("test_host");
}

static void put(const char *folder, const char *name, const char *text)
{
    unit_lua_put("test_host", folder, name, text);
}

static struct host *new_host(int budget_ms)
{
    struct host_info info = {"test", "test-1", "us-east", budget_ms};
    return host_new(lua_dir(), &info, NULL);
}

/* Calls policy.fn(arg) and returns its string result, or "error(<rc>) <err>". */
static const char *call(struct host *h, const char *policy, const char *fn, const char *arg)
{
    static char out[1024];
    lua_State *L = host_state(h);
    int top = lua_gettop(L);
    lua_pushstring(L, arg);
    char err[512];
    int rc = host_call_policy(h, policy, fn, 1, 1, err, sizeof err);
    if (rc != 0) {
        snprintf(out, sizeof out, "error(%d) %s", rc, err);
        CHECK(lua_gettop(L) == top); /* nothing pushed, the argument popped */
        return out;
    }
    snprintf(out, sizeof out, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    lua_settop(L, top);
    return out;
}

static const char echo_v1[] = "local M = {}\n"
                              "function M.echo(s) return 'v1 ' .. s end\n"
                              "return M\n";
static const char echo_v2[] = "local M = {}\n"
                              "function M.echo(s) return 'v2 ' .. s end\n"
                              "return M\n";

/* ---------------------------------------------------------------- loading */

static void test_load_and_call(void)
{
    struct host *h = new_host(50);
    char err[512];
    put("policies", "echo", echo_v1);
    CHECK(!host_has_policy(h, "echo"));
    CHECK_STR_EQ(call(h, "echo", "echo", "x"), "error(-1) policy echo is not loaded");
    REQUIRE(host_load_policy(h, "echo", err, sizeof err) == 0);
    CHECK(host_has_policy(h, "echo"));
    CHECK_STR_EQ(call(h, "echo", "echo", "x"), "v1 x");
    CHECK_STR_EQ(call(h, "echo", "missing", "x"), "error(-1) echo.missing is not a function");
    /* The module table itself, for a caller that reads fields. */
    lua_State *L = host_state(h);
    REQUIRE(host_push_policy(h, "echo") == 0);
    CHECK(lua_istable(L, -1));
    lua_pop(L, 1);
    CHECK(host_push_policy(h, "nope") == -1);
    host_free(h);
}

static void test_load_errors_keep_the_old_file(void)
{
    struct host *h = new_host(50);
    char err[512];
    put("policies", "echo", echo_v1);
    REQUIRE(host_load_policy(h, "echo", err, sizeof err) == 0);
    static const struct {
        const char *text, *error;
    } bad[] = {
        {"local M = = {}\n", "echo.lua:1: unexpected symbol near '='"},
        {"return 42\n", "echo.lua: the file must return a table of functions (it returned number)"},
        {"local M = {}\nfunction M.init()\n  error('no start')\nend\nreturn M\n",
         "echo.lua:3: no start"},
        {"local x = nil\nreturn x.y\n", "echo.lua:2: attempt to index local 'x' (a nil value)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unit_context("file %zu", i);
        put("policies", "echo", bad[i].text);
        err[0] = '\0';
        CHECK(host_load_policy(h, "echo", err, sizeof err) == -1);
        CHECK(strstr(err, bad[i].error) != NULL);
        if (!strstr(err, bad[i].error))
            fprintf(stderr, "  got: %s\n", err);
        CHECK_STR_EQ(call(h, "echo", "echo", "x"), "v1 x");
    }
    unit_context("%s", "");
    CHECK(host_load_policy(h, "absent", err, sizeof err) == -1);
    CHECK(strstr(err, "absent.lua") != NULL);
    CHECK(!host_has_policy(h, "absent"));
    host_free(h);
}

static void test_declared_entry_point(void)
{
    struct host *h = new_host(50);
    char err[512];
    host_policy_entry(h, "echo", "shout");
    put("policies", "echo", echo_v1);
    CHECK(host_load_policy(h, "echo", err, sizeof err) == -1);
    CHECK(strstr(err, "echo.lua: the file must return a table with a shout() function") != NULL);
    put("policies", "echo", "local M = {}\nfunction M.shout(s) return s:upper() end\nreturn M\n");
    CHECK(host_load_policy(h, "echo", err, sizeof err) == 0);
    CHECK_STR_EQ(call(h, "echo", "shout", "x"), "X");
    host_free(h);
}

/* ---------------------------------------------------------------- reload */

static void test_reload_is_a_transaction(void)
{
    struct host *h = new_host(50);
    char err[512];
    put("policies", "a", echo_v1);
    put("policies", "b", echo_v1);
    put("roles", "r", "local M = {}\nfunction M.handle() return 'v1' end\nreturn M\n");
    REQUIRE(host_load_policy(h, "a", err, sizeof err) == 0);
    REQUIRE(host_load_policy(h, "b", err, sizeof err) == 0);
    REQUIRE(host_load_role(h, "r", err, sizeof err) == 0);

    /* a and the role are good, b does not compile: nothing is swapped. */
    put("policies", "a", echo_v2);
    put("roles", "r", "local M = {}\nfunction M.handle() return 'v2' end\nreturn M\n");
    put("policies", "b", "local M = {}\nfunction M.echo(s)\n  return 'v2 ' .. s\nreturn M\n");
    struct buf files = {0};
    CHECK(host_reload(h, &files, err, sizeof err) == -1);
    CHECK(strstr(err, "b.lua:4: 'end' expected (to close 'function' at line 2) near 'return'") !=
          NULL);
    CHECK_STR_EQ(call(h, "a", "echo", "x"), "v1 x");
    CHECK_STR_EQ(call(h, "b", "echo", "x"), "v1 x");
    lua_State *L = host_state(h);
    REQUIRE(host_push_role_fn(h, "handle") == 0);
    lua_call(L, 0, 1);
    CHECK_STR_EQ(lua_tostring(L, -1), "v1");
    lua_pop(L, 1);

    /* b fixed: everything is swapped at once, and the answer lists the files. */
    put("policies", "b", echo_v2);
    buf_reset(&files);
    CHECK(host_reload(h, &files, err, sizeof err) == 0);
    CHECK_STR_EQ(call(h, "a", "echo", "x"), "v2 x");
    CHECK_STR_EQ(call(h, "b", "echo", "x"), "v2 x");
    REQUIRE(host_push_role_fn(h, "handle") == 0);
    lua_call(L, 0, 1);
    CHECK_STR_EQ(lua_tostring(L, -1), "v2");
    lua_pop(L, 1);
    buf_putc(&files, '\0');
    CHECK(strstr(files.data, "/policies/a.lua\n") != NULL);
    CHECK(strstr(files.data, "/policies/b.lua\n") != NULL);
    CHECK(strstr(files.data, "/roles/r.lua") != NULL);
    buf_free(&files);
    host_free(h);
}

/* ---------------------------------------------------------------- budget */

static void test_budget_stops_a_runaway_call(void)
{
    struct host *h = new_host(50);
    char err[512];
    put("policies", "loop",
        "local M = {}\n"
        "function M.spin(s)\n"
        "  local n = 0\n"
        "  while true do n = n + 1 end\n"
        "end\n"
        "function M.catch(s)\n"
        "  while true do pcall(function() while true do end end) end\n"
        "end\n"
        "function M.ok(s) return 'fine ' .. s end\n"
        "return M\n");
    REQUIRE(host_load_policy(h, "loop", err, sizeof err) == 0);
    const char *fns[] = {"spin", "catch"};
    for (int i = 0; i < 2; i++) {
        unit_context("%s", fns[i]);
        double t0 = clock_mono_ms();
        const char *r = call(h, "loop", fns[i], "x");
        double ms = clock_mono_ms() - t0;
        CHECK(strncmp(r, "error(-2) ", 10) == 0);
        CHECK(strstr(r, "loop.lua:") != NULL);
        CHECK(strstr(r, "policy ran longer than its budget of 50 ms") != NULL);
        CHECK(ms >= 45 && ms < 3000);
        if (!(ms >= 45 && ms < 3000))
            fprintf(stderr, "  took %.0f ms\n", ms);
    }
    unit_context("%s", "");
    /* The budget ends with the call: the next one runs, and nothing is left running. */
    CHECK_STR_EQ(call(h, "loop", "ok", "x"), "fine x");
    CHECK(sandbox_deadline_ms(host_state(h)) == 0);
    CHECK(!sandbox_in_policy(host_state(h)));
    host_free(h);
}

/* ---------------------------------------------------------------- sandbox */

static void test_sandbox_forbids_io_and_api_writes(void)
{
    struct host *h = new_host(50);
    char err[512];
    static const struct {
        const char *text, *error;
    } bad[] = {
        {"local f = io.open('/etc/hostname')\nreturn {}\n",
         "p.lua:1: attempt to index global 'io' (a nil value)"},
        {"counterd.x = 1\nreturn {}\n", "p.lua:1: counterd.x cannot be changed from a sandbox"},
        {"counterd.shared.x = 1\nreturn {}\n",
         "p.lua:1: counterd.x cannot be changed from a sandbox"},
        {"os.execute('true')\nreturn {}\n",
         "p.lua:1: attempt to call field 'execute' (a nil value)"},
        {"loadfile('/etc/hostname')\nreturn {}\n",
         "p.lua:1: attempt to call global 'loadfile' (a nil value)"},
        {"dofile('/etc/hostname')\nreturn {}\n",
         "p.lua:1: attempt to call global 'dofile' (a nil value)"},
        {"require('io')\nreturn {}\n", "p.lua:1: attempt to call global 'require' (a nil value)"},
        {"local t = getmetatable('').__index\nreturn {}\n",
         "p.lua:1: attempt to index a boolean value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unit_context("%s", bad[i].text);
        put("policies", "p", bad[i].text);
        err[0] = '\0';
        CHECK(host_load_policy(h, "p", err, sizeof err) == -1);
        CHECK(strstr(err, bad[i].error) != NULL);
        if (!strstr(err, bad[i].error))
            fprintf(stderr, "  got: %s\n", err);
    }
    unit_context("%s", "");
    /* The same at call time, and the host's own table is unchanged. */
    put("policies", "p",
        "local M = {}\n"
        "function M.write(s) io.write(s) end\n"
        "function M.poke(s) counterd.x = s end\n"
        "return M\n");
    REQUIRE(host_load_policy(h, "p", err, sizeof err) == 0);
    const char *r = call(h, "p", "write", "x");
    CHECK(strstr(r, "error(-2) ") == r && strstr(r, "p.lua:2: attempt to index global 'io'"));
    r = call(h, "p", "poke", "x");
    CHECK(strstr(r, "error(-2) ") == r &&
          strstr(r, "p.lua:3: counterd.x cannot be changed from a sandbox"));
    lua_State *L = host_state(h);
    lua_getglobal(L, "counterd");
    lua_getfield(L, -1, "x");
    CHECK(lua_isnil(L, -1));
    lua_pop(L, 2);
    host_free(h);
}

/* ---------------------------------------------------------------- tasks */

static struct task *waiting;
static int done_calls;
static char done_result[256];

/* wait() from a task: yields until the test resumes it. */
static int l_wait(lua_State *L)
{
    waiting = task_of(L);
    return lua_yield(L, 0);
}

static void on_done(lua_State *co, int nresults, const char *err, void *arg)
{
    done_calls++;
    if (err)
        snprintf(done_result, sizeof done_result, "error %s", err);
    else
        snprintf(done_result, sizeof done_result, "%d %s", nresults,
                 nresults ? lua_tostring(co, -1) : "");
    CHECK(arg == (void *)&done_calls);
}

static void spawn(struct host *h, const char *code, const char *arg)
{
    lua_State *L = host_state(h);
    if (luaL_loadstring(L, code) != 0) {
        fprintf(stderr, "spawn: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pushstring(L, arg);
    task_spawn(h, 1, on_done, &done_calls);
}

static int cancels;
static void cancel(void *arg)
{
    cancels++;
    CHECK(arg == (void *)&cancels);
}

static void test_tasks_yield_and_resume(void)
{
    struct host *h = new_host(50);
    lua_State *L = host_state(h);
    lua_register(L, "wait", l_wait);
    CHECK(task_of(L) == NULL); /* the main state is no task */

    /* A task that runs to the end at once. */
    done_calls = 0;
    spawn(h, "local s = ... return 'at once ' .. s", "a");
    CHECK(done_calls == 1);
    CHECK_STR_EQ(done_result, "1 at once a");

    /* One that waits: done only when resumed, with what it was resumed with. */
    waiting = NULL;
    spawn(h, "local s = ... local got = wait() return s .. ' then ' .. got", "b");
    CHECK(done_calls == 1);
    REQUIRE(waiting != NULL);
    lua_State *co = task_state(waiting);
    CHECK(task_of(co) == waiting);
    CHECK(task_span(waiting) == NULL);
    lua_pushstring(co, "resumed");
    task_resume(waiting, 1);
    CHECK(done_calls == 2);
    CHECK_STR_EQ(done_result, "1 b then resumed");

    /* One that fails after waiting: done gets the error with file:line. */
    waiting = NULL;
    spawn(h, "wait()\nerror('broke')", "c");
    REQUIRE(waiting != NULL);
    task_resume(waiting, 0);
    CHECK(done_calls == 3);
    CHECK_STR_EQ(done_result, "error [string \"wait()...\"]:2: broke");

    /* Closing the host while a task waits cancels its pending work and frees it. */
    waiting = NULL;
    cancels = 0;
    spawn(h, "wait() return 'never'", "d");
    REQUIRE(waiting != NULL);
    struct task_pending *p = task_pending_add(h, cancel, &cancels);
    struct task_pending *q = task_pending_add(h, cancel, &cancels);
    task_pending_remove(h, p); /* completed: not cancelled */
    (void)q;
    host_free(h);
    CHECK(cancels == 1);
    CHECK(done_calls == 3);
}

/* ---------------------------------------------------------------- modules and shared */

static void test_modules_and_shared(void)
{
    struct host *h = new_host(50);
    lua_State *L = host_state(h);
    char err[512];
    put("conf", "lab", "return { regions = function() return { { name = 'r1' } } end }\n");
    REQUIRE(host_load_module(h, "conf", "lab", err, sizeof err) == 0);
    lua_getfield(L, -1, "regions");
    REQUIRE(host_pcall(h, 0, 1, err, sizeof err) == 0);
    lua_rawgeti(L, -1, 1);
    lua_getfield(L, -1, "name");
    CHECK_STR_EQ(lua_tostring(L, -1), "r1");
    lua_settop(L, 0);
    lua_pushcfunction(L, lua_error);
    lua_pushstring(L, "conf broke");
    CHECK(host_pcall(h, 1, 0, err, sizeof err) == -1);
    CHECK_STR_EQ(err, "conf broke");
    CHECK(lua_gettop(L) == 0);
    CHECK(host_load_module(h, "conf", "absent", err, sizeof err) == -1);
    CHECK(lua_gettop(L) == 0);

    host_shared_set_number(h, "k", 42);
    CHECK_EQ_DBL(host_shared_get_number(h, "k"), 42);
    host_shared_set_number(h, "k", NAN);
    CHECK(host_shared_get_number(h, "k") != host_shared_get_number(h, "k"));
    host_free(h);
}

/* ---------------------------------------------------------------- counting */

/* Whether the rendered metrics hold this exact line. */
static int has_line(struct metrics *m, const char *line)
{
    struct buf out = {0};
    metrics_render(m, &out);
    buf_putc(&out, '\0');
    char want[256];
    snprintf(want, sizeof want, "\n%s\n", line);
    int found = strstr(out.data, want) != NULL;
    if (!found)
        fprintf(stderr, "  no line \"%s\" in:\n%s", line, out.data);
    buf_free(&out);
    return found;
}

static void test_calls_errors_and_reloads_are_counted(void)
{
    struct metrics *m = metrics_new();
    struct host_info info = {"test", "test-1", "us-east", 50};
    struct host *h = host_new(lua_dir(), &info, m);
    char err[512];
    put("policies", "echo",
        "local M = {}\n"
        "function M.echo(s) return s end\n"
        "function M.fail(s) error('no') end\n"
        "return M\n");
    REQUIRE(host_load_policy(h, "echo", err, sizeof err) == 0);
    CHECK_STR_EQ(call(h, "echo", "echo", "x"), "x");
    const char *r = call(h, "echo", "fail", "x");
    CHECK(strncmp(r, "error(-2) ", 10) == 0 && strstr(r, "echo.lua:3: no") != NULL);
    CHECK_STR_EQ(call(h, "absent", "echo", "x"), "error(-1) policy absent is not loaded");
    /* Two calls (the absent policy is not one); the failed one counted as an error, and
     * one more its caller found (an answer it could not use). */
    host_count_error(h, "echo");
    CHECK(has_line(m, "counterd_lua_policy_calls_total{policy=\"echo\"} 2"));
    CHECK(has_line(m, "counterd_policy_errors_total{policy=\"echo\"} 2"));
    CHECK(host_reload(h, NULL, err, sizeof err) == 0);
    put("policies", "echo", "return 1\n");
    CHECK(host_reload(h, NULL, err, sizeof err) == -1);
    CHECK(has_line(m, "counterd_lua_reloads_total{result=\"ok\"} 1"));
    CHECK(has_line(m, "counterd_lua_reloads_total{result=\"error\"} 1"));
    host_free(h);
    metrics_free(m);
}

UNIT_MAIN("host", UNIT_CASE(test_load_and_call), UNIT_CASE(test_load_errors_keep_the_old_file),
          UNIT_CASE(test_declared_entry_point), UNIT_CASE(test_reload_is_a_transaction),
          UNIT_CASE(test_budget_stops_a_runaway_call),
          UNIT_CASE(test_sandbox_forbids_io_and_api_writes), UNIT_CASE(test_tasks_yield_and_resume),
          UNIT_CASE(test_modules_and_shared), UNIT_CASE(test_calls_errors_and_reloads_are_counted))
