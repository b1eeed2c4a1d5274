/* test_tokenizer_bpe.c: the byte-level BPE tokenizer (HF tokenizer.json; GPT-NeoX-20B).
 *
 * - every case of tests/fixtures/tokenizer-neox-vectors.jsonl (made by HF `tokenizers` with
 *   scripts/make_tokenizer_vectors.py): encode gives exactly HF's ids, and decode gives exactly
 *   HF's decode(ids, skip_special_tokens=True);
 * - the vectors of fixtures/tokenizers/README.md, vocab size, eos, token bytes;
 * - thousands of random strings: valid UTF-8 decodes back to its NFC form; arbitrary bytes
 *   decode back per the documented invalid-byte rule (checked against an independent model of
 *   that rule in this file, NFC by utf8proc);
 * - a synthetic tokenizer.json: both merge formats give the same ids, HF's merge order, and
 *   malformed or unsupported files fail with the right status instead of loading.
 * Load time and encode throughput are printed as information, never asserted. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "recur_log.h"
#include "recur_testutil.h"
#include "recur_tokenizer.h"

#define NEOX_VOCAB 50277

/* Hex string -> malloc'ed bytes (NULL on a malformed string). */
static uint8_t *from_hex(const char *h, size_t *n) {
    size_t l = strlen(h);
    if (l % 2) return NULL;
    uint8_t *o = malloc(l / 2 + 1);
    if (!o) return NULL;
    for (size_t i = 0; i < l / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) { free(o); return NULL; }
        o[i] = (uint8_t)v;
    }
    *n = l / 2;
    return o;
}

/* decode(ids) == want exactly (and NUL-terminated). Returns 1 if so. */
static int check_decode(const recur_tokenizer_t *t, const int32_t *ids, size_t n_ids, const uint8_t *want, size_t n) {
    char *text = NULL;
    size_t nb = 0;
    recur_status_t st = recur_tokenizer_decode(t, ids, n_ids, &text, &nb);
    int ok = st == RECUR_OK && text && nb == n && memcmp(text, want, n) == 0 && text[nb] == '\0';
    if (!ok) {
        fprintf(stderr, "decode mismatch (status %s)\n", recur_status_str(st));
        recur_test_hex_dump("want", want, n);
        if (text) recur_test_hex_dump("got", (const uint8_t *)text, nb);
    }
    free(text);
    return ok;
}

/* encode(s) == want. Returns 1 if so. */
static int check_ids(const recur_tokenizer_t *t, const char *what, const uint8_t *s, size_t n, const int32_t *want,
                     size_t n_want) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    recur_status_t st = recur_tokenizer_encode(t, (const char *)s, n, &ids, &n_ids);
    int ok = st == RECUR_OK && ids && n_ids == n_want && (n_want == 0 || memcmp(ids, want, n_want * sizeof *ids) == 0);
    if (!ok) {
        fprintf(stderr, "%s: encode mismatch (status %s)\n", what, recur_status_str(st));
        recur_test_hex_dump("text", s, n);
        recur_test_ids_dump("want", want, n_want);
        if (ids) recur_test_ids_dump("got", ids, n_ids);
    }
    free(ids);
    return ok;
}

static recur_tokenizer_t *load_neox(double *secs) {
    char path[1024];
    recur_fixture_path(path, sizeof path, "tokenizers/20B_tokenizer.json");
    recur_tokenizer_t *t = NULL;
    double t0 = recur_test_now_s();
    recur_status_t st = recur_tokenizer_bpe_load(path, &t);
    *secs = recur_test_now_s() - t0;
    if (st != RECUR_OK) fprintf(stderr, "cannot load %s: %s\n", path, recur_status_str(st));
    return t;
}

/* ---------------------------------------------------------------- HF vectors */

static void test_vectors(const recur_tokenizer_t *t, int *failures) {
    char path[1024];
    recur_source_path(path, sizeof path, "tests/fixtures/tokenizer-neox-vectors.jsonl");
    void *data = NULL;
    size_t n = 0;
    if (recur_read_file(path, &data, &n) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        (*failures)++;
        return;
    }
    /* recur_read_file does not NUL-terminate; strtok needs it. ("text" is for people: cJSON
     * cuts it at an escaped NUL, so the test reads "hex".) */
    char *text = malloc(n + 1);
    if (!text) { free(data); (*failures)++; return; }
    memcpy(text, data, n);
    text[n] = '\0';
    free(data);
    int n_cases = 0, n_bad = 0, expected = -1;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j) { fprintf(stderr, "bad JSON line in %s\n", path); (*failures)++; continue; }
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "_meta");
        if (meta) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(meta, "count");
            if (cJSON_IsNumber(c)) expected = c->valueint;
            cJSON_Delete(j);
            continue;
        }
        const cJSON *hex = cJSON_GetObjectItemCaseSensitive(j, "hex");
        const cJSON *dhex = cJSON_GetObjectItemCaseSensitive(j, "decoded_hex");
        const cJSON *jids = cJSON_GetObjectItemCaseSensitive(j, "ids");
        size_t ns = 0, nd = 0;
        uint8_t *s = cJSON_IsString(hex) ? from_hex(hex->valuestring, &ns) : NULL;
        uint8_t *d = cJSON_IsString(dhex) ? from_hex(dhex->valuestring, &nd) : NULL;
        size_t nw = cJSON_IsArray(jids) ? (size_t)cJSON_GetArraySize(jids) : 0;
        int32_t *want = malloc((nw ? nw : 1) * sizeof *want);
        if (!s || !d || !cJSON_IsArray(jids) || !want) {
            fprintf(stderr, "malformed vector %d in %s\n", n_cases + 1, path);
            (*failures)++;
        } else {
            size_t k = 0;
            for (const cJSON *e = jids->child; e; e = e->next) want[k++] = (int32_t)e->valueint;
            char what[64];
            snprintf(what, sizeof what, "vector %d", n_cases + 1);
            int ok = check_ids(t, what, s, ns, want, nw);
            ok &= check_decode(t, want, nw, d, nd);
            if (!ok) n_bad++;
        }
        free(s);
        free(d);
        free(want);
        n_cases++;
        cJSON_Delete(j);
    }
    free(text);
    printf("HF vectors: %d cases, %d mismatched\n", n_cases, n_bad);
    *failures += n_bad;
    RECUR_CHECK(failures, expected > 0 && n_cases == expected);
}

