/* recur_prefix_cache.c: see recur_prefix_cache.h.
 *
 * The trie is a radix trie: each node holds the label of the edge from its parent (a run
 * of token ids) and its depth (tokens from the root to its end). Children are a sibling
 * list (fan-out is small past the first few tokens). An entry always sits at a node's end:
 * reserving a prefix that ends inside an edge splits the edge there. */
#include "recur_prefix_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct pnode pnode_t;
struct pnode {
    int32_t *lab;
    int32_t n_lab, depth;
    int32_t entry;              /* -1: none */
    pnode_t *parent, *child, *sibling;
};

enum { E_FREE = 0, E_PENDING = 1, E_VALID = 2 };
typedef struct pentry {
    int state;
    pnode_t *node;
    uint64_t last_used;
    int32_t refs;
} pentry_t;

struct recur_prefix_cache {
    recur_prefix_config_t cfg;
    pnode_t *root;
    int64_t tokens;
    pentry_t *e;
    recur_prefix_stats_t st;
};

static pnode_t *node_new(const int32_t *lab, int32_t n, int32_t depth, pnode_t *parent) {
    pnode_t *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    if (n) {
        x->lab = malloc((size_t)n * sizeof *x->lab);
        if (!x->lab) {
            free(x);
            return NULL;
        }
        memcpy(x->lab, lab, (size_t)n * sizeof *x->lab);
    }
    x->n_lab = n, x->depth = depth, x->entry = -1, x->parent = parent;
    return x;
}

static void tree_free(pnode_t *x) {
    while (x) {
        pnode_t *next = x->sibling;
        tree_free(x->child);
        free(x->lab);
        free(x);
        x = next;
    }
}

recur_status_t recur_prefix_create(const recur_prefix_config_t *cfg, recur_prefix_cache_t **out) {
    *out = NULL;
    if (!cfg || cfg->max_entries < 1 || cfg->block < 1 || cfg->max_trie_tokens < 1) return RECUR_E_INVAL;
    recur_prefix_cache_t *pc = calloc(1, sizeof *pc);
    if (!pc) return RECUR_E_NOMEM;
    pc->cfg = *cfg;
    pc->root = node_new(NULL, 0, 0, NULL);
    pc->e = calloc((size_t)cfg->max_entries, sizeof *pc->e);
    if (!pc->root || !pc->e) {
        recur_prefix_free(pc);
        return RECUR_E_NOMEM;
    }
    *out = pc;
    return RECUR_OK;
}

void recur_prefix_free(recur_prefix_cache_t *pc) {
    if (!pc) return;
    tree_free(pc->root);
    free(pc->e);
    free(pc);
}

static pnode_t *find_child(const pnode_t *x, int32_t tok) {
    for (pnode_t *c = x->child; c; c = c->sibling)
        if (c->lab[0] == tok) return c;
    return NULL;
}

/* Splits child c of its parent after j label tokens (0 < j < n_lab): returns the new node
 * that ends there. */
static pnode_t *split(pnode_t *c, int32_t j) {
    pnode_t *p = c->parent;
    pnode_t *mid = node_new(c->lab, j, c->depth - c->n_lab + j, p);
    if (!mid) return NULL;
    int32_t *rest = malloc((size_t)(c->n_lab - j) * sizeof *rest);
    if (!rest) {
        free(mid->lab);
        free(mid);
        return NULL;
    }
    memcpy(rest, c->lab + j, (size_t)(c->n_lab - j) * sizeof *rest);
    /* mid takes c's place among p's children */
    pnode_t **pp = &p->child;
    while (*pp != c) pp = &(*pp)->sibling;
    *pp = mid;
    mid->sibling = c->sibling;
    c->sibling = NULL;
    free(c->lab);
    c->lab = rest, c->n_lab -= j, c->parent = mid;
    mid->child = c;
    return mid;
}

/* Walks p[0..n): the node ending exactly at depth n when there is one (made by splitting
 * when `make`), else NULL. *shared gets how many tokens of p the trie already held. With
 * insert, the rest of p is added as a new leaf. */
static pnode_t *walk(recur_prefix_cache_t *pc, const int32_t *p, int32_t n, int insert, int make, int32_t *shared) {
    pnode_t *x = pc->root;
    int32_t i = 0;
    *shared = 0;
    while (i < n) {
        pnode_t *c = find_child(x, p[i]);
        if (!c) break;
        int32_t j = 0;
        while (j < c->n_lab && i + j < n && c->lab[j] == p[i + j]) j++;
        if (j < c->n_lab) {   /* p ends inside the edge, or leaves it */
            *shared = i + j;
            if (i + j == n) return make ? split(c, j) : NULL;
            if (!insert) return NULL;
            pnode_t *mid = split(c, j);
            if (!mid) return NULL;
            x = mid, i += j;
            goto add_leaf;
        }
        i += j;
        x = c;
    }
    *shared = i;
    if (i == n) return x;
    if (!insert) return NULL;
add_leaf:;
    pnode_t *leaf = node_new(p + i, n - i, n, x);
    if (!leaf) return NULL;
    leaf->sibling = x->child;
    x->child = leaf;
    pc->tokens += n - i;
    return leaf;
}

