/* recur_tokenizer_bpe.c: byte-level BPE read from a Hugging Face tokenizer.json (GPT-NeoX-20B,
 * the xLSTM 7B tokenizer), reproducing HF `tokenizers` token for token. See recur_tokenizer.h
 * for the contract and fixtures/tokenizers/README.md in the shared folder for the file.
 *
 * Encode, in HF's order (tokenizers: tokenizer/mod.rs encode_single_sequence,
 * added_vocabulary.rs extract_and_normalize, pre_tokenizers/byte_level.rs, models/bpe):
 *   1. added tokens with normalized=false (the special ones) are cut out of the raw text,
 *      leftmost-longest, as HF's Aho-Corasick LeftmostLongest does;
 *   2. each remaining piece is NFC-normalised (utf8proc), then added tokens with
 *      normalized=true (NeoX: the runs of 2..24 spaces), NFC'd themselves, are cut out of it;
 *   3. each remaining piece is split by the GPT-2 regex (PCRE2), every match and every gap
 *      between matches becoming a pre-token (SplitDelimiterBehavior::Isolated);
 *   4. each pre-token's bytes, as byte-level characters, go through BPE merges with exactly
 *      HF's priority-queue algorithm (word.rs merge_all), so even odd merge tables agree;
 *   5. the resulting symbol ids are the output.
 * HF takes a Python str, i.e. valid UTF-8. recur takes any bytes: the input is cut into maximal
 * valid UTF-8 runs, each run is encoded as above on its own, and each invalid byte becomes the
 * single token of that byte (byte-level BPE has one for every byte a UTF-8 string can hold),
 * so decode gives the byte back. Bytes no UTF-8 string contains may lack a token (NeoX: 0xC0,
 * 0xC1, 0xF5..0xFF); such a byte is encoded as U+FFFD, what Python's errors="replace" would
 * have given.
 *
 * The regex: HF compiles `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
 * with Oniguruma, whose \s is the Unicode White_Space set (U+0009..000D, 0020, 0085, 00A0,
 * 1680, 2000..200A, 2028, 2029, 202F, 205F, 3000). PCRE2's \s under UCP also takes U+180E, so
 * the pattern below spells that set out instead of writing \s. \p{L} and \p{N} are PCRE2's
 * (Unicode 14 in PCRE2 10.42); characters assigned later may split differently from HF's.
 *
 * Decode: a vocab token's bytes are its string mapped back through the byte-level table (a
 * string with a character outside that table keeps its UTF-8 bytes, as HF's ByteLevel decoder
 * does); a non-special added token's bytes are its content; a special token has none.
 *
 * Thread-safety: after load everything here is read-only; encode keeps all its scratch (PCRE2
 * match data included) in a per-call context. */
#include "recur_tokenizer_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "recur_file.h"
#include "recur_log.h"
#include "recur_utf8.h"

/* Ids are int32 and per-id tables are allocated up to the max id, so a garbage id must not be
 * able to ask for gigabytes. 2^24 is far above any real vocabulary (NeoX: 50277). */
#define BPE_MAX_ID ((1 << 24) - 1)
/* String offsets are uint32; the NeoX file is 2.5 MB, the xLSTM hub one 3.6 MB. */
#define BPE_MAX_FILE_BYTES ((size_t)1 << 30)
/* JIT stack for regex matches that outgrow PCRE2's default 32 KiB machine-stack area. The
 * GPT-2 pattern's repeats are single-character ones that the JIT backtracks without stack
 * frames, so this is a safety net, not an expected path. */
#define BPE_JIT_STACK_MAX ((size_t)8 << 20)

/* The pattern, with the White_Space set spelled out (see the header comment). */
#define BPE_WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char bpe_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" BPE_WS "\\p{L}\\p{N}]+|[" BPE_WS "]+(?![^" BPE_WS "])|["
    BPE_WS "]+";

/* U+FFFD, the stand-in for an invalid byte that has no token of its own. */
static const uint8_t bpe_fffd[3] = {0xEF, 0xBF, 0xBD};

typedef struct bpe_str {
    uint32_t off; /* into str_blob */
    uint32_t len;
} bpe_str_t;

/* Added-token trie node. Children are a singly linked sibling list: a tokenizer has a handful
 * of added tokens (NeoX: 25) and matching only walks it where the root table says a token can
 * start, so compactness beats lookup speed below the root. */
typedef struct bpe_trie_node {
    int32_t  id;      /* added token ending here, -1 if none */
    uint32_t child;   /* first child, 0 = none (node 0, the root, is nobody's child) */
    uint32_t sibling; /* next sibling, 0 = none */
    uint8_t  byte;    /* edge label into this node */
} bpe_trie_node_t;

typedef struct bpe_trie {
    bpe_trie_node_t *nodes; /* nodes[0] = root */
    uint32_t         n, cap;
    uint32_t         root[256]; /* root's child per first byte (0 = none): one load per input byte */
} bpe_trie_t;

/* One merge: the pair (a, b) -> new_id at priority rank (its index in "merges"). */
typedef struct bpe_merge {
    uint64_t key; /* (a << 32) | b; BPE_EMPTY_KEY = free slot */
    uint32_t rank;
    int32_t  new_id;
} bpe_merge_t;
#define BPE_EMPTY_KEY UINT64_MAX /* ids are < 2^24, so no real pair has this key */

struct recur_bpe {
    int32_t n_vocab;       /* max id + 1 over vocab and added tokens */
    int32_t eos;           /* id of "<|endoftext|>", -1 if none */
    int32_t unk_id;        /* model.unk_token's id, -1 if none */
    int     fuse_unk;      /* model.fuse_unk */
    int     ignore_merges; /* model.ignore_merges: a pre-token that is itself a vocab entry is emitted whole */
    int     nfc;           /* normalizer is NFC (else none) */

    /* The vocab strings exactly as in the JSON (byte-level alphabet), for merges and
     * ignore_merges. key_tab is open addressing over keys[], storing index + 1 (0 = free). */
    char      *str_blob;
    bpe_str_t *keys;
    int32_t   *key_id;
    uint32_t   n_keys;
    uint32_t  *key_tab;
    uint32_t   key_mask;

    /* What each id decodes to. */
    uint8_t  *tok_blob;
    uint32_t *tok_off; /* (n_vocab) */
    uint32_t *tok_len; /* (n_vocab); 0 for special tokens and ids nothing defines */