/* ---------------------------------------------------------------- fixed cases */

static void test_fixed(const recur_tokenizer_t *t, int *failures) {
    RECUR_CHECK(failures, recur_tokenizer_kind(t) == RECUR_TOKENIZER_BPE);
    RECUR_CHECK(failures, recur_tokenizer_vocab_size(t) == NEOX_VOCAB);
    RECUR_CHECK(failures, recur_tokenizer_eos(t) == 0);

    /* fixtures/tokenizers/README.md, verified there with HF tokenizers 0.23.2. */
    static const struct { const char *text; int32_t ids[12]; size_t n; } cases[] = {
        {"Hello world", {12092, 1533}, 2},
        {" the", {253}, 1},
        {"\n", {187}, 1},
        {"<|endoftext|>", {0}, 1},
        {"The quick brown fox jumps over the lazy dog.", {510, 3158, 8516, 30013, 27287, 689, 253, 22658, 4370, 15}, 10},
        {"def f(x):\n    return x * 2\n", {1545, 269, 9, 89, 2262, 187, 50274, 2309, 1269, 475, 374, 187}, 12},
        {"a          b", {66, 50268, 67}, 3},
        {"", {0}, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        RECUR_CHECK(failures, check_ids(t, "README vector", (const uint8_t *)cases[i].text, strlen(cases[i].text),
                                        cases[i].ids, cases[i].n));

    const char *p;
    size_t n;
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 0, &p, &n) == RECUR_OK && p && n == 0);     /* special */
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 1, &p, &n) == RECUR_OK && p && n == 0);     /* special */
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 2, &p, &n) == RECUR_OK && n == 1 && p[0] == '!');
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 187, &p, &n) == RECUR_OK && n == 1 && p[0] == '\n');
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 12092, &p, &n) == RECUR_OK && n == 5 && memcmp(p, "Hello", 5) == 0);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 1533, &p, &n) == RECUR_OK && n == 6 && memcmp(p, " world", 6) == 0);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 50254, &p, &n) == RECUR_OK && n == 24 &&
                              strspn(p, " ") >= 24);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, 50276, &p, &n) == RECUR_OK && n == 2 && memcmp(p, "  ", 2) == 0);
    recur_log_level_t lvl = recur_log_get_level();
    recur_log_set_level(RECUR_LOG_NONE); /* the next checks provoke errors, which log */
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, NEOX_VOCAB, &p, &n) == RECUR_E_RANGE);
    RECUR_CHECK(failures, recur_tokenizer_token_bytes(t, -1, &p, &n) == RECUR_E_RANGE);

    /* Special tokens decode to nothing; space runs to spaces. */
    const int32_t mixed[] = {12092, 0, 50276, 1, 1533};
    RECUR_CHECK(failures, check_decode(t, mixed, 5, (const uint8_t *)"Hello   world", 13));
    const int32_t bad[] = {12092, NEOX_VOCAB};
    char *text = NULL;
    size_t nb = 0;
    RECUR_CHECK(failures, recur_tokenizer_decode(t, bad, 2, &text, &nb) == RECUR_E_RANGE && !text);
    int32_t *nul_ids = NULL;
    size_t n_nul = 0;
    RECUR_CHECK(failures, recur_tokenizer_encode(t, NULL, 1, &nul_ids, &n_nul) == RECUR_E_INVAL && !nul_ids);
    recur_log_set_level(lvl);

    /* NFC: decomposed é encodes like precomposed é and decodes to it. */
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nbb = 0;
    RECUR_CHECK(failures, recur_tokenizer_encode(t, "cafe\xcc\x81", 6, &a, &na) == RECUR_OK);
    RECUR_CHECK(failures, recur_tokenizer_encode(t, "caf\xc3\xa9", 5, &b, &nbb) == RECUR_OK);
    RECUR_CHECK(failures, a && b && na == nbb && memcmp(a, b, na * sizeof *a) == 0);
    free(a);
    free(b);

    /* Invalid UTF-8: each invalid byte is the token of that byte; bytes with no token
     * (0xC0, 0xC1, 0xF5..0xFF) become U+FFFD. */
    static const struct { const char *in; size_t n; const char *out; size_t n_out; } inv[] = {
        {"caf\xe9", 4, "caf\xe9", 4},
        {"\xe9", 1, "\xe9", 1},
        {"\xed\xa0\x80", 3, "\xed\xa0\x80", 3},              /* a UTF-16 surrogate */
        {"\xe2\x82", 2, "\xe2\x82", 2},                      /* truncated sequence */
        {"a\x80" "b", 3, "a\x80" "b", 3},                    /* lone continuation byte */
        {"\xf4\x90\x80\x80", 4, "\xf4\x90\x80\x80", 4},      /* above U+10FFFF */
        {"\xff", 1, "\xef\xbf\xbd", 3},
        {"x\xc0\xaf", 3, "x\xef\xbf\xbd\xaf", 5},            /* overlong '/': C0 has no token */
        {"\xfe\xff", 2, "\xef\xbf\xbd\xef\xbf\xbd", 6},
        {"<|endoftext|>\xe9<|padding|>", 25, "\xe9", 1},
    };
    for (size_t i = 0; i < sizeof inv / sizeof inv[0]; i++) {
        int32_t *ids = NULL;
        size_t ni = 0;
        recur_status_t st = recur_tokenizer_encode(t, inv[i].in, inv[i].n, &ids, &ni);
        RECUR_CHECK(failures, st == RECUR_OK && check_decode(t, ids, ni, (const uint8_t *)inv[i].out, inv[i].n_out));
        free(ids);
    }
    int32_t *ids = NULL;
    size_t ni = 0;
    RECUR_CHECK(failures, recur_tokenizer_encode(t, "\xe9", 1, &ids, &ni) == RECUR_OK && ni == 1 &&
                              recur_tokenizer_token_bytes(t, ids[0], &p, &n) == RECUR_OK && n == 1 &&
                              (uint8_t)p[0] == 0xe9);
    free(ids);
    /* Embedded NUL is an ordinary character. */
    RECUR_CHECK(failures, recur_tokenizer_encode(t, "a\0b", 3, &ids, &ni) == RECUR_OK &&
                              check_decode(t, ids, ni, (const uint8_t *)"a\0b", 3));
    free(ids);
    RECUR_CHECK(failures, recur_tokenizer_encode(t, NULL, 0, &ids, &ni) == RECUR_OK && ids && ni == 0);
    free(ids);
}

