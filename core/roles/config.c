/*
 * config.c - environment variables and flags (see config.h).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"
#include "../net/endpoint.h"
#include "../store/gstore.h"

#ifndef COUNTERD_DEFAULT_LUA_DIR
#define COUNTERD_DEFAULT_LUA_DIR "lua"
#endif
#ifndef COUNTERD_DEFAULT_WEB_DIR
#define COUNTERD_DEFAULT_WEB_DIR "web"
#endif

enum kind { K_STR, K_INT, K_PEERS, K_BOOL };

struct option {
    const char *flag, *env;
    enum kind kind;
    size_t off, size; /* K_STR: buffer size */
    int min, max;
    const char *help;
};

#define STR(field, flag, env, help)                                                                \
    {                                                                                              \
        flag, env, K_STR, offsetof(struct config, field), sizeof(((struct config *)0)->field), 0,  \
            0, help                                                                                \
    }
#define INT(field, flag, env, lo, hi, help)                                                        \
    {                                                                                              \
        flag, env, K_INT, offsetof(struct config, field), 0, lo, hi, help                          \
    }

static const struct option options[] = {
    STR(role, "--role", "COUNTERD_ROLE",
        "role of this process: region | coordinator | gateway | strong | scenario | wire"),
    STR(bind, "--bind", "COUNTERD_BIND", "address to listen on (default 127.0.0.1)"),
    INT(port, "--port", "SERVICE_PORT", 1, 65535, "port to listen on (default 8000)"),
    STR(region, "--region", "REGION", "region name (default us-east)"),
    STR(node_id, "--node-id", "NODE_ID", "node id (default <region>-1)"),
    {"--peers", "PEER_ENDPOINTS", K_PEERS, 0, 0, 0, 0,
     "comma-separated peers: host:port or http://host:port, e.g. 127.0.0.1:8002"},
    INT(sync_interval_ms, "--sync-interval-ms", "SYNC_INTERVAL_MS", 10, 86400000,
        "ms between sync rounds (default 5000)"),
    INT(sync_timeout_ms, "--sync-timeout-ms", "SYNC_TIMEOUT_MS", 10, 600000,
        "ms one sync exchange may take (default 3000)"),
    INT(fold_after_ms, "--fold-after-ms", "COUNTERD_FOLD_AFTER_MS", 0, 86400000,
        "retired incarnations of this node are folded only from full pulls of every peer "
        "begun this long after the start: longer than any /sync can be in flight (default "
        "60000)"),
    INT(tombstone_grace_s, "--tombstone-grace-s", "TOMBSTONE_GRACE_S", 0, 31536000,
        "a deleted counter is sealed, then dropped, once every peer has held its deletion, then "
        "its seal, this long (default 30)"),
    STR(lua_dir, "--lua-dir", "COUNTERD_LUA_DIR", "folder of the Lua policies"),
    INT(max_conns, "--max-conns", "COUNTERD_MAX_CONNS", 1, 1000000,
        "open client connections at most (default 10000)"),
    INT(idle_timeout_ms, "--idle-timeout-ms", "COUNTERD_IDLE_TIMEOUT_MS", 10, 86400000,
        "close keep-alive connections idle this long (default 60000)"),
    INT(request_timeout_ms, "--request-timeout-ms", "COUNTERD_REQUEST_TIMEOUT_MS", 10, 86400000,
        "a request must arrive whole within this (default 10000)"),
    INT(metrics_top_n, "--metrics-top-n", "COUNTERD_METRICS_TOP_N", 1, 100000,
        "counter names with their own metric series; the rest are _other (default 100)"),
    INT(policy_budget_ms, "--policy-budget-ms", "COUNTERD_POLICY_BUDGET_MS", 1, 10000,
        "longest a Lua policy call may run (default 50)"),
    STR(data_dir, "--data-dir", "DATA_DIR",
        "folder of the durable log and snapshots (default: none, memory only)"),
    STR(fsync, "--fsync", "FSYNC_POLICY", "always | everysec (default) | no"),
    INT(snapshot_bytes, "--snapshot-bytes", "COUNTERD_SNAPSHOT_BYTES", 4096, 2147483647,
        "log bytes between snapshots (default 67108864)"),
    STR(admin_token, "--admin-token", "COUNTERD_ADMIN_TOKEN",
        "when set, /admin/* and /sync need Authorization: Bearer <token>"),
    STR(region_endpoints, "--regions", "REGION_ENDPOINTS",
        "coordinator, gateway, strong: the regions, name=http://host:port or host:port "
        "(name from /health), comma-separated (default: lua/conf/lab.lua)"),
    STR(coordinator_url, "--coordinator", "COORDINATOR_URL",
        "gateway: the coordinator's base URL (default: lua/conf/lab.lua)"),
    INT(request_timeout_up_ms, "--upstream-timeout-ms", "COUNTERD_UPSTREAM_TIMEOUT_MS", 10, 600000,
        "coordinator, gateway: timeout of a call to a region (default 2000)"),
    STR(web_dir, "--web-dir", "COUNTERD_WEB_DIR",
        "gateway: folder of the dashboard served at / (default: the source tree's web/)"),
    STR(strong_url, "--strong", "STRONG_URL",
        "gateway: the strong counter's base URL, or several (comma-separated: each operation "
        "goes to the first that answers) (default: lua/conf/lab.lua)"),
    STR(strong_embedded_url, "--strong-embedded", "STRONG_EMBEDDED_URL",
        "gateway: the embedded strong counter /api/compare measures beside STRONG_URL's etcd "
        "strong roles (default: none)"),
    {"--net", "COUNTERD_NET", K_BOOL, offsetof(struct config, net), 0, 0, 1,
     "the network between regions is real (scripts/lab up --net): faults.lua's delays are "
     "applied by the wire, not by this process (flag; env: 1)"},
    STR(wire_netns, "--wire-netns", "WIRE_NETNS",
        "wire: region=namespace,... (region i gets <subnet>.i+1, the host <subnet>.254)"),
    STR(wire_subnet, "--wire-subnet", "WIRE_SUBNET",
        "wire: the /24 of its devices as three octets (default 10.31.64)"),
    STR(wire_device, "--wire-device", "WIRE_DEVICE",
        "wire: name of its TUN devices, in each namespace and on the host (default cdwire)"),
    STR(wire_relay, "--wire-relay", "WIRE_RELAY",
        "wire: TCP relays host:port=host:port,... (e.g. 127.0.0.1:8001=10.31.64.1:8001)"),
    INT(wire_queue, "--wire-queue", "WIRE_QUEUE", 1, 1000000,
        "wire: packets waiting on one link at most; more are dropped (default 10000)"),
    {"--watch", "COUNTERD_WATCH", K_BOOL, offsetof(struct config, watch), 0, 0, 1,
     "reload the Lua files when one changes (flag; env: 1)"},
    {"--allow-volatile-replicas", "STRONG_ALLOW_VOLATILE", K_BOOL,
     offsetof(struct config, allow_volatile_replicas), 0, 0, 1,
     "strong: count replicas without DATA_DIR toward a majority; answers say durable false "
     "(flag; env: 1)"},
    STR(strong_backend, "--strong-backend", "STRONG_BACKEND",
        "strong: embedded (default; replicas on the region nodes) | etcd"),
    STR(etcd_endpoints, "--etcd", "ETCD_ENDPOINTS",
        "strong with etcd: the etcd members' client URLs, comma-separated, the region's own "
        "first (the others are used only when it does not answer)"),
    STR(etcd_prefix, "--etcd-prefix", "ETCD_PREFIX",
        "strong with etcd: the prefix of every key it writes (default /counterd/)"),
    INT(etcd_timeout_ms, "--etcd-timeout-ms", "ETCD_TIMEOUT_MS", 10, 600000,
        "strong with etcd: deadline of one call to etcd, whichever members it tries "
        "(default 2000)"),
    STR(script, "--script", "COUNTERD_SCRIPT", "scenario: the Lua scenario file to run"),
    INT(base_port, "--base-port", "COUNTERD_BASE_PORT", 1, 65455,
        "scenario: base port of the lab it drives (default 8000)"),
    STR(otlp_endpoint, "--otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT",
        "send spans as OTLP/HTTP JSON to <url>/v1/traces (default: tracing off)"),
    STR(service_name, "--service-name", "OTEL_SERVICE_NAME",
        "service.name of the spans (default: counter-<region>, coordinator, gateway)"),
    INT(trace_batch, "--trace-batch", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 100000,
        "spans per export (default 512)"),
    INT(trace_queue, "--trace-queue", "OTEL_BSP_MAX_QUEUE_SIZE", 1, 1000000,
        "spans waiting for export at most; more are dropped (default 2048)"),
    INT(trace_delay_ms, "--trace-delay-ms", "OTEL_BSP_SCHEDULE_DELAY", 10, 600000,
        "ms between exports (default 1000)"),
    INT(trace_timeout_ms, "--trace-timeout-ms", "OTEL_BSP_EXPORT_TIMEOUT", 10, 600000,
        "ms one export may take before its spans are dropped (default 5000)"),
};
#define NOPTIONS (sizeof options / sizeof *options)