    int32_t byte_id[256];     /* the id of the one-byte token for byte b, -1 if the vocab lacks it */
    uint8_t byte_utf8[256][2]; /* the byte-level character for byte b, UTF-8 encoded */
    uint8_t byte_utf8_len[256];

    bpe_merge_t *merges; /* open addressing, merge_mask + 1 slots */
    uint64_t     merge_mask;

    bpe_trie_t raw_trie;  /* added tokens with normalized=false, matched before normalisation */
    bpe_trie_t norm_trie; /* added tokens with normalized=true, NFC'd, matched after it */

    pcre2_code *re;
};

/* ---------------------------------------------------------------- small helpers */


static int bpe_utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t l = recur_utf8_len(s + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

/* Decodes the code point of a sequence recur_utf8_len accepted. */
static uint32_t bpe_utf8_cp(const uint8_t *s, size_t len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (len == 2 ? 0x1Fu : len == 3 ? 0x0Fu : 0x07u);
    for (size_t i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3Fu);
    return cp;
}

/* FNV-1a: the keys are short strings and the table is built once. */
static uint32_t bpe_hash_str(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static uint64_t bpe_hash_pair(uint64_t key) {
    key ^= key >> 31;
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 29);
}

static uint32_t bpe_pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* The byte-level alphabet (GPT-2's bytes_to_unicode; tokenizers byte_level.rs bytes_char):
 * printable Latin-1 bytes stand for themselves, the other 68 take U+0100.. in byte order. */
static void bpe_byte_alphabet(uint32_t cp_of_byte[256]) {
    uint32_t n = 0;
    for (int b = 0; b < 256; b++) {
        int self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp_of_byte[b] = self ? (uint32_t)b : 0x100 + n++;
    }
}

/* ---------------------------------------------------------------- vocab string table */

/* Index into keys[] of the vocab string s, or -1. */
static int64_t bpe_key_find(const recur_bpe_t *b, const uint8_t *s, size_t n) {
    if (!b->key_tab) return -1;
    for (uint32_t h = bpe_hash_str(s, n) & b->key_mask;; h = (h + 1) & b->key_mask) {
        uint32_t k = b->key_tab[h];
        if (!k) return -1;
        const bpe_str_t *e = &b->keys[k - 1];
        if (e->len == n && memcmp(b->str_blob + e->off, s, n) == 0) return k - 1;
    }
}

static int32_t bpe_vocab_id(const recur_bpe_t *b, const uint8_t *s, size_t n) {
    int64_t k = bpe_key_find(b, s, n);
    return k < 0 ? -1 : b->key_id[k];
}

/* ---------------------------------------------------------------- merges table */

static const bpe_merge_t *bpe_merge_find(const recur_bpe_t *b, int32_t a, int32_t c) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)c;
    for (uint64_t h = bpe_hash_pair(key) & b->merge_mask;; h = (h + 1) & b->merge_mask) {
        const bpe_merge_t *m = &b->merges[h];
        if (m->key == key) return m;
        if (m->key == BPE_EMPTY_KEY) return NULL;
    }
}

/* A pair listed twice keeps its last rank: HF collects the merges into a HashMap. */
static void bpe_merge_put(recur_bpe_t *b, int32_t a, int32_t c, uint32_t rank, int32_t new_id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)c;
    for (uint64_t h = bpe_hash_pair(key) & b->merge_mask;; h = (h + 1) & b->merge_mask) {
        bpe_merge_t *m = &b->merges[h];
        if (m->key == key || m->key == BPE_EMPTY_KEY) {
            m->key = key;
            m->rank = rank;
            m->new_id = new_id;
            return;
        }
    }
}

/* ---------------------------------------------------------------- added-token tries */

static recur_status_t bpe_trie_add(bpe_trie_t *t, const uint8_t *s, size_t n, int32_t id) {
    if (!t->nodes) {
        t->cap = 64;
        t->nodes = calloc(t->cap, sizeof *t->nodes);
        if (!t->nodes) return RECUR_E_NOMEM;
        t->nodes[0].id = -1;
        t->n = 1;
    }
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = node == 0 ? t->root[s[i]] : t->nodes[node].child;
        if (node != 0)
            while (c && t->nodes[c].byte != s[i]) c = t->nodes[c].sibling;
        if (!c) {
            if (t->n == t->cap) {
                bpe_trie_node_t *nn = realloc(t->nodes, 2 * (size_t)t->cap * sizeof *nn);
                if (!nn) return RECUR_E_NOMEM;
                t->nodes = nn;
                t->cap *= 2;
            }
            c = t->n++;
            t->nodes[c] = (bpe_trie_node_t){.id = -1, .child = 0, .sibling = 0, .byte = s[i]};
            if (node == 0) {
                t->root[s[i]] = c;
            } else {
                t->nodes[c].sibling = t->nodes[node].child;
                t->nodes[node].child = c;
            }
        }
        node = c;
    }
    t->nodes[node].id = id;
    return RECUR_OK;
}

/* Longest added token starting at s[0]: its length (0 if none) and id. */
static size_t bpe_trie_match(const bpe_trie_t *t, const uint8_t *s, size_t n, int32_t *id) {
    uint32_t node = t->root[s[0]];
    size_t best = 0;
    for (size_t i = 1; node; i++) {
        if (t->nodes[node].id >= 0) { best = i; *id = t->nodes[node].id; }
        if (i == n) break;
        uint32_t c = t->nodes[node].child;
        while (c && t->nodes[c].byte != s[i]) c = t->nodes[c].sibling;
        node = c;
    }
    return best;
}

/* ---------------------------------------------------------------- load */


/* cJSON ends every string at NUL, so a "\u0000" escape would silently cut a token short.
 * No byte-level vocab contains one (byte 0 is U+0100 there); refuse rather than mis-read. */
static int bpe_json_has_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 5 < n; i++) {
        if (s[i] != '\\') continue;
        size_t j = i;
        while (j < n && s[j] == '\\') j++;
        /* an odd run of backslashes escapes the character after it */
        if (((j - i) & 1) && j + 4 < n && s[j] == 'u' && memcmp(s + j + 1, "0000", 4) == 0) return 1;
        i = j - 1;
    }
    return 0;
}

