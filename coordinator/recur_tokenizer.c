/* recur_tokenizer.c: the tokenizer handle, the byte-level kind, and dispatch to the World
 * vocab (recur_tokenizer_world.c) and the HF byte-level BPE (recur_tokenizer_bpe.c). See
 * recur_tokenizer.h for the contract.
 *
 * Decoding is kind-independent: every kind exposes "the bytes of id" and decode just
 * concatenates them, so only encode and the byte tables differ per kind. */
#include "recur_tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "recur_log.h"
#include "recur_tokenizer_internal.h"

/* Catches a freed or foreign pointer at the API boundary instead of reading garbage. */
#define RECUR_TOKENIZER_MAGIC 0x52544f4bu /* "RTOK" */
/* The byte kind's vocab comes from a model header; anything above this is a corrupt header,
 * not a model, and must not make decode accept absurd ids. */
#define RECUR_TOKENIZER_BYTES_MAX_VOCAB (1 << 24)

struct recur_tokenizer {
    uint32_t               magic;
    recur_tokenizer_kind_t kind;
    int32_t                n_vocab; /* ids are valid in [0, n_vocab) */
    int32_t                eos;     /* -1 if none */
    uint8_t                byte_tab[256]; /* BYTES: byte_tab[b] == b, so token_bytes can point into it */
    recur_world_vocab_t   *world;         /* WORLD only */
    recur_bpe_t           *bpe;           /* BPE only */
};

static recur_status_t tokenizer_check(const recur_tokenizer_t *t) {
    if (!t || t->magic != RECUR_TOKENIZER_MAGIC) {
        recur_log_err("tokenizer: invalid handle %p", (const void *)t);
        return RECUR_E_INVAL;
    }
    return RECUR_OK;
}

recur_status_t recur_tokenizer_bytes_init(int32_t n_vocab, recur_tokenizer_t **out) {
    if (!out) return RECUR_E_INVAL;
    *out = NULL;
    if (n_vocab < 256 || n_vocab > RECUR_TOKENIZER_BYTES_MAX_VOCAB) {
        recur_log_err("byte tokenizer: vocab size %d outside [256, %d]", n_vocab, RECUR_TOKENIZER_BYTES_MAX_VOCAB);
        return RECUR_E_INVAL;
    }
    recur_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) {
        recur_log_err("byte tokenizer: out of memory");
        return RECUR_E_NOMEM;
    }
    t->magic = RECUR_TOKENIZER_MAGIC;
    t->kind = RECUR_TOKENIZER_BYTES;
    t->n_vocab = n_vocab;
    t->eos = -1;
    for (int b = 0; b < 256; b++) t->byte_tab[b] = (uint8_t)b;
    *out = t;
    return RECUR_OK;
}

recur_status_t recur_tokenizer_world_load(const char *vocab_path, recur_tokenizer_t **out) {
    if (!out) return RECUR_E_INVAL;
    *out = NULL;
    if (!vocab_path) {
        recur_log_err("World tokenizer: no vocab path given");
        return RECUR_E_INVAL;
    }
    recur_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) {
        recur_log_err("World tokenizer: out of memory");
        return RECUR_E_NOMEM;
    }
    recur_status_t st = recur_world_vocab_load(vocab_path, &t->world);
    if (st != RECUR_OK) {
        free(t);
        return st;
    }
    t->magic = RECUR_TOKENIZER_MAGIC;
    t->kind = RECUR_TOKENIZER_WORLD;
    t->n_vocab = recur_world_vocab_size(t->world);
    t->eos = 0; /* <|endoftext|> */
    for (int b = 0; b < 256; b++) t->byte_tab[b] = (uint8_t)b;
    *out = t;
    return RECUR_OK;
}

recur_status_t recur_tokenizer_bpe_load(const char *tokenizer_json_path, recur_tokenizer_t **out) {
    if (!out) return RECUR_E_INVAL;
    *out = NULL;
    if (!tokenizer_json_path) {
        recur_log_err("BPE tokenizer: no tokenizer.json path given");
        return RECUR_E_INVAL;
    }
    recur_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) {
        recur_log_err("BPE tokenizer: out of memory");
        return RECUR_E_NOMEM;
    }
    recur_status_t st = recur_bpe_load(tokenizer_json_path, &t->bpe);
    if (st != RECUR_OK) {
        free(t);
        return st;
    }
    t->magic = RECUR_TOKENIZER_MAGIC;
    t->kind = RECUR_TOKENIZER_BPE;
    t->n_vocab = recur_bpe_size(t->bpe);
    t->eos = recur_bpe_eos(t->bpe);
    for (int b = 0; b < 256; b++) t->byte_tab[b] = (uint8_t)b;
    *out = t;
    return RECUR_OK;
}

void recur_tokenizer_free(recur_tokenizer_t *t) {
    if (!t) return;
    recur_world_vocab_free(t->world);
    recur_bpe_free(t->bpe);
    t->magic = 0; /* a later use of this pointer fails tokenizer_check instead of running */
    free(t);
}

