/* recur_prefix_cache.h: which prompt prefixes have a cached recurrent state (a radix trie
 * keyed by token ids), and which prefix a new prompt is worth capturing.
 *
 * Pure logic, like recur_sched: no sockets, no clock (times come from the caller). The
 * states themselves live on the workers, each under its own host key (key_base + entry
 * index); the coordinator copies a slot's state there (capture) and back into a new
 * request's slot (hit), so a prompt that starts with a cached prefix prefills only the rest.
 *
 * What gets cached: every prompt is recorded in the trie (tokens only, bounded by
 * max_trie_tokens: past it the trie keeps only the paths of cached states). When a prompt
 * shares a prefix of L tokens with an earlier one (a shared system prompt, a few-shot
 * preamble), the state after floor(min(L, n - 1) / block) * block tokens is worth
 * capturing: the caller cuts this request's prefill there (recur_sched request.split_at)
 * and copies the state. So a prefix is prefilled twice (by the first two prompts that share
 * it) and served from the cache from the third on; prompts that share nothing cost no
 * state memory. Entries are evicted least recently used first, except those pinned by a
 * request about to load them.
 *
 * Ownership: the cache owns its trie; token arrays passed in are read only. Thread-safety:
 * none; one thread. */
#ifndef RECUR_PREFIX_CACHE_H
#define RECUR_PREFIX_CACHE_H

#include <stdint.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_prefix_cache recur_prefix_cache_t;

typedef struct recur_prefix_config {
    int32_t  max_entries;       /* cached states at most (>= 1)                                  */
    int32_t  block;             /* prefix lengths are multiples of this (>= 1)                   */
    int64_t  max_trie_tokens;   /* tokens the trie keeps (>= 1)                                  */
    uint64_t key_base;          /* entry i's state lives under key key_base + i                  */
} recur_prefix_config_t;

typedef struct recur_prefix_stats {
    int32_t  entries;           /* valid (captured) entries                                      */
    int32_t  pending;           /* captures not yet confirmed                                     */
    int64_t  trie_tokens;
    uint64_t lookups, hits, tokens_saved, captures, evictions;
} recur_prefix_stats_t;

recur_status_t recur_prefix_create(const recur_prefix_config_t *cfg, recur_prefix_cache_t **out);
void recur_prefix_free(recur_prefix_cache_t *pc);   /* NULL is a no-op */

/* The longest cached prefix of p[0..n) that leaves at least one token: its length (a
 * multiple of block; 0: none), *entry and *key for loading it. Counts a lookup (and a hit). */
int32_t recur_prefix_lookup(recur_prefix_cache_t *pc, const int32_t *p, int32_t n, uint64_t now, int32_t *entry,
                            uint64_t *key);
/* Records p[0..n) and returns the prefix length worth capturing for it (see the top),
 * longer than `have` (what the request already starts from), or 0. */
int32_t recur_prefix_observe(recur_prefix_cache_t *pc, const int32_t *p, int32_t n, int32_t have);
/* An entry for the prefix p[0..len) (pending until recur_prefix_commit): its index, *key
 * for the capture. Takes a free entry or evicts the least recently used unpinned one. -1
 * when the prefix has an entry already or every entry is pinned. */
int32_t recur_prefix_reserve(recur_prefix_cache_t *pc, const int32_t *p, int32_t len, uint64_t now, uint64_t *key);
/* The capture's outcome: ok makes the entry valid (lookups find it), else it is freed. */
void recur_prefix_commit(recur_prefix_cache_t *pc, int32_t entry, int ok);
/* A request about to load entry pins it (+1) until its state is in the slot (-1). */
void recur_prefix_pin(recur_prefix_cache_t *pc, int32_t entry, int delta);
/* Every entry gone (the workers' host memory with them); the trie stays. */
void recur_prefix_clear(recur_prefix_cache_t *pc);
void recur_prefix_get_stats(const recur_prefix_cache_t *pc, recur_prefix_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif
