/* recur_tokenizer_world.c: the RWKV World vocab (rwkv_vocab_v20230424.txt) and its
 * greedy longest-byte-match trie. See models/RWKV7.md §6 and WorldTokenizer in
 * fixtures/rwkv7/rwkv7_ref.py, which is the reference behaviour.
 *
 * File format, one token per line: `<id> <python literal> <byte length>`. The literal is a
 * Python str ('..' or "..", whose UTF-8 encoding is the token) or bytes (b'..' / b".."),
 * with Python escapes. The field split is on the first and the last space, because the
 * literal itself may contain spaces.
 *
 * Trie layout: one flat node array in breadth-first order, built from the tokens sorted
 * bytewise. Breadth-first order makes each node's children a contiguous run of nodes
 * sorted by edge byte, so a node is just (token, first child, child count) and the edge
 * bytes live in a parallel uint8_t array that a child lookup scans or bisects without
 * touching the node structs. The root is node 0 and, because every single byte is a token
 * (checked at load), its children are exactly nodes 1..256, so the first step of every
 * match is a direct index. Nodes with many children get a 256-entry direct table, because
 * those are the ones near the root that every match walks through. */
#include "recur_tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_file.h"
#include "recur_log.h"
#include "recur_utf8.h"

/* Ids are stored in int32 and sized tables are allocated up to the max id, so a garbage id
 * must not be able to request gigabytes. 2^24 is far above any real vocabulary. */
#define WORLD_MAX_ID ((1 << 24) - 1)
/* Offsets into the token byte blob are uint32; the real file is about 1 MB. */
#define WORLD_MAX_FILE_BYTES ((size_t)1 << 30)
/* A node with more children than this gets a direct 256-entry child table (1 KiB); below it
 * a bisection/scan over its sorted edge bytes is nearly as fast and far smaller. Measured on
 * the World vocab (116,079 nodes), 1 MiB inputs: threshold 255 (no tables but the root's)
 * 148 MB/s on mixed text, 16 -> 310 MB/s with 534 tables (0.5 MiB), 4 -> 354 MB/s; random
 * token soup stays ~50 MB/s either way (cache misses on deep nodes dominate). */
#define WORLD_DENSE_MIN_CHILDREN 16
#define WORLD_NO_DENSE UINT32_MAX

typedef struct world_node {
    int32_t  tok;     /* token ending here, or -1 */
    uint32_t first;   /* index of the first child; children are contiguous and sorted */
    uint16_t n_child; /* 0..256 */
    uint32_t dense;   /* index of this node's 256-entry table in dense[], or WORLD_NO_DENSE */
} world_node_t;

struct recur_world_vocab {
    int32_t       n_vocab;  /* max id + 1 */
    uint8_t      *blob;     /* all token bytes, in file order (never NULL) */
    uint32_t     *tok_off;  /* (n_vocab) offset of each token in blob */
    uint32_t     *tok_len;  /* (n_vocab) byte length; 0 for id 0 and for ids the file lacks */
    world_node_t *nodes;    /* (n_nodes) trie in breadth-first order; node 0 = root */
    uint8_t      *label;    /* (n_nodes) the byte on the edge into each node */
    uint32_t     *dense;    /* (n_dense * 256) child node per byte, 0 = none (root is no child) */
    uint32_t      n_nodes;
    uint32_t      n_dense;
};

/* One parsed line, before the per-id tables exist. */
typedef struct world_entry {
    const uint8_t *p; /* token bytes (inside blob) */
    uint32_t       len;
    int32_t        id;
    uint32_t       line; /* 1-based, for error messages */
} world_entry_t;

/* ---------------------------------------------------------------- literal parsing */

static int world_hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Appends the UTF-8 encoding of code point cp (caller checked: <= 0x10FFFF, no surrogate). */
static size_t world_put_utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xC0 | (cp >> 6)); o[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12)); o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18)); o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}


/* Decodes the Python literal lit[0..n) into out (which has room for n bytes: no escape or
 * character decodes to more bytes than its source text). Returns NULL on success or a
 * static description of what is wrong. Accepts what ast.literal_eval accepts for a single
 * str/bytes literal with an optional b/B (or u/U) prefix, except the forms that never occur
 * in vocab files and would need tables we do not carry (raw/triple-quoted strings, \N{..});
 * those are rejected rather than mis-read. */
static const char *world_parse_literal(const uint8_t *lit, size_t n, uint8_t *out, size_t *out_len) {
    int is_bytes = 0;
    size_t o = 0;
    if (n > 0 && (lit[0] == 'b' || lit[0] == 'B')) { is_bytes = 1; lit++; n--; }
    else if (n > 0 && (lit[0] == 'u' || lit[0] == 'U')) { lit++; n--; }
    if (n == 0 || (lit[0] != '\'' && lit[0] != '"')) {
        if (n > 0 && ((lit[0] >= 'a' && lit[0] <= 'z') || (lit[0] >= 'A' && lit[0] <= 'Z')))
            return "unsupported string prefix (only b'' and '' literals are accepted)";
        return "the literal does not start with a quote";
    }
    const uint8_t q = lit[0];
    if (n >= 3 && lit[1] == q && lit[2] == q) return "triple-quoted literals are not supported";
    if (n < 2 || lit[n - 1] != q) return "unterminated literal (no closing quote at the end)";
    const uint8_t *s = lit + 1;
    const size_t m = n - 2; /* body length */
    for (size_t i = 0; i < m;) {
        uint8_t c = s[i];
        if (c == q) return "unescaped quote inside the literal";
        if (c == '\0') return "NUL byte inside the literal";
        if (c == '\r') return "carriage return inside the literal";
        if (c != '\\') {
            if (c < 0x80) { out[o++] = c; i++; continue; }
            if (is_bytes) return "non-ASCII character in a bytes literal";
            size_t l = recur_utf8_len(s + i, m - i);
            if (l == 0) return "invalid UTF-8 in the literal";
            memcpy(out + o, s + i, l);
            o += l; i += l;
            continue;
        }
        /* An escape. A backslash as the last body byte would escape the closing quote. */
        if (i + 1 >= m) return "unterminated literal (the closing quote is escaped)";
        uint8_t e = s[i + 1];
        uint32_t cp;
        int ndig = 0;
        i += 2;
        switch (e) {
        case '\\': out[o++] = '\\'; continue;
        case '\'': out[o++] = '\''; continue;
        case '"':  out[o++] = '"';  continue;
        case 'a':  out[o++] = 0x07; continue;
        case 'b':  out[o++] = 0x08; continue;
        case 'f':  out[o++] = 0x0C; continue;
        case 'n':  out[o++] = 0x0A; continue;
        case 'r':  out[o++] = 0x0D; continue;
        case 't':  out[o++] = 0x09; continue;
        case 'v':  out[o++] = 0x0B; continue;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
            cp = (uint32_t)(e - '0');
            while (ndig < 2 && i < m && s[i] >= '0' && s[i] <= '7') { cp = cp * 8 + (uint32_t)(s[i] - '0'); i++; ndig++; }
            if (is_bytes) {
                /* Python 3.11 silently keeps the low 8 bits; 3.12 warns. Neither is a
                 * meaning anyone intends in a vocab file. */
                if (cp > 0xFF) return "octal escape above \\377 in a bytes literal";
                out[o++] = (uint8_t)cp;
            } else {
                o += world_put_utf8(out + o, cp);
            }
            continue;
        case 'x':
            if (i + 2 > m || world_hexval(s[i]) < 0 || world_hexval(s[i + 1]) < 0)
                return "truncated \\xXX escape";
            cp = (uint32_t)(world_hexval(s[i]) * 16 + world_hexval(s[i + 1]));
            i += 2;
            /* The crux of this format: in a str, \xNN is the code point U+00NN, whose UTF-8
             * form is 2 bytes from 0x80 up; in bytes it is the raw byte. */
            if (is_bytes) out[o++] = (uint8_t)cp;
            else o += world_put_utf8(out + o, cp);
            continue;
        case 'u': case 'U':
            if (is_bytes) break; /* not an escape in bytes: kept verbatim, as Python does */
            ndig = e == 'u' ? 4 : 8;
            if (i + (size_t)ndig > m) return "truncated \\u/\\U escape";
            cp = 0;
            for (int k = 0; k < ndig; k++) {
                int h = world_hexval(s[i + (size_t)k]);
                if (h < 0) return "truncated \\u/\\U escape";
                cp = cp * 16 + (uint32_t)h;
            }
            i += (size_t)ndig;
            if (cp > 0x10FFFF) return "\\U escape above U+10FFFF";
            /* Python would build the str but fail to UTF-8 encode it. */
            if (cp >= 0xD800 && cp <= 0xDFFF) return "surrogate code point in a \\u escape";
            o += world_put_utf8(out + o, cp);
            continue;
        case 'N':
            if (is_bytes) break;
            return "\\N{name} escapes are not supported";
        default:
            break;
        }
        /* Not an escape (e.g. \q, or \u in bytes): Python keeps the backslash and goes on
         * with the next character as ordinary text. */
        out[o++] = '\\';
        i--;
    }
    *out_len = o;
    return NULL;
}

/* Parses a run of decimal digits [p, p+n) into *v (<= max). Returns 0 on success. No sign,
 * spaces or underscores: the file never has them, and a stricter reader catches more damage. */
static int world_parse_uint(const uint8_t *p, size_t n, long max, long *v) {
    long x = 0;
    if (n == 0 || n > 10) return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        x = x * 10 + (p[i] - '0');
    }
    if (x > max) return -1;
    *v = x;
    return 0;
}

/* ---------------------------------------------------------------- loading */


/* Parses every line into entries[] and their bytes into blob. blob has room for n bytes
 * (decoded tokens are never longer than their literals). */
static recur_status_t world_parse_lines(const char *path, const uint8_t *text, size_t n, uint8_t *blob,
                                        world_entry_t *entries, size_t *n_entries) {
    size_t used = 0, ne = 0;
    uint32_t line_no = 0;
    for (size_t pos = 0; pos < n;) {
        const uint8_t *line = text + pos;
        const uint8_t *nl = memchr(line, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - line) : n - pos;
        pos += len + (nl ? 1 : 0);
        line_no++;
        if (len > 0 && line[len - 1] == '\r') len--; /* tolerate CRLF files */
/* Every complaint names the file and line, so a damaged vocab can be found and fixed. */
#define WORLD_BAD(fmt, ...) do { recur_log_err("%s:%u: bad World vocab line: " fmt, path, line_no, __VA_ARGS__); \
        return RECUR_E_FORMAT; } while (0)
        if (len == 0) WORLD_BAD("%s", "empty line");
        size_t s1 = 0, s2 = len;
        while (s1 < len && line[s1] != ' ') s1++;
        while (s2 > 0 && line[s2 - 1] != ' ') s2--;
        if (s1 == len || s2 - 1 <= s1)
            WORLD_BAD("%s", "expected '<id> <literal> <byte length>'");
        s2--; /* index of the last space */
        long id, want;
        if (world_parse_uint(line, s1, WORLD_MAX_ID, &id) != 0)
            WORLD_BAD("id '%.*s' is not a decimal integer in [1, %d]", (int)s1, (const char *)line,
                      WORLD_MAX_ID);
        if (id == 0) WORLD_BAD("%s", "id 0 is reserved for <|endoftext|> and may not be in the file");
        if (world_parse_uint(line + s2 + 1, len - s2 - 1, (long)WORLD_MAX_FILE_BYTES, &want) != 0)
            WORLD_BAD("byte length '%.*s' is not a decimal integer", (int)(len - s2 - 1),
                      (const char *)line + s2 + 1);
        size_t got = 0;
        const char *why = world_parse_literal(line + s1 + 1, s2 - s1 - 1, blob + used, &got);
        if (why) WORLD_BAD("bad literal %.*s: %s", (int)(s2 - s1 - 1), (const char *)line + s1 + 1, why);
        if ((size_t)want != got)
            WORLD_BAD("literal %.*s decodes to %zu bytes but the line says %ld", (int)(s2 - s1 - 1),
                      (const char *)line + s1 + 1, got, want);
        if (got == 0) WORLD_BAD("%s", "empty token");
#undef WORLD_BAD
        entries[ne].p = blob + used;
        entries[ne].len = (uint32_t)got;
        entries[ne].id = (int32_t)id;
        entries[ne].line = line_no;
        ne++;
        used += got;
    }
    if (ne == 0) {
        recur_log_err("%s: World vocab has no tokens", path);
        return RECUR_E_FORMAT;
    }
    *n_entries = ne;
    return RECUR_OK;
}

/* Bytewise order with a prefix before its extensions: the order a trie is laid out in. */
static int world_entry_cmp(const void *a_, const void *b_) {
    const world_entry_t *a = a_, *b = b_;
    uint32_t l = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->p, b->p, l);
    if (c != 0) return c;
    return (a->len > b->len) - (a->len < b->len);
}

/* Fills the per-id tables; rejects duplicate ids. *gaps = how many ids in 1..max are absent. */
static recur_status_t world_index_ids(const char *path, recur_world_vocab_t *v, const world_entry_t *e, size_t ne,
                                      int32_t *gaps) {
    int32_t max_id = 0;
    for (size_t i = 0; i < ne; i++) if (e[i].id > max_id) max_id = e[i].id;
    v->n_vocab = max_id + 1;
    v->tok_off = calloc((size_t)v->n_vocab, sizeof *v->tok_off);
    v->tok_len = calloc((size_t)v->n_vocab, sizeof *v->tok_len);
    uint32_t *line_of = calloc((size_t)v->n_vocab, sizeof *line_of); /* 0 = id not seen yet */
    if (!v->tok_off || !v->tok_len || !line_of) {
        free(line_of);
        recur_log_err("%s: out of memory for %d token entries", path, v->n_vocab);
        return RECUR_E_NOMEM;
    }
    for (size_t i = 0; i < ne; i++) {
        int32_t id = e[i].id;
        if (line_of[id]) {
            recur_log_err("%s:%u: duplicate id %d (first defined on line %u)", path, e[i].line, id, line_of[id]);
            free(line_of);
            return RECUR_E_FORMAT;
        }
        line_of[id] = e[i].line;
        v->tok_off[id] = (uint32_t)(e[i].p - v->blob);
        v->tok_len[id] = e[i].len;
    }
    *gaps = 0;
    for (int32_t id = 1; id < v->n_vocab; id++) *gaps += line_of[id] == 0;
    free(line_of);
    return RECUR_OK;
}

/* Builds the breadth-first trie from entries sorted by world_entry_cmp. Node k covers the
 * sorted range [lo[k], hi[k]) of tokens that share its depth[k]-byte prefix; since a prefix
 * sorts before its extensions, the token equal to the prefix (if any) is the range's first. */