recur_tokenizer_kind_t recur_tokenizer_kind(const recur_tokenizer_t *t) { return t->kind; }
int32_t recur_tokenizer_vocab_size(const recur_tokenizer_t *t) { return t->n_vocab; }
int32_t recur_tokenizer_eos(const recur_tokenizer_t *t) { return t->eos; }

/* The bytes of an id already known to be in [0, n_vocab). */
static void tokenizer_token(const recur_tokenizer_t *t, int32_t id, const uint8_t **p, size_t *n) {
    if (t->kind == RECUR_TOKENIZER_WORLD) {
        recur_world_vocab_token(t->world, id, p, n);
        return;
    }
    if (t->kind == RECUR_TOKENIZER_BPE) {
        recur_bpe_token(t->bpe, id, p, n);
        return;
    }
    /* BYTES: ids >= 256 are model-only (padding) ids with no text. */
    *p = id < 256 ? &t->byte_tab[id] : t->byte_tab;
    *n = id < 256 ? 1 : 0;
}

recur_status_t recur_tokenizer_encode(const recur_tokenizer_t *t, const char *text, size_t n_bytes,
                                      int32_t **ids, size_t *n_ids) {
    RECUR_TRY(tokenizer_check(t));
    if (!ids || !n_ids || (!text && n_bytes)) {
        recur_log_err("tokenizer encode: NULL argument");
        return RECUR_E_INVAL;
    }
    *ids = NULL;
    *n_ids = 0;
    /* BPE sizes its own output: NFC may lengthen the text, so n_bytes ids need not suffice. */
    if (t->kind == RECUR_TOKENIZER_BPE) return recur_bpe_encode(t->bpe, (const uint8_t *)text, n_bytes, ids, n_ids);
    /* Every token covers at least one byte, so n_bytes ids always suffice. */
    if (n_bytes > SIZE_MAX / sizeof(int32_t)) {
        recur_log_err("tokenizer encode: %zu bytes is too long", n_bytes);
        return RECUR_E_INVAL;
    }
    int32_t *out = malloc((n_bytes ? n_bytes : 1) * sizeof *out);
    if (!out) {
        recur_log_err("tokenizer encode: out of memory for %zu ids", n_bytes);
        return RECUR_E_NOMEM;
    }
    const uint8_t *s = (const uint8_t *)text;
    size_t m = 0;
    if (t->kind == RECUR_TOKENIZER_WORLD) {
        recur_world_vocab_encode(t->world, s, n_bytes, out, &m);
    } else {
        for (size_t i = 0; i < n_bytes; i++) out[i] = s[i];
        m = n_bytes;
    }
    /* Give back the slack of the worst-case allocation (World text averages ~3-4 bytes per
     * token); a failed shrink just keeps the larger block. */
    if (m > 0 && m < n_bytes) {
        int32_t *shrunk = realloc(out, m * sizeof *out);
        if (shrunk) out = shrunk;
    }
    *ids = out;
    *n_ids = m;
    return RECUR_OK;
}

recur_status_t recur_tokenizer_decode(const recur_tokenizer_t *t, const int32_t *ids, size_t n_ids,
                                      char **text, size_t *n_bytes) {
    RECUR_TRY(tokenizer_check(t));
    if (!text || !n_bytes || (!ids && n_ids)) {
        recur_log_err("tokenizer decode: NULL argument");
        return RECUR_E_INVAL;
    }
    *text = NULL;
    *n_bytes = 0;
    /* Two passes: validate and size everything first, so the output is one allocation and
     * a bad id leaves nothing half-written. */
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            recur_log_err("tokenizer decode: id %d at position %zu is outside [0, %d)", ids[i], i, t->n_vocab);
            return RECUR_E_RANGE;
        }
        const uint8_t *p;
        size_t n;
        tokenizer_token(t, ids[i], &p, &n);
        total += n;
    }
    char *out = malloc(total + 1);
    if (!out) {
        recur_log_err("tokenizer decode: out of memory for %zu bytes", total);
        return RECUR_E_NOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < n_ids; i++) {
        const uint8_t *p;
        size_t n;
        tokenizer_token(t, ids[i], &p, &n);
        memcpy(out + o, p, n);
        o += n;
    }
    out[o] = '\0';
    *text = out;
    *n_bytes = o;
    return RECUR_OK;
}

recur_status_t recur_tokenizer_token_bytes(const recur_tokenizer_t *t, int32_t id, const char **bytes,
                                           size_t *n_bytes) {
    RECUR_TRY(tokenizer_check(t));
    if (!bytes || !n_bytes) {
        recur_log_err("tokenizer token_bytes: NULL argument");
        return RECUR_E_INVAL;
    }
    if (id < 0 || id >= t->n_vocab) {
        recur_log_err("tokenizer: id %d is outside [0, %d)", id, t->n_vocab);
        return RECUR_E_RANGE;
    }
    const uint8_t *p;
    tokenizer_token(t, id, &p, n_bytes);
    *bytes = (const char *)p;
    return RECUR_OK;
}
