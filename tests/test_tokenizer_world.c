/* test_tokenizer_world.c: the World trie tokenizer and the byte tokenizer.
 *
 * - every case of fixtures/rwkv7/tokenizer-vectors.jsonl reproduced exactly (ids and round trip);
 * - rwkv.cpp's official vector (rwkv7_ref.py check()) and single-byte ids (byte b -> id b+1);
 * - thousands of random strings (uniform bytes, random token concatenations cut anywhere,
 *   long runs) encoded identically to an independent greedy matcher in this file (a hash set
 *   of token byte strings probed longest-first) and round-tripping exactly;
 * - a synthetic vocab exercising the str-vs-bytes escape rules, and malformed vocabs that must
 *   each fail with an error rather than load or crash;
 * - decode range errors; the byte tokenizer.
 * Encode throughput and load time are printed as information, never asserted. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recur_log.h"
#include "recur_testutil.h"
#include "recur_tokenizer.h"

static const char *world_vocab(void) {
    static char path[1024];
    recur_source_path(path, sizeof path, "models/rwkv_vocab_v20230424.txt");
    return path;
}
#define WORLD_VOCAB world_vocab()

/* decode(ids) == s exactly (and NUL-terminated). Returns 1 if so. */
static int check_decode(const recur_tokenizer_t *t, const int32_t *ids, size_t n_ids, const uint8_t *s, size_t n) {
    char *text = NULL;
    size_t nb = 0;
    recur_status_t st = recur_tokenizer_decode(t, ids, n_ids, &text, &nb);
    int ok = st == RECUR_OK && text && nb == n && memcmp(text, s, n) == 0 && text[nb] == '\0';
    if (!ok) {
        fprintf(stderr, "round trip failed (status %s)\n", recur_status_str(st));
        recur_test_hex_dump("want", s, n);
        if (text) recur_test_hex_dump("got", (const uint8_t *)text, nb);
    }
    free(text);
    return ok;
}

/* encode(s) == want (if want != NULL) and decode(encode(s)) == s. Returns 1 if so. */
static int check_encode(const recur_tokenizer_t *t, const char *what, const uint8_t *s, size_t n,
                        const int32_t *want, size_t n_want) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    recur_status_t st = recur_tokenizer_encode(t, (const char *)s, n, &ids, &n_ids);
    if (st != RECUR_OK || !ids) {
        fprintf(stderr, "%s: encode failed: %s\n", what, recur_status_str(st));
        free(ids);
        return 0;
    }
    int ok = 1;
    if (want && (n_ids != n_want || memcmp(ids, want, n_ids * sizeof *ids) != 0)) {
        fprintf(stderr, "%s: ids differ\n", what);
        recur_test_hex_dump("text", s, n);
        recur_test_ids_dump("want", want, n_want);
        recur_test_ids_dump("got", ids, n_ids);
        ok = 0;
    }
    if (!check_decode(t, ids, n_ids, s, n)) {
        fprintf(stderr, "%s: decode(encode(x)) != x\n", what);
        ok = 0;
    }
    free(ids);
    return ok;
}

/* ---------------------------------------------------------------- independent reference */

/* Greedy longest match done differently from the trie: a hash set of every token's bytes,
 * probed for the longest token that is a prefix of the rest of the input. (The trie walk
 * finds exactly that token, since every prefix of a token is a trie node.) */
typedef struct ref_set {
    const recur_tokenizer_t *t;
    int32_t *slot;   /* open addressing; -1 = empty; else a token id */
    uint64_t *hash;  /* hash of each slot's token */
    size_t mask;
    size_t max_len;
} ref_set_t;

#define FNV_OFF 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static int ref_init(ref_set_t *r, const recur_tokenizer_t *t) {
    int32_t v = recur_tokenizer_vocab_size(t);
    size_t cap = 1;
    while (cap < (size_t)v * 2) cap <<= 1;
    r->t = t; r->mask = cap - 1; r->max_len = 0;
    r->slot = malloc(cap * sizeof *r->slot);
    r->hash = malloc(cap * sizeof *r->hash);
    if (!r->slot || !r->hash) return -1;
    for (size_t i = 0; i < cap; i++) r->slot[i] = -1;
    for (int32_t id = 1; id < v; id++) {
        const char *p;
        size_t n;
        if (recur_tokenizer_token_bytes(t, id, &p, &n) != RECUR_OK) return -1;
        if (n == 0) continue;
        uint64_t h = FNV_OFF;
        for (size_t i = 0; i < n; i++) { h ^= (uint8_t)p[i]; h *= FNV_PRIME; }
        size_t k = (size_t)h & r->mask;
        while (r->slot[k] >= 0) k = (k + 1) & r->mask;
        r->slot[k] = id; r->hash[k] = h;
        if (n > r->max_len) r->max_len = n;
    }
    return 0;
}

