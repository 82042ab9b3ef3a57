/*
 * reload.c - POST /admin/reload and --watch (see reload.h).
 */
#include "reload.h"

#include <dirent.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../lua/host.h"
#include "../net/http.h"
#include "config.h"

#define WATCH_MS 500

struct reload {
    struct host *lua;
    struct event *timer;
    uint64_t signature; /* of the files as last seen by the watcher */
    unsigned reloads;
};

/* Folders under the Lua folder whose files a reload reads. */
static const char *const folders[] = {"policies", "roles", "lib", "bench", "conf", NULL};

/* A hash of every .lua file's name, size and modification time. */
static uint64_t files_signature(const char *dir)
{
    uint64_t sig = 1469598103934665603ull;
    for (const char *const *f = folders; *f; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, *f);
        DIR *d = opendir(path);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t n = strlen(e->d_name);
            if (n < 5 || strcmp(e->d_name + n - 4, ".lua"))
                continue;
            char file[1300];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            struct stat st;
            if (stat(file, &st) < 0)
                continue;
            uint64_t v[3] = {(uint64_t)st.st_size, (uint64_t)st.st_mtim.tv_sec,
                             (uint64_t)st.st_mtim.tv_nsec};
            for (const char *c = file; *c; c++)
                sig = (sig ^ (unsigned char)*c) * 1099511628211ull;
            for (int i = 0; i < 3; i++)
                sig = (sig ^ v[i]) * 1099511628211ull;
        }
        closedir(d);
    }
    return sig;
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct reload *r = arg;
    uint64_t sig = files_signature(host_dir(r->lua));
    if (sig == r->signature)
        return;
    r->signature = sig;
    char err[1024];
    if (host_reload(r->lua, NULL, err, sizeof err) == 0) {
        r->reloads++;
        log_info("--watch: a Lua file changed; reloaded");
    }
}

struct reload *reload_new(struct event_base *base, struct host *lua, const struct config *cfg)
{
    struct reload *r = xcalloc(1, sizeof *r);
    r->lua = lua;
    if (cfg->watch) {
        r->signature = files_signature(host_dir(lua));
        r->timer = event_new(base, -1, EV_PERSIST, on_watch, r);
        struct timeval tv = {0, WATCH_MS * 1000};
        event_add(r->timer, &tv);
        log_info("--watch: reloading when a file under %s changes", host_dir(lua));
    }
    return r;
}

void reload_free(struct reload *r)
{
    if (!r)
        return;
    if (r->timer)
        event_free(r->timer);
    free(r);
}

void reload_handle(struct reload *r, struct http_request *req)
{
    struct buf files = {0}, out = {0};
    char err[1024];
    if (host_reload(r->lua, &files, err, sizeof err) < 0) {
        /* err is "file:line: message" (or "file: message" without a line). */
        char file[600] = "", msg[1024];
        long line = 0;
        snprintf(msg, sizeof msg, "%s", err);
        const char *c1 = strchr(err, ':');
        if (c1 && (size_t)(c1 - err) < sizeof file) {
            snprintf(file, sizeof file, "%.*s", (int)(c1 - err), err);
            char *end;
            line = strtol(c1 + 1, &end, 10);
            if (end > c1 + 1 && *end == ':')
                snprintf(msg, sizeof msg, "%s", end + 1 + (end[1] == ' '));
            else
                snprintf(msg, sizeof msg, "%s", c1 + 1 + (c1[1] == ' '));
        }
        buf_puts(&out, "{\"detail\":");
        char detail[1200];
        snprintf(detail, sizeof detail, "%s; the old Lua files keep serving", err);
        buf_json_str(&out, detail, strlen(detail));
        buf_puts(&out, ",\"error\":\"reload_failed\",\"file\":");
        buf_json_str(&out, file, strlen(file));
        buf_printf(&out, ",\"line\":%ld,\"message\":", line);
        buf_json_str(&out, msg, strlen(msg));
        buf_putc(&out, '}');
        http_respond_json(req, 422, out.data, out.len);
    } else {
        r->reloads++;
        buf_puts(&out, "{\"status\":\"reloaded\",\"files\":[");
        const char *p = files.len ? buf_cstr(&files) : "";
        int first = 1;
        while (*p) {
            size_t n = strcspn(p, "\n");
            if (!first)
                buf_putc(&out, ',');
            buf_json_str(&out, p, n);
            first = 0;
            p += n + (p[n] == '\n');
        }
        buf_printf(&out, "],\"reloads\":%u}", r->reloads);
        http_respond_json(req, 200, out.data, out.len);
    }
    /* The watcher need not reload again what this request just did. */
    r->signature = files_signature(host_dir(r->lua));
    buf_free(&files);
    buf_free(&out);
}