int32_t recur_prefix_lookup(recur_prefix_cache_t *pc, const int32_t *p, int32_t n, uint64_t now, int32_t *entry,
                            uint64_t *key) {
    *entry = -1, *key = 0;
    pc->st.lookups++;
    pnode_t *x = pc->root, *best = NULL;
    int32_t i = 0;
    while (i < n) {
        pnode_t *c = find_child(x, p[i]);
        if (!c || c->n_lab > n - i || memcmp(c->lab, p + i, (size_t)c->n_lab * sizeof *p)) break;
        i += c->n_lab;
        x = c;
        if (x->entry >= 0 && pc->e[x->entry].state == E_VALID && x->depth <= n - 1) best = x;
    }
    if (!best) return 0;
    pentry_t *e = &pc->e[best->entry];
    e->last_used = now;
    *entry = best->entry;
    *key = pc->cfg.key_base + (uint64_t)best->entry;
    pc->st.hits++;
    pc->st.tokens_saved += (uint64_t)best->depth;
    return best->depth;
}

/* Keeps the trie within max_trie_tokens: rebuilds it from the entries' paths alone. */
static void prune(recur_prefix_cache_t *pc) {
    int32_t ne = pc->cfg.max_entries;
    int32_t **paths = calloc((size_t)ne, sizeof *paths);
    int32_t *lens = calloc((size_t)ne, sizeof *lens);
    pnode_t *root = node_new(NULL, 0, 0, NULL);
    if (!paths || !lens || !root) {
        free(paths);
        free(lens);
        free(root);
        return;
    }
    for (int32_t k = 0; k < ne; k++) {
        pnode_t *x = pc->e[k].node;
        if (pc->e[k].state == E_FREE || !x) continue;
        if (!(paths[k] = malloc((size_t)(x->depth ? x->depth : 1) * sizeof **paths))) continue;
        lens[k] = x->depth;
        for (pnode_t *y = x; y && y->parent; y = y->parent)
            memcpy(paths[k] + y->depth - y->n_lab, y->lab, (size_t)y->n_lab * sizeof **paths);
    }
    tree_free(pc->root);
    pc->root = root;
    pc->tokens = 0;
    for (int32_t k = 0; k < ne; k++) {
        if (pc->e[k].state == E_FREE) continue;
        int32_t sh;
        pnode_t *x = paths[k] ? walk(pc, paths[k], lens[k], 1, 1, &sh) : NULL;
        pc->e[k].node = x;
        if (x) x->entry = k;
        else pc->e[k].state = E_FREE;   /* out of memory: the entry is forgotten */
        free(paths[k]);
    }
    free(paths);
    free(lens);
}

int32_t recur_prefix_observe(recur_prefix_cache_t *pc, const int32_t *p, int32_t n, int32_t have) {
    int32_t shared = 0;
    walk(pc, p, n, 1, 0, &shared);
    if (pc->tokens > pc->cfg.max_trie_tokens) prune(pc);
    int32_t L = shared < n - 1 ? shared : n - 1;
    int32_t P = L / pc->cfg.block * pc->cfg.block;
    if (P <= have || P < pc->cfg.block) return 0;
    pnode_t *x = walk(pc, p, P, 0, 0, &shared);
    if (x && x->entry >= 0) return 0;   /* cached already (or being captured) */
    return P;
}

int32_t recur_prefix_reserve(recur_prefix_cache_t *pc, const int32_t *p, int32_t len, uint64_t now, uint64_t *key) {
    *key = 0;
    int32_t sh;
    pnode_t *x = walk(pc, p, len, 1, 1, &sh);
    if (!x || x->entry >= 0) return -1;
    int32_t k = -1;
    for (int32_t i = 0; i < pc->cfg.max_entries && k < 0; i++)
        if (pc->e[i].state == E_FREE) k = i;
    if (k < 0) {   /* the least recently used valid entry nobody is about to load */
        for (int32_t i = 0; i < pc->cfg.max_entries; i++)
            if (pc->e[i].state == E_VALID && pc->e[i].refs == 0 &&
                (k < 0 || pc->e[i].last_used < pc->e[k].last_used))
                k = i;
        if (k < 0) return -1;
        pc->e[k].node->entry = -1;
        pc->st.evictions++;
    }
    pc->e[k] = (pentry_t){.state = E_PENDING, .node = x, .last_used = now, .refs = 0};
    x->entry = k;
    *key = pc->cfg.key_base + (uint64_t)k;
    return k;
}

void recur_prefix_commit(recur_prefix_cache_t *pc, int32_t entry, int ok) {
    if (entry < 0 || entry >= pc->cfg.max_entries || pc->e[entry].state != E_PENDING) return;
    if (ok) {
        pc->e[entry].state = E_VALID;
        pc->st.captures++;
        return;
    }
    if (pc->e[entry].node) pc->e[entry].node->entry = -1;
    pc->e[entry] = (pentry_t){0};
}

void recur_prefix_pin(recur_prefix_cache_t *pc, int32_t entry, int delta) {
    if (entry < 0 || entry >= pc->cfg.max_entries) return;
    pc->e[entry].refs += delta;
    if (pc->e[entry].refs < 0) pc->e[entry].refs = 0;
}

void recur_prefix_clear(recur_prefix_cache_t *pc) {
    for (int32_t k = 0; k < pc->cfg.max_entries; k++) {
        if (pc->e[k].node) pc->e[k].node->entry = -1;
        pc->e[k] = (pentry_t){0};
    }
}

void recur_prefix_get_stats(const recur_prefix_cache_t *pc, recur_prefix_stats_t *st) {
    *st = pc->st;
    st->entries = st->pending = 0;
    for (int32_t k = 0; k < pc->cfg.max_entries; k++) {
        st->entries += pc->e[k].state == E_VALID;
        st->pending += pc->e[k].state == E_PENDING;
    }
    st->trie_tokens = pc->tokens;
}