static recur_status_t world_build_trie(const char *path, recur_world_vocab_t *v, const world_entry_t *e, size_t ne) {
    size_t total = 0;
    for (size_t i = 0; i < ne; i++) total += e[i].len;
    size_t cap = total + 1; /* one node per token byte at most, plus the root */
    recur_status_t st = RECUR_E_NOMEM;
    uint32_t *lo = malloc(cap * sizeof *lo), *hi = malloc(cap * sizeof *hi), *depth = malloc(cap * sizeof *depth);
    v->nodes = malloc(cap * sizeof *v->nodes);
    v->label = malloc(cap);
    if (!lo || !hi || !depth || !v->nodes || !v->label) goto done;

    uint32_t n_nodes = 1, n_dense = 0;
    lo[0] = 0; hi[0] = (uint32_t)ne; depth[0] = 0; v->label[0] = 0;
    for (uint32_t k = 0; k < n_nodes; k++) {
        uint32_t l = lo[k], h = hi[k], d = depth[k];
        world_node_t *nd = &v->nodes[k];
        nd->tok = -1;
        if (l < h && e[l].len == d) nd->tok = e[l++].id;
        nd->first = n_nodes;
        for (uint32_t i = l; i < h;) {
            uint8_t c = e[i].p[d];
            uint32_t j = i + 1;
            while (j < h && e[j].p[d] == c) j++;
            RECUR_ASSERT(n_nodes < cap);
            lo[n_nodes] = i; hi[n_nodes] = j; depth[n_nodes] = d + 1; v->label[n_nodes] = c;
            n_nodes++;
            i = j;
        }
        nd->n_child = (uint16_t)(n_nodes - nd->first);
        nd->dense = WORLD_NO_DENSE;
        if (nd->n_child > WORLD_DENSE_MIN_CHILDREN) nd->dense = n_dense++;
    }
    v->n_nodes = n_nodes;
    v->n_dense = n_dense;
    /* cap counted one node per token byte; shared prefixes make the real count ~3x smaller. */
    world_node_t *shrunk = realloc(v->nodes, (size_t)n_nodes * sizeof *v->nodes);
    if (shrunk) v->nodes = shrunk;
    uint8_t *shrunk_label = realloc(v->label, n_nodes);
    if (shrunk_label) v->label = shrunk_label;
    v->dense = calloc((size_t)(n_dense ? n_dense : 1) * 256, sizeof *v->dense);
    if (!v->dense) goto done;
    for (uint32_t k = 0; k < n_nodes; k++) {
        const world_node_t *nd = &v->nodes[k];
        if (nd->dense == WORLD_NO_DENSE) continue;
        for (uint32_t c = 0; c < nd->n_child; c++)
            v->dense[(size_t)nd->dense * 256 + v->label[nd->first + c]] = nd->first + c;
    }

    /* Every byte must be a token by itself, or greedy matching could get stuck on a byte
     * and text containing it could not be encoded (the World vocab has all 256). */
    st = RECUR_E_FORMAT;
    for (uint32_t b = 0; b < 256; b++) {
        if (v->nodes[0].n_child <= b || v->label[1 + b] != b || v->nodes[1 + b].tok < 0) {
            recur_log_err("%s: no token for the single byte 0x%02x, so text containing it could not be encoded",
                          path, b);
            goto done;
        }
    }
    st = RECUR_OK;
done:
    if (st == RECUR_E_NOMEM) recur_log_err("%s: out of memory building the trie (%zu nodes)", path, cap);
    free(lo); free(hi); free(depth);
    return st;
}

void recur_world_vocab_free(recur_world_vocab_t *v) {
    if (!v) return;
    free(v->blob); free(v->tok_off); free(v->tok_len);
    free(v->nodes); free(v->label); free(v->dense);
    free(v);
}

