/*
 * test_config.c - core/roles/config.c: the defaults, every setting from its environment
 * variable and from its flag (flags win), both flag forms (--x v, --x=v), the bounds of
 * every integer setting, and every bad value refused with a sentence naming the flag or the
 * variable that gave it.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/config.h"
#include "unit.h"

/* Every variable config_load reads: cleared before each case, so the test does not depend
 * on the environment it runs in. */
static const char *const env_names[] = {"COUNTERD_ROLE",
                                        "COUNTERD_BIND",
                                        "SERVICE_PORT",
                                        "REGION",
                                        "NODE_ID",
                                        "PEER_ENDPOINTS",
                                        "SYNC_INTERVAL_MS",
                                        "SYNC_TIMEOUT_MS",
                                        "COUNTERD_FOLD_AFTER_MS",
                                        "COUNTERD_LUA_DIR",
                                        "COUNTERD_MAX_CONNS",
                                        "COUNTERD_IDLE_TIMEOUT_MS",
                                        "COUNTERD_REQUEST_TIMEOUT_MS",
                                        "COUNTERD_METRICS_TOP_N",
                                        "COUNTERD_POLICY_BUDGET_MS",
                                        "DATA_DIR",
                                        "FSYNC_POLICY",
                                        "COUNTERD_SNAPSHOT_BYTES",
                                        "COUNTERD_ADMIN_TOKEN",
                                        "REGION_ENDPOINTS",
                                        "COUNTER_ENDPOINTS",
                                        "COORDINATOR_URL",
                                        "COUNTERD_UPSTREAM_TIMEOUT_MS",
                                        "COUNTERD_WEB_DIR",
                                        "STRONG_URL",
                                        "STRONG_EMBEDDED_URL",
                                        "COUNTERD_WATCH",
                                        "STRONG_ALLOW_VOLATILE",
                                        "COUNTERD_SCRIPT",
                                        "COUNTERD_BASE_PORT",
                                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                                        "OTEL_SERVICE_NAME",
                                        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                                        "OTEL_BSP_MAX_QUEUE_SIZE",
                                        "OTEL_BSP_SCHEDULE_DELAY",
                                        "OTEL_BSP_EXPORT_TIMEOUT",
                                        "COUNTERD_NET",
                                        "WIRE_NETNS",
                                        "WIRE_SUBNET",
                                        "WIRE_DEVICE",
                                        "WIRE_RELAY",
                                        "WIRE_QUEUE"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++)
        unsetenv(env_names[i]);
}

/* config_load on a NULL-terminated list of arguments (argv[0] added). */
static int load(struct config *c, char *err, size_t errlen, const char *const *args)
{
    char *argv[32] = {"counterd"};
    int argc = 1;
    for (; args && args[argc - 1] && argc < 31; argc++)
        argv[argc] = (char *)args[argc - 1];
    argv[argc] = NULL;
    err[0] = '\0';
    return config_load(c, argc, argv, err, errlen);
}