/* ---------------------------------------------------------------- random round trips */

/* The documented rule, modelled independently: valid runs NFC'd (utf8proc), each invalid byte
 * kept, except the 13 bytes NeoX has no token for, which become U+FFFD. */
static size_t utf8_len(const uint8_t *s, size_t n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate(s, (utf8proc_ssize_t)(n > 4 ? 4 : n), &cp);
    return l > 0 ? (size_t)l : 0;
}

static int no_token_byte(uint8_t c) { return c == 0xC0 || c == 0xC1 || c >= 0xF5; }

static uint8_t *expected_roundtrip(const uint8_t *s, size_t n, size_t *n_out) {
    uint8_t *o = malloc(4 * n + 16);
    size_t m = 0, start = 0;
    if (!o) return NULL;
    for (size_t i = 0; i <= n;) {
        size_t l = i < n ? utf8_len(s + i, n - i) : 0;
        if (l) { i += l; continue; }
        if (i > start) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t k = utf8proc_map(s + start, (utf8proc_ssize_t)(i - start), &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (k < 0) { free(nfc); free(o); return NULL; }
            memcpy(o + m, nfc, (size_t)k); /* NFC grows text at most 3x (Unicode's bound) */
            m += (size_t)k;
            free(nfc);
        }
        if (i == n) break;
        if (no_token_byte(s[i])) { memcpy(o + m, "\xef\xbf\xbd", 3); m += 3; }
        else o[m++] = s[i];
        start = ++i;
    }
    *n_out = m;
    return o;
}

static void put_cp(uint8_t *o, size_t *m, uint32_t cp) {
    utf8proc_ssize_t l = utf8proc_encode_char((utf8proc_int32_t)cp, o + *m);
    *m += (size_t)l;
}

static int check_roundtrip(const recur_tokenizer_t *t, const uint8_t *s, size_t n) {
    size_t ne = 0;
    uint8_t *want = expected_roundtrip(s, n, &ne);
    int32_t *ids = NULL;
    size_t ni = 0;
    int ok = want && recur_tokenizer_encode(t, (const char *)s, n, &ids, &ni) == RECUR_OK;
    if (ok) ok = check_decode(t, ids, ni, want, ne);
    if (!ok) recur_test_hex_dump("input", s, n);
    free(ids);
    free(want);
    return ok;
}

