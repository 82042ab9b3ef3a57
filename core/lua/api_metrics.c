/*
 * api_metrics.c - counterd.metrics: Prometheus metrics from Lua.
 *
 *   local m = counterd.metrics.counter(name, help, "label1,label2")   (also .gauge,
 *             .histogram(name, help, labels [, {bucket bounds}]))
 *   m:inc(value, "v1", "v2")    counters and gauges
 *   m:set(value, "v1", "v2")    gauges
 *   m:observe(value, "v1", "v2") histograms
 *   m:limit(100, 1)             past 100 series, label 1's value reads "_other"
 *
 * Registering a name twice returns the same family (a reloaded role keeps its series).
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "../obs/metrics.h"
#include "host.h"
#include "api.h"

#define MT "counterd.metric"
#define MAX_LABELS 8
#define MAX_BUCKETS 32

static int add(lua_State *L, enum metric_type type)
{
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_checkstring(L, 2);
    const char *labels = luaL_optstring(L, 3, "");
    struct metrics *reg = host_metrics(host_of(L));
    if (!reg)
        return luaL_error(L, "counterd.metrics: this process has no metrics registry");
    struct metric *m = metrics_find(reg, name);
    if (m && metric_type_of(m) != type)
        return luaL_error(L, "counterd.metrics: %s is already registered with another type", name);
    if (!m) {
        double bounds[MAX_BUCKETS];
        int nb = 0;
        if (type == METRIC_HISTOGRAM && lua_istable(L, 4)) {
            for (int i = 1; nb < MAX_BUCKETS; i++) {
                lua_rawgeti(L, 4, i);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    break;
                }
                bounds[nb++] = luaL_checknumber(L, -1);
                lua_pop(L, 1);
            }
        }
        if (type == METRIC_HISTOGRAM && nb == 0) {
            nb = metrics_latency_nbuckets;
            memcpy(bounds, metrics_latency_buckets, (size_t)nb * sizeof *bounds);
        }
        m = metrics_add(reg, type, name, help, labels, bounds, nb);
    }
    struct metric **p = lua_newuserdata(L, sizeof *p);
    *p = m;
    luaL_getmetatable(L, MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int l_counter(lua_State *L)
{
    return add(L, METRIC_COUNTER);
}
static int l_gauge(lua_State *L)
{
    return add(L, METRIC_GAUGE);
}
static int l_histogram(lua_State *L)
{
    return add(L, METRIC_HISTOGRAM);
}

static struct metric_series *series_of(lua_State *L, struct metric **out)
{
    struct metric *m = *(struct metric **)luaL_checkudata(L, 1, MT);
    int n = metric_label_count(m);
    const char *values[MAX_LABELS];
    for (int i = 0; i < n; i++)
        values[i] = luaL_checkstring(L, 3 + i);
    *out = m;
    return n ? metric_series(m, values) : metric_only(m);
}

static int l_inc(lua_State *L)
{
    double v = luaL_optnumber(L, 2, 1);
    struct metric *m;
    struct metric_series *s = series_of(L, &m);
    if (metric_type_of(m) == METRIC_HISTOGRAM)
        return luaL_error(L, "inc on a histogram: use observe");
    if (metric_type_of(m) == METRIC_COUNTER && v < 0)
        return luaL_error(L, "a counter only goes up");
    metric_add(s, v);
    return 0;
}

static int l_set(lua_State *L)
{
    double v = luaL_checknumber(L, 2);
    struct metric *m;
    struct metric_series *s = series_of(L, &m);
    if (metric_type_of(m) != METRIC_GAUGE)
        return luaL_error(L, "set is for gauges");
    metric_set(s, v);
    return 0;
}

static int l_observe(lua_State *L)
{
    double v = luaL_checknumber(L, 2);
    struct metric *m;
    struct metric_series *s = series_of(L, &m);
    if (metric_type_of(m) != METRIC_HISTOGRAM)
        return luaL_error(L, "observe is for histograms");
    metric_observe(s, v);
    return 0;
}

/* m:limit(max_series, label_name): past max_series series, that label reads "_other". */
static int l_limit(lua_State *L)
{
    struct metric *m = *(struct metric **)luaL_checkudata(L, 1, MT);
    int max = (int)luaL_checkinteger(L, 2);
    int idx = (int)luaL_checkinteger(L, 3);
    if (idx < 1 || idx > metric_label_count(m))
        return luaL_error(L, "limit: label number %d out of range", idx);
    metric_limit(m, max, idx - 1);
    lua_settop(L, 1);
    return 1;
}

void api_metrics_inject(lua_State *L)
{
    luaL_newmetatable(L, MT);
    lua_newtable(L);
    lua_pushcfunction(L, l_inc);
    lua_setfield(L, -2, "inc");
    lua_pushcfunction(L, l_set);
    lua_setfield(L, -2, "set");
    lua_pushcfunction(L, l_observe);
    lua_setfield(L, -2, "observe");
    lua_pushcfunction(L, l_limit);
    lua_setfield(L, -2, "limit");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_counter);
    lua_setfield(L, -2, "counter");
    lua_pushcfunction(L, l_gauge);
    lua_setfield(L, -2, "gauge");
    lua_pushcfunction(L, l_histogram);
    lua_setfield(L, -2, "histogram");
    lua_setfield(L, -2, "metrics");
}