void config_usage(FILE *out)
{
    fprintf(out, "usage: counterd [options]\n\n");
    for (size_t i = 0; i < NOPTIONS; i++)
        fprintf(out, "  %-22s %-28s %s\n", options[i].flag, options[i].env, options[i].help);
}

static int set_peers(struct config *c, const char *v, char *err, size_t errlen)
{
    for (int i = 0; i < c->npeers; i++)
        free(c->peers[i]);
    c->npeers = 0;
    /* Peers' names are not needed: replication learns each peer's node id from its
     * /sync answers. */
    struct endpoint eps[CONFIG_MAX_PEERS];
    int n = endpoint_list_parse("PEER_ENDPOINTS", v, eps, CONFIG_MAX_PEERS, err, errlen);
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++)
        c->peers[c->npeers++] = xstrdup(eps[i].url);
    return 0;
}

static int set_option(struct config *c, const struct option *o, const char *name, const char *v,
                      char *err, size_t errlen)
{
    char *base = (char *)c;
    if (o->kind == K_PEERS)
        return set_peers(c, v, err, errlen);
    if (o->kind == K_BOOL) {
        if (strcmp(v, "1") && strcmp(v, "true") && strcmp(v, "0") && strcmp(v, "false")) {
            snprintf(err, errlen, "%s must be 1, true, 0 or false, not '%s'", name, v);
            return -1;
        }
        *(int *)(base + o->off) = !strcmp(v, "1") || !strcmp(v, "true");
        return 0;
    }
    if (o->kind == K_STR) {
        if (strlen(v) >= o->size) {
            snprintf(err, errlen, "%s: value longer than %zu bytes", name, o->size - 1);
            return -1;
        }
        snprintf(base + o->off, o->size, "%s", v);
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < o->min || n > o->max) {
        snprintf(err, errlen, "%s must be an integer from %d to %d, not '%s'", name, o->min, o->max,
                 v);
        return -1;
    }
    *(int *)(base + o->off) = (int)n;
    return 0;
}