static void test_random(const recur_tokenizer_t *t, int *failures) {
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint8_t buf[1024];
    int bad = 0, n_valid = 0, n_bytes = 0;
    /* Code point ranges for valid strings; the special tokens' "<|" cannot form by chance
     * often, and where it does the text is a special token and decodes to nothing, so '<'
     * is left out. */
    static const uint32_t ranges[][2] = {
        {0x20, 0x3B}, {0x3D, 0x7E}, {0x09, 0x0D}, {0xA0, 0x24F}, {0x300, 0x36F}, {0x370, 0x3FF}, {0x400, 0x4FF},
        {0x590, 0x6FF}, {0x900, 0x97F}, {0xE00, 0xE7F}, {0x1100, 0x11FF}, {0x1E00, 0x1EFF}, {0x2000, 0x206F},
        {0x3000, 0x30FF}, {0x4E00, 0x4FFF}, {0xAC00, 0xAD00}, {0xFB00, 0xFB4F}, {0xFF00, 0xFFEF},
        {0x1F300, 0x1F6FF}, {0x1D400, 0x1D4FF}, {0x10000, 0x10FFFD}, {0x00, 0x1F}};
    const uint32_t n_ranges = sizeof ranges / sizeof ranges[0];
    for (int iter = 0; iter < 3000; iter++) {
        size_t m = 0, len = 1 + recur_test_rng_below(&rng, 120);
        for (size_t k = 0; k < len; k++) {
            uint32_t r = recur_test_rng_below(&rng, n_ranges + 3);
            uint32_t cp;
            if (r >= n_ranges) cp = r == n_ranges ? ' ' : r == n_ranges + 1 ? 'e' : '\n'; /* runs and words */
            else cp = ranges[r][0] + recur_test_rng_below(&rng, ranges[r][1] - ranges[r][0] + 1);
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
            put_cp(buf, &m, cp);
        }
        if (!check_roundtrip(t, buf, m)) bad++;
        n_valid++;
    }
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = 1 + recur_test_rng_below(&rng, 200);
        int mode = (int)recur_test_rng_below(&rng, 3);
        for (size_t k = 0; k < len; k++) {
            uint32_t r = (uint32_t)(recur_test_rng_next(&rng) >> 56);
            if (mode == 1 && (r & 1)) r = ' ' + (r >> 1) % 95;      /* ASCII-heavy with stray high bytes */
            if (mode == 2 && (r & 3) == 0) r = 0x80 + (r >> 2) % 64; /* many continuation bytes */
            if (r == '<') r = '>';
            buf[k] = (uint8_t)r;
        }
        if (!check_roundtrip(t, buf, len)) bad++;
        n_bytes++;
    }
    printf("random round trips: %d valid UTF-8 + %d arbitrary byte strings, %d failed\n", n_valid, n_bytes, bad);
    *failures += bad;

    /* Long runs that stress the regex (backtracking in \s+(?!\S)) and one huge pre-token. */
    size_t big = 1 << 20;
    uint8_t *s = malloc(big + 1);
    if (!s) { (*failures)++; return; }
    static const char fills[] = {'a', '\n', '\t', '!', '7', ' '};
    for (size_t f = 0; f < sizeof fills; f++) {
        memset(s, fills[f], big);
        s[big] = 'z';
        if (!check_roundtrip(t, s, big + 1)) (*failures)++;
    }
    free(s);
}

/* ---------------------------------------------------------------- throughput */

static void test_throughput(const recur_tokenizer_t *t, int *failures) {
    static const char *words[] = {
        "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "it",
        "this", "be", "are", "or", "an", "not", "which", "have", "had", "his", "her", "they", "their", "were",
        "been", "has", "one", "would", "there", "what", "all", "when", "can", "said", "who", "will", "more",
        "about", "time", "people", "years", "first", "government", "important", "development", "university",
        "information", "international", "approximately", "nevertheless", "tokenizer", "recurrent", "memory",
        "Hello", "World", "London", "January", "Einstein", "It's", "don't", "1905", "2024", "3.14"};
    const size_t n_words = sizeof words / sizeof words[0];
    const size_t target = 8u << 20;
    char *text = malloc(target + 64);
    if (!text) { (*failures)++; return; }
    uint64_t rng = 42;
    size_t n = 0;
    while (n < target) {
        const char *w = words[recur_test_rng_below(&rng, (uint32_t)n_words)];
        size_t l = strlen(w);
        memcpy(text + n, w, l);
        n += l;
        uint32_t r = recur_test_rng_below(&rng, 20);
        text[n++] = r == 0 ? ',' : r == 1 ? '.' : ' ';
        if (r <= 1) text[n++] = ' ';
        if (r == 2) text[n++] = '\n';
    }
    int32_t *ids = NULL;
    size_t ni = 0;
    double t0 = recur_test_now_s();
    recur_status_t st = recur_tokenizer_encode(t, text, n, &ids, &ni);
    double dt = recur_test_now_s() - t0;
    RECUR_CHECK(failures, st == RECUR_OK);
    printf("encode throughput: %.1f MB/s (%zu bytes -> %zu tokens, %.2f bytes/token, %.3f s)\n",
           (double)n / dt / 1e6, n, ni, ni ? (double)n / (double)ni : 0.0, dt);
    if (st == RECUR_OK) RECUR_CHECK(failures, check_decode(t, ids, ni, (const uint8_t *)text, n));
    free(ids);
    free(text);
}