recur_status_t recur_world_vocab_load(const char *path, recur_world_vocab_t **out) {
    *out = NULL;
    uint8_t *text = NULL;
    size_t n = 0;
    RECUR_TRY(recur_file_read_small(path, WORLD_MAX_FILE_BYTES, "World vocab", (char **)&text, &n));

    recur_status_t st = RECUR_E_NOMEM;
    world_entry_t *entries = NULL;
    size_t n_lines = 1, ne = 0;
    int32_t gaps = 0;
    for (const uint8_t *p = text, *end = text + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) n_lines++;
    recur_world_vocab_t *v = calloc(1, sizeof *v);
    if (!v) goto fail;
    v->blob = malloc(n + 1);
    entries = malloc(n_lines * sizeof *entries);
    if (!v->blob || !entries) goto fail;

    st = world_parse_lines(path, text, n, v->blob, entries, &ne);
    if (st != RECUR_OK) goto fail;
    st = world_index_ids(path, v, entries, ne, &gaps);
    if (st != RECUR_OK) goto fail;
    qsort(entries, ne, sizeof *entries, world_entry_cmp);
    for (size_t i = 1; i < ne; i++) {
        if (world_entry_cmp(&entries[i - 1], &entries[i]) == 0) {
            /* Greedy matching could only ever produce one of the two ids. */
            const world_entry_t *a = &entries[i - 1], *b = &entries[i];
            if (a->line > b->line) { const world_entry_t *t = a; a = b; b = t; }
            recur_log_err("%s:%u: id %d has the same bytes as id %d on line %u", path, b->line, b->id, a->id, a->line);
            st = RECUR_E_FORMAT;
            goto fail;
        }
    }
    st = world_build_trie(path, v, entries, ne);
    if (st != RECUR_OK) goto fail;
    free(entries);
    free(text);
    /* The reference accepts gaps, and so do we, but say so: a vocab with holes is more likely
     * damaged than designed. Absent ids decode to nothing, like id 0. */
    if (gaps) recur_log_warn("%s: %d of the ids 1..%d are absent from the file; they decode to nothing", path,
                             gaps, v->n_vocab - 1);
    recur_log_debug("%s: World vocab: %zu tokens, vocab size %d, %u trie nodes (%u dense)", path, ne, v->n_vocab,
                    v->n_nodes, v->n_dense);
    *out = v;
    return RECUR_OK;
fail:
    if (st == RECUR_E_NOMEM && (!v || !v->blob || !entries))
        recur_log_err("%s: out of memory loading the World vocab", path);
    free(entries);
    free(text);
    recur_world_vocab_free(v);
    return st;
}

/* ---------------------------------------------------------------- queries */

int32_t recur_world_vocab_size(const recur_world_vocab_t *v) { return v->n_vocab; }

void recur_world_vocab_token(const recur_world_vocab_t *v, int32_t id, const uint8_t **p, size_t *n) {
    *p = v->blob + v->tok_off[id];
    *n = v->tok_len[id];
}

/* The child of node nd along byte c, or 0 (the root is nobody's child) if there is none. */
static inline uint32_t world_child(const recur_world_vocab_t *v, const world_node_t *nd, uint8_t c) {
    if (nd->dense != WORLD_NO_DENSE) return v->dense[(size_t)nd->dense * 256 + c];
    const uint8_t *lab = v->label + nd->first;
    uint32_t lo = 0, hi = nd->n_child;
    while (hi - lo > 8) { /* bisect down to a short run, then scan it */
        uint32_t mid = (lo + hi) / 2;
        if (lab[mid] <= c) lo = mid; else hi = mid;
    }
    for (uint32_t i = lo; i < hi; i++) {
        if (lab[i] == c) return nd->first + i;
        if (lab[i] > c) break;
    }
    return 0;
}

void recur_world_vocab_encode(const recur_world_vocab_t *v, const uint8_t *s, size_t n, int32_t *ids,
                              size_t *n_ids) {
    const world_node_t *nodes = v->nodes;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        /* Root children are nodes 1..256 in byte order and all are tokens (checked at load),
         * so there is always a match of at least one byte. */
        uint32_t k = 1u + s[i];
        int32_t best = nodes[k].tok;
        size_t end = i + 1;
        for (size_t j = i + 1; j < n && nodes[k].n_child; j++) {
            k = world_child(v, &nodes[k], s[j]);
            if (k == 0) break;
            if (nodes[k].tok >= 0) { best = nodes[k].tok; end = j + 1; }
        }
        ids[m++] = best;
        i = end;
    }
    *n_ids = m;
}