/* The --regions option, whose source is remembered for the parser's errors. */
static const struct option *regions_option(void)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].kind == K_STR && options[i].off == offsetof(struct config, region_endpoints))
            return &options[i];
    return NULL;
}

/* The defaults: the original lab's (scripts/lab) where it had one. */
static void set_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->role, sizeof c->role, "region");
    snprintf(c->bind, sizeof c->bind, "127.0.0.1");
    c->port = 8000;
    snprintf(c->region, sizeof c->region, "us-east");
    snprintf(c->lua_dir, sizeof c->lua_dir, "%s", COUNTERD_DEFAULT_LUA_DIR);
    snprintf(c->web_dir, sizeof c->web_dir, "%s", COUNTERD_DEFAULT_WEB_DIR);
    c->sync_interval_ms = 5000;
    c->sync_timeout_ms = 3000;
    c->fold_after_ms = 60000;
    c->tombstone_grace_s = 30;
    c->max_conns = 10000;
    c->idle_timeout_ms = 60000;
    c->request_timeout_ms = 10000;
    c->metrics_top_n = 100;
    c->policy_budget_ms = 50;
    snprintf(c->fsync, sizeof c->fsync, "everysec");
    c->request_timeout_up_ms = 2000;
    c->base_port = 8000;
    c->trace_batch = 512;
    c->trace_queue = 2048;
    c->trace_delay_ms = 1000;
    c->trace_timeout_ms = 5000;
    c->snapshot_bytes = 64 << 20;
    snprintf(c->wire_subnet, sizeof c->wire_subnet, "10.31.64");
    snprintf(c->wire_device, sizeof c->wire_device, "cdwire");
    c->wire_queue = 10000;
    snprintf(c->strong_backend, sizeof c->strong_backend, "embedded");
    snprintf(c->etcd_prefix, sizeof c->etcd_prefix, "/counterd/");
    c->etcd_timeout_ms = 2000;
}