static void test_defaults(void)
{
    clear_env();
    struct config c;
    char err[512];
    REQUIRE(load(&c, err, sizeof err, NULL) == 0);
    CHECK_STR_EQ(err, "");
    CHECK_STR_EQ(c.role, "region");
    CHECK_STR_EQ(c.bind, "127.0.0.1");
    CHECK_EQ_I64(c.port, 8000);
    CHECK_STR_EQ(c.region, "us-east");
    CHECK_STR_EQ(c.node_id, "us-east-1");
    CHECK_EQ_I64(c.npeers, 0);
    CHECK_EQ_I64(c.sync_interval_ms, 5000);
    CHECK_EQ_I64(c.sync_timeout_ms, 3000);
    CHECK_EQ_I64(c.fold_after_ms, 60000);
    CHECK_EQ_I64(c.max_conns, 10000);
    CHECK_EQ_I64(c.idle_timeout_ms, 60000);
    CHECK_EQ_I64(c.request_timeout_ms, 10000);
    CHECK_EQ_I64(c.metrics_top_n, 100);
    CHECK_EQ_I64(c.policy_budget_ms, 50);
    CHECK_STR_EQ(c.data_dir, "");
    CHECK_STR_EQ(c.fsync, "everysec");
    CHECK_EQ_I64(c.snapshot_bytes, 64 << 20);
    CHECK_STR_EQ(c.admin_token, "");
    CHECK_STR_EQ(c.region_endpoints, "");
    CHECK_STR_EQ(c.region_endpoints_from, "REGION_ENDPOINTS");
    CHECK_EQ_I64(c.request_timeout_up_ms, 2000);
    CHECK_EQ_I64(c.watch, 0);
    CHECK_EQ_I64(c.allow_volatile_replicas, 0);
    CHECK_EQ_I64(c.base_port, 8000);
    CHECK_STR_EQ(c.otlp_endpoint, "");
    CHECK_STR_EQ(c.service_name, "");
    CHECK_EQ_I64(c.trace_batch, 512);
    CHECK_EQ_I64(c.trace_queue, 2048);
    CHECK_EQ_I64(c.trace_delay_ms, 1000);
    CHECK_EQ_I64(c.trace_timeout_ms, 5000);
    CHECK_EQ_I64(c.net, 0);
    CHECK_STR_EQ(c.wire_netns, "");
    CHECK_STR_EQ(c.wire_subnet, "10.31.64");
    CHECK_STR_EQ(c.wire_device, "cdwire");
    CHECK_STR_EQ(c.wire_relay, "");
    CHECK_EQ_I64(c.wire_queue, 10000);
    CHECK(c.lua_dir[0] != '\0');
    CHECK(c.web_dir[0] != '\0');
    config_free(&c);
}

/* ---------------------------------------------------------------- integer settings */

struct int_opt {
    const char *flag, *env;
    size_t off;
    int min, max;
};

#define IOPT(field, flag, env, lo, hi)                                                             \
    {                                                                                              \
        flag, env, offsetof(struct config, field), lo, hi                                          \
    }

static const struct int_opt int_opts[] = {
    IOPT(port, "--port", "SERVICE_PORT", 1, 65535),
    IOPT(sync_interval_ms, "--sync-interval-ms", "SYNC_INTERVAL_MS", 10, 86400000),
    IOPT(sync_timeout_ms, "--sync-timeout-ms", "SYNC_TIMEOUT_MS", 10, 600000),
    IOPT(fold_after_ms, "--fold-after-ms", "COUNTERD_FOLD_AFTER_MS", 0, 86400000),
    IOPT(max_conns, "--max-conns", "COUNTERD_MAX_CONNS", 1, 1000000),
    IOPT(idle_timeout_ms, "--idle-timeout-ms", "COUNTERD_IDLE_TIMEOUT_MS", 10, 86400000),
    IOPT(request_timeout_ms, "--request-timeout-ms", "COUNTERD_REQUEST_TIMEOUT_MS", 10, 86400000),
    IOPT(metrics_top_n, "--metrics-top-n", "COUNTERD_METRICS_TOP_N", 1, 100000),
    IOPT(policy_budget_ms, "--policy-budget-ms", "COUNTERD_POLICY_BUDGET_MS", 1, 10000),
    IOPT(snapshot_bytes, "--snapshot-bytes", "COUNTERD_SNAPSHOT_BYTES", 4096, 2147483647),
    IOPT(request_timeout_up_ms, "--upstream-timeout-ms", "COUNTERD_UPSTREAM_TIMEOUT_MS", 10,
         600000),
    IOPT(base_port, "--base-port", "COUNTERD_BASE_PORT", 1, 65455),
    IOPT(trace_batch, "--trace-batch", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 100000),
    IOPT(trace_queue, "--trace-queue", "OTEL_BSP_MAX_QUEUE_SIZE", 1, 1000000),
    IOPT(trace_delay_ms, "--trace-delay-ms", "OTEL_BSP_SCHEDULE_DELAY", 10, 600000),
    IOPT(trace_timeout_ms, "--trace-timeout-ms", "OTEL_BSP_EXPORT_TIMEOUT", 10, 600000),
    IOPT(wire_queue, "--wire-queue", "WIRE_QUEUE", 1, 1000000),
};

static int int_field(const struct config *c, const struct int_opt *o)
{
    return *(const int *)((const char *)c + o->off);
}