static int bpe_json_absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* A JSON bool, or the default when absent/null. -1 when it is some other type. */
static int bpe_json_bool(const cJSON *v, int dflt) {
    if (bpe_json_absent(v)) return dflt;
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v) ? 1 : 0;
    return -1;
}

/* An integer id in [0, BPE_MAX_ID], or -1. */
static int32_t bpe_json_id(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= BPE_MAX_ID)) return -1;
    int32_t i = (int32_t)d;
    return (double)i == d ? i : -1;
}

/* {"type": want, ...}? The component's "type" string, for the error message, in *type. */
static int bpe_json_is_type(const cJSON *v, const char *want, const char **type) {
    const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
    *type = cJSON_IsString(t) ? t->valuestring : "?";
    return cJSON_IsString(t) && strcmp(t->valuestring, want) == 0;
}

/* Everything outside the model itself that changes HF's output: anything but the NeoX
 * pipeline (NFC or no normalizer, ByteLevel without prefix space using the GPT-2 regex,
 * ByteLevel decoder and (optional) post-processor, no truncation or padding) is refused,
 * because recur would silently tokenize it differently. */
static recur_status_t bpe_check_pipeline(const char *path, const cJSON *root, int *nfc) {
    const char *type;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (v && !(cJSON_IsString(v) && strcmp(v->valuestring, "1.0") == 0)) {
        recur_log_err("%s: tokenizer.json version is not \"1.0\"", path);
        return RECUR_E_UNSUPPORTED;
    }
    if (!bpe_json_absent(cJSON_GetObjectItemCaseSensitive(root, "truncation")) ||
        !bpe_json_absent(cJSON_GetObjectItemCaseSensitive(root, "padding"))) {
        recur_log_err("%s: truncation/padding settings are not supported (they must be null)", path);
        return RECUR_E_UNSUPPORTED;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    *nfc = 0;
    if (!bpe_json_absent(v)) {
        if (!bpe_json_is_type(v, "NFC", &type)) {
            recur_log_err("%s: normalizer \"%s\" is not supported (only NFC or none)", path, type);
            return RECUR_E_UNSUPPORTED;
        }
        *nfc = 1;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!bpe_json_is_type(v, "ByteLevel", &type)) {
        recur_log_err("%s: pre_tokenizer \"%s\" is not supported (only ByteLevel)", path,
                      bpe_json_absent(v) ? "null" : type);
        return RECUR_E_UNSUPPORTED;
    }
    /* HF's ByteLevel has no default for add_prefix_space when deserialising, and true would
     * prepend a space to every piece; use_regex defaults to true. */
    if (bpe_json_bool(cJSON_GetObjectItemCaseSensitive(v, "add_prefix_space"), -1) != 0 ||
        bpe_json_bool(cJSON_GetObjectItemCaseSensitive(v, "use_regex"), 1) != 1) {
        recur_log_err("%s: ByteLevel pre_tokenizer needs add_prefix_space false and use_regex true (or absent)",
                      path);
        return RECUR_E_UNSUPPORTED;
    }
    /* The ByteLevel post-processor only trims offsets; a template one would add ids. */
    v = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (!bpe_json_absent(v) && !bpe_json_is_type(v, "ByteLevel", &type)) {
        recur_log_err("%s: post_processor \"%s\" is not supported (only ByteLevel or none)", path, type);
        return RECUR_E_UNSUPPORTED;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!bpe_json_is_type(v, "ByteLevel", &type)) {
        recur_log_err("%s: decoder \"%s\" is not supported (only ByteLevel)", path, bpe_json_absent(v) ? "null" : type);
        return RECUR_E_UNSUPPORTED;
    }
    return RECUR_OK;
}

/* The BPE model's options. Refused: dropout (random merges), byte_fallback, subword
 * prefixes/suffixes (not GPT-2 style; an empty one is the same as none, as in HF). */
static recur_status_t bpe_check_model(const char *path, const cJSON *model, int *ignore_merges, int *fuse_unk) {
    const char *type;
    if (!cJSON_IsObject(model)) {
        recur_log_err("%s: \"model\" is missing or not an object", path);
        return RECUR_E_FORMAT;
    }
    if (!bpe_json_is_type(model, "BPE", &type)) {
        recur_log_err("%s: model type \"%s\" is not supported (only BPE)", path, type);
        return RECUR_E_UNSUPPORTED;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (!bpe_json_absent(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0.0)) {
        recur_log_err("%s: BPE dropout is not supported", path);
        return RECUR_E_UNSUPPORTED;
    }
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(model, affixes[i]);
        if (!bpe_json_absent(v) && !(cJSON_IsString(v) && v->valuestring[0] == '\0')) {
            recur_log_err("%s: BPE %s is not supported", path, affixes[i]);
            return RECUR_E_UNSUPPORTED;
        }
    }
    int bf = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"), 0);
    *ignore_merges = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"), 0);
    *fuse_unk = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"), 0);
    if (bf != 0) {
        recur_log_err("%s: BPE byte_fallback is not supported", path);
        return bf < 0 ? RECUR_E_FORMAT : RECUR_E_UNSUPPORTED;
    }
    if (*ignore_merges < 0 || *fuse_unk < 0) {
        recur_log_err("%s: BPE ignore_merges/fuse_unk must be booleans", path);
        return RECUR_E_FORMAT;
    }
    return RECUR_OK;
}

/* Reads model.vocab into the string table and finds the max id. */
static recur_status_t bpe_load_vocab(const char *path, recur_bpe_t *b, const cJSON *vocab, size_t json_len,
                                     int32_t *max_id) {
    if (!cJSON_IsObject(vocab)) {
        recur_log_err("%s: model.vocab is missing or not an object", path);
        return RECUR_E_FORMAT;
    }
    size_t n = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) n++;
    if (n == 0 || n > BPE_MAX_ID) {
        recur_log_err("%s: model.vocab has %zu entries", path, n);
        return RECUR_E_FORMAT;
    }
    /* Every key came out of the file, so the keys together are shorter than the file. */
    b->str_blob = malloc(json_len + 1);
    b->keys = malloc(n * sizeof *b->keys);
    b->key_id = malloc(n * sizeof *b->key_id);
    uint32_t cap = bpe_pow2_at_least(2 * n);
    b->key_tab = calloc(cap, sizeof *b->key_tab);
    if (!b->str_blob || !b->keys || !b->key_id || !b->key_tab) {
        recur_log_err("%s: out of memory for %zu vocab entries", path, n);
        return RECUR_E_NOMEM;
    }
    b->key_mask = cap - 1;
    size_t off = 0;
    *max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        const uint8_t *s = (const uint8_t *)e->string;
        size_t len = strlen(e->string);
        int32_t id = bpe_json_id(e);
        if (id < 0) {
            recur_log_err("%s: model.vocab[\"%s\"] is not an id in [0, %d]", path, e->string, BPE_MAX_ID);
            return RECUR_E_FORMAT;
        }
        if (len == 0 || !bpe_utf8_valid(s, len)) {
            recur_log_err("%s: model.vocab has an empty or invalid UTF-8 token (id %d)", path, id);
            return RECUR_E_FORMAT;
        }
        if (bpe_key_find(b, s, len) >= 0) {
            recur_log_err("%s: model.vocab lists \"%s\" twice", path, e->string);
            return RECUR_E_FORMAT;
        }
        if (off + len > json_len) { /* cannot happen: keys are parsed out of the file */
            recur_log_err("%s: model.vocab keys are longer than the file", path);
            return RECUR_E_FORMAT;
        }
        memcpy(b->str_blob + off, s, len);
        uint32_t k = b->n_keys++;
        b->keys[k] = (bpe_str_t){(uint32_t)off, (uint32_t)len};
        b->key_id[k] = id;
        off += len;
        uint32_t h = bpe_hash_str(s, len) & b->key_mask;
        while (b->key_tab[h]) h = (h + 1) & b->key_mask;
        b->key_tab[h] = k + 1;
        if (id > *max_id) *max_id = id;
    }
    return RECUR_OK;
}