/* ---------------------------------------------------------------- synthetic tokenizer.json */

/* The GPT-2 byte-level character of byte b, UTF-8 encoded into o (NUL-terminated). */
static void byte_char(int b, char o[3]) {
    uint32_t n = 0, cp = 0;
    for (int i = 0; i <= b; i++) {
        int self = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
        cp = self ? (uint32_t)i : 0x100 + n++;
    }
    if (cp < 0x80) { o[0] = (char)cp; o[1] = 0; }
    else { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); o[2] = 0; }
}

/* A small tokenizer.json: the 256 byte tokens (ids 0..255), merges building "hello" and
 * " world" (256..), and <|endoftext|> as a special added token. pair_merges selects the
 * ["a", "b"] merge format. */
static cJSON *synthetic_json(int pair_merges) {
    static const char *merges[][2] = {
        {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\xc4\xa0", "w"}, {"o", "r"}, {"\xc4\xa0w", "or"},
        {"l", "d"}, {"\xc4\xa0wor", "ld"}, {"a", "a"}, {"aa", "a"}};
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *at = cJSON_CreateObject();
    int n_merges = (int)(sizeof merges / sizeof merges[0]);
    cJSON_AddNumberToObject(at, "id", 256 + n_merges);
    cJSON_AddStringToObject(at, "content", "<|endoftext|>");
    cJSON_AddBoolToObject(at, "single_word", 0);
    cJSON_AddBoolToObject(at, "lstrip", 0);
    cJSON_AddBoolToObject(at, "rstrip", 0);
    cJSON_AddBoolToObject(at, "normalized", 0);
    cJSON_AddBoolToObject(at, "special", 1);
    cJSON_AddItemToArray(added, at);
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "NFC");
    static const char *const parts[] = {"pre_tokenizer", "post_processor", "decoder"};
    for (int i = 0; i < 3; i++) {
        cJSON *p = cJSON_AddObjectToObject(root, parts[i]);
        cJSON_AddStringToObject(p, "type", "ByteLevel");
        cJSON_AddBoolToObject(p, "add_prefix_space", 0);
        cJSON_AddBoolToObject(p, "trim_offsets", 1);
        cJSON_AddBoolToObject(p, "use_regex", 1);
    }
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        cJSON_AddNumberToObject(vocab, c, b);
    }
    cJSON *ml = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < n_merges; i++) {
        char cat[32];
        snprintf(cat, sizeof cat, "%s%s", merges[i][0], merges[i][1]);
        cJSON_AddNumberToObject(vocab, cat, 256 + i);
        if (pair_merges) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(merges[i][0]));
            cJSON_AddItemToArray(pair, cJSON_CreateString(merges[i][1]));
            cJSON_AddItemToArray(ml, pair);
        } else {
            char s[32];
            snprintf(s, sizeof s, "%s %s", merges[i][0], merges[i][1]);
            cJSON_AddItemToArray(ml, cJSON_CreateString(s));
        }
    }
    return root;
}

static recur_status_t load_json(const char *dir, const char *name, const cJSON *root, recur_tokenizer_t **t) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = cJSON_PrintUnformatted(root);
    if (!s || recur_write_file(path, s, strlen(s)) != 0) {
        free(s);
        return RECUR_E_IO;
    }
    free(s);
    return recur_tokenizer_bpe_load(path, t);
}

static recur_status_t load_raw(const char *dir, const char *name, const char *text, recur_tokenizer_t **t) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (recur_write_file(path, text, strlen(text)) != 0) return RECUR_E_IO;
    return recur_tokenizer_bpe_load(path, t);
}