/* value accepted from the flag (both forms) and from the variable. */
static void check_int_ok(const struct int_opt *o, long value)
{
    struct config c;
    char err[512], v[32], eq[96];
    snprintf(v, sizeof v, "%ld", value);
    snprintf(eq, sizeof eq, "%s=%s", o->flag, v);
    unit_context("%s %s", o->flag, v);
    clear_env();
    const char *a1[] = {o->flag, v, NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, a1), 0);
    CHECK_STR_EQ(err, "");
    CHECK_EQ_I64(int_field(&c, o), value);
    config_free(&c);
    const char *a2[] = {eq, NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, a2), 0);
    CHECK_EQ_I64(int_field(&c, o), value);
    config_free(&c);
    setenv(o->env, v, 1);
    CHECK_EQ_I64(load(&c, err, sizeof err, NULL), 0);
    CHECK_STR_EQ(err, "");
    CHECK_EQ_I64(int_field(&c, o), value);
    config_free(&c);
    clear_env();
    unit_context("%s", "");
}

/* value refused from the flag and from the variable, each naming itself and the value. */
static void check_int_bad(const struct int_opt *o, const char *v)
{
    struct config c;
    char err[512], eq[96], range[64];
    snprintf(eq, sizeof eq, "%s=%s", o->flag, v);
    snprintf(range, sizeof range, "from %d to %d", o->min, o->max);
    unit_context("%s '%s'", o->flag, v);
    clear_env();
    const char *a1[] = {o->flag, v, NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, a1), -1);
    CHECK(strstr(err, o->flag) == err);
    CHECK(strstr(err, range) != NULL);
    CHECK(*v == '\0' || strstr(err, v) != NULL);
    config_free(&c);
    const char *a2[] = {eq, NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, a2), -1);
    CHECK(strstr(err, o->flag) == err);
    config_free(&c);
    if (*v) { /* an empty variable is the same as none */
        setenv(o->env, v, 1);
        CHECK_EQ_I64(load(&c, err, sizeof err, NULL), -1);
        CHECK(strstr(err, o->env) == err);
        CHECK(strstr(err, range) != NULL);
        CHECK(strstr(err, v) != NULL);
        config_free(&c);
    }
    clear_env();
    unit_context("%s", "");
}

static void test_int_bounds(void)
{
    for (size_t i = 0; i < sizeof int_opts / sizeof *int_opts; i++) {
        const struct int_opt *o = &int_opts[i];
        check_int_ok(o, o->min);
        check_int_ok(o, o->max);
        check_int_ok(o, o->min + (o->max - o->min) / 2);
        char v[32];
        snprintf(v, sizeof v, "%ld", (long)o->min - 1);
        check_int_bad(o, v);
        snprintf(v, sizeof v, "%ld", (long)o->max + 1);
        check_int_bad(o, v);
        check_int_bad(o, "");
        check_int_bad(o, "abc");
        check_int_bad(o, "12x");
        check_int_bad(o, "1.5");
        check_int_bad(o, "99999999999999999999"); /* beyond long */
    }
}

/* ---------------------------------------------------------------- strings and flags */

