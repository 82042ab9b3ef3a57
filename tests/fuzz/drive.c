/*
 * drive.c - one fuzz input through a socketpair into an http_server (see drive.h).
 *
 * Everything runs on the caller's thread: the client side is the non-blocking end of the
 * pair, written and read between passes of event_base_loop(EVLOOP_NONBLOCK), so a run
 * is deterministic apart from the clock and never sleeps.
 */
#include "drive.h"

#include <errno.h>
#include <event2/event.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "net/http.h"

#define MAX_CHUNKS 128   /* the rest of a long input goes in one write */
#define CHUNK_PASSES 2   /* loop passes after each chunk */
#define FAST_PASSES 200  /* non-blocking loop passes before waiting for other threads */
#define SLOW_PASSES 1000 /* then passes that wait up to 2 ms each (an fsync thread) */
#define ANSWERS_KEEP (1u << 20)

/* Requests handed to the handler in this run, in order: 1 for HEAD (no body answered). */
static struct {
    unsigned char *head;
    size_t n, cap;
} notes;

static struct buf answers; /* every byte the server wrote in this run */

void drive_note_request(const struct http_request *req)
{
    if (notes.n == notes.cap) {
        notes.cap = notes.cap ? notes.cap * 2 : 64;
        notes.head = realloc(notes.head, notes.cap);
        if (!notes.head)
            abort();
    }
    notes.head[notes.n++] = req->method == HTTP_M_HEAD;
}

uint64_t drive_seed(const uint8_t *data, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 0x100000001b3ULL;
    return h;
}

/* xorshift64*: the chunk sizes. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The answers, escaped, up to max bytes. */
static void print_answers(size_t max)
{
    fprintf(stderr, "==fuzz== %zu request(s) reached the handler; the server wrote %zu bytes",
            notes.n, answers.len);
    if (answers.len) {
        size_t show = answers.len < max ? answers.len : max;
        fprintf(stderr, " (first %zu, escaped):\n", show);
        for (size_t i = 0; i < show; i++) {
            unsigned char ch = (unsigned char)answers.data[i];
            if (ch == '\n')
                fputs("\\n\n", stderr);
            else if (ch == '\r')
                fputs("\\r", stderr);
            else if (ch < 0x20 || ch >= 0x7f)
                fprintf(stderr, "\\x%02x", ch);
            else
                fputc(ch, stderr);
        }
    }
    fputc('\n', stderr);
}

void drive_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\n==fuzz== finding: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    print_answers(2048);
    abort();
}

/* Reads what the server wrote; sets *eof once it has closed its end. */
static void drain(int fd, int *eof)
{
    char tmp[16384];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n > 0) {
            buf_append(&answers, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            *eof = 1; /* closed, or reset by the server's close with unread input */
        return;
    }
}

static void pump(struct event_base *base, int passes)
{
    for (int i = 0; i < passes; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Pass number i of a wait: non-blocking at first, then blocking for at most 2 ms, so work
 * finished by another thread (a log's fsync) is seen without spinning for long. */
static void wait_pass(struct event_base *base, int i)
{
    static struct event *tick;
    if (i < FAST_PASSES) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        return;
    }
    if (!tick)
        tick = evtimer_new(base, on_tick, NULL); /* one base per process */
    struct timeval tv = {0, 2000};
    evtimer_add(tick, &tv);
    event_base_loop(base, EVLOOP_ONCE);
    evtimer_del(tick);
}

/*
 * Writes data[0..len) to fd, running the loop while the socket is full.
 * @return 0, or -1 once the server no longer reads (it closed: the rest is dropped).
 */
static int send_all(struct event_base *base, int fd, const uint8_t *data, size_t len, int *eof)
{
    size_t off = 0;
    int stalls = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n > 0) {
            off += (size_t)n;
            stalls = 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* The server is not reading: it may hold input behind an asynchronous answer
             * or have stopped reading for good. Let it run; give up after a while. */
            wait_pass(base, stalls);
            drain(fd, eof);
            if (++stalls > FAST_PASSES + SLOW_PASSES)
                return -1;
            continue;
        }
        return -1; /* EPIPE, ECONNRESET: the server closed */
    }
    return 0;
}

/* ---------------------------------------------------------------- checking answers */

struct check {
    size_t next_note; /* the handled request the next final answer belongs to */
    size_t extra;     /* final answers beyond the handled requests */
    size_t finals, interim;
};

