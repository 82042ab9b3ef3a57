/*
 * drive.h - feeds one fuzz input to an http_server through a socketpair and checks what
 * comes back (shared by fuzz_http and fuzz_region).
 *
 * The input goes in as the client's byte stream, cut into chunks at places derived from
 * a seed (so reads end mid-line, mid-header, mid-chunk), then the client ends its side.
 * Besides what ASan and UBSan catch, a run aborts (a finding, with a sentence on stderr)
 * when the server:
 *   - does not close the connection once the client has ended its side and every
 *     answer is given (a connection leak);
 *   - writes a byte stream that is not a sequence of well-formed HTTP/1.1 responses;
 *   - leaves a request it handed to the handler unanswered, or answers more than one
 *     request past those (only a final error answer may follow them).
 *
 * Never linked into counterd.
 */
#ifndef COUNTERD_FUZZ_DRIVE_H
#define COUNTERD_FUZZ_DRIVE_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct http_server;
struct http_request;

struct drive_hooks {
    /* Asynchronous answers the harness still owes; the run waits for them to reach 0. */
    int (*pending)(void *arg);
    void *arg;
    /* The server may drop answers in this run (a before_flush hook failed): only check
     * that what came back is well-formed. */
    int lossy;
};

/* Every handler calls this first for each request it receives, in order. */
void drive_note_request(const struct http_request *req);

/* A 64-bit FNV-1a hash of data: the seed of the chunking, stable for a given input. */
uint64_t drive_seed(const uint8_t *data, size_t len);

/*
 * Sends data[0..len) to srv over a fresh connection (http_server_adopt), ends the
 * client's side (shutdown, or now and then close), runs base until the server has closed
 * the connection, and checks the answers. hooks may be NULL.
 * Aborts on a finding (see above); returns otherwise.
 */
void drive_conn(struct event_base *base, struct http_server *srv, const uint8_t *data, size_t len,
                uint64_t seed, const struct drive_hooks *hooks);

/* Prints a sentence about a finding, with the answers received so far, and aborts. */
void drive_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
