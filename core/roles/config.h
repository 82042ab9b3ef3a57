/*
 * config.h - a node's configuration, from the lab's environment variables and flags.
 *
 * The same binary runs under scripts/lab and under docker compose, so every setting has
 * an environment variable (the lab's names where it had one) and a flag; flags win.
 */
#ifndef COUNTERD_ROLES_CONFIG_H
#define COUNTERD_ROLES_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CONFIG_MAX_PEERS 16

struct config {
    char role[16];
    char bind[64];
    int port;
    char region[64];
    char node_id[201];
    char *peers[CONFIG_MAX_PEERS];
    int npeers;
    int sync_interval_ms, sync_timeout_ms;
    int tombstone_grace_s; /* deleted counters are sealed, then dropped, this long after every
                              peer held them (README "Counter lifecycle") */
    int fold_after_ms;     /* retired incarnations are folded only in full pulls begun this long
                              after the start (README "Durability") */
    char lua_dir[512];
    int max_conns, idle_timeout_ms, request_timeout_ms;
    int metrics_top_n;
    int policy_budget_ms;
    char data_dir[512]; /* "" : memory only */
    char fsync[16];     /* always | everysec | no */
    int snapshot_bytes;
    char admin_token[256]; /* "" : admin endpoints and /sync are open */
    /* Lua roles (coordinator, gateway): "name=url,..." and the coordinator's URL; empty
     * means lua/conf/lab.lua's topology. */
    char region_endpoints[2048];
    char region_endpoints_from[24]; /* the variable or flag that gave it, for errors */
    char coordinator_url[256];
    int request_timeout_up_ms; /* calls from a role to the services behind it */
    char web_dir[512];         /* gateway: the dashboard's files (web/) */
    char strong_url[256];      /* gateway: the strong counter, for /api/compare */
    int watch;                 /* reload the Lua files when one changes */
    /* strong: replicas without a data dir count toward a majority (answers: not durable) */
    int allow_volatile_replicas;
    /* gateway: the embedded strong counter that /api/compare measures beside etcd's (strong_url) */
    char strong_embedded_url[256];
    /* The network is real (scripts/lab up --net): faults.lua's delays are the wire's, not
     * this process's event loop's. */
    int net;
    /* The wire role (core/roles/wire.c): "region=netns,...", the /24 as three octets, the
     * TUN devices' name, "listen=target,..." TCP relays, packets queued per link at most. */
    char wire_netns[1024];
    char wire_subnet[32];
    char wire_device[16];
    char wire_relay[2048];
    int wire_queue;
    /* strong: where the counters live: "embedded" (repl/strong.c over the replicas) or "etcd"
     * (roles/strong_etcd.c: the endpoints, the key prefix, one call's timeout) */
    char strong_backend[16];
    char etcd_endpoints[2048];
    char etcd_prefix[256];
    int etcd_timeout_ms;
    /* Scenario runner: the Lua scenario file, and the base port of the lab it drives. */
    char script[1024];
    int base_port;
    /* Tracing: spans go to <otlp_endpoint>/v1/traces; "" : tracing off. */
    char otlp_endpoint[512];
    char service_name[128]; /* "" : the role's (counter-<region>, coordinator, gateway) */
    int trace_batch, trace_queue, trace_delay_ms, trace_timeout_ms;
};

/*
 * Reads the environment, then argv.
 * @return 0; 1 when --help was asked (usage printed); -1 with a sentence in err.
 */
int config_load(struct config *c, int argc, char **argv, char *err, size_t errlen);
void config_free(struct config *c);
void config_usage(FILE *out);

#endif