static int on_resp_headers(http_parser *p)
{
    struct check *ck = p->data;
    if (p->status_code >= 100 && p->status_code < 200)
        return 0; /* 100 Continue: no body, no request of its own */
    if (ck->next_note < notes.n)
        return notes.head[ck->next_note++] ? 1 : 0; /* 1: no body follows (HEAD) */
    ck->extra++;
    return 0;
}

static int on_resp_complete(http_parser *p)
{
    struct check *ck = p->data;
    if (p->status_code >= 100 && p->status_code < 200)
        ck->interim++;
    else
        ck->finals++;
    return 0;
}

static void check_answers(int lossy)
{
    http_parser_settings s;
    memset(&s, 0, sizeof s);
    s.on_headers_complete = on_resp_headers;
    s.on_message_complete = on_resp_complete;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    struct check ck = {0, 0, 0, 0};
    p.data = &ck;
    size_t n = http_parser_execute(&p, &s, answers.data, answers.len);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK || n != answers.len)
        drive_fail("the answers are not well-formed HTTP responses: %s at byte %zu",
                   http_errno_description(HTTP_PARSER_ERRNO(&p)), n);
    http_parser_execute(&p, &s, NULL, 0); /* the end of the stream */
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
        drive_fail("the last answer is cut short: %s",
                   http_errno_description(HTTP_PARSER_ERRNO(&p)));
    if (ck.next_note < notes.n && !lossy)
        drive_fail("%zu request(s) reached the handler but only %zu answer(s) came back", notes.n,
                   ck.next_note);
    if (ck.extra > 1)
        drive_fail("%zu answers beyond the %zu handled requests (at most one error answer "
                   "may follow them)",
                   ck.extra, notes.n);
}

/* ---------------------------------------------------------------- one connection */

void drive_conn(struct event_base *base, struct http_server *srv, const uint8_t *data, size_t len,
                uint64_t seed, const struct drive_hooks *hooks)
{
    notes.n = 0;
    buf_reset(&answers);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        drive_fail("socketpair: %s (descriptors leaked by earlier inputs?)", strerror(errno));
    int fd = sv[0];
    if (http_server_adopt(srv, sv[1]) < 0)
        drive_fail("the server refused the connection: one from an earlier input is still "
                   "open");

    uint64_t rng = seed;
    int mode = (int)(next_rand(&rng) % 4);
    int hang_up = next_rand(&rng) % 8 == 0; /* close(), not shutdown(): answers are lost */
    int eof = 0, chunks = 0;
    size_t off = 0;
    while (off < len) {
        size_t n = len - off;
        if (chunks < MAX_CHUNKS) {
            switch (mode) {
            case 0: break;                               /* one write */
            case 1: n = 1 + next_rand(&rng) % 64; break; /* small pieces */
            case 2: n = 1 + next_rand(&rng) % (len / 2 + 1); break;
            default: n = 1; break; /* byte by byte */
            }
            if (n > len - off)
                n = len - off;
        }
        if (send_all(base, fd, data + off, n, &eof) < 0)
            break;
        off += n;
        chunks++;
        pump(base, CHUNK_PASSES);
        drain(fd, &eof);
    }
    if (hang_up) {
        close(fd);
        fd = -1;
    } else {
        shutdown(fd, SHUT_WR);
    }

    struct http_server_stats st;
    int settled = 0;
    for (int i = 0; i < FAST_PASSES + SLOW_PASSES && !settled; i++) {
        wait_pass(base, i);
        if (fd >= 0)
            drain(fd, &eof);
        http_server_stats(srv, &st);
        settled = st.open == 0 && (!hooks || !hooks->pending(hooks->arg)) && (fd < 0 || eof);
    }
    if (!settled) {
        http_server_stats(srv, &st);
        drive_fail("after the client ended its side the server did not close the connection "
                   "(%d open, %d answer(s) owed by the harness, client saw %s)",
                   st.open, hooks ? hooks->pending(hooks->arg) : 0, eof ? "the close" : "no close");
    }
    if (getenv("FUZZ_VERBOSE"))
        print_answers((size_t)-1);
    if (fd >= 0) {
        check_answers(hooks && hooks->lossy);
        close(fd);
    }
    buf_trim(&answers, ANSWERS_KEEP);
}