static void ref_free(ref_set_t *r) { free(r->slot); free(r->hash); }

static int32_t ref_lookup(const ref_set_t *r, const uint8_t *s, size_t n, uint64_t h) {
    for (size_t k = (size_t)h & r->mask; r->slot[k] >= 0; k = (k + 1) & r->mask) {
        if (r->hash[k] != h) continue;
        const char *p;
        size_t pn;
        recur_tokenizer_token_bytes(r->t, r->slot[k], &p, &pn);
        if (pn == n && memcmp(p, s, n) == 0) return r->slot[k];
    }
    return -1;
}

/* out has room for n ids. Returns the count, or (size_t)-1 if some byte has no token. */
static size_t ref_encode(const ref_set_t *r, const uint8_t *s, size_t n, int32_t *out) {
    uint64_t h[512];
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t lmax = n - i < r->max_len ? n - i : r->max_len;
        if (lmax > 511) lmax = 511;
        uint64_t x = FNV_OFF;
        for (size_t l = 1; l <= lmax; l++) { x ^= s[i + l - 1]; x *= FNV_PRIME; h[l] = x; }
        size_t l = lmax;
        int32_t id = -1;
        for (; l >= 1; l--) if ((id = ref_lookup(r, s + i, l, h[l])) >= 0) break;
        if (id < 0) return (size_t)-1;
        out[m++] = id;
        i += l;
    }
    return m;
}

/* ---------------------------------------------------------------- sections */

static void test_vectors(const recur_tokenizer_t *t, int *failures) {
    char path[1024];
    recur_fixture_path(path, sizeof path, "rwkv7/tokenizer-vectors.jsonl");
    char *buf = NULL;
    size_t n = 0;
    if (recur_read_file(path, (void **)&buf, &n) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        (*failures)++;
        return;
    }
    int n_cases = 0, n_ok = 0;
    for (size_t pos = 0; pos < n;) {
        char *line = buf + pos;
        char *nl = memchr(line, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - line) : n - pos;
        pos += len + 1;
        if (len == 0) continue;
        cJSON *j = cJSON_ParseWithLength(line, len);
        if (!j) { fprintf(stderr, "bad JSON in %s case %d\n", path, n_cases + 1); (*failures)++; continue; }
        n_cases++;
        const cJSON *jt = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *jh = cJSON_GetObjectItemCaseSensitive(j, "bytes_hex");
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(j, "ids");
        uint8_t *s = NULL;
        size_t sn = 0;
        if (cJSON_IsString(jt)) {
            sn = strlen(jt->valuestring); /* cJSON turns \uXXXX (and surrogate pairs) into UTF-8 */
            s = malloc(sn + 1);
            if (s) memcpy(s, jt->valuestring, sn);
        } else if (cJSON_IsString(jh)) {
            sn = strlen(jh->valuestring) / 2;
            s = malloc(sn + 1);
            for (size_t i = 0; s && i < sn; i++) {
                unsigned v;
                if (sscanf(jh->valuestring + 2 * i, "%2x", &v) != 1) { free(s); s = NULL; }
                else s[i] = (uint8_t)v;
            }
        }
        int n_want = cJSON_IsArray(ji) ? cJSON_GetArraySize(ji) : -1;
        int32_t *want = malloc((size_t)(n_want > 0 ? n_want : 1) * sizeof *want);
        if (!s || n_want < 0 || !want) {
            fprintf(stderr, "%s case %d: malformed test case\n", path, n_cases);
            (*failures)++;
        } else {
            int k = 0;
            for (const cJSON *e = ji->child; e; e = e->next) want[k++] = (int32_t)e->valuedouble;
            char what[64];
            snprintf(what, sizeof what, "vectors case %d", n_cases);
            if (check_encode(t, what, s, sn, want, (size_t)n_want)) n_ok++;
            else (*failures)++;
        }
        free(want);
        free(s);
        cJSON_Delete(j);
    }
    free(buf);
    printf("tokenizer-vectors.jsonl: %d/%d cases exact\n", n_ok, n_cases);
    RECUR_CHECK(failures, n_cases >= 17); /* the file has 17; fewer means it was not all read */
}