/* An added token as HF reads it. */
typedef struct bpe_added {
    const uint8_t *content;
    size_t         len;
    int32_t        id;
    int            special, normalized;
} bpe_added_t;

/* Reads added_tokens. HF does not take the JSON ids at face value: it re-adds the tokens in
 * order, giving each the id of an equal vocab entry or else the next free id (tokenizer/
 * serialization.rs, added_vocabulary.rs add_tokens), and only warns on a mismatch. A file
 * where the two disagree means different things to different readers, so it is refused. */
static recur_status_t bpe_load_added(const char *path, recur_bpe_t *b, const cJSON *arr, bpe_added_t **out,
                                     size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    if (bpe_json_absent(arr)) return RECUR_OK;
    if (!cJSON_IsArray(arr)) {
        recur_log_err("%s: added_tokens is not an array", path);
        return RECUR_E_FORMAT;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (n == 0) return RECUR_OK;
    bpe_added_t *a = calloc(n, sizeof *a);
    if (!a) return RECUR_E_NOMEM;
    size_t i = 0;
    int32_t max_added = -1;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        int32_t id = bpe_json_id(cJSON_GetObjectItemCaseSensitive(e, "id"));
        int special = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(e, "special"), 0);
        int normalized = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(e, "normalized"), !special);
        int single_word = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(e, "single_word"), 0);
        int lstrip = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(e, "lstrip"), 0);
        int rstrip = bpe_json_bool(cJSON_GetObjectItemCaseSensitive(e, "rstrip"), 0);
        if (!cJSON_IsObject(e) || !cJSON_IsString(content) || id < 0 || special < 0 || normalized < 0 ||
            single_word < 0 || lstrip < 0 || rstrip < 0) {
            recur_log_err("%s: added_tokens[%zu] is malformed (needs content, id and boolean flags)", path, i);
            free(a);
            return RECUR_E_FORMAT;
        }
        const uint8_t *s = (const uint8_t *)content->valuestring;
        size_t len = strlen(content->valuestring);
        if (len == 0 || !bpe_utf8_valid(s, len)) {
            recur_log_err("%s: added_tokens[%zu] has empty or invalid UTF-8 content", path, i);
            free(a);
            return RECUR_E_FORMAT;
        }
        /* HF moves the match boundaries for these (word boundaries, swallowed whitespace);
         * the NeoX file uses none of them. */
        if (single_word || lstrip || rstrip) {
            recur_log_err("%s: added token \"%s\" uses single_word/lstrip/rstrip, which recur does not support", path,
                          content->valuestring);
            free(a);
            return RECUR_E_UNSUPPORTED;
        }
        for (size_t j = 0; j < i; j++) {
            if (a[j].len == len && memcmp(a[j].content, s, len) == 0) {
                recur_log_err("%s: added token \"%s\" is listed twice", path, content->valuestring);
                free(a);
                return RECUR_E_FORMAT;
            }
        }
        int32_t want = bpe_vocab_id(b, s, len);
        if (want < 0) {
            if (max_added < 0) want = (int32_t)b->n_keys;
            else want = max_added >= (int32_t)b->n_keys ? max_added + 1 : (int32_t)b->n_keys;
        }
        if (id != want) {
            recur_log_err("%s: added token \"%s\" has id %d, but HF tokenizers would give it id %d", path,
                          content->valuestring, id, want);
            free(a);
            return RECUR_E_FORMAT;
        }
        if (id > max_added) max_added = id;
        a[i] = (bpe_added_t){s, len, id, special, normalized};
    }
    *out = a;
    *n_out = n;
    return RECUR_OK;
}

/* Fills the per-id decode table: vocab strings mapped back to bytes, then added tokens'
 * content (an added token wins over a vocab entry with its id, as in HF's id_to_token). */
