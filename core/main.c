/*
 * main.c - counterd's entry point: configuration, signals, the event loop, one role.
 *
 * Everything runs on one libevent loop in one thread. SIGTERM and SIGINT stop the loop;
 * the role is then torn down in order and the process exits 0.
 */
#include <curl/curl.h>
#include <event2/event.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/fault.h"
#include "base/hash.h"
#include "base/log.h"
#include "roles/config.h"
#include "roles/consistent.h"
#include "roles/luarole.h"
#include "roles/region.h"
#include "roles/scenario.h"
#include "roles/wire.h"

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("signal %d: stopping", (int)sig);
    event_base_loopexit(arg, NULL);
}

/* Ten thousand client connections need more descriptors than the usual soft limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The process around a role: the log's name, fault points, signals, memory, descriptors,
 * hashing and curl. @return 0, or -1 with a sentence in err. */
static int process_init(const struct config *cfg, char *err, size_t errlen)
{
    char name[256];
    if (!strcmp(cfg->role, "region"))
        snprintf(name, sizeof name, "%s %s", cfg->role, cfg->node_id);
    else
        snprintf(name, sizeof name, "%s", cfg->role);
    log_init(name);
    if (fault_init(err, errlen) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    /* A fixed mmap threshold: large one-off buffers (a full-state answer) go back to the
     * OS when freed, instead of raising glibc's dynamic threshold and staying in the heap. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
    raise_fd_limit();
    hash_seed_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

/* Starts cfg's role on base, runs the loop until a signal stops it, then stops the role.
 * @return the exit status. */
static int run_role(struct event_base *base, const struct config *cfg)
{
    char err[512];
    struct region *rg = NULL;
    struct luarole *lr = NULL;
    struct consistent *cs = NULL;
    struct scenario *sc = NULL;
    struct wire *wr = NULL;
    int is_scenario = !strcmp(cfg->role, "scenario");
    if (!strcmp(cfg->role, "region"))
        rg = region_new(base, cfg, err, sizeof err);
    else if (!strcmp(cfg->role, "strong"))
        cs = consistent_new(base, cfg, err, sizeof err);
    else if (is_scenario)
        sc = scenario_new(base, cfg, err, sizeof err);
    else if (!strcmp(cfg->role, "wire"))
        wr = wire_new(base, cfg, err, sizeof err);
    else
        lr = luarole_new(base, cfg, err, sizeof err);
    if (!rg && !lr && !cs && !sc && !wr) {
        /* A scenario that cannot be loaded is a usage error (2), told without log noise. */
        if (is_scenario)
            fprintf(stderr, "scenario %s: %s\n", cfg->script, err);
        else
            log_error("cannot start: %s", err);
        return is_scenario ? 2 : 1;
    }
    event_base_dispatch(base);
    int rc = sc ? scenario_status(sc) : 0;
    region_free(rg);
    luarole_free(lr);
    consistent_free(cs);
    scenario_free(sc);
    wire_free(wr);
    return rc;
}

int main(int argc, char **argv)
{
    struct config cfg;
    char err[512];
    int rc = config_load(&cfg, argc, argv, err, sizeof err);
    if (rc == 0 && process_init(&cfg, err, sizeof err) < 0)
        rc = -1;
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "counterd: %s\n", err);
        config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    struct event_base *base = event_base_new();
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    rc = run_role(base, &cfg);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(base);
    config_free(&cfg);
    curl_global_cleanup();
    libevent_global_shutdown();
    return rc;
}