static void test_specific_ids(const recur_tokenizer_t *t, int *failures) {
    /* rwkv.cpp's official vector, as in rwkv7_ref.py check() (TOK_CASES[5]). */
    static const char rwkvcpp_text[] = "I'll 'd test \xd0\xb1\xd0\xbb\xd0\xb0\xd0\xb1\xd0\xbb\xd0\xb0 "
                                       "\xe4\xbb\xa5\xe4\xb8\x8b\xe3\x81\xaf\xe3\x80\x81]) -> <|endoftext|><|padding|> int";
    static const int32_t rwkvcpp_ids[] = {74, 5229, 274, 101, 32223, 5092, 27980, 2795, 27980, 33, 10399, 10258,
                                          10139, 10079, 1682, 3463, 295, 125, 25258, 7588, 2318, 125, 790, 125,
                                          49520, 125, 63, 21888};
    RECUR_CHECK(failures, check_encode(t, "rwkv.cpp vector", (const uint8_t *)rwkvcpp_text, strlen(rwkvcpp_text),
                                       rwkvcpp_ids, sizeof rwkvcpp_ids / sizeof rwkvcpp_ids[0]));

    RECUR_CHECK(failures, recur_tokenizer_kind(t) == RECUR_TOKENIZER_WORLD);
    RECUR_CHECK(failures, recur_tokenizer_eos(t) == 0);
    /* ids run 1..65529 in the file; id 0 is implicit. */
    RECUR_CHECK(failures, recur_tokenizer_vocab_size(t) == 65530);

    /* RWKV7.md §6.1: id b+1 is the single byte b. */
    int bad = 0;
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        int32_t want = b + 1;
        const char *p;
        size_t n;
        if (!check_encode(t, "single byte", &c, 1, &want, 1)) bad++;
        if (recur_tokenizer_token_bytes(t, b + 1, &p, &n) != RECUR_OK || n != 1 || (uint8_t)p[0] != c) bad++;
    }
    printf("single bytes: %d/256 map to id b+1 and back\n", 256 - bad);
    if (bad) (*failures)++;

    const char *p = NULL;
    size_t n = 99;
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 0, &p, &n) == RECUR_OK && p && n == 0);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 261, &p, &n) == RECUR_OK && n == 2 && memcmp(p, "\n\n", 2) == 0);
    char spaces[128], hashes[80];
    memset(spaces, ' ', sizeof spaces);
    memset(hashes, '#', sizeof hashes);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 65529, &p, &n) == RECUR_OK && n == 128 &&
                              memcmp(p, spaces, 128) == 0);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 65527, &p, &n) == RECUR_OK && n == 80 &&
                              memcmp(p, hashes, 80) == 0);
    /* str '\xNN' is U+00NN in UTF-8 (2 bytes); "é" (U+00E9) must be one token, not two bytes. */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    RECUR_CHECK(failures, recur_tokenizer_encode(t, "\xc3\xa9", 2, &ids, &n_ids) == RECUR_OK && n_ids == 1);
    free(ids);

    /* Empty input: a non-NULL array of 0 ids; id 0 decodes to nothing. */
    ids = NULL;
    RECUR_CHECK(failures, recur_tokenizer_encode(t, "", 0, &ids, &n_ids) == RECUR_OK && ids && n_ids == 0);
    free(ids);
    int32_t eos_ids[] = {0, 34, 0};
    RECUR_CHECK(failures, check_decode(t, eos_ids, 3, (const uint8_t *)"!", 1));

    /* Range errors. */
    printf("-- range errors: the 5 error lines below are expected --\n");
    char *text = NULL;
    size_t nb = 0;
    int32_t bad_hi[] = {74, 65530}, bad_neg[] = {-1};
    RECUR_CHECK(failures, recur_tokenizer_decode(t, bad_hi, 2, &text, &nb) == RECUR_E_RANGE && !text);
    RECUR_CHECK(failures, recur_tokenizer_decode(t, bad_neg, 1, &text, &nb) == RECUR_E_RANGE && !text);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 65530, &p, &n) == RECUR_E_RANGE);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, -1, &p, &n) == RECUR_E_RANGE);
    RECUR_CHECK(failures, recur_tokenizer_decode(NULL, bad_neg, 1, &text, &nb) == RECUR_E_INVAL);
}