/* Applies one change to a fresh synthetic file and expects load to fail with want. */
typedef void (*mutate_fn)(cJSON *root);
static cJSON *jget(cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static void jset(cJSON *o, const char *k, cJSON *v) { cJSON_ReplaceItemInObjectCaseSensitive(o, k, v); }
static cJSON *model_of(cJSON *r) { return jget(r, "model"); }
static cJSON *vocab_of(cJSON *r) { return jget(jget(r, "model"), "vocab"); }
static cJSON *added0(cJSON *r) { return cJSON_GetArrayItem(jget(r, "added_tokens"), 0); }
static cJSON *str(const char *s) { return cJSON_CreateString(s); }

static void m_wordpiece(cJSON *r) { jset(model_of(r), "type", str("WordPiece")); }
static void m_unigram(cJSON *r) { jset(model_of(r), "type", str("Unigram")); }
static void m_nfkc(cJSON *r) { jset(jget(r, "normalizer"), "type", str("NFKC")); }
static void m_lowercase(cJSON *r) { jset(jget(r, "normalizer"), "type", str("Lowercase")); }
static void m_metaspace(cJSON *r) { jset(jget(r, "pre_tokenizer"), "type", str("Metaspace")); }
static void m_no_pretok(cJSON *r) { jset(r, "pre_tokenizer", cJSON_CreateNull()); }
static void m_prefix_space(cJSON *r) { jset(jget(r, "pre_tokenizer"), "add_prefix_space", cJSON_CreateTrue()); }
static void m_no_regex(cJSON *r) { jset(jget(r, "pre_tokenizer"), "use_regex", cJSON_CreateFalse()); }
static void m_template(cJSON *r) { jset(jget(r, "post_processor"), "type", str("TemplateProcessing")); }
static void m_decoder(cJSON *r) { jset(jget(r, "decoder"), "type", str("WordPiece")); }
static void m_dropout(cJSON *r) { jset(model_of(r), "dropout", cJSON_CreateNumber(0.1)); }
static void m_fallback(cJSON *r) { jset(model_of(r), "byte_fallback", cJSON_CreateTrue()); }
static void m_prefix(cJSON *r) { jset(model_of(r), "continuing_subword_prefix", str("##")); }
static void m_suffix(cJSON *r) { jset(model_of(r), "end_of_word_suffix", str("</w>")); }
static void m_lstrip(cJSON *r) { jset(added0(r), "lstrip", cJSON_CreateTrue()); }
static void m_single(cJSON *r) { jset(added0(r), "single_word", cJSON_CreateTrue()); }
static void m_version(cJSON *r) { jset(r, "version", str("2.0")); }
static void m_truncation(cJSON *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "max_length", 8);
    jset(r, "truncation", o);
}
/* Appends a merge in the file's own format (parts: 1..3 strings). */
static void add_merge(cJSON *r, int n, const char *a, const char *b, const char *c) {
    cJSON *ml = jget(model_of(r), "merges");
    const char *p[3] = {a, b, c};
    if (cJSON_IsArray(ml->child)) {
        cJSON *pair = cJSON_CreateArray();
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(pair, str(p[i]));
        cJSON_AddItemToArray(ml, pair);
    } else {
        char s[64];
        snprintf(s, sizeof s, "%s%s%s%s%s", a, n > 1 ? " " : "", n > 1 ? b : "", n > 2 ? " " : "", n > 2 ? c : "");
        cJSON_AddItemToArray(ml, str(s));
    }
}
static void m_bad_merge(cJSON *r) { add_merge(r, 2, "x", "zz", NULL); }
static void m_merge_3(cJSON *r) { add_merge(r, 3, "a", "b", "c"); }
static void m_merge_1(cJSON *r) { add_merge(r, 1, "ab", NULL, NULL); }
static void m_merge_mixed(cJSON *r) { cJSON_AddItemToArray(jget(model_of(r), "merges"), cJSON_CreateNumber(3)); }
static void m_merge_out(cJSON *r) { add_merge(r, 2, "d", "e", NULL); } /* "de" is not in the vocab */
static void m_vocab_neg(cJSON *r) { cJSON_AddNumberToObject(vocab_of(r), "zzz", -4); }
/* "a" takes the id of "b" (98): same entry count, so HF's added-token ids do not move. */
static void m_vocab_dup_id(cJSON *r) { jset(vocab_of(r), "a", cJSON_CreateNumber(98)); }
/* cJSON_ReplaceItemInObject matches keys case-insensitively: this puts a second "a" where "A" was. */
static void m_vocab_dup_key(cJSON *r) { cJSON_ReplaceItemInObject(vocab_of(r), "a", cJSON_CreateNumber(65)); }
static void m_vocab_str(cJSON *r) { cJSON_AddStringToObject(vocab_of(r), "zzz", "7"); }
static void m_no_vocab(cJSON *r) { cJSON_DeleteItemFromObjectCaseSensitive(model_of(r), "vocab"); }
static void m_no_merges(cJSON *r) { cJSON_DeleteItemFromObjectCaseSensitive(model_of(r), "merges"); }
static void m_no_model(cJSON *r) { cJSON_DeleteItemFromObjectCaseSensitive(r, "model"); }
static void m_added_id(cJSON *r) { jset(added0(r), "id", cJSON_CreateNumber(999)); }
static void m_added_dup(cJSON *r) { cJSON_AddItemToArray(jget(r, "added_tokens"), cJSON_Duplicate(added0(r), 1)); }
static void m_added_empty(cJSON *r) { jset(added0(r), "content", str("")); }
static void m_unk_missing(cJSON *r) { jset(model_of(r), "unk_token", str("<unk>")); }

