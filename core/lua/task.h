/*
 * task.h - the Lua host's tasks (task.c): coroutines the event loop drives, and the work they wait
 * for. Part of the host (host.h).
 */
#ifndef COUNTERD_LUA_TASK_H
#define COUNTERD_LUA_TASK_H

struct host;
struct lua_State;

/*
 * Tasks: coroutines the event loop drives (request handlers of Lua roles, timers).
 * Inside a task, counterd.http.request() and counterd.sleep() yield until their event
 * comes, like OpenResty's cosockets; outside one they raise an error.
 */
struct task;

/* Called once when a task ends: nresults values are on top of co (err is NULL), or the
 * task failed with err ("file:line: message"). co's stack is cleared afterwards. */
typedef void (*task_done_fn)(struct lua_State *co, int nresults, const char *err, void *arg);

/*
 * Runs the function below nargs arguments on top of the host's main stack (both are
 * popped) in a new task. done may be NULL (errors are then logged).
 */
void task_spawn(struct host *h, int nargs, task_done_fn done, void *arg);
/*
 * The same for a task serving a request traced by span (may be NULL): the task's
 * counterd.http calls become its children, and counterd.trace names it. span must stay
 * open until the task ends (a request's span ends with its answer, which done gives).
 */
struct trace_span;
void task_spawn_traced(struct host *h, int nargs, task_done_fn done, void *arg,
                       struct trace_span *span);
/* The span of the request a task serves, or NULL. */
struct trace_span *task_span(struct task *t);
/* The task running on co, or NULL when co is not a task (a plain pcall, a policy). */
struct task *task_of(struct lua_State *co);
struct lua_State *task_state(struct task *t);
/* Resumes a task that yielded, with nargs values already pushed on its state. */
void task_resume(struct task *t, int nargs);

/*
 * Work a task waits for (a timer, an HTTP call) registers how to cancel it, so that
 * closing the host while tasks wait frees everything. Remove it when it completes.
 */
struct task_pending;
struct task_pending *task_pending_add(struct host *h, void (*cancel)(void *arg), void *arg);
void task_pending_remove(struct host *h, struct task_pending *p);

#endif