static recur_status_t bpe_build_tokens(const char *path, recur_bpe_t *b, const bpe_added_t *added, size_t n_added) {
    uint32_t cp_of_byte[256];
    bpe_byte_alphabet(cp_of_byte);
    int16_t byte_of_cp[0x144]; /* the alphabet's code points are all below U+0144 */
    for (size_t i = 0; i < 0x144; i++) byte_of_cp[i] = -1;
    for (int i = 0; i < 256; i++) byte_of_cp[cp_of_byte[i]] = (int16_t)i;

    size_t blob = 0;
    for (uint32_t k = 0; k < b->n_keys; k++) blob += b->keys[k].len;
    for (size_t i = 0; i < n_added; i++) blob += added[i].len;
    if (blob > UINT32_MAX) {
        recur_log_err("%s: token strings total %zu bytes; too many", path, blob);
        return RECUR_E_FORMAT;
    }
    b->tok_blob = malloc(blob + 1);
    b->tok_off = calloc((size_t)b->n_vocab, sizeof *b->tok_off);
    b->tok_len = calloc((size_t)b->n_vocab, sizeof *b->tok_len);
    int32_t *key_of_id = malloc((size_t)b->n_vocab * sizeof *key_of_id);
    if (!b->tok_blob || !b->tok_off || !b->tok_len || !key_of_id) {
        free(key_of_id);
        recur_log_err("%s: out of memory for %d token entries", path, b->n_vocab);
        return RECUR_E_NOMEM;
    }
    for (int32_t i = 0; i < b->n_vocab; i++) key_of_id[i] = -1;
    size_t off = 0;
    for (uint32_t k = 0; k < b->n_keys; k++) {
        int32_t id = b->key_id[k];
        if (key_of_id[id] >= 0) {
            const bpe_str_t *o = &b->keys[key_of_id[id]];
            recur_log_err("%s: model.vocab gives id %d to both \"%.*s\" and \"%.*s\"", path, id, (int)o->len,
                          b->str_blob + o->off, (int)b->keys[k].len, b->str_blob + b->keys[k].off);
            free(key_of_id);
            return RECUR_E_FORMAT;
        }
        key_of_id[id] = (int32_t)k;
        /* HF's ByteLevel decoder maps every character back to its byte, or, when one is not
         * in the alphabet, keeps the token's UTF-8 as it is. */
        const uint8_t *s = (const uint8_t *)b->str_blob + b->keys[k].off;
        size_t len = b->keys[k].len, o = off;
        int all = 1;
        for (size_t i = 0; i < len;) {
            size_t l = recur_utf8_len(s + i, len - i); /* validated at vocab load */
            uint32_t cp = bpe_utf8_cp(s + i, l);
            if (cp >= 0x144 || byte_of_cp[cp] < 0) { all = 0; break; }
            b->tok_blob[o++] = (uint8_t)byte_of_cp[cp];
            i += l;
        }
        if (!all) {
            memcpy(b->tok_blob + off, s, len);
            o = off + len;
        }
        b->tok_off[id] = (uint32_t)off;
        b->tok_len[id] = (uint32_t)(o - off);
        off = o;
    }
    free(key_of_id);
    for (size_t i = 0; i < n_added; i++) {
        int32_t id = added[i].id;
        b->tok_off[id] = (uint32_t)off;
        b->tok_len[id] = 0;
        if (added[i].special) continue; /* recur: special tokens decode to nothing */
        memcpy(b->tok_blob + off, added[i].content, added[i].len);
        b->tok_len[id] = (uint32_t)added[i].len;
        off += added[i].len;
    }
    /* The one-byte tokens BPE starts from, and the byte-level characters ignore_merges needs. */
    for (int i = 0; i < 256; i++) {
        uint32_t cp = cp_of_byte[i];
        uint8_t u[2];
        size_t ul;
        if (cp < 0x80) { u[0] = (uint8_t)cp; ul = 1; }
        else { u[0] = (uint8_t)(0xC0 | (cp >> 6)); u[1] = (uint8_t)(0x80 | (cp & 0x3F)); ul = 2; }
        memcpy(b->byte_utf8[i], u, ul);
        b->byte_utf8_len[i] = (uint8_t)ul;
        b->byte_id[i] = bpe_vocab_id(b, u, ul);
    }
    return RECUR_OK;
}

/* Reads model.merges: ["a b", ...] (one space: HF splits on it and wants two parts; lines
 * starting with "#version" are skipped and take no rank, as HF's merges.txt reader does) or
 * [["a", "b"], ...] (newer files). Rank = position. Both halves and their concatenation must
 * be vocab entries (HF: MergeTokenOutOfVocabulary). */
static recur_status_t bpe_load_merges(const char *path, recur_bpe_t *b, const cJSON *merges) {
    if (!cJSON_IsArray(merges)) {
        recur_log_err("%s: model.merges is missing or not an array", path);
        return RECUR_E_FORMAT;
    }
    size_t n = (size_t)cJSON_GetArraySize(merges);
    uint64_t cap = bpe_pow2_at_least(2 * n + 1);
    b->merges = malloc(cap * sizeof *b->merges);
    if (!b->merges) {
        recur_log_err("%s: out of memory for %zu merges", path, n);
        return RECUR_E_NOMEM;
    }
    for (uint64_t i = 0; i < cap; i++) b->merges[i].key = BPE_EMPTY_KEY;
    b->merge_mask = cap - 1;
    if (n == 0) return RECUR_OK;
    int tuples = cJSON_IsArray(merges->child);
    uint8_t *cat = NULL;
    size_t cat_cap = 0;
    uint32_t rank = 0;
    size_t i = 0;
    recur_status_t st = RECUR_OK;
    for (const cJSON *e = merges->child; e; e = e->next, i++) {
        const char *pa, *pb;
        size_t la, lb;
        if (tuples) {
            const cJSON *x = cJSON_IsArray(e) ? e->child : NULL, *y = x ? x->next : NULL;
            if (!cJSON_IsString(x) || !cJSON_IsString(y) || y->next) {
                recur_log_err("%s: model.merges[%zu] is not a pair of strings like the first entry", path, i);
                st = RECUR_E_FORMAT;
                break;
            }
            pa = x->valuestring; la = strlen(pa);
            pb = y->valuestring; lb = strlen(pb);
        } else {
            if (!cJSON_IsString(e)) {
                recur_log_err("%s: model.merges[%zu] is not a string like the first entry", path, i);
                st = RECUR_E_FORMAT;
                break;
            }
            const char *s = e->valuestring;
            if (strncmp(s, "#version", 8) == 0) continue;
            const char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                recur_log_err("%s: model.merges[%zu] \"%s\" is not two tokens separated by one space", path, i, s);
                st = RECUR_E_FORMAT;
                break;
            }
            pa = s; la = (size_t)(sp - s);
            pb = sp + 1; lb = strlen(pb);
        }
        int32_t ia = bpe_vocab_id(b, (const uint8_t *)pa, la), ib = bpe_vocab_id(b, (const uint8_t *)pb, lb);
        if (la + lb > cat_cap) {
            size_t nc = 2 * (la + lb) + 64;
            uint8_t *c = realloc(cat, nc);
            if (!c) { st = RECUR_E_NOMEM; break; }
            cat = c;
            cat_cap = nc;
        }
        memcpy(cat, pa, la);
        memcpy(cat + la, pb, lb);
        int32_t inew = bpe_vocab_id(b, cat, la + lb);
        if (ia < 0 || ib < 0 || inew < 0) {
            recur_log_err("%s: model.merges[%zu] (\"%.*s\" + \"%.*s\"): %s is not in the vocab", path, i, (int)la, pa,
                          (int)lb, pb, ia < 0 ? "the first part" : ib < 0 ? "the second part" : "the merged token");
            st = RECUR_E_FORMAT;
            break;
        }
        bpe_merge_put(b, ia, ib, rank++, inew);
    }
    free(cat);
    if (st == RECUR_E_NOMEM) recur_log_err("%s: out of memory reading the merges", path);
    return st;
}