/* Random strings: trie encode must equal the reference matcher and round-trip. */
static void test_random(const recur_tokenizer_t *t, int *failures) {
    ref_set_t ref;
    if (ref_init(&ref, t) != 0) { fprintf(stderr, "reference set: out of memory\n"); (*failures)++; return; }
    int32_t v = recur_tokenizer_vocab_size(t);
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    uint8_t s[1024];
    int32_t want[1024];
    static const char alphabet[] = "   \n\n#-=a0\t.";
    const char *kinds[] = {"uniform bytes", "token concatenations", "runs"};
    int n_per_kind[] = {3000, 3000, 1000};
    int bad_total = 0;
    for (int kind = 0; kind < 3; kind++) {
        int bad = 0;
        for (int iter = 0; iter < n_per_kind[kind]; iter++) {
            size_t n = recur_test_rng_below(&rng, 201); /* 0..200 bytes */
            if (kind == 0) {
                for (size_t i = 0; i < n; i++) s[i] = (uint8_t)recur_test_rng_below(&rng, 256);
            } else if (kind == 1) {
                /* Whole tokens end to end, cut at n: the trie must walk deep and back off. */
                size_t o = 0;
                while (o < n) {
                    const char *p;
                    size_t pn;
                    recur_tokenizer_token_bytes(t, 1 + (int32_t)recur_test_rng_below(&rng, (uint32_t)v - 1), &p, &pn);
                    for (size_t i = 0; i < pn && o < n; i++) s[o++] = (uint8_t)p[i];
                }
            } else {
                size_t o = 0;
                while (o < n) {
                    char c = alphabet[recur_test_rng_below(&rng, sizeof alphabet - 1)];
                    size_t run = 1 + recur_test_rng_below(&rng, 140);
                    for (size_t i = 0; i < run && o < n; i++) s[o++] = (uint8_t)c;
                }
            }
            size_t n_want = ref_encode(&ref, s, n, want);
            if (n_want == (size_t)-1) { bad++; continue; }
            if (!check_encode(t, kinds[kind], s, n, want, n_want)) {
                if (++bad > 5) break; /* enough to diagnose */
            }
        }
        printf("random %-22s %4d strings, %d mismatches vs reference matcher\n", kinds[kind], n_per_kind[kind], bad);
        bad_total += bad;
    }
    if (bad_total) (*failures)++;
    ref_free(&ref);
}

/* Throughput on a few 1 MiB inputs, best of 3 runs each. Information only. */
static void test_throughput(const recur_tokenizer_t *t, int *failures) {
    const size_t n = (size_t)1 << 20;
    uint8_t *buf = malloc(n);
    if (!buf) { (*failures)++; return; }
    static const char prose[] =
        "The Eiffel tower is in the city of Paris. User: hi\n\nAssistant: <think>\n</think>\n"
        "def f(x):\n    return x * 2\n\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c\xef\xbc\x81 "
        "emoji \xf0\x9f\x98\x80 and \xc3\xa9. 0123456789 10 99 100 2025\n";
    uint64_t rng = 12345;
    const char *names[] = {"mixed text", "random tokens", "random bytes", "all spaces", "cut long tokens"};
    int32_t v = recur_tokenizer_vocab_size(t);
    double worst = 1e30;
    for (int kind = 0; kind < 5; kind++) {
        size_t o = 0;
        while (o < n) {
            const char *p = prose;
            size_t pn = sizeof prose - 1;
            if (kind == 1) recur_tokenizer_token_bytes(t, 1 + (int32_t)recur_test_rng_below(&rng, (uint32_t)v - 1), &p, &pn);
            if (kind == 4) {
                /* A long token minus its last byte: the walk goes deep, then backs off. */
                do recur_tokenizer_token_bytes(t, 1 + (int32_t)recur_test_rng_below(&rng, (uint32_t)v - 1), &p, &pn);
                while (pn < 12);
                pn--;
            }
            if (kind == 2) { buf[o++] = (uint8_t)recur_test_rng_below(&rng, 256); continue; }
            if (kind == 3) { buf[o++] = ' '; continue; }
            for (size_t i = 0; i < pn && o < n; i++) buf[o++] = (uint8_t)p[i];
        }
        double best = 1e30;
        size_t n_ids = 0;
        for (int rep = 0; rep < 3; rep++) {
            int32_t *ids = NULL;
            double t0 = recur_test_now_s();
            recur_status_t st = recur_tokenizer_encode(t, (const char *)buf, n, &ids, &n_ids);
            double dt = recur_test_now_s() - t0;
            if (st != RECUR_OK) { (*failures)++; free(buf); return; }
            if (rep == 0 && !check_decode(t, ids, n_ids, buf, n)) (*failures)++;
            free(ids);
            if (dt < best) best = dt;
        }
        double mbs = (double)n / 1e6 / best;
        if (mbs < worst) worst = mbs;
        printf("encode 1 MiB %-16s %8.1f MB/s  (%.2f ms, %zu tokens, %.2f bytes/token)\n", names[kind], mbs,
               best * 1e3, n_ids, (double)n / (double)n_ids);
    }
    printf("encode throughput, worst of the inputs above: %.1f MB/s\n", worst);
    free(buf);
}

