/*
 * fuzz_region.c - libFuzzer target: a whole region node's handlers (core/roles/region.c,
 * the /sync merge in core/repl/repl.c, the strict JSON reader, the store, the
 * dedup table, metrics, the faults policy), through a socketpair into its HTTP server.
 *
 * The first byte of an input picks the request; the rest is its body or path:
 *   0, 1  POST /increment            body = rest
 *   2     POST /sync                 body = rest
 *   3     GET /counter/<rest>        rest as the path (bytes a URL cannot hold: %XX)
 *   4     POST /admin/partition      body = rest
 *   5     POST /admin/partition?<rest>
 *   6     rest is the raw byte stream (any endpoint, pipelining, framing)
 *   7     POST /increment (body = rest), then GET /metrics on the same connection
 *   8     POST /strong/accept            body = rest (the strong counter's replica)
 *   9     POST /strong/prepare           body = rest
 * The request is then sent in chunks like fuzz_http's (see drive.h). After an input that
 * may have switched the partition on, a second request switches it off, so each input
 * starts from a node that replicates.
 *
 * The node runs as in production with a data directory (under /dev/shm, see scratch.h),
 * small snapshots (a forked child every few thousand increments) and an admin token,
 * which the requests built here send (as their last header).
 *
 * The node keeps the counters that inputs create (that is part of what is fuzzed); it is
 * stopped and started again every REGION_LIFE inputs. Every other start replays the data
 * directory the last life wrote (a node that cannot start again from its own directory
 * is a finding); the others begin from an empty one, so the state a node carries stays
 * bounded (every /sync answer is a full state: a store that kept growing would slow
 * everything down). Every fourth life runs under fsync=always, where answers to
 * increments wait for the fsync thread (the asynchronous path); the others under
 * fsync=no, ten times faster. FUZZ_REGION_FSYNC=always|everysec|no fixes the policy (to
 * replay a finding: the node's start-up line in the log names the policy it ran under).
 *
 * region.c does not expose its http_server: this file wraps http_server_new at link time
 * (-Wl,--wrap=http_server_new) to learn it and put drive_note_request in front of the
 * node's handler.
 *
 * Never linked into counterd.
 */
#include <curl/curl.h>
#include <event2/event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "drive.h"
#include "net/http.h"
#include "roles/config.h"
#include "roles/region.h"
#include "scratch.h"

#define REGION_LIFE 5000        /* inputs between restarts under fsync=no */
#define REGION_LIFE_ALWAYS 1000 /* under fsync=always (ten times slower) */
#define TOKEN "fuzz-token"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"

static struct event_base *base;
static struct config cfg;
static char data_dir[4096];
static struct region *rg;
static unsigned long inputs, life_left, lives;
static const char *fsync_forced; /* FUZZ_REGION_FSYNC, or NULL */
static struct buf req;

/* What region_new gave http_server_new. */
static struct http_server *srv;
static http_handler_fn node_handler;
static void *node_arg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
struct http_server *__real_http_server_new(struct event_base *b, const struct http_server_opts *o,
                                           http_handler_fn h, void *arg, char *err, size_t errlen);
struct http_server *__wrap_http_server_new(struct event_base *b, const struct http_server_opts *o,
                                           http_handler_fn h, void *arg, char *err, size_t errlen);

static void noting_handler(struct http_request *r, void *arg)
{
    (void)arg;
    drive_note_request(r);
    node_handler(r, node_arg);
}

struct http_server *__wrap_http_server_new(struct event_base *b, const struct http_server_opts *o,
                                           http_handler_fn h, void *arg, char *err, size_t errlen)
{
    node_handler = h;
    node_arg = arg;
    srv = __real_http_server_new(b, o, noting_handler, NULL, err, errlen);
    return srv;
}

/* Starts a life (see the top of the file): fsync=always every fourth, unless
 * FUZZ_REGION_FSYNC says otherwise; an empty data directory every other. */