/* NFC of an added token with normalized=true: HF matches the normalised content. */
static recur_status_t bpe_add_to_trie(const char *path, recur_bpe_t *b, const bpe_added_t *a) {
    recur_status_t st;
    if (!a->normalized) {
        st = bpe_trie_add(&b->raw_trie, a->content, a->len, a->id);
    } else if (!b->nfc) {
        st = bpe_trie_add(&b->norm_trie, a->content, a->len, a->id);
    } else {
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m =
            utf8proc_map(a->content, (utf8proc_ssize_t)a->len, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0) {
            recur_log_err("%s: cannot NFC-normalise added token %d: %s", path, a->id, utf8proc_errmsg(m));
            free(nfc);
            return m == UTF8PROC_ERROR_NOMEM ? RECUR_E_NOMEM : RECUR_E_FORMAT;
        }
        st = m > 0 ? bpe_trie_add(&b->norm_trie, nfc, (size_t)m, a->id) : RECUR_OK;
        free(nfc);
    }
    if (st != RECUR_OK) recur_log_err("%s: out of memory building the added-token trie", path);
    return st;
}

static recur_status_t bpe_compile_regex(const char *path, recur_bpe_t *b) {
    int err = 0;
    PCRE2_SIZE at = 0;
    b->re = pcre2_compile((PCRE2_SPTR)bpe_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &at, NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        recur_log_err("%s: PCRE2 cannot compile the GPT-2 split regex at offset %zu: %s", path, (size_t)at,
                      (const char *)msg);
        return RECUR_E_UNSUPPORTED;
    }
    /* JIT is a speed-up only: a PCRE2 built without it still matches, just slower. */
    int jrc = pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE);
    if (jrc != 0) recur_log_debug("%s: PCRE2 JIT unavailable (%d); using the interpreter", path, jrc);
    return RECUR_OK;
}

void recur_bpe_free(recur_bpe_t *b) {
    if (!b) return;
    free(b->str_blob);
    free(b->keys);
    free(b->key_id);
    free(b->key_tab);
    free(b->tok_blob);
    free(b->tok_off);
    free(b->tok_len);
    free(b->merges);
    free(b->raw_trie.nodes);
    free(b->norm_trie.nodes);
    pcre2_code_free(b->re);
    free(b);
}

recur_status_t recur_bpe_load(const char *path, recur_bpe_t **out) {
    *out = NULL;
    char *text = NULL;
    size_t n = 0;
    RECUR_TRY(recur_file_read_small(path, BPE_MAX_FILE_BYTES, "tokenizer.json", &text, &n));
    if (bpe_json_has_nul_escape(text, n)) {
        recur_log_err("%s: tokenizer.json contains a \\u0000 escape, which recur does not support", path);
        free(text);
        return RECUR_E_UNSUPPORTED;
    }
    cJSON *root = cJSON_ParseWithLength(text, n);
    if (!root || !cJSON_IsObject(root)) {
        recur_log_err("%s: not a JSON object (malformed or truncated JSON)", path);
        cJSON_Delete(root);
        free(text);
        return RECUR_E_FORMAT;
    }
    recur_bpe_t *b = calloc(1, sizeof *b);
    bpe_added_t *added = NULL;
    size_t n_added = 0;
    recur_status_t st = b ? RECUR_OK : RECUR_E_NOMEM;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (st == RECUR_OK) st = bpe_check_pipeline(path, root, &b->nfc);
    if (st == RECUR_OK) st = bpe_check_model(path, model, &b->ignore_merges, &b->fuse_unk);
    int32_t max_id = -1;
    if (st == RECUR_OK) st = bpe_load_vocab(path, b, cJSON_GetObjectItemCaseSensitive(model, "vocab"), n, &max_id);
    if (st == RECUR_OK)
        st = bpe_load_added(path, b, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &added, &n_added);
    if (st == RECUR_OK) {
        for (size_t i = 0; i < n_added; i++)
            if (added[i].id > max_id) max_id = added[i].id;
        b->n_vocab = max_id + 1;
        st = bpe_build_tokens(path, b, added, n_added);
    }
    if (st == RECUR_OK) st = bpe_load_merges(path, b, cJSON_GetObjectItemCaseSensitive(model, "merges"));
    if (st == RECUR_OK) {
        const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
        b->unk_id = -1;
        if (cJSON_IsString(unk)) {
            b->unk_id = bpe_vocab_id(b, (const uint8_t *)unk->valuestring, strlen(unk->valuestring));
            if (b->unk_id < 0) {
                recur_log_err("%s: model.unk_token \"%s\" is not in the vocab", path, unk->valuestring);
                st = RECUR_E_FORMAT;
            }
        } else if (!bpe_json_absent(unk)) {
            recur_log_err("%s: model.unk_token is not a string", path);
            st = RECUR_E_FORMAT;
        }
    }
    for (size_t i = 0; st == RECUR_OK && i < n_added; i++) st = bpe_add_to_trie(path, b, &added[i]);
    if (st == RECUR_OK) {
        /* eos: "<|endoftext|>" looked up as HF's token_to_id does, added tokens first. */
        static const char eot[] = "<|endoftext|>";
        b->eos = -1;
        for (size_t i = 0; i < n_added; i++)
            if (added[i].len == sizeof eot - 1 && memcmp(added[i].content, eot, sizeof eot - 1) == 0)
                b->eos = added[i].id;
        if (b->eos < 0) b->eos = bpe_vocab_id(b, (const uint8_t *)eot, sizeof eot - 1);
        st = bpe_compile_regex(path, b);
    }
    if (st == RECUR_OK) {
        int missing = 0;
        for (int i = 0; i < 256; i++) missing += b->byte_id[i] < 0;
        recur_log_debug("%s: BPE: %u vocab entries, %zu added tokens, vocab size %d, eos %d, %d bytes without a token",
                        path, b->n_keys, n_added, b->n_vocab, b->eos, missing);
    }
    free(added); /* points into the cJSON tree, which the tables no longer need */
    cJSON_Delete(root);
    free(text);
    if (st != RECUR_OK) {
        if (st == RECUR_E_NOMEM && !b) recur_log_err("%s: out of memory", path);
        recur_bpe_free(b);
        return st;
    }
    *out = b;
    return RECUR_OK;
}

