/*
 * region_lifeweak.c - weak stand-ins for the store's lifecycle calls (gstore.h
 * "Lifecycle") while the store does not define them yet: nothing is ever dead, every id
 * exists, and a clear or a delete is refused (GSTORE_EFULL, nothing applied). The store's
 * definitions replace them at link time; this file goes once they are in.
 */
#include "../store/gstore.h"

__attribute__((weak)) int gstore_clear(struct gstore *st, uint32_t id)
{
    (void)st;
    (void)id;
    return GSTORE_EFULL;
}

__attribute__((weak)) int gstore_delete(struct gstore *st, uint32_t id)
{
    (void)st;
    (void)id;
    return GSTORE_EFULL;
}

__attribute__((weak)) int gstore_dead(const struct gstore *st, uint32_t id)
{
    (void)st;
    (void)id;
    return 0;
}

__attribute__((weak)) uint32_t gstore_dead_total(const struct gstore *st)
{
    (void)st;
    return 0;
}

__attribute__((weak)) int gstore_exists(const struct gstore *st, uint32_t id)
{
    (void)st;
    (void)id;
    return 1;
}

__attribute__((weak)) uint32_t gstore_live(const struct gstore *st)
{
    return gstore_count(st);
}