static void region_start(void)
{
    char err[512];
    const char *policy = fsync_forced ? fsync_forced : lives % 4 == 3 ? "always" : "no";
    snprintf(cfg.fsync, sizeof cfg.fsync, "%s", policy);
    life_left = strcmp(policy, "always") ? REGION_LIFE : REGION_LIFE_ALWAYS;
    int fresh = lives % 2 == 0;
    if (fresh)
        scratch_empty(data_dir);
    lives++;
    srv = NULL;
    fprintf(stderr, "fuzz_region: node start %lu after %lu inputs, fsync=%s, %s\n", lives, inputs,
            policy, fresh ? "empty data directory" : "replaying the last life's");
    rg = region_new(base, &cfg, err, sizeof err);
    if (!rg || !srv) {
        /* At the first start a set-up problem; later, the node cannot restart from the
         * directory it wrote itself. */
        fprintf(stderr, "\n==fuzz== %s: cannot start the region node: %s\n",
                inputs ? "finding" : "fuzz_region", rg ? "no server" : err);
        if (inputs)
            abort();
        exit(1);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    /* Warnings only: a start logs a few lines (COUNTERD_LOG=info shows them). */
    setenv("COUNTERD_LOG", "warn", 0);
    log_init("fuzz_region");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char err[512];
    snprintf(data_dir, sizeof data_dir, "%s/data", scratch_dir("region"));
    char *args[] = {"fuzz_region", "--region",      "fuzz",   "--node-id",
                    "fuzz-1",      "--data-dir",    data_dir, "--snapshot-bytes",
                    "262144",      "--admin-token", TOKEN,    NULL};
    if (config_load(&cfg, 11, args, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_region: config: %s\n", err);
        exit(1);
    }
    cfg.port = 0; /* --port takes 1-65535; the node is only reached through socketpairs */
    cfg.max_conns = 4;
    fsync_forced = getenv("FUZZ_REGION_FSYNC");
    if (fsync_forced && strcmp(fsync_forced, "always") && strcmp(fsync_forced, "everysec") &&
        strcmp(fsync_forced, "no")) {
        fprintf(stderr, "fuzz_region: FUZZ_REGION_FSYNC must be always, everysec or no\n");
        exit(1);
    }
    base = event_base_new();
    region_start();
    return 0;
}

/* Bytes a request target may hold go as they are (so '%', '?' and '#' reach the URL
 * decoder and the path/query split); the others as %XX. */
static void put_target(struct buf *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        if (p[i] > 0x20 && p[i] < 0x7f) {
            buf_putc(b, (char)p[i]);
        } else {
            buf_putc(b, '%');
            buf_putc(b, hex[p[i] >> 4]);
            buf_putc(b, hex[p[i] & 15]);
        }
    }
}

static void put_post(struct buf *b, const char *path, const uint8_t *body, size_t n)
{
    buf_printf(b,
               "POST %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\n" AUTH "\r\n",
               path, n);
    buf_append(b, body, n);
}

static void partition_off(void)
{
    static const char off[] = "POST /admin/partition HTTP/1.1\r\nHost: fuzz\r\n"
                              "Content-Length: 17\r\n" AUTH "\r\n{\"enabled\":false}";
    drive_conn(base, srv, (const uint8_t *)off, sizeof off - 1, 0, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    inputs++;
    if (--life_left == 0) {
        region_free(rg);
        region_start();
    }
    unsigned sel = data[0] % 10;
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    buf_reset(&req);
    switch (sel) {
    case 0:
    case 1: put_post(&req, "/increment", rest, n); break;
    case 2: put_post(&req, "/sync", rest, n); break;
    case 3:
        buf_puts(&req, "GET /counter/");
        put_target(&req, rest, n);
        buf_puts(&req, " HTTP/1.1\r\nHost: fuzz\r\n\r\n");
        break;
    case 4: put_post(&req, "/admin/partition", rest, n); break;
    case 5:
        buf_puts(&req, "POST /admin/partition?");
        put_target(&req, rest, n);
        buf_puts(&req, " HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 0\r\n" AUTH "\r\n");
        break;
    case 6: buf_append(&req, rest, n); break;
    case 8: put_post(&req, "/strong/accept", rest, n); break;
    case 9: put_post(&req, "/strong/prepare", rest, n); break;
    default:
        put_post(&req, "/increment", rest, n);
        buf_puts(&req, "GET /metrics HTTP/1.1\r\nHost: fuzz\r\n\r\n");
        break;
    }
    drive_conn(base, srv, (const uint8_t *)req.data, req.len, drive_seed(data, size), NULL);
    if (sel >= 4 && sel <= 6)
        partition_off();
    buf_trim(&req, 1u << 20);
    return 0;
}