int32_t recur_bpe_size(const recur_bpe_t *b) { return b->n_vocab; }
int32_t recur_bpe_eos(const recur_bpe_t *b) { return b->eos; }

void recur_bpe_token(const recur_bpe_t *b, int32_t id, const uint8_t **p, size_t *n) {
    *p = b->tok_blob + b->tok_off[id];
    *n = b->tok_len[id];
}

/* ---------------------------------------------------------------- encode */

/* One BPE symbol, as in HF's word.rs: a doubly linked list kept in an array; a merged-away
 * symbol keeps its slot with len 0. */
typedef struct bpe_sym {
    int32_t c;          /* token id */
    int32_t prev, next; /* indices, -1 = none */
    int32_t len;        /* bytes covered; 0 = merged into its left neighbour */
} bpe_sym_t;

typedef struct bpe_qitem {
    uint32_t rank, pos;
    int32_t  new_id;
} bpe_qitem_t;

/* Per-call state: the output and scratch that grows to the largest pre-token seen. */
typedef struct bpe_enc {
    const recur_bpe_t   *b;
    int32_t             *ids;
    size_t               n_ids, cap_ids;
    bpe_sym_t           *sym;
    bpe_qitem_t         *heap;
    size_t               cap_sym; /* heap has 3 * cap_sym slots */
    uint8_t             *map;     /* ignore_merges: a pre-token as byte-level characters */
    size_t               cap_map;
    pcre2_match_data    *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack     *jstack;
} bpe_enc_t;

static recur_status_t enc_push(bpe_enc_t *e, int32_t id) {
    if (e->n_ids == e->cap_ids) {
        size_t nc = e->cap_ids * 2;
        int32_t *p = realloc(e->ids, nc * sizeof *p);
        if (!p) return RECUR_E_NOMEM;
        e->ids = p;
        e->cap_ids = nc;
    }
    e->ids[e->n_ids++] = id;
    return RECUR_OK;
}

/* Min-heap on (rank, pos): HF's Merge ordering (lowest rank first, then leftmost). */
static int q_less(const bpe_qitem_t *x, const bpe_qitem_t *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void q_push(bpe_qitem_t *h, size_t *n, bpe_qitem_t it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!q_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static bpe_qitem_t q_pop(bpe_qitem_t *h, size_t *n) {
    bpe_qitem_t top = h[0], last = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && q_less(&h[c + 1], &h[c])) c++;
        if (!q_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (m > 0) h[i] = last;
    return top;
}

static void sym_add(bpe_sym_t *sym, int32_t *ns, int32_t c, int32_t len) {
    int32_t i = (*ns)++;
    sym[i] = (bpe_sym_t){c, i - 1, -1, len};
    if (i > 0) sym[i - 1].next = i;
}

static void q_push_pair(const recur_bpe_t *b, bpe_qitem_t *h, size_t *nh, const bpe_sym_t *sym, int32_t pos) {
    const bpe_merge_t *m = bpe_merge_find(b, sym[pos].c, sym[sym[pos].next].c);
    if (m) q_push(h, nh, (bpe_qitem_t){m->rank, (uint32_t)pos, m->new_id});
}

/* BPE on one pre-token: HF's BPE::merge_word + Word::merge_all, step for step, including
 * their treatment of a stale queue entry (skipped unless the pair now at its position merges
 * to the same id). */
static recur_status_t enc_piece(bpe_enc_t *e, const uint8_t *p, size_t n) {
    const recur_bpe_t *b = e->b;
    if (n == 0) return RECUR_OK;
    if (n > INT32_MAX / 4) return RECUR_E_NOMEM; /* symbol indices are int32 */
    if (b->ignore_merges) {
        if (2 * n > e->cap_map) {
            uint8_t *m = realloc(e->map, 2 * n);
            if (!m) return RECUR_E_NOMEM;
            e->map = m;
            e->cap_map = 2 * n;
        }
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(e->map + o, b->byte_utf8[p[i]], b->byte_utf8_len[p[i]]);
            o += b->byte_utf8_len[p[i]];
        }
        int32_t id = bpe_vocab_id(b, e->map, o);
        if (id >= 0) return enc_push(e, id);
    }
    if (n > e->cap_sym) {
        size_t nc = n < 64 ? 64 : n;
        bpe_sym_t *s = realloc(e->sym, nc * sizeof *s);
        if (!s) return RECUR_E_NOMEM;
        e->sym = s;
        bpe_qitem_t *h = realloc(e->heap, 3 * nc * sizeof *h);
        if (!h) return RECUR_E_NOMEM;
        e->heap = h;
        e->cap_sym = nc;
    }
    bpe_sym_t *sym = e->sym;
    int32_t ns = 0, unk_len = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = b->byte_id[p[i]];
        if (id >= 0) {
            if (unk_len) { sym_add(sym, &ns, b->unk_id, unk_len); unk_len = 0; }
            sym_add(sym, &ns, id, 1);
        } else if (b->unk_id >= 0) {
            if (unk_len && !b->fuse_unk) { sym_add(sym, &ns, b->unk_id, unk_len); unk_len = 0; }
            unk_len++;
        } /* else: with no unk token HF drops the character */
    }
    if (unk_len) sym_add(sym, &ns, b->unk_id, unk_len);

    bpe_qitem_t *h = e->heap;
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++) q_push_pair(b, h, &nh, sym, i);
    while (nh > 0) {
        bpe_qitem_t top = q_pop(h, &nh);
        int32_t pos = (int32_t)top.pos;
        if (sym[pos].len == 0 || sym[pos].next < 0) continue;
        int32_t nx = sym[pos].next;
        bpe_sym_t right = sym[nx];
        const bpe_merge_t *m = bpe_merge_find(b, sym[pos].c, right.c);
        if (!m || m->new_id != top.new_id) continue; /* stale entry */
        sym[pos].c = top.new_id;
        sym[pos].len += right.len;
        sym[pos].next = right.next;
        sym[nx].len = 0;
        if (right.next >= 0) sym[right.next].prev = pos;
        if (sym[pos].prev >= 0) q_push_pair(b, h, &nh, sym, sym[pos].prev);
        if (sym[pos].next >= 0) q_push_pair(b, h, &nh, sym, pos);
    }
    for (int32_t i = 0; i < ns; i++)
        if (sym[i].len) RECUR_TRY(enc_push(e, sym[i].c));
    return RECUR_OK;
}

