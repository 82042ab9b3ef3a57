/*
 * scenario.h - the scenario runner: `counterd --role scenario --script FILE.lua
 * --base-port N` runs one Lua scenario against a running lab and exits with its verdict.
 *
 * It serves nothing. The scenario runs as a task of the same LuaJIT host the services
 * use, so its HTTP calls and sleeps yield to the event loop (lua/scenario/run.lua glues
 * the scenario library, lua/scenario/lib.lua, to counterd.http).
 */
#ifndef COUNTERD_ROLES_SCENARIO_H
#define COUNTERD_ROLES_SCENARIO_H

#include <stddef.h>

struct event_base;
struct config;
struct scenario;

/*
 * Loads the runner and compiles the scenario file; the scenario starts once the loop
 * runs, and breaks the loop when it ends.
 * @return the runner, or NULL with a sentence in err (a missing file, a syntax error).
 */
struct scenario *scenario_new(struct event_base *base, const struct config *cfg, char *err,
                              size_t errlen);
/*
 * @return the exit status: 0 every expectation held, 1 one failed or the scenario raised
 *         an error, 2 the lab is not running, 130 the loop stopped before the end (a signal).
 */
int scenario_status(const struct scenario *sc);
void scenario_free(struct scenario *sc);

#endif