/* ---------------------------------------------------------------- synthetic vocabs */

/* The 256 single-byte lines as bytes literals, ids b+1, optionally leaving one byte out. */
static size_t base_vocab(char *buf, size_t cap, int skip_byte, const char *eol) {
    size_t o = 0;
    for (int b = 0; b < 256; b++) {
        if (b == skip_byte) continue;
        o += (size_t)snprintf(buf + o, cap - o, "%d b'\\x%02x' 1%s", b + 1, b, eol);
    }
    return o;
}

static recur_status_t load_text(const char *dir, const char *name, const char *text, size_t n, recur_tokenizer_t **t) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (recur_write_file(path, text, n) != 0) return RECUR_E_IO;
    return recur_tokenizer_world_load(path, t);
}

static void test_synthetic(int *failures) {
    char dir[1024];
    if (recur_make_temp_dir(dir, sizeof dir) != 0) { fprintf(stderr, "no temp dir\n"); (*failures)++; return; }
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    if (!buf) { (*failures)++; return; }

    /* A valid vocab covering the escape rules. Expected bytes beside each literal. */
    static const struct { const char *line; const char *bytes; size_t n; } extra[] = {
        {"257 '\\xe9' 2", "\xc3\xa9", 2},                 /* str \xNN = U+00NN, UTF-8 encoded */
        {"258 '\\u00e9t\\u00e9' 5", "\xc3\xa9t\xc3\xa9", 5},
        {"259 '\\U0001F600' 4", "\xf0\x9f\x98\x80", 4},
        {"260 \"it's\" 4", "it's", 4},
        {"261 'a\\'b\\\"c' 5", "a'b\"c", 5},
        {"262 '\\t\\n\\r\\\\' 4", "\t\n\r\\", 4},
        {"263 'x\\101y' 3", "xAy", 3},                    /* octal */
        {"264 b'\\x80\\x81' 2", "\x80\x81", 2},           /* bytes \xNN = raw byte */
        {"265 b'\\u00e9' 6", "\\u00e9", 6},               /* \u is no escape in bytes */
        {"266 '\xc3\xa9" "a' 3", "\xc3\xa9" "a", 3},         /* raw UTF-8 in a str */
        {"267 '\\q' 2", "\\q", 2},                        /* unknown escape kept verbatim */
        {"268 'a b' 3", "a b", 3},                        /* spaces inside the literal */
        {"269 '\\a\\b\\f\\v\\0' 5", "\a\b\f\v\0", 5},
        {"271 'zz' 2", "zz", 2},                          /* 270 is a gap */
    };
    const size_t n_extra = sizeof extra / sizeof extra[0];
    for (int crlf = 0; crlf < 2; crlf++) {
        const char *eol = crlf ? "\r\n" : "\n";
        size_t o = base_vocab(buf, cap, -1, eol);
        for (size_t i = 0; i < n_extra; i++) o += (size_t)snprintf(buf + o, cap - o, "%s%s", extra[i].line, eol);
        recur_tokenizer_t *t = NULL;
        recur_status_t st = load_text(dir, "ok.txt", buf, o, &t);
        RECUR_CHECK(failures, st == RECUR_OK && t);
        if (!t) continue;
        RECUR_CHECK(failures, recur_tokenizer_vocab_size(t) == 272);
        for (size_t i = 0; i < n_extra; i++) {
            int32_t id = atoi(extra[i].line);
            const char *p;
            size_t n;
            int ok = recur_tokenizer_token_bytes(t, id, &p, &n) == RECUR_OK && n == extra[i].n &&
                     memcmp(p, extra[i].bytes, n) == 0;
            if (!ok) fprintf(stderr, "synthetic vocab: wrong bytes for line %s\n", extra[i].line);
            RECUR_CHECK(failures, ok);
        }
        const char *p;
        size_t n = 9;
        RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 270, &p, &n) == RECUR_OK && n == 0);
        /* Greedy: "été" is one token; "\xc3\xa9" alone is 257; "\xc3\xa9a" is 266; a lone 0xe9
         * byte is the bytes token 0xe9+1. */
        int32_t w1[] = {258}, w2[] = {257, 257}, w3[] = {266, 0xea}, w4[] = {0xea, 's' + 1, 's' + 1};
        RECUR_CHECK(failures, check_encode(t, "syn 1", (const uint8_t *)"\xc3\xa9t\xc3\xa9", 5, w1, 1));
        RECUR_CHECK(failures, check_encode(t, "syn 2", (const uint8_t *)"\xc3\xa9\xc3\xa9", 4, w2, 2));
        RECUR_CHECK(failures, check_encode(t, "syn 3", (const uint8_t *)"\xc3\xa9" "a\xe9", 4, w3, 2));
        RECUR_CHECK(failures, check_encode(t, "syn 4", (const uint8_t *)"\xe9ss", 3, w4, 3));
        recur_tokenizer_free(t);
    }

    /* Malformed vocabs: each must fail with a status (and a logged file:line), never load. */
    static const struct { const char *what; const char *tail; recur_status_t want; } bad[] = {
        {"unterminated literal", "300 'abc 3\n", RECUR_E_FORMAT},
        {"truncated \\x escape", "300 'a\\x4' 2\n", RECUR_E_FORMAT},
        {"str \\xe9 claimed as 1 byte", "300 '\\xe9' 1\n", RECUR_E_FORMAT},
        {"wrong length", "300 'abc' 4\n", RECUR_E_FORMAT},
        {"duplicate id", "5 'qq' 2\n", RECUR_E_FORMAT},
        {"no length field", "300 'ab'\n", RECUR_E_FORMAT},
        {"id only", "300\n", RECUR_E_FORMAT},
        {"truncated last line", "300 'ab", RECUR_E_FORMAT},
        {"non-ASCII in bytes", "300 b'\xc3\xa9' 2\n", RECUR_E_FORMAT},
        {"id 0 in file", "0 'ab' 2\n", RECUR_E_FORMAT},
        {"duplicate bytes", "300 'ab' 2\n301 'ab' 2\n", RECUR_E_FORMAT},
        {"empty line", "\n300 'ab' 2\n", RECUR_E_FORMAT},
        {"surrogate escape", "300 '\\ud800' 3\n", RECUR_E_FORMAT},
        {"non-numeric id", "x1 'ab' 2\n", RECUR_E_FORMAT},
        {"negative length", "300 'ab' -2\n", RECUR_E_FORMAT},
        {"empty token", "300 '' 0\n", RECUR_E_FORMAT},
        {"two literals", "300 'a' 'b' 2\n", RECUR_E_FORMAT},
        {"invalid UTF-8 in str", "300 'a\xff' 2\n", RECUR_E_FORMAT},
        {"raw prefix", "300 r'ab' 2\n", RECUR_E_FORMAT},
        {"escaped closing quote", "300 'ab\\' 2\n", RECUR_E_FORMAT},
        {"huge id", "99999999999 'ab' 2\n", RECUR_E_FORMAT},
    };
    int n_bad_ok = 0;
    const int n_bad = (int)(sizeof bad / sizeof bad[0]);
    printf("-- malformed vocabs: the error lines below are expected --\n");
    fflush(stdout);
    for (int i = 0; i < n_bad; i++) {
        size_t o = base_vocab(buf, cap, -1, "\n");
        o += (size_t)snprintf(buf + o, cap - o, "%s", bad[i].tail);
        recur_tokenizer_t *t = (recur_tokenizer_t *)buf; /* must be reset to NULL on failure */
        recur_status_t st = load_text(dir, "bad.txt", buf, o, &t);
        if (st == bad[i].want && t == NULL) n_bad_ok++;
        else fprintf(stderr, "malformed vocab '%s': got %s, want %s\n", bad[i].what, recur_status_str(st),
                     recur_status_str(bad[i].want));
        if (st == RECUR_OK) recur_tokenizer_free(t);
    }
    {   /* a byte without a single-byte token */
        size_t o = base_vocab(buf, cap, 'A', "\n");
        recur_tokenizer_t *t = NULL;
        recur_status_t st = load_text(dir, "nobyte.txt", buf, o, &t);
        if (st == RECUR_E_FORMAT && !t) n_bad_ok++;
        else fprintf(stderr, "vocab without byte 'A': got %s\n", recur_status_str(st));
        if (t) recur_tokenizer_free(t);
        st = load_text(dir, "empty.txt", "", 0, &t);
        if (st == RECUR_E_FORMAT && !t) n_bad_ok++;
        else fprintf(stderr, "empty vocab: got %s\n", recur_status_str(st));
        if (t) recur_tokenizer_free(t);
        char path[1200];
        snprintf(path, sizeof path, "%s/does-not-exist.txt", dir);
        st = recur_tokenizer_world_load(path, &t);
        if (st == RECUR_E_IO && !t) n_bad_ok++;
        else fprintf(stderr, "missing vocab file: got %s\n", recur_status_str(st));
        if (t) recur_tokenizer_free(t);
    }
    printf("-- end of expected errors --\nmalformed vocabs rejected: %d/%d\n", n_bad_ok, n_bad + 3);
    if (n_bad_ok != n_bad + 3) (*failures)++;
    free(buf);
    recur_rm_rf(dir);
}