/* The GPT-2 split (step 3): every match and every gap between matches is a pre-token. The
 * pattern matches any character, so gaps do not occur; they are handled as HF would anyway. */
static recur_status_t enc_pretokenize(bpe_enc_t *e, const uint8_t *s, size_t n) {
    size_t off = 0;
    while (off < n) {
        int rc = pcre2_match(e->b->re, s, n, off, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return enc_piece(e, s + off, n - off);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !e->jstack) {
            e->mctx = pcre2_match_context_create(NULL);
            e->jstack = pcre2_jit_stack_create(32 * 1024, BPE_JIT_STACK_MAX, NULL);
            if (!e->mctx || !e->jstack) return RECUR_E_NOMEM;
            pcre2_jit_stack_assign(e->mctx, NULL, e->jstack);
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            recur_log_err("BPE tokenizer: regex match failed at byte %zu of a %zu-byte piece: %s", off, n,
                          (const char *)msg);
            return rc == PCRE2_ERROR_NOMEMORY ? RECUR_E_NOMEM : RECUR_E_INVAL;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        if (ov[0] > off) RECUR_TRY(enc_piece(e, s + off, ov[0] - off));
        if (ov[1] <= ov[0]) { /* an empty match cannot happen with this pattern; never loop on one */
            size_t l = recur_utf8_len(s + ov[0], n - ov[0]);
            RECUR_TRY(enc_piece(e, s + ov[0], l));
            off = ov[0] + l;
            continue;
        }
        RECUR_TRY(enc_piece(e, s + ov[0], ov[1] - ov[0]));
        off = ov[1];
    }
    return RECUR_OK;
}

typedef recur_status_t (*enc_gap_fn)(bpe_enc_t *e, const uint8_t *s, size_t n);

/* Cuts added tokens out of s leftmost-longest (HF: Aho-Corasick, MatchKind::LeftmostLongest,
 * non-overlapping) and hands the text between them to gap(). */
static recur_status_t enc_split_added(bpe_enc_t *e, const bpe_trie_t *t, const uint8_t *s, size_t n, enc_gap_fn gap) {
    size_t start = 0;
    if (t->nodes) {
        for (size_t i = 0; i < n;) {
            int32_t id = -1;
            size_t l = t->root[s[i]] ? bpe_trie_match(t, s + i, n - i, &id) : 0;
            if (!l) { i++; continue; }
            if (i > start) RECUR_TRY(gap(e, s + start, i - start));
            RECUR_TRY(enc_push(e, id));
            i += l;
            start = i;
        }
    }
    return n > start ? gap(e, s + start, n - start) : RECUR_OK;
}

/* Step 2: NFC, then the normalized added tokens. Code points below U+0300 (lead bytes below
 * 0xCC) are never changed by NFC and never combine with what precedes them, so such text
 * skips utf8proc. */
static recur_status_t enc_normalized(bpe_enc_t *e, const uint8_t *s, size_t n) {
    const recur_bpe_t *b = e->b;
    int need = 0;
    if (b->nfc)
        for (size_t i = 0; i < n && !need; i++) need = s[i] >= 0xCC;
    if (!need) return enc_split_added(e, &b->norm_trie, s, n, enc_pretokenize);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (m < 0) {
        free(nfc);
        recur_log_err("BPE tokenizer: NFC normalisation failed: %s", utf8proc_errmsg(m));
        return m == UTF8PROC_ERROR_NOMEM ? RECUR_E_NOMEM : RECUR_E_INVAL;
    }
    recur_status_t st = enc_split_added(e, &b->norm_trie, nfc, (size_t)m, enc_pretokenize);
    free(nfc);
    return st;
}

/* Step 1 on a valid UTF-8 run. */
static recur_status_t enc_valid(bpe_enc_t *e, const uint8_t *s, size_t n) {
    return enc_split_added(e, &e->b->raw_trie, s, n, enc_normalized);
}

recur_status_t recur_bpe_encode(const recur_bpe_t *b, const uint8_t *s, size_t n, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    bpe_enc_t e = {.b = b};
    e.cap_ids = n / 3 + 16; /* English runs ~4 bytes per token; enc_push grows it when needed */
    e.ids = malloc(e.cap_ids * sizeof *e.ids);
    e.md = pcre2_match_data_create(1, NULL);
    recur_status_t st = e.ids && e.md ? RECUR_OK : RECUR_E_NOMEM;
    size_t start = 0;
    for (size_t i = 0; st == RECUR_OK && i < n;) {
        size_t l = recur_utf8_len(s + i, n - i);
        if (l) { i += l; continue; }
        /* An invalid byte: the valid run before it, then the byte on its own. */
        if (i > start) st = enc_valid(&e, s + start, i - start);
        if (st == RECUR_OK)
            st = b->byte_id[s[i]] >= 0 ? enc_push(&e, b->byte_id[s[i]]) : enc_piece(&e, bpe_fffd, sizeof bpe_fffd);
        start = ++i;
    }
    if (st == RECUR_OK && n > start) st = enc_valid(&e, s + start, n - start);
    free(e.sym);
    free(e.heap);
    free(e.map);
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mctx);
    pcre2_jit_stack_free(e.jstack);
    if (st != RECUR_OK) {
        if (st == RECUR_E_NOMEM) recur_log_err("BPE tokenizer: out of memory encoding %zu bytes", n);
        free(e.ids);
        return st;
    }
    /* Give back the slack of the estimate; a failed shrink just keeps the larger block. */
    if (e.n_ids > 0 && e.n_ids < e.cap_ids) {
        int32_t *shrunk = realloc(e.ids, e.n_ids * sizeof *shrunk);
        if (shrunk) e.ids = shrunk;
    }
    *ids = e.ids;
    *n_ids = e.n_ids;
    return RECUR_OK;
}