static void test_strings(void)
{
    clear_env();
    struct config c;
    char err[512];
    const char *a[] = {"--role",
                       "gateway",
                       "--bind=0.0.0.0",
                       "--region",
                       "eu-west",
                       "--node-id",
                       "eu-west-7",
                       "--data-dir",
                       "/tmp/d",
                       "--fsync=always",
                       "--admin-token",
                       "s3cret",
                       "--regions",
                       "a=http://127.0.0.1:1,b=127.0.0.1:2",
                       "--coordinator",
                       "http://127.0.0.1:9",
                       "--strong",
                       "http://127.0.0.1:10",
                       "--web-dir",
                       "/w",
                       "--lua-dir",
                       "/l",
                       "--otlp-endpoint=http://127.0.0.1:4318",
                       "--service-name",
                       "svc",
                       NULL};
    REQUIRE(load(&c, err, sizeof err, a) == 0);
    CHECK_STR_EQ(c.role, "gateway");
    CHECK_STR_EQ(c.bind, "0.0.0.0");
    CHECK_STR_EQ(c.region, "eu-west");
    CHECK_STR_EQ(c.node_id, "eu-west-7");
    CHECK_STR_EQ(c.data_dir, "/tmp/d");
    CHECK_STR_EQ(c.fsync, "always");
    CHECK_STR_EQ(c.admin_token, "s3cret");
    CHECK_STR_EQ(c.region_endpoints, "a=http://127.0.0.1:1,b=127.0.0.1:2");
    CHECK_STR_EQ(c.region_endpoints_from, "--regions");
    CHECK_STR_EQ(c.coordinator_url, "http://127.0.0.1:9");
    CHECK_STR_EQ(c.strong_url, "http://127.0.0.1:10");
    CHECK_STR_EQ(c.web_dir, "/w");
    CHECK_STR_EQ(c.lua_dir, "/l");
    CHECK_STR_EQ(c.otlp_endpoint, "http://127.0.0.1:4318");
    CHECK_STR_EQ(c.service_name, "svc");
    config_free(&c);

    /* The node id follows the region when not given. */
    const char *b[] = {"--region", "ap-south", NULL};
    REQUIRE(load(&c, err, sizeof err, b) == 0);
    CHECK_STR_EQ(c.node_id, "ap-south-1");
    config_free(&c);

    /* A string one byte too long for its field is refused, naming the flag. */
    char longv[80];
    memset(longv, 'a', sizeof c.region);
    longv[sizeof c.region] = '\0';
    const char *d[] = {"--region", longv, NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, d), -1);
    CHECK(strstr(err, "--region: value longer than 63 bytes") == err);
    config_free(&c);
    longv[sizeof c.region - 1] = '\0'; /* exactly fits */
    CHECK_EQ_I64(load(&c, err, sizeof err, d), 0);
    CHECK_STR_EQ(c.region, longv);
    config_free(&c);
}

static void test_env_and_flags_win(void)
{
    clear_env();
    struct config c;
    char err[512];
    setenv("COUNTERD_ROLE", "coordinator", 1);
    setenv("REGION", "us-west", 1);
    setenv("NODE_ID", "n-1", 1);
    setenv("SERVICE_PORT", "8101", 1);
    setenv("FSYNC_POLICY", "no", 1);
    setenv("COUNTERD_WATCH", "true", 1);
    setenv("DATA_DIR", "", 1); /* empty: the default */
    REQUIRE(load(&c, err, sizeof err, NULL) == 0);
    CHECK_STR_EQ(c.role, "coordinator");
    CHECK_STR_EQ(c.region, "us-west");
    CHECK_STR_EQ(c.node_id, "n-1");
    CHECK_EQ_I64(c.port, 8101);
    CHECK_STR_EQ(c.fsync, "no");
    CHECK_EQ_I64(c.watch, 1);
    CHECK_STR_EQ(c.data_dir, "");
    config_free(&c);

    const char *a[] = {"--port", "8202", "--role=region", "--watch=false", "--fsync",
                       "always", NULL};
    REQUIRE(load(&c, err, sizeof err, a) == 0);
    CHECK_EQ_I64(c.port, 8202);
    CHECK_STR_EQ(c.role, "region");
    CHECK_EQ_I64(c.watch, 0);
    CHECK_STR_EQ(c.fsync, "always");
    CHECK_STR_EQ(c.region, "us-west"); /* not given as a flag: the variable's */
    config_free(&c);
    clear_env();
}

static void test_bools(void)
{
    clear_env();
    struct config c;
    char err[512];
    const char *a[] = {"--watch", "--allow-volatile-replicas", NULL};
    REQUIRE(load(&c, err, sizeof err, a) == 0);
    CHECK_EQ_I64(c.watch, 1);
    CHECK_EQ_I64(c.allow_volatile_replicas, 1);
    config_free(&c);
    const char *n[] = {"--net", "--wire-netns", "us-east=cd-e,us-west=cd-w", NULL};
    REQUIRE(load(&c, err, sizeof err, n) == 0);
    CHECK_EQ_I64(c.net, 1);
    CHECK_STR_EQ(c.wire_netns, "us-east=cd-e,us-west=cd-w");
    config_free(&c);
    const char *b[] = {"--watch=1", "--allow-volatile-replicas=0", NULL};
    REQUIRE(load(&c, err, sizeof err, b) == 0);
    CHECK_EQ_I64(c.watch, 1);
    CHECK_EQ_I64(c.allow_volatile_replicas, 0);
    config_free(&c);
    setenv("STRONG_ALLOW_VOLATILE", "1", 1);
    setenv("COUNTERD_WATCH", "false", 1);
    REQUIRE(load(&c, err, sizeof err, NULL) == 0);
    CHECK_EQ_I64(c.watch, 0);
    CHECK_EQ_I64(c.allow_volatile_replicas, 1);
    config_free(&c);

    setenv("COUNTERD_WATCH", "yes", 1);
    CHECK_EQ_I64(load(&c, err, sizeof err, NULL), -1);
    CHECK_STR_EQ(err, "COUNTERD_WATCH must be 1, true, 0 or false, not 'yes'");
    config_free(&c);
    clear_env();
    const char *d[] = {"--watch=on", NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, d), -1);
    CHECK_STR_EQ(err, "--watch must be 1, true, 0 or false, not 'on'");
    config_free(&c);
}

