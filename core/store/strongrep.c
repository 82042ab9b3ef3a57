/*
 * strongrep.c - a strong-counter replica's state (see strongrep.h).
 *
 * A chained hash table of counter names: the strong counter holds few counters (people
 * compare with it, they do not load it with millions), so clarity wins over density.
 */
#include "strongrep.h"

#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"

struct node {
    struct node *next;
    struct strongrep_entry e;
    size_t len;
    char name[];
};

struct strongrep {
    struct node **slots;
    size_t nslots, count;
    uint64_t promised;
};

struct strongrep *strongrep_new(void)
{
    struct strongrep *s = xcalloc(1, sizeof *s);
    s->nslots = 64;
    s->slots = xcalloc(s->nslots, sizeof *s->slots);
    return s;
}

void strongrep_free(struct strongrep *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nslots; i++) {
        struct node *n = s->slots[i];
        while (n) {
            struct node *next = n->next;
            free(n);
            n = next;
        }
    }
    free(s->slots);
    free(s);
}

uint64_t strongrep_promised(const struct strongrep *s)
{
    return s->promised;
}

int strongrep_promise(struct strongrep *s, uint64_t epoch)
{
    if (epoch <= s->promised)
        return 0;
    s->promised = epoch;
    return 1;
}

static struct node **find(const struct strongrep *s, const char *name, size_t len)
{
    struct node **p = &s->slots[hash_bytes(name, len) & (s->nslots - 1)];
    while (*p && !((*p)->len == len && !memcmp((*p)->name, name, len)))
        p = &(*p)->next;
    return p;
}

static void grow(struct strongrep *s)
{
    size_t n = s->nslots * 2;
    struct node **slots = xcalloc(n, sizeof *slots);
    for (size_t i = 0; i < s->nslots; i++) {
        struct node *x = s->slots[i];
        while (x) {
            struct node *next = x->next;
            size_t k = hash_bytes(x->name, x->len) & (n - 1);
            x->next = slots[k];
            slots[k] = x;
            x = next;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = n;
}

/* The node of name, made (with a zero entry) when there is none. */
static struct node **slot_of(struct strongrep *s, const char *name, size_t len)
{
    struct node **p = find(s, name, len);
    if (*p)
        return p;
    if (s->count + 1 > s->nslots) {
        grow(s);
        p = find(s, name, len);
    }
    struct node *n = xcalloc(1, sizeof *n + len + 1);
    n->len = len;
    memcpy(n->name, name, len);
    *p = n;
    s->count++;
    return p;
}

int strongrep_accept(struct strongrep *s, const char *name, size_t len, uint64_t epoch,
                     uint64_t round, int64_t value)
{
    strongrep_promise(s, epoch);
    struct node **p = find(s, name, len);
    if (*p && strongrep_ballot_gt((*p)->e.epoch, (*p)->e.round, epoch, round))
        return 0;
    if (value == STRONGREP_FORGET) {
        struct node *gone = *p;
        if (gone) {
            *p = gone->next;
            free(gone);
            s->count--;
        }
        return 1;
    }
    (*slot_of(s, name, len))->e = (struct strongrep_entry){epoch, round, value};
    return 1;
}

void strongrep_put(struct strongrep *s, const char *name, size_t len, int64_t value)
{
    (*slot_of(s, name, len))->e = (struct strongrep_entry){0, 0, value};
}

const struct strongrep_entry *strongrep_get(const struct strongrep *s, const char *name, size_t len)
{
    struct node *n = *find(s, name, len);
    return n ? &n->e : NULL;
}

size_t strongrep_count(const struct strongrep *s)
{
    return s->count;
}

void strongrep_each(const struct strongrep *s,
                    void (*fn)(void *arg, const char *name, size_t len,
                               const struct strongrep_entry *e),
                    void *arg)
{
    for (size_t i = 0; i < s->nslots; i++)
        for (struct node *n = s->slots[i]; n; n = n->next)
            fn(arg, n->name, n->len, &n->e);
}