static void test_synthetic(int *failures) {
    char dir[1024];
    if (recur_make_temp_dir(dir, sizeof dir) != 0) {
        fprintf(stderr, "cannot make a temp dir\n");
        (*failures)++;
        return;
    }
    /* Both merge formats, same ids. */
    recur_tokenizer_t *ts = NULL, *tp = NULL;
    cJSON *rs = synthetic_json(0), *rp = synthetic_json(1);
    RECUR_CHECK(failures, load_json(dir, "strings.json", rs, &ts) == RECUR_OK && ts);
    RECUR_CHECK(failures, load_json(dir, "pairs.json", rp, &tp) == RECUR_OK && tp);
    if (ts && tp) {
        const int32_t eot = 256 + 11;
        RECUR_CHECK(failures, recur_tokenizer_vocab_size(ts) == eot + 1 && recur_tokenizer_eos(ts) == eot);
        /* hello = 259, " world" = 264; a single byte's id is its value here. */
        const int32_t want[] = {259, 264, '!', eot, 'h'};
        const char *text = "hello world!<|endoftext|>h";
        RECUR_CHECK(failures, check_ids(ts, "synthetic strings", (const uint8_t *)text, strlen(text), want, 5));
        RECUR_CHECK(failures, check_ids(tp, "synthetic pairs", (const uint8_t *)text, strlen(text), want, 5));
        /* HF's queue pops (rank, position) in order, so every (a a) merge (rank 9) comes before
         * any (aa a) (rank 10): "aaa" -> aaa; "aaaa" -> aa aa; "aaaaa" -> aa aaa. */
        const int32_t w3[] = {266}, w4[] = {265, 265}, w5[] = {265, 266};
        RECUR_CHECK(failures, check_ids(tp, "aaa", (const uint8_t *)"aaa", 3, w3, 1));
        RECUR_CHECK(failures, check_ids(tp, "aaaa", (const uint8_t *)"aaaa", 4, w4, 2));
        RECUR_CHECK(failures, check_ids(tp, "aaaaa", (const uint8_t *)"aaaaa", 5, w5, 2));
        /* Every byte has a token here, so any bytes round-trip exactly. */
        uint8_t all[256];
        for (int i = 0; i < 256; i++) all[i] = (uint8_t)(255 - i);
        int32_t *ids = NULL;
        size_t ni = 0;
        RECUR_CHECK(failures, recur_tokenizer_encode(tp, (const char *)all, 256, &ids, &ni) == RECUR_OK &&
                                  check_decode(tp, ids, ni, all, 256));
        free(ids);
    }
    recur_tokenizer_free(ts);
    recur_tokenizer_free(tp);
    cJSON_Delete(rs);
    cJSON_Delete(rp);

    /* ignore_merges: a pre-token that is a vocab entry is taken whole, merges or not. "xyz"
     * (267) has no merges; <|endoftext|> moves to 268 (HF gives it the vocab size). */
    for (int ignore = 0; ignore < 2; ignore++) {
        cJSON *r = synthetic_json(ignore);
        cJSON *model = cJSON_GetObjectItem(r, "model");
        cJSON_AddNumberToObject(cJSON_GetObjectItem(model, "vocab"), "xyz", 267);
        cJSON_AddBoolToObject(model, "ignore_merges", ignore);
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "added_tokens"), 0), "id",
                                  cJSON_CreateNumber(268));
        recur_tokenizer_t *ti = NULL;
        RECUR_CHECK(failures, load_json(dir, "ignore.json", r, &ti) == RECUR_OK && ti);
        if (ti) {
            const int32_t whole[] = {267, 268}, split[] = {'x', 'y', 'z', 268}, twice[] = {'x', 'y', 'z', 'x', 'y', 'z'};
            RECUR_CHECK(failures, check_ids(ti, "xyz", (const uint8_t *)"xyz<|endoftext|>", 16, ignore ? whole : split,
                                            ignore ? 2 : 4));
            RECUR_CHECK(failures, check_ids(ti, "xyzxyz", (const uint8_t *)"xyzxyz", 6, twice, 6));
            RECUR_CHECK(failures, recur_tokenizer_eos(ti) == 268 && recur_tokenizer_vocab_size(ti) == 269);
        }
        recur_tokenizer_free(ti);
        cJSON_Delete(r);
    }

    static const struct { const char *what; mutate_fn f; recur_status_t want; } muts[] = {
        {"model WordPiece", m_wordpiece, RECUR_E_UNSUPPORTED},
        {"model Unigram", m_unigram, RECUR_E_UNSUPPORTED},
        {"normalizer NFKC", m_nfkc, RECUR_E_UNSUPPORTED},
        {"normalizer Lowercase", m_lowercase, RECUR_E_UNSUPPORTED},
        {"pre_tokenizer Metaspace", m_metaspace, RECUR_E_UNSUPPORTED},
        {"no pre_tokenizer", m_no_pretok, RECUR_E_UNSUPPORTED},
        {"add_prefix_space", m_prefix_space, RECUR_E_UNSUPPORTED},
        {"use_regex false", m_no_regex, RECUR_E_UNSUPPORTED},
        {"post_processor template", m_template, RECUR_E_UNSUPPORTED},
        {"decoder WordPiece", m_decoder, RECUR_E_UNSUPPORTED},
        {"dropout", m_dropout, RECUR_E_UNSUPPORTED},
        {"byte_fallback", m_fallback, RECUR_E_UNSUPPORTED},
        {"continuing_subword_prefix", m_prefix, RECUR_E_UNSUPPORTED},
        {"end_of_word_suffix", m_suffix, RECUR_E_UNSUPPORTED},
        {"added lstrip", m_lstrip, RECUR_E_UNSUPPORTED},
        {"added single_word", m_single, RECUR_E_UNSUPPORTED},
        {"truncation", m_truncation, RECUR_E_UNSUPPORTED},
        {"version 2.0", m_version, RECUR_E_UNSUPPORTED},
        {"merge of unknown tokens", m_bad_merge, RECUR_E_FORMAT},
        {"merge with three parts", m_merge_3, RECUR_E_FORMAT},
        {"merge with one part", m_merge_1, RECUR_E_FORMAT},
        {"merges of mixed types", m_merge_mixed, RECUR_E_FORMAT},
        {"merge result not in vocab", m_merge_out, RECUR_E_FORMAT},
        {"negative vocab id", m_vocab_neg, RECUR_E_FORMAT},
        {"duplicate vocab id", m_vocab_dup_id, RECUR_E_FORMAT},
        {"duplicate vocab key", m_vocab_dup_key, RECUR_E_FORMAT},
        {"string vocab id", m_vocab_str, RECUR_E_FORMAT},
        {"no vocab", m_no_vocab, RECUR_E_FORMAT},
        {"no merges", m_no_merges, RECUR_E_FORMAT},
        {"no model", m_no_model, RECUR_E_FORMAT},
        {"added token id HF would not give", m_added_id, RECUR_E_FORMAT},
        {"added token twice", m_added_dup, RECUR_E_FORMAT},
        {"empty added token", m_added_empty, RECUR_E_FORMAT},
        {"unk_token not in vocab", m_unk_missing, RECUR_E_FORMAT},
    };
    /* Each failure logs an error by design; keep the test output readable. */
    recur_log_level_t lvl = recur_log_get_level();
    recur_log_set_level(RECUR_LOG_NONE);
    for (size_t k = 0; k < 2 * (sizeof muts / sizeof muts[0]); k++) {
        size_t i = k / 2;
        cJSON *r = synthetic_json((int)(k & 1));
        muts[i].f(r);
        recur_tokenizer_t *t = (recur_tokenizer_t *)1;
        recur_status_t st = load_json(dir, "bad.json", r, &t);
        if (st != muts[i].want || t != NULL) {
            fprintf(stderr, "%s (%s merges): got %s, want %s\n", muts[i].what, k & 1 ? "pair" : "string",
                    recur_status_str(st), recur_status_str(muts[i].want));
            (*failures)++;
            if (t && t != (recur_tokenizer_t *)1) recur_tokenizer_free(t);
        }
        cJSON_Delete(r);
    }
    /* Not JSON, or not the right JSON. */
    static const struct { const char *what, *text; recur_status_t want; } raws[] = {
        {"empty file", "", RECUR_E_FORMAT},
        {"garbage", "this is not json", RECUR_E_FORMAT},
        {"truncated", "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", RECUR_E_FORMAT},
        {"array", "[1, 2, 3]", RECUR_E_FORMAT},
        {"NUL escape", "{\"model\": {\"vocab\": {\"a\\u0000b\": 0}}}", RECUR_E_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof raws / sizeof raws[0]; i++) {
        recur_tokenizer_t *t = NULL;
        recur_status_t st = load_raw(dir, "raw.json", raws[i].text, &t);
        if (st != raws[i].want || t) {
            fprintf(stderr, "%s: got %s, want %s\n", raws[i].what, recur_status_str(st), recur_status_str(raws[i].want));
            (*failures)++;
            recur_tokenizer_free(t);
        }
    }
    /* A truncated copy of the real file. */
    char path[1024], tpath[1200];
    recur_fixture_path(path, sizeof path, "tokenizers/20B_tokenizer.json");
    void *data = NULL;
    size_t n = 0;
    if (recur_read_file(path, &data, &n) == 0) {
        snprintf(tpath, sizeof tpath, "%s/truncated.json", dir);
        recur_tokenizer_t *t = NULL;
        RECUR_CHECK(failures, recur_write_file(tpath, data, n / 2) == 0 &&
                                  recur_tokenizer_bpe_load(tpath, &t) == RECUR_E_FORMAT && !t);
        free(data);
    }
    snprintf(tpath, sizeof tpath, "%s/does-not-exist.json", dir);
    recur_tokenizer_t *t = NULL;
    RECUR_CHECK(failures, recur_tokenizer_bpe_load(tpath, &t) == RECUR_E_IO && !t);
    RECUR_CHECK(failures, recur_tokenizer_bpe_load(NULL, &t) == RECUR_E_INVAL && !t);
    RECUR_CHECK(failures, recur_tokenizer_bpe_load(tpath, NULL) == RECUR_E_INVAL);
    recur_log_set_level(lvl);
    recur_rm_rf(dir);
}

int main(void) {
    int failures = 0;
    double load_s = 0;
    recur_tokenizer_t *t = load_neox(&load_s);
    if (!t) return 1;
    printf("loaded 20B_tokenizer.json in %.3f s (vocab %d)\n", load_s, recur_tokenizer_vocab_size(t));
    test_fixed(t, &failures);
    test_vectors(t, &failures);
    test_random(t, &failures);
    test_throughput(t, &failures);
    recur_tokenizer_free(t);
    test_synthetic(&failures);
    if (failures) {
        fprintf(stderr, "test_tokenizer_bpe: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_tokenizer_bpe: all passed\n");
    return 0;
}