static void test_peers(void)
{
    clear_env();
    struct config c;
    char err[512];
    const char *a[] = {"--peers", "127.0.0.1:8002, http://127.0.0.1:8003", NULL};
    REQUIRE(load(&c, err, sizeof err, a) == 0);
    REQUIRE(c.npeers == 2);
    CHECK_STR_EQ(c.peers[0], "http://127.0.0.1:8002");
    CHECK_STR_EQ(c.peers[1], "http://127.0.0.1:8003");
    config_free(&c);
    CHECK_EQ_I64(c.npeers, 0);

    /* The flag replaces the variable's list (no leak of the first: valgrind checks). */
    setenv("PEER_ENDPOINTS", "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003", 1);
    const char *b[] = {"--peers=127.0.0.1:9009", NULL};
    REQUIRE(load(&c, err, sizeof err, b) == 0);
    REQUIRE(c.npeers == 1);
    CHECK_STR_EQ(c.peers[0], "http://127.0.0.1:9009");
    config_free(&c);
    clear_env();

    /* A bad list: refused, naming the setting, the item and why (the list parser names it
     * PEER_ENDPOINTS for both sources; tests/integration/66_endpoint_forms.py holds that). */
    const char *d[] = {"--peers", "127.0.0.1:8002,counter-us-west", NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, d), -1);
    CHECK(strstr(err, "PEER_ENDPOINTS: 'counter-us-west'") == err);
    CHECK(strstr(err, "it has no port") != NULL);
    config_free(&c);

    /* More than CONFIG_MAX_PEERS. */
    char many[1024] = "";
    for (int i = 0; i <= CONFIG_MAX_PEERS; i++) {
        char item[32];
        snprintf(item, sizeof item, "%s127.0.0.1:%d", i ? "," : "", 9000 + i);
        strcat(many, item);
    }
    const char *e[] = {"--peers", many, NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, e), -1);
    CHECK(strstr(err, "PEER_ENDPOINTS") == err);
    config_free(&c);
}

static void test_regions_source(void)
{
    clear_env();
    struct config c;
    char err[512];
    setenv("COUNTER_ENDPOINTS", "127.0.0.1:1", 1);
    REQUIRE(load(&c, err, sizeof err, NULL) == 0);
    CHECK_STR_EQ(c.region_endpoints, "127.0.0.1:1");
    CHECK_STR_EQ(c.region_endpoints_from, "COUNTER_ENDPOINTS");
    config_free(&c);
    /* The counterd name wins over the lab's. */
    setenv("REGION_ENDPOINTS", "127.0.0.1:2", 1);
    REQUIRE(load(&c, err, sizeof err, NULL) == 0);
    CHECK_STR_EQ(c.region_endpoints, "127.0.0.1:2");
    CHECK_STR_EQ(c.region_endpoints_from, "REGION_ENDPOINTS");
    config_free(&c);
    const char *a[] = {"--regions=127.0.0.1:3", NULL};
    REQUIRE(load(&c, err, sizeof err, a) == 0);
    CHECK_STR_EQ(c.region_endpoints, "127.0.0.1:3");
    CHECK_STR_EQ(c.region_endpoints_from, "--regions");
    config_free(&c);
    clear_env();
}

/* Refused as a whole (what no single option checks alone, and the argument syntax). */
static void check_refused(const char *const *args, const char *expect)
{
    struct config c;
    char err[512];
    unit_context("%s", expect);
    CHECK_EQ_I64(load(&c, err, sizeof err, args), -1);
    CHECK_STR_EQ(err, expect);
    config_free(&c);
    unit_context("%s", "");
}