/* The environment: the lab's variables. @return 0, or -1 with a sentence in err. */
static int read_env(struct config *c, char *err, size_t errlen)
{
    /* The lab's own name for the regions list. */
    const char *alias = getenv("COUNTER_ENDPOINTS");
    snprintf(c->region_endpoints_from, sizeof c->region_endpoints_from, "REGION_ENDPOINTS");
    if (alias && *alias) {
        if (set_option(c, regions_option(), "COUNTER_ENDPOINTS", alias, err, errlen) < 0)
            return -1;
        snprintf(c->region_endpoints_from, sizeof c->region_endpoints_from, "COUNTER_ENDPOINTS");
    }
    for (size_t i = 0; i < NOPTIONS; i++) {
        const char *v = getenv(options[i].env);
        if (v && *v && set_option(c, &options[i], options[i].env, v, err, errlen) < 0)
            return -1;
        if (v && *v && &options[i] == regions_option())
            snprintf(c->region_endpoints_from, sizeof c->region_endpoints_from, "%s",
                     options[i].env);
    }
    return 0;
}

/* The flags, which win over the environment. @return 0; 1 after --help; -1 (err). */
static int read_args(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            config_usage(stdout);
            return 1;
        }
        const struct option *o = NULL;
        const char *value = NULL;
        for (size_t i = 0; i < NOPTIONS && !o; i++) {
            size_t fl = strlen(options[i].flag);
            if (!strncmp(arg, options[i].flag, fl) && (arg[fl] == '\0' || arg[fl] == '=')) {
                o = &options[i];
                value = arg[fl] == '=' ? arg + fl + 1 : NULL;
            }
        }
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", arg);
            return -1;
        }
        if (!value && o->kind == K_BOOL)
            value = "1";
        if (!value) {
            if (a + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", o->flag);
                return -1;
            }
            value = argv[++a];
        }
        if (set_option(c, o, o->flag, value, err, errlen) < 0)
            return -1;
        if (o == regions_option())
            snprintf(c->region_endpoints_from, sizeof c->region_endpoints_from, "%s", o->flag);
    }
    return 0;
}

/* What no single option can check alone. @return 0, or -1 with a sentence in err. */
static int check(struct config *c, char *err, size_t errlen)
{
    if (!c->node_id[0])
        snprintf(c->node_id, sizeof c->node_id, "%.60s-1", c->region);
    if (strcmp(c->role, "region") && strcmp(c->role, "coordinator") && strcmp(c->role, "gateway") &&
        strcmp(c->role, "strong") && strcmp(c->role, "scenario") && strcmp(c->role, "wire")) {
        snprintf(err, errlen,
                 "unknown role '%s' (region, coordinator, gateway, strong, scenario or wire)",
                 c->role);
        return -1;
    }
    if (!strcmp(c->role, "scenario") && !c->script[0]) {
        snprintf(err, errlen, "the scenario role needs --script FILE.lua");
        return -1;
    }
    if (strcmp(c->strong_backend, "embedded") && strcmp(c->strong_backend, "etcd")) {
        snprintf(err, errlen,
                 "--strong-backend (STRONG_BACKEND) must be embedded or etcd, not '%s'",
                 c->strong_backend);
        return -1;
    }
    if (!strcmp(c->role, "strong") && !strcmp(c->strong_backend, "etcd") && !c->etcd_endpoints[0]) {
        snprintf(err, errlen, "--strong-backend etcd needs --etcd URL[,URL...] (ETCD_ENDPOINTS)");
        return -1;
    }
    if (!gstore_counter_name_valid(c->node_id, strlen(c->node_id))) {
        snprintf(err, errlen, "--node-id (NODE_ID) '%s' must be 1-200 bytes of [A-Za-z0-9_.:-]",
                 c->node_id);
        return -1;
    }
    if (strcmp(c->fsync, "always") && strcmp(c->fsync, "everysec") && strcmp(c->fsync, "no")) {
        snprintf(err, errlen, "--fsync (FSYNC_POLICY) must be always, everysec or no, not '%s'",
                 c->fsync);
        return -1;
    }
    for (const char *t = c->admin_token; *t; t++)
        if (*t <= ' ' || *t > '~') {
            snprintf(err, errlen,
                     "--admin-token (COUNTERD_ADMIN_TOKEN) must be printable ASCII "
                     "without spaces");
            return -1;
        }
    if (!gstore_counter_name_valid(c->region, strlen(c->region))) {
        snprintf(err, errlen, "--region (REGION) '%s' must be 1-200 bytes of [A-Za-z0-9_.:-]",
                 c->region);
        return -1;
    }
    return 0;
}

int config_load(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
    set_defaults(c);
    int rc = read_env(c, err, errlen);
    if (rc == 0)
        rc = read_args(c, argc, argv, err, errlen);
    if (rc == 0)
        rc = check(c, err, errlen);
    return rc;
}

void config_free(struct config *c)
{
    for (int i = 0; i < c->npeers; i++)
        free(c->peers[i]);
    c->npeers = 0;
}