static void test_bytes(int *failures) {
    recur_tokenizer_t *t = NULL;
    RECUR_CHECK(failures, recur_tokenizer_bytes_init(255, &t) == RECUR_E_INVAL && !t);
    RECUR_CHECK(failures, recur_tokenizer_bytes_init(300, &t) == RECUR_OK && t);
    if (!t) return;
    RECUR_CHECK(failures, recur_tokenizer_kind(t) == RECUR_TOKENIZER_BYTES);
    RECUR_CHECK(failures, recur_tokenizer_eos(t) == -1);
    RECUR_CHECK(failures, recur_tokenizer_vocab_size(t) == 300);
    uint64_t rng = 77;
    uint8_t s[256];
    int32_t want[256];
    int bad = 0;
    for (int iter = 0; iter < 1000; iter++) {
        size_t n = recur_test_rng_below(&rng, 257);
        for (size_t i = 0; i < n; i++) { s[i] = (uint8_t)recur_test_rng_below(&rng, 256); want[i] = s[i]; }
        if (!check_encode(t, "bytes", s, n, want, n)) bad++;
    }
    printf("byte tokenizer: 1000 random strings, %d failures\n", bad);
    if (bad) (*failures)++;
    int32_t pad[] = {'h', 256, 'i', 299};
    RECUR_CHECK(failures, check_decode(t, pad, 4, (const uint8_t *)"hi", 2));
    char *text = NULL;
    size_t nb;
    int32_t oob[] = {300};
    RECUR_CHECK(failures, recur_tokenizer_decode(t, oob, 1, &text, &nb) == RECUR_E_RANGE && !text);
    const char *p;
    size_t n;
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 0xC3, &p, &n) == RECUR_OK && n == 1 && (uint8_t)*p == 0xC3);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 299, &p, &n) == RECUR_OK && n == 0);
    recur_tokenizer_free(t);
    recur_tokenizer_free(NULL);
}

int main(void) {
    /* Line-buffered, so our lines and the (unbuffered stderr) log lines stay in order when
     * ctest captures both into one stream. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    int failures = 0;
    recur_tokenizer_t *t = NULL;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) { /* best of 3: the first run also pays for the page cache */
        recur_tokenizer_free(t);
        t = NULL;
        double t0 = recur_test_now_s();
        recur_status_t st = recur_tokenizer_world_load(WORLD_VOCAB, &t);
        double dt = recur_test_now_s() - t0;
        if (st != RECUR_OK) {
            fprintf(stderr, "cannot load %s: %s\n", WORLD_VOCAB, recur_status_str(st));
            return 1;
        }
        if (dt < best) best = dt;
    }
    printf("loaded %s: vocab size %d, load %.1f ms (best of 3)\n", WORLD_VOCAB, recur_tokenizer_vocab_size(t),
           best * 1e3);

    test_vectors(t, &failures);
    test_specific_ids(t, &failures);
    test_random(t, &failures);
    test_throughput(t, &failures);
    recur_tokenizer_free(t);
    test_synthetic(&failures);
    test_bytes(&failures);

    printf("%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