static void test_refused(void)
{
    clear_env();
    check_refused((const char *[]){"--nope", NULL}, "unknown option '--nope' (see --help)");
    check_refused((const char *[]){"--portx=1", NULL}, "unknown option '--portx=1' (see --help)");
    check_refused((const char *[]){"extra", NULL}, "unknown option 'extra' (see --help)");
    check_refused((const char *[]){"--port", NULL}, "--port needs a value");
    check_refused((const char *[]){"--region", NULL}, "--region needs a value");
    check_refused((const char *[]){"--role", "banana", NULL},
                  "unknown role 'banana' (region, coordinator, gateway, strong, scenario or wire)");
    check_refused((const char *[]){"--role", "scenario", NULL},
                  "the scenario role needs --script FILE.lua");
    check_refused((const char *[]){"--fsync", "sometimes", NULL},
                  "--fsync (FSYNC_POLICY) must be always, everysec or no, not 'sometimes'");
    check_refused((const char *[]){"--node-id", "a b", NULL},
                  "--node-id (NODE_ID) 'a b' must be 1-200 bytes of [A-Za-z0-9_.:-]");
    check_refused((const char *[]){"--region", "us/east", NULL},
                  "--node-id (NODE_ID) 'us/east-1' must be 1-200 bytes of [A-Za-z0-9_.:-]");
    check_refused((const char *[]){"--region", "us/east", "--node-id", "n1", NULL},
                  "--region (REGION) 'us/east' must be 1-200 bytes of [A-Za-z0-9_.:-]");
    check_refused((const char *[]){"--admin-token", "a b", NULL},
                  "--admin-token (COUNTERD_ADMIN_TOKEN) must be printable ASCII without spaces");
    check_refused((const char *[]){"--admin-token", "a\tb", NULL},
                  "--admin-token (COUNTERD_ADMIN_TOKEN) must be printable ASCII without spaces");

    /* Every role named is accepted; the scenario one with its script. */
    const char *roles[] = {"region", "coordinator", "gateway", "strong"};
    for (size_t i = 0; i < 4; i++) {
        struct config c;
        char err[512];
        const char *a[] = {"--role", roles[i], NULL};
        CHECK_EQ_I64(load(&c, err, sizeof err, a), 0);
        config_free(&c);
    }
    struct config c;
    char err[512];
    const char *s[] = {"--role", "scenario", "--script", "x.lua", NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, s), 0);
    CHECK_STR_EQ(c.script, "x.lua");
    config_free(&c);
}

static void test_help_and_usage(void)
{
    clear_env();
    struct config c;
    char err[512];
    /* --help prints the usage to stdout: point stdout at a file for the call. */
    FILE *f = tmpfile();
    REQUIRE(f != NULL);
    config_usage(f);
    long n = ftell(f);
    REQUIRE(n > 0);
    char *text = calloc(1, (size_t)n + 1);
    rewind(f);
    REQUIRE(fread(text, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    for (size_t i = 0; i < sizeof int_opts / sizeof *int_opts; i++) {
        CHECK(strstr(text, int_opts[i].flag) != NULL);
        CHECK(strstr(text, int_opts[i].env) != NULL);
    }
    for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++)
        if (strcmp(env_names[i], "COUNTER_ENDPOINTS") != 0) /* an alias, not listed */
            CHECK(strstr(text, env_names[i]) != NULL);
    free(text);

    fflush(stdout);
    const char *a[] = {"--port", "1", "--help", "--nope", NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, a), 1);
    config_free(&c);
    const char *b[] = {"-h", NULL};
    CHECK_EQ_I64(load(&c, err, sizeof err, b), 1);
    config_free(&c);
}

UNIT_MAIN("config", UNIT_CASE(test_defaults), UNIT_CASE(test_int_bounds), UNIT_CASE(test_strings),
          UNIT_CASE(test_env_and_flags_win), UNIT_CASE(test_bools), UNIT_CASE(test_peers),
          UNIT_CASE(test_regions_source), UNIT_CASE(test_refused), UNIT_CASE(test_help_and_usage))
