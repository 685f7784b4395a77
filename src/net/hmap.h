/*
 * hmap.h - a fixed-capacity hash map from a pair of u64 keys to a u32 value (linear probing,
 * backward-shift deletion, no tombstones). Used for (client, task id) and (lane, ticket) look-ups
 * by the gateway and the remote client. Not thread-safe; the owner serialises access.
 *
 * The capacity is fixed at init (a power of two at least twice the most entries the caller will
 * ever insert): hmap_put returns -ENOSPC beyond cap/2 entries, so probes stay short.
 */
#ifndef OAG_NET_HMAP_H
#define OAG_NET_HMAP_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#define HMAP_EMPTY UINT32_MAX

struct hmap_ent {
    uint64_t a, b;
    uint32_t val;          /* HMAP_EMPTY: free */
};

struct hmap {
    struct hmap_ent *e;
    uint32_t mask, n;
};

static inline uint64_t hmap_hash(uint64_t a, uint64_t b)
{
    uint64_t h = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

/* min_entries: the most entries held at once. Returns 0 or -ENOMEM. */
static inline int hmap_init(struct hmap *m, uint32_t min_entries)
{
    uint32_t cap = 16;
    while (cap < 2 * min_entries && cap < (1u << 30))
        cap <<= 1;
    m->e = malloc((size_t)cap * sizeof *m->e);
    if (!m->e)
        return -ENOMEM;
    for (uint32_t i = 0; i < cap; i++)
        m->e[i].val = HMAP_EMPTY;
    m->mask = cap - 1;
    m->n = 0;
    return 0;
}

static inline void hmap_fini(struct hmap *m)
{
    free(m->e);
    m->e = NULL;
}

/* Returns the value stored for (a, b), or HMAP_EMPTY. */
static inline uint32_t hmap_get(const struct hmap *m, uint64_t a, uint64_t b)
{
    for (uint32_t i = (uint32_t)hmap_hash(a, b) & m->mask;; i = (i + 1) & m->mask) {
        const struct hmap_ent *e = &m->e[i];
        if (e->val == HMAP_EMPTY)
            return HMAP_EMPTY;
        if (e->a == a && e->b == b)
            return e->val;
    }
}

/* Inserts or replaces. Returns 0, or -ENOSPC when the map holds its capacity already. */
static inline int hmap_put(struct hmap *m, uint64_t a, uint64_t b, uint32_t val)
{
    for (uint32_t i = (uint32_t)hmap_hash(a, b) & m->mask;; i = (i + 1) & m->mask) {
        struct hmap_ent *e = &m->e[i];
        if (e->val == HMAP_EMPTY) {
            if (m->n >= (m->mask + 1) / 2)
                return -ENOSPC;
            e->a = a;
            e->b = b;
            e->val = val;
            m->n++;
            return 0;
        }
        if (e->a == a && e->b == b) {
            e->val = val;
            return 0;
        }
    }
}

/* Removes (a, b) if present; returns its value or HMAP_EMPTY. */
static inline uint32_t hmap_del(struct hmap *m, uint64_t a, uint64_t b)
{
    uint32_t i = (uint32_t)hmap_hash(a, b) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        if (m->e[i].val == HMAP_EMPTY)
            return HMAP_EMPTY;
        if (m->e[i].a == a && m->e[i].b == b)
            break;
    }
    uint32_t val = m->e[i].val;
    /* Backward shift: move later entries of the cluster into the hole when their home allows. */
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & m->mask; m->e[j].val != HMAP_EMPTY; j = (j + 1) & m->mask) {
        uint32_t home = (uint32_t)hmap_hash(m->e[j].a, m->e[j].b) & m->mask;
        /* j may move to hole if home is not cyclically within (hole, j]. */
        if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
            m->e[hole] = m->e[j];
            hole = j;
        }
    }
    m->e[hole].val = HMAP_EMPTY;
    m->n--;
    return val;
}

#endif
