/* recur_model_files.c: mmap'ed, validated access to rwkv.cpp .bin and safetensors checkpoints.
 *
 * Layout of this file: the handle and its helpers; names and little-endian reads; opening and
 * mapping files; the .bin parser; the safetensors parser; the sharded index; choosing a file
 * in a directory; the public API.
 *
 * Every parser treats the file as hostile: each length and offset is checked against what is
 * left of the mapping before it is used, every product of sizes is checked for overflow, and
 * the first problem found is logged as one error line "<path>: <problem>" and returned. Helpers
 * that log return a status; recur_model_files_open() does not log again (RECUR_TRY traces are
 * debug level), so a user sees exactly one line naming the real problem. */
#include "recur_model_files.h"
#include "recur_file.h"

#include <cjson/cJSON.h>  /* cJSON_ParseWithLengthOpts, cJSON_ArrayForEach */
#include <dirent.h>       /* opendir/readdir: picking the model file in a directory */
#include <errno.h>
#include <fcntl.h>        /* open */
#include <inttypes.h>     /* PRIu64 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>     /* mmap */
#include <sys/stat.h>     /* fstat, stat */
#include <unistd.h>       /* close, read */

#include "recur_log.h"

/* Both formats are little-endian on disk. Integers of the headers are assembled byte by byte,
 * but tensor data is handed out as-is and converted with memcpy, so a big-endian host would
 * read garbage: refuse to build there rather than fail silently. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "recur_model_files.c assumes a little-endian host"
#endif

#define RECUR_BIN_MAGIC        0x67676d66u /* "ggmf" read as a LE uint32; "fmgg" on disk       */
#define RECUR_BIN_HEADER_BYTES 24          /* magic, version, n_vocab, n_embd, n_layer, type   */
#define RECUR_BIN_TENSOR_FIXED 12          /* n_dims, key_len, dtype before ne[] and the key   */
#define RECUR_MF_NAME_MAX      1024        /* longest tensor name accepted (rwkv.cpp's limit
                                              for .bin keys; real names are < 100 bytes)       */
#define RECUR_ST_HEADER_MAX    (100u << 20) /* 100 MiB: a 10k-tensor header is ~1 MiB; larger
                                              is corruption or an attempt to exhaust memory   */
#define RECUR_MF_INDEX_MAX     (100u << 20) /* same bound for model.safetensors.index.json   */
#define RECUR_MF_TENSORS_MAX   (1 << 24)   /* keeps counts in int32 with a wide margin         */
#define RECUR_JSON_INT_LIMIT   9007199254740992.0 /* 2^53: doubles are exact integers below it */

/* One mapped file of the set. */
typedef struct recur_mf_file {
    char          *path;  /* as opened (directory + name for shards)  */
    int            fd;    /* kept open for the life of the mapping     */
    const uint8_t *map;   /* PROT_READ, MAP_PRIVATE; NULL until mapped */
    size_t         size;
    bool           borrowed; /* map is the caller's buffer (open_memory): not unmapped */
} recur_mf_file_t;

/* One "__metadata__" entry of a safetensors header. */
typedef struct recur_mf_meta {
    char *key;
    char *value;
} recur_mf_meta_t;

struct recur_model_files {
    recur_file_format_t        format;
    char                      *dir;
    recur_mf_file_t           *files;
    int32_t                    n_files, cap_files;
    recur_tensor_info_t       *tensors;   /* file order; each name is malloc'ed            */
    int32_t                    n_tensors, cap_tensors;
    const recur_tensor_info_t **by_name;  /* n_tensors pointers sorted by name (bsearch);
                                             built last, after `tensors` stops growing     */
    recur_bin_header_t         bin;       /* valid for RECUR_FORMAT_RWKVCPP_BIN only        */
    recur_mf_meta_t           *meta;
    int32_t                    n_meta;
    bool                       have_meta; /* some file's __metadata__ was taken already     */
};

/* ------------------------------------------------------------------ small helpers */

static recur_status_t mf_nomem(const char *path) {
    recur_log_err("%s: out of memory", path);
    return RECUR_E_NOMEM;
}

static char *mf_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *mf_strndup(const uint8_t *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* "a" + "/" + "b" in a new string (NULL when out of memory). */
static char *mf_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    bool slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

/* The directory part of a file path ("." when there is none). */
static char *mf_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return mf_strdup(".");
    if (slash == path) return mf_strdup("/");
    return mf_strndup((const uint8_t *)path, (size_t)(slash - path));
}

static bool mf_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

static int32_t mf_rd_i32(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4); /* two's complement reinterpretation without implementation-defined casts */
    return v;
}

static uint64_t mf_rd_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Tensor names must be valid UTF-8 without control characters (C0, DEL, C1). Besides keeping
 * log lines and lookups sane, this makes a flipped bit in a name fail here in most cases
 * instead of yielding a name with an invisible byte. */
static bool mf_name_ok(const uint8_t *s, size_t n) {
    if (n == 0 || n > RECUR_MF_NAME_MAX) return false;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return false;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)      { len = 2; cp = c & 0x1fu; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0fu; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07u; min = 0x10000; }
        else return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp < 0xa0) return false;
        i += len;
    }
    return true;
}

/* A printable rendering of untrusted bytes for an error message (at most 48 source bytes). */
static const char *mf_escape(const uint8_t *s, size_t n, char *buf, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && i < 48 && o + 5 < cap; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'' && s[i] != '\\') buf[o++] = (char)s[i];
        else o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", s[i]);
    }
    if (n > 48 && o + 4 < cap) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o < cap ? o : cap - 1] = '\0';
    return buf;
}

/* Appends a tensor (taking ownership of `name`, which is freed on failure). */
static recur_status_t mf_push_tensor(recur_model_files_t *f, const char *path, char *name,
                                     recur_tensor_info_t **out) {
    if (f->n_tensors >= RECUR_MF_TENSORS_MAX) {
        free(name);
        recur_log_err("%s: more than %d tensors", path, RECUR_MF_TENSORS_MAX);
        return RECUR_E_FORMAT;
    }
    if (f->n_tensors == f->cap_tensors) {
        int32_t cap = f->cap_tensors ? f->cap_tensors * 2 : 256;
        recur_tensor_info_t *t = realloc(f->tensors, (size_t)cap * sizeof *t);
        if (!t) {
            free(name);
            return mf_nomem(path);
        }
        f->tensors = t;
        f->cap_tensors = cap;
    }
    recur_tensor_info_t *t = &f->tensors[f->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    *out = t;
    return RECUR_OK;
}

/* ------------------------------------------------------------------ opening files */

/* Opens and maps `path` as file number f->n_files. Empty and non-regular files are refused
 * here because mmap cannot map zero bytes and a directory has no contents to map. */
static recur_status_t mf_file_open(recur_model_files_t *f, const char *path, int32_t *index) {
    if (f->n_files == f->cap_files) {
        int32_t cap = f->cap_files ? f->cap_files * 2 : 4;
        recur_mf_file_t *n = realloc(f->files, (size_t)cap * sizeof *n);
        if (!n) return mf_nomem(path);
        f->files = n;
        f->cap_files = cap;
    }
    recur_mf_file_t *file = &f->files[f->n_files];
    file->path = mf_strdup(path);
    file->fd = -1;
    file->map = NULL;
    file->size = 0;
    file->borrowed = false;
    if (!file->path) return mf_nomem(path);
    f->n_files++; /* from here recur_model_files_free() owns whatever is set */

    file->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (file->fd < 0) {
        recur_log_err("%s: cannot open: %s", path, strerror(errno));
        return RECUR_E_IO;
    }
    struct stat st;
    if (fstat(file->fd, &st) != 0) {
        recur_log_err("%s: cannot stat: %s", path, strerror(errno));
        return RECUR_E_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        recur_log_err("%s: not a regular file", path);
        return RECUR_E_IO;
    }
    if (st.st_size <= 0) {
        recur_log_err("%s: empty file", path);
        return RECUR_E_FORMAT;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        recur_log_err("%s: file too large to map (%lld bytes)", path, (long long)st.st_size);
        return RECUR_E_IO;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, file->fd, 0);
    if (m == MAP_FAILED) {
        recur_log_err("%s: cannot mmap %lld bytes: %s", path, (long long)st.st_size, strerror(errno));
        return RECUR_E_IO;
    }
    file->map = m;
    file->size = (size_t)st.st_size;
    *index = f->n_files - 1;
    return RECUR_OK;
}


/* ------------------------------------------------------------------ rwkv.cpp .bin */

/* Parses "blocks.<i>." at the start of a name: the layer index, or -1 for other names. Leading
 * zeros are not an index (rwkv.cpp's converter writes plain decimal). */
static int64_t mf_block_index(const char *name) {
    static const char prefix[] = "blocks.";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0) return -1;
    const char *p = name + sizeof prefix - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.')) return -1;
    int64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > INT32_MAX) return -1;
    }
    return *p == '.' ? v : -1;
}

/* The header's n_vocab/n_embd/n_layer must agree with the tensors. The .bin container has no
 * tensor count or end marker, so this is also what rejects a file cut exactly between two
 * tensors: it would otherwise parse as a shorter valid file. rwkv.cpp writes emb.weight first
 * and head.weight last, and every RWKV version has both plus blocks.0 .. blocks.{L-1}. */
static recur_status_t mf_bin_check_header(const recur_model_files_t *f, const char *path) {
    const recur_bin_header_t *h = &f->bin;
    static const char *need[] = {"emb.weight", "head.weight"};
    for (int k = 0; k < 2; k++) {
        const recur_tensor_info_t *t = NULL;
        for (int32_t i = 0; i < f->n_tensors && !t; i++)
            if (strcmp(f->tensors[i].name, need[k]) == 0) t = &f->tensors[i];
        if (!t) {
            recur_log_err("%s: no '%s' tensor (truncated or not an RWKV model)", path, need[k]);
            return RECUR_E_FORMAT;
        }
        if (t->n_dims != 2 || t->shape[0] != h->n_vocab || t->shape[1] != h->n_embd) {
            recur_log_err("%s: '%s' has shape [%" PRId64 ", %" PRId64 "%s] but the header says n_vocab %d, "
                          "n_embd %d", path, need[k], t->shape[0], t->n_dims > 1 ? t->shape[1] : 0,
                          t->n_dims != 2 ? ", ..." : "", h->n_vocab, h->n_embd);
            return RECUR_E_FORMAT;
        }
    }
    if (h->n_layer > f->n_tensors) {
        recur_log_err("%s: header says %d layers but the file has only %d tensors", path, h->n_layer,
                      f->n_tensors);
        return RECUR_E_FORMAT;
    }
    bool *seen = calloc((size_t)h->n_layer, 1);
    if (!seen) return mf_nomem(path);
    recur_status_t st = RECUR_OK;
    for (int32_t i = 0; i < f->n_tensors; i++) {
        int64_t b = mf_block_index(f->tensors[i].name);
        if (b < 0) continue;
        if (b >= h->n_layer) {
            recur_log_err("%s: tensor '%s' is in layer %" PRId64 " but the header says %d layers", path,
                          f->tensors[i].name, b, h->n_layer);
            st = RECUR_E_FORMAT;
            goto done;
        }
        seen[b] = true;
    }
    for (int32_t b = 0; b < h->n_layer; b++) {
        if (!seen[b]) {
            recur_log_err("%s: no tensors for layer %d of %d (truncated or corrupt)", path, b, h->n_layer);
            st = RECUR_E_FORMAT;
            goto done;
        }
    }
done:
    free(seen);
    return st;
}

static recur_status_t mf_parse_bin(recur_model_files_t *f, int32_t fi) {
    const char *path = f->files[fi].path;
    const uint8_t *p = f->files[fi].map;
    const size_t size = f->files[fi].size;
    char esc[256];

    if (size < RECUR_BIN_HEADER_BYTES) {
        recur_log_err("%s: truncated: the .bin header needs %d bytes but the file has %zu", path,
                      RECUR_BIN_HEADER_BYTES, size);
        return RECUR_E_FORMAT;
    }
    uint32_t magic = (uint32_t)mf_rd_i32(p);
    recur_bin_header_t h = {mf_rd_i32(p + 4), mf_rd_i32(p + 8), mf_rd_i32(p + 12), mf_rd_i32(p + 16),
                            mf_rd_i32(p + 20)};
    if (magic != RECUR_BIN_MAGIC) {
        recur_log_err("%s: not a rwkv.cpp .bin file (magic 0x%08x, expected 0x%08x)", path, magic,
                      RECUR_BIN_MAGIC);
        return RECUR_E_FORMAT;
    }
    if (h.version != 100 && h.version != 101) {
        recur_log_err("%s: unknown .bin version %d (expected 100 or 101)", path, h.version);
        return RECUR_E_FORMAT;
    }
    if (h.data_type >= 7 && h.data_type <= 9) { /* rwkv.cpp's Q5_0, Q5_1, Q8_0 */
        recur_log_err("%s: quantized .bin (data_type %d) is not supported", path, h.data_type);
        return RECUR_E_UNSUPPORTED;
    }
    if (h.data_type != 0 && h.data_type != 1) {
        recur_log_err("%s: unknown .bin data_type %d (expected 0 = FP32 or 1 = FP16)", path, h.data_type);
        return RECUR_E_FORMAT;
    }
    if (h.n_vocab <= 0 || h.n_embd <= 0 || h.n_layer <= 0) {
        recur_log_err("%s: bad header: n_vocab %d, n_embd %d, n_layer %d must all be positive", path,
                      h.n_vocab, h.n_embd, h.n_layer);
        return RECUR_E_FORMAT;
    }
    f->bin = h;

    size_t off = RECUR_BIN_HEADER_BYTES;
    for (int32_t k = 0; off < size; k++) {
        size_t rem = size - off;
        if (rem < RECUR_BIN_TENSOR_FIXED) {
            recur_log_err("%s: truncated: tensor #%d header needs %d bytes at offset %zu but the file ends "
                          "at %zu", path, k, RECUR_BIN_TENSOR_FIXED, off, size);
            return RECUR_E_FORMAT;
        }
        int32_t n_dims = mf_rd_i32(p + off), key_len = mf_rd_i32(p + off + 4), dt = mf_rd_i32(p + off + 8);
        if (n_dims < 1 || n_dims > RECUR_TENSOR_MAX_DIMS) {
            recur_log_err("%s: tensor #%d at offset %zu: n_dims %d is outside [1, %d]", path, k, off, n_dims,
                          RECUR_TENSOR_MAX_DIMS);
            return RECUR_E_FORMAT;
        }
        if (key_len < 1 || key_len > RECUR_MF_NAME_MAX) {
            recur_log_err("%s: tensor #%d at offset %zu: name length %d is outside [1, %d]", path, k, off,
                          key_len, RECUR_MF_NAME_MAX);
            return RECUR_E_FORMAT;
        }
        if (dt != 0 && dt != 1) {
            recur_log_err("%s: tensor #%d at offset %zu: dtype %d is not 0 (f32) or 1 (f16)", path, k, off, dt);
            return RECUR_E_FORMAT;
        }
        size_t hdr = RECUR_BIN_TENSOR_FIXED + 4 * (size_t)n_dims + (size_t)key_len;
        if (rem < hdr) {
            recur_log_err("%s: truncated: tensor #%d header needs %zu bytes at offset %zu but the file ends "
                          "at %zu", path, k, hdr, off, size);
            return RECUR_E_FORMAT;
        }
        const uint8_t *key = p + off + RECUR_BIN_TENSOR_FIXED + 4 * (size_t)n_dims;
        if (!mf_name_ok(key, (size_t)key_len)) {
            recur_log_err("%s: tensor #%d at offset %zu: name '%s' is not printable UTF-8", path, k, off,
                          mf_escape(key, (size_t)key_len, esc, sizeof esc));
            return RECUR_E_FORMAT;
        }
        char *name = mf_strndup(key, (size_t)key_len);
        if (!name) return mf_nomem(path);
        recur_tensor_info_t *t;
        RECUR_TRY(mf_push_tensor(f, path, name, &t));
        t->dtype = dt == 0 ? RECUR_DTYPE_F32 : RECUR_DTYPE_F16;
        t->n_dims = n_dims;
        int64_t n = 1;
        for (int32_t d = 0; d < n_dims; d++) {
            int32_t ne = mf_rd_i32(p + off + RECUR_BIN_TENSOR_FIXED + 4 * (size_t)d);
            if (ne < 1) {
                recur_log_err("%s: tensor '%s': dimension %d is %d (must be >= 1)", path, name, d, ne);
                return RECUR_E_FORMAT;
            }
            t->shape[n_dims - 1 - d] = ne; /* ggml's ne[0] is the contiguous dim: reverse */
            if (n > INT64_MAX / 4 / ne) {
                recur_log_err("%s: tensor '%s': element count overflows", path, name);
                return RECUR_E_FORMAT;
            }
            n *= ne;
        }
        size_t data_off = off + hdr;
        uint64_t nbytes = (uint64_t)n * recur_dtype_size(t->dtype);
        if (nbytes > size - data_off) {
            recur_log_err("%s: truncated: tensor '%s' needs %" PRIu64 " bytes at offset %zu but the file ends "
                          "at %zu", path, name, nbytes, data_off, size);
            return RECUR_E_FORMAT;
        }
        t->n_elems = n;
        t->n_bytes = (size_t)nbytes;
        t->data = p + data_off;
        t->file_index = fi;
        t->file_offset = data_off;
        off = data_off + (size_t)nbytes;
    }
    if (f->n_tensors == 0) {
        recur_log_err("%s: truncated: the file has a header but no tensors", path);
        return RECUR_E_FORMAT;
    }
    return mf_bin_check_header(f, path);
}

/* ------------------------------------------------------------------ safetensors */

/* cJSON keeps numbers as doubles: accept only integral values in [0, 2^53), where doubles are
 * exact, so a fractional, negative or huge (rounded) value is rejected, not truncated. */
static bool mf_json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0.0 && v < RECUR_JSON_INT_LIMIT)) return false;
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return false;
    *out = u;
    return true;
}

/* Maps a safetensors dtype string: 1 = supported (*dt set), 0 = a dtype of the spec recur does
 * not read, -1 = not a safetensors dtype at all. */
static int mf_st_dtype(const char *s, recur_dtype_t *dt) {
    static const char *other[] = {"F64", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8", "BOOL",
                                  "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};
    if (strcmp(s, "F32") == 0)  { *dt = RECUR_DTYPE_F32;  return 1; }
    if (strcmp(s, "F16") == 0)  { *dt = RECUR_DTYPE_F16;  return 1; }
    if (strcmp(s, "BF16") == 0) { *dt = RECUR_DTYPE_BF16; return 1; }
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (strcmp(s, other[i]) == 0) return 0;
    return -1;
}

/* Orders tensors of one file by data offset (then end, then name, for determinism), which is
 * both the "file order" of the API and the order the tiling check walks. */
static int mf_cmp_offset(const void *a, const void *b) {
    const recur_tensor_info_t *x = a, *y = b;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    if (x->n_bytes != y->n_bytes) return x->n_bytes < y->n_bytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static recur_status_t mf_st_metadata(recur_model_files_t *f, const char *path, const cJSON *m) {
    if (!cJSON_IsObject(m)) {
        recur_log_err("%s: \"__metadata__\" is not a JSON object", path);
        return RECUR_E_FORMAT;
    }
    int32_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, m) {
        if (!cJSON_IsString(e)) {
            recur_log_err("%s: \"__metadata__\" value of '%s' is not a string", path, e->string);
            return RECUR_E_FORMAT;
        }
        n++;
    }
    if (f->have_meta) return RECUR_OK; /* the first file that has __metadata__ wins */
    f->have_meta = true;
    if (n == 0) return RECUR_OK;
    f->meta = calloc((size_t)n, sizeof *f->meta);
    if (!f->meta) return mf_nomem(path);
    cJSON_ArrayForEach(e, m) {
        recur_mf_meta_t *kv = &f->meta[f->n_meta++];
        kv->key = mf_strdup(e->string);
        kv->value = mf_strdup(e->valuestring);
        if (!kv->key || !kv->value) return mf_nomem(path);
    }
    return RECUR_OK;
}

/* One header entry -> one tensor appended to f. `data_start` is 8 + header length. */
static recur_status_t mf_st_entry(recur_model_files_t *f, int32_t fi, const cJSON *e, uint64_t data_start,
                                  uint64_t data_size) {
    const char *path = f->files[fi].path;
    const char *nm = e->string;
    char esc[256];
    if (!mf_name_ok((const uint8_t *)nm, strlen(nm))) {
        recur_log_err("%s: tensor name '%s' is empty, too long or not printable UTF-8", path,
                      mf_escape((const uint8_t *)nm, strlen(nm), esc, sizeof esc));
        return RECUR_E_FORMAT;
    }
    if (!cJSON_IsObject(e)) {
        recur_log_err("%s: tensor '%s': entry is not a JSON object", path, nm);
        return RECUR_E_FORMAT;
    }
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo)) {
        recur_log_err("%s: tensor '%s': needs a string \"dtype\" and arrays \"shape\" and \"data_offsets\"",
                      path, nm);
        return RECUR_E_FORMAT;
    }
    recur_dtype_t dt = RECUR_DTYPE_F32;
    int kind = mf_st_dtype(jd->valuestring, &dt);
    if (kind == 0) {
        recur_log_err("%s: tensor '%s': dtype %s is not supported (recur reads F32, F16 and BF16)", path, nm,
                      jd->valuestring);
        return RECUR_E_UNSUPPORTED;
    }
    if (kind < 0) {
        recur_log_err("%s: tensor '%s': unknown dtype '%s'", path, nm,
                      mf_escape((const uint8_t *)jd->valuestring, strlen(jd->valuestring), esc, sizeof esc));
        return RECUR_E_FORMAT;
    }
    int nd = cJSON_GetArraySize(js);
    if (nd > RECUR_TENSOR_MAX_DIMS) {
        recur_log_err("%s: tensor '%s': %d dimensions (at most %d supported)", path, nm, nd,
                      RECUR_TENSOR_MAX_DIMS);
        return RECUR_E_UNSUPPORTED;
    }
    int64_t shape[RECUR_TENSOR_MAX_DIMS] = {0};
    uint64_t n = 1;
    int d = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, js) {
        uint64_t v;
        if (!mf_json_uint(x, &v)) {
            recur_log_err("%s: tensor '%s': shape[%d] is not a non-negative integer below 2^53", path, nm, d);
            return RECUR_E_FORMAT;
        }
        if (v != 0 && n > (uint64_t)INT64_MAX / 4 / v) {
            recur_log_err("%s: tensor '%s': element count overflows", path, nm);
            return RECUR_E_FORMAT;
        }
        n *= v;
        shape[d++] = (int64_t)v;
    }
    uint64_t b, en;
    if (cJSON_GetArraySize(jo) != 2 || !mf_json_uint(cJSON_GetArrayItem(jo, 0), &b) ||
        !mf_json_uint(cJSON_GetArrayItem(jo, 1), &en)) {
        recur_log_err("%s: tensor '%s': data_offsets must be two non-negative integers", path, nm);
        return RECUR_E_FORMAT;
    }
    if (b > en || en > data_size) {
        recur_log_err("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] are not inside the %" PRIu64
                      "-byte data region", path, nm, b, en, data_size);
        return RECUR_E_FORMAT;
    }
    uint64_t nbytes = n * recur_dtype_size(dt);
    if (en - b != nbytes) {
        recur_log_err("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes but "
                      "%" PRIu64 " elements of %s need %" PRIu64, path, nm, b, en, en - b, n,
                      jd->valuestring, nbytes);
        return RECUR_E_FORMAT;
    }
    char *name = mf_strdup(nm);
    if (!name) return mf_nomem(path);
    recur_tensor_info_t *t;
    RECUR_TRY(mf_push_tensor(f, path, name, &t));
    t->dtype = dt;
    t->n_dims = nd;
    memcpy(t->shape, shape, sizeof shape);
    t->n_elems = (int64_t)n;
    t->n_bytes = (size_t)nbytes;
    t->data = f->files[fi].map + data_start + b;
    t->file_index = fi;
    t->file_offset = data_start + b;
    return RECUR_OK;
}

/* Parses the safetensors file f->files[fi] and appends its tensors. */
static recur_status_t mf_parse_st(recur_model_files_t *f, int32_t fi) {
    const char *path = f->files[fi].path;
    const uint8_t *p = f->files[fi].map;
    const size_t size = f->files[fi].size;
    recur_status_t st = RECUR_E_FORMAT;
    char *json = NULL;
    cJSON *root = NULL;
    const int32_t first = f->n_tensors;

    if (size < 8) {
        recur_log_err("%s: truncated: %zu bytes, less than the 8-byte header length", path, size);
        goto fail;
    }
    uint64_t hlen = mf_rd_u64(p);
    if (hlen < 2 || hlen > RECUR_ST_HEADER_MAX || hlen > size - 8) {
        recur_log_err("%s: header length %" PRIu64 " is invalid (must be in [2, %u] and fit in the %zu-byte file)",
                      path, hlen, RECUR_ST_HEADER_MAX, size);
        goto fail;
    }
    if (p[8] != '{') {
        recur_log_err("%s: the header does not start with '{' (not a safetensors file?)", path);
        goto fail;
    }
    /* A NUL-terminated copy: cJSON then can never read past the header into tensor data. */
    json = mf_strndup(p + 8, (size_t)hlen);
    if (!json) {
        st = mf_nomem(path);
        goto fail;
    }
    /* JSON forbids raw control characters (strings must escape them); cJSON lets them through,
     * and a raw NUL would silently cut a name short, so refuse them before parsing. */
    for (uint64_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)json[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            recur_log_err("%s: control byte 0x%02x at header byte %" PRIu64 " (corrupt header)", path, c, i);
            goto fail;
        }
    }
    const char *end = NULL; /* cJSON sets it to the end of the value, or to the error position */
    root = cJSON_ParseWithLengthOpts(json, (size_t)hlen, &end, 0);
    if (!root) {
        long pos = end && end >= json && end <= json + hlen ? (long)(end - json) : -1;
        recur_log_err("%s: the JSON header does not parse (near header byte %ld)", path, pos);
        goto fail;
    }
    for (const char *q = end; q && q < json + hlen; q++) { /* the spec pads with spaces */
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            recur_log_err("%s: trailing bytes after the JSON header (at header byte %ld)", path, (long)(q - json));
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) {
        recur_log_err("%s: the JSON header is not an object", path);
        goto fail;
    }
    const uint64_t data_start = 8 + hlen, data_size = size - data_start;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) st = mf_st_metadata(f, path, e);
        else st = mf_st_entry(f, fi, e, data_start, data_size);
        if (st != RECUR_OK) goto fail;
    }
    st = RECUR_E_FORMAT;

    /* The spec requires the tensors to tile the data region: no overlap (two tensors aliasing
     * bytes), no gap and no trailing bytes (room for a hidden payload, or a sign of a wrong
     * header length). */
    int32_t n = f->n_tensors - first;
    recur_tensor_info_t *t = n > 0 ? f->tensors + first : NULL; /* "{}": no tensors, f->tensors may be NULL */
    if (n > 1) qsort(t, (size_t)n, sizeof *t, mf_cmp_offset);
    uint64_t pos = 0;
    for (int32_t i = 0; i < n; i++) {
        uint64_t b = t[i].file_offset - data_start;
        if (b > pos) {
            recur_log_err("%s: gap: data bytes [%" PRIu64 ", %" PRIu64 ") belong to no tensor (next is '%s')",
                          path, pos, b, t[i].name);
            goto fail;
        }
        if (b < pos) {
            recur_log_err("%s: tensor '%s' at data offset %" PRIu64 " overlaps '%s', which ends at %" PRIu64,
                          path, t[i].name, b, t[i - 1].name, pos);
            goto fail;
        }
        pos = b + t[i].n_bytes;
    }
    if (pos != data_size) {
        recur_log_err("%s: the tensors cover %" PRIu64 " bytes but the data region has %" PRIu64
                      " (truncated, or trailing bytes)", path, pos, data_size);
        goto fail;
    }
    st = RECUR_OK;
fail:
    cJSON_Delete(root);
    free(json);
    return st;
}

/* ------------------------------------------------------------------ sharded safetensors */

typedef struct recur_mf_wm {
    const char *tensor; /* weight_map key (borrowed from the cJSON tree) */
    const char *shard;  /* weight_map value                              */
    int32_t     file;   /* index of the shard in f->files                */
    bool        found;  /* a tensor of that name was seen in that shard  */
} recur_mf_wm_t;

static int mf_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int mf_cmp_wm(const void *a, const void *b) {
    return strcmp(((const recur_mf_wm_t *)a)->tensor, ((const recur_mf_wm_t *)b)->tensor);
}

static int mf_cmp_wm_key(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const recur_mf_wm_t *)elem)->tensor);
}

/* Shard names come from a file: only plain names in the index's own directory are accepted,
 * so a crafted index cannot make us map arbitrary files ("../../etc/x", "/dev/zero"). */
static bool mf_shard_name_ok(const char *s) {
    size_t n = strlen(s);
    return mf_name_ok((const uint8_t *)s, n) && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 &&
           strcmp(s, "..") != 0;
}

static recur_status_t mf_open_index(recur_model_files_t *f, const char *path) {
    recur_status_t st = RECUR_E_FORMAT;
    char *json = NULL, *shard_path = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    recur_mf_wm_t *wm = NULL;
    const char **shards = NULL;
    int32_t n_wm = 0, n_shards = 0;
    char esc[256];

    st = recur_file_read_small(path, RECUR_MF_INDEX_MAX, "index json", &json, &len);
    if (st != RECUR_OK) goto fail;
    st = RECUR_E_FORMAT;
    /* Whole file must be one JSON value: no NUL inside, nothing but whitespace after (cJSON
     * checks the latter when told the buffer ends at our terminating NUL). */
    if (memchr(json, '\0', len) != NULL) {
        recur_log_err("%s: contains a NUL byte (not a JSON text)", path);
        goto fail;
    }
    root = cJSON_ParseWithLengthOpts(json, len + 1, NULL, 1);
    if (!root || !cJSON_IsObject(root)) {
        recur_log_err("%s: not a JSON object (or it does not parse)", path);
        goto fail;
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    if (meta && !cJSON_IsObject(meta)) {
        recur_log_err("%s: \"metadata\" is not an object", path);
        goto fail;
    }
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map) || cJSON_GetArraySize(map) == 0) {
        recur_log_err("%s: no \"weight_map\" object (or it is empty)", path);
        goto fail;
    }
    int32_t cap = cJSON_GetArraySize(map);
    wm = calloc((size_t)cap, sizeof *wm);
    shards = calloc((size_t)cap, sizeof *shards);
    if (!wm || !shards) {
        st = mf_nomem(path);
        goto fail;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e) || !mf_shard_name_ok(e->valuestring)) {
            recur_log_err("%s: weight_map['%s'] must be a file name in the index's directory (got '%s')", path,
                          mf_escape((const uint8_t *)e->string, strlen(e->string), esc, sizeof esc),
                          cJSON_IsString(e) ? e->valuestring : "(not a string)");
            goto fail;
        }
        wm[n_wm++] = (recur_mf_wm_t){e->string, e->valuestring, -1, false};
        shards[n_shards++] = e->valuestring;
    }
    qsort(wm, (size_t)n_wm, sizeof *wm, mf_cmp_wm);
    for (int32_t i = 1; i < n_wm; i++) {
        if (strcmp(wm[i - 1].tensor, wm[i].tensor) == 0) {
            recur_log_err("%s: weight_map lists tensor '%s' twice", path, wm[i].tensor);
            goto fail;
        }
    }
    /* Distinct shard names, sorted: shard files are opened (and numbered) in name order, which
     * for "model-0000k-of-0000n.safetensors" is the natural order. */
    qsort(shards, (size_t)n_shards, sizeof *shards, mf_cmp_str);
    int32_t u = 0;
    for (int32_t i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    n_shards = u;

    char *dir = f->dir;
    for (int32_t i = 0; i < n_shards; i++) {
        shard_path = mf_join(dir, shards[i]);
        if (!shard_path) {
            st = mf_nomem(path);
            goto fail;
        }
        int32_t fi;
        st = mf_file_open(f, shard_path, &fi);
        if (st != RECUR_OK) goto fail;
        st = mf_parse_st(f, fi);
        if (st != RECUR_OK) goto fail;
        free(shard_path);
        shard_path = NULL;
    }
    st = RECUR_E_FORMAT;
    for (int32_t i = 0; i < n_wm; i++) {
        const char **s = bsearch(&wm[i].shard, shards, (size_t)n_shards, sizeof *shards, mf_cmp_str);
        wm[i].file = (int32_t)(s - shards); /* always found: the list was built from these values */
    }
    /* Both directions: every tensor the index names is in the shard it names, and every tensor
     * of a shard is listed for that shard. Duplicates across shards are caught by the caller's
     * name index (which names both files). */
    for (int32_t i = 0; i < f->n_tensors; i++) {
        const recur_tensor_info_t *t = &f->tensors[i];
        recur_mf_wm_t *w = bsearch(t->name, wm, (size_t)n_wm, sizeof *wm, mf_cmp_wm_key);
        if (!w) {
            recur_log_err("%s: tensor '%s' of %s is not listed in weight_map", path, t->name,
                          f->files[t->file_index].path);
            goto fail;
        }
        if (w->file != t->file_index) {
            for (int32_t j = 0; j < f->n_tensors; j++) { /* error path only: a linear scan is fine */
                if (f->tensors[j].file_index == w->file && strcmp(f->tensors[j].name, t->name) == 0) {
                    recur_log_err("%s: tensor '%s' is in two shards, %s and %s", path, t->name,
                                  f->files[w->file].path, f->files[t->file_index].path);
                    goto fail;
                }
            }
            recur_log_err("%s: weight_map puts tensor '%s' in %s but it is in %s", path, t->name, w->shard,
                          f->files[t->file_index].path);
            goto fail;
        }
        w->found = true;
    }
    for (int32_t i = 0; i < n_wm; i++) {
        if (!wm[i].found) {
            recur_log_err("%s: weight_map puts tensor '%s' in %s, which does not contain it", path,
                          wm[i].tensor, wm[i].shard);
            goto fail;
        }
    }
    st = RECUR_OK;
fail:
    free(shard_path);
    free(shards);
    free(wm);
    cJSON_Delete(root);
    free(json);
    return st;
}

/* ------------------------------------------------------------------ directories */

typedef struct recur_mf_names {
    char  **v;
    int32_t n, cap;
} recur_mf_names_t;

static void mf_names_free(recur_mf_names_t *l) {
    for (int32_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static bool mf_names_add(recur_mf_names_t *l, const char *s) {
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 8;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return false;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = mf_strdup(s))) return false;
    l->n++;
    return true;
}

static bool mf_is_regular(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode); /* stat: follows the symlinks of HF caches */
}

/* "a, b, c" (up to 6 names) for an ambiguity message. */
static void mf_names_list(const recur_mf_names_t *l, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < l->n && i < 6 && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", l->v[i]);
    if (l->n > 6 && o < cap) snprintf(buf + o, cap - o, ", ...");
}

/* Picks the checkpoint file of a directory: the index json, model.safetensors, the only
 * *.safetensors, or the only *.bin. *out is a malloc'ed path. */
static recur_status_t mf_resolve_dir(const char *dir, char **out) {
    static const char *fixed[] = {"model.safetensors.index.json", "model.safetensors"};
    static const char *exts[] = {".safetensors", ".bin"};
    recur_status_t st = RECUR_E_FORMAT;
    recur_mf_names_t found[2] = {{0}};
    char *p = NULL;
    DIR *d = NULL;
    char list[1024];

    for (int i = 0; i < 2; i++) {
        if (!(p = mf_join(dir, fixed[i]))) goto nomem;
        if (mf_is_regular(p)) {
            *out = p;
            return RECUR_OK;
        }
        free(p);
        p = NULL;
    }
    d = opendir(dir);
    if (!d) {
        recur_log_err("%s: cannot list directory: %s", dir, strerror(errno));
        st = RECUR_E_IO;
        goto fail;
    }
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.') continue; /* hidden files and editor/partial-download leftovers */
        for (int k = 0; k < 2; k++) {
            if (!mf_ends_with(de->d_name, exts[k])) continue;
            if (!(p = mf_join(dir, de->d_name))) goto nomem;
            bool reg = mf_is_regular(p);
            free(p);
            p = NULL;
            if (reg && !mf_names_add(&found[k], de->d_name)) goto nomem;
        }
    }
    for (int k = 0; k < 2; k++) {
        if (found[k].n > 1) qsort(found[k].v, (size_t)found[k].n, sizeof *found[k].v, mf_cmp_str);
        if (found[k].n == 1) {
            if (!(*out = mf_join(dir, found[k].v[0]))) goto nomem;
            st = RECUR_OK;
            goto fail; /* shared cleanup; nothing of it is part of the result */
        }
        if (found[k].n > 1) {
            mf_names_list(&found[k], list, sizeof list);
            recur_log_err("%s: ambiguous: %d *%s files (%s) and no model.safetensors.index.json or "
                          "model.safetensors; pass the file itself", dir, found[k].n, exts[k], list);
            goto fail;
        }
    }
    recur_log_err("%s: no model file (model.safetensors.index.json, model.safetensors, *.safetensors or *.bin)",
                  dir);
    goto fail;
nomem:
    st = mf_nomem(dir);
fail:
    free(p);
    if (d) closedir(d);
    mf_names_free(&found[0]);
    mf_names_free(&found[1]);
    return st;
}

/* ------------------------------------------------------------------ name index */

static int mf_cmp_tensor_name(const void *a, const void *b) {
    const recur_tensor_info_t *x = *(const recur_tensor_info_t *const *)a;
    const recur_tensor_info_t *y = *(const recur_tensor_info_t *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x < y ? -1 : x > y); /* by position among equals: the message names the first */
}

static int mf_cmp_name_key(const void *key, const void *elem) {
    return strcmp((const char *)key, (*(const recur_tensor_info_t *const *)elem)->name);
}

/* Sorted pointers for recur_model_files_find(); rejects duplicate names, which would make a
 * lookup ambiguous. */
static recur_status_t mf_build_name_index(recur_model_files_t *f) {
    const char *path = f->n_files ? f->files[0].path : "model";
    f->by_name = malloc((size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof *f->by_name);
    if (!f->by_name) return mf_nomem(path);
    for (int32_t i = 0; i < f->n_tensors; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, mf_cmp_tensor_name);
    for (int32_t i = 1; i < f->n_tensors; i++) {
        const recur_tensor_info_t *a = f->by_name[i - 1], *b = f->by_name[i];
        if (strcmp(a->name, b->name) != 0) continue;
        if (a->file_index == b->file_index)
            recur_log_err("%s: duplicate tensor name '%s' (data at offsets %" PRIu64 " and %" PRIu64 ")",
                          f->files[a->file_index].path, a->name, a->file_offset, b->file_offset);
        else
            recur_log_err("%s: duplicate tensor name '%s' (also in %s)", f->files[a->file_index].path, a->name,
                          f->files[b->file_index].path);
        return RECUR_E_FORMAT;
    }
    return RECUR_OK;
}

/* A single .bin or .safetensors file, mapped as f->files[fi]. Sniffs the magic, then the
 * suffix: a .bin opened under another name still works, and a corrupt .bin gets the .bin
 * parser's message instead of a JSON one. */
static recur_status_t mf_parse_single(recur_model_files_t *f, int32_t fi) {
    const recur_mf_file_t *m = &f->files[fi];
    bool bin = (m->size >= 4 && (uint32_t)mf_rd_i32(m->map) == RECUR_BIN_MAGIC) || mf_ends_with(m->path, ".bin");
    f->format = bin ? RECUR_FORMAT_RWKVCPP_BIN : RECUR_FORMAT_SAFETENSORS;
    return bin ? mf_parse_bin(f, fi) : mf_parse_st(f, fi);
}

/* ------------------------------------------------------------------ public API */

recur_status_t recur_model_files_open(const char *path, recur_model_files_t **out) {
    recur_status_t st = RECUR_E_INVAL;
    recur_model_files_t *f = NULL;
    char *file = NULL;
    if (out) *out = NULL;
    if (!path || !*path || !out) {
        recur_log_err("recur_model_files_open: %s", !out ? "out is NULL" : "empty model path");
        goto fail;
    }
    f = calloc(1, sizeof *f);
    if (!f) {
        st = mf_nomem(path);
        goto fail;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        recur_log_err("%s: cannot open: %s", path, strerror(errno));
        st = RECUR_E_IO;
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        if (!(f->dir = mf_strdup(path))) {
            st = mf_nomem(path);
            goto fail;
        }
        for (size_t n = strlen(f->dir); n > 1 && f->dir[n - 1] == '/'; n--)
            f->dir[n - 1] = '\0'; /* "models/x/" -> "models/x", as for a file's directory */
        st = mf_resolve_dir(f->dir, &file);
        if (st != RECUR_OK) goto fail;
    } else {
        file = mf_strdup(path);
        f->dir = file ? mf_dirname(path) : NULL;
    }
    if (!file || !f->dir) {
        st = mf_nomem(path);
        goto fail;
    }
    if (mf_ends_with(file, ".json")) {
        f->format = RECUR_FORMAT_SAFETENSORS;
        free(f->dir); /* shards are named relative to the index, which may be elsewhere */
        if (!(f->dir = mf_dirname(file))) {
            st = mf_nomem(path);
            goto fail;
        }
        st = mf_open_index(f, file);
    } else {
        int32_t fi;
        st = mf_file_open(f, file, &fi);
        if (st != RECUR_OK) goto fail;
        st = mf_parse_single(f, fi);
    }
    if (st != RECUR_OK) goto fail;
    st = mf_build_name_index(f);
    if (st != RECUR_OK) goto fail;
    recur_log_debug("%s: %s, %d file(s), %d tensors", file,
                    f->format == RECUR_FORMAT_RWKVCPP_BIN ? "rwkv.cpp .bin" : "safetensors", f->n_files,
                    f->n_tensors);
    free(file);
    *out = f;
    return RECUR_OK;
fail:
    free(file);
    recur_model_files_free(f);
    return st;
}

recur_status_t recur_model_files_open_memory(const void *data, size_t n, const char *name,
                                            recur_model_files_t **out) {
    recur_status_t st = RECUR_E_INVAL;
    recur_model_files_t *f = NULL;
    if (out) *out = NULL;
    if (!out || !name || !*name || (!data && n > 0)) {
        recur_log_err("recur_model_files_open_memory: %s", !out ? "out is NULL" : !data ? "data is NULL" : "empty name");
        return st;
    }
    if (n == 0) {
        recur_log_err("%s: empty file", name);
        return RECUR_E_FORMAT;
    }
    if (!(f = calloc(1, sizeof *f)) || !(f->files = calloc(1, sizeof *f->files)) ||
        !(f->files[0].path = mf_strdup(name)) || !(f->dir = mf_dirname(name))) {
        st = mf_nomem(name);
        goto fail;
    }
    f->n_files = f->cap_files = 1;
    f->files[0] = (recur_mf_file_t){f->files[0].path, -1, data, n, true};
    if ((st = mf_parse_single(f, 0)) != RECUR_OK || (st = mf_build_name_index(f)) != RECUR_OK) goto fail;
    *out = f;
    return RECUR_OK;
fail:
    if (f && f->files && !f->n_files) free(f->files[0].path); /* not yet counted as a file */
    recur_model_files_free(f);
    return st;
}

void recur_model_files_free(recur_model_files_t *f) {
    if (!f) return;
    for (int32_t i = 0; i < f->n_files; i++) {
        recur_mf_file_t *m = &f->files[i];
        if (m->map && !m->borrowed) munmap((void *)m->map, m->size);
        if (m->fd >= 0) close(m->fd);
        free(m->path);
    }
    free(f->files);
    for (int32_t i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (int32_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    free(f->dir);
    free(f);
}

recur_file_format_t recur_model_files_format(const recur_model_files_t *f) { return f->format; }

const char *recur_model_files_dir(const recur_model_files_t *f) { return f->dir; }

int32_t recur_model_files_n_files(const recur_model_files_t *f) { return f->n_files; }

const char *recur_model_files_path(const recur_model_files_t *f, int32_t file_index) {
    return file_index >= 0 && file_index < f->n_files ? f->files[file_index].path : NULL;
}

int32_t recur_model_files_n_tensors(const recur_model_files_t *f) { return f->n_tensors; }

const recur_tensor_info_t *recur_model_files_tensor(const recur_model_files_t *f, int32_t i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const recur_tensor_info_t *recur_model_files_find(const recur_model_files_t *f, const char *name) {
    if (!f || !name || f->n_tensors == 0) return NULL;
    const recur_tensor_info_t *const *t =
        bsearch(name, f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, mf_cmp_name_key);
    return t ? *t : NULL;
}

recur_status_t recur_model_files_bin_header(const recur_model_files_t *f, recur_bin_header_t *out) {
    if (!f || !out || f->format != RECUR_FORMAT_RWKVCPP_BIN) return RECUR_E_INVAL;
    *out = f->bin;
    return RECUR_OK;
}

const char *recur_model_files_metadata(const recur_model_files_t *f, const char *key) {
    if (!f || !key) return NULL;
    for (int32_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

static uint64_t mf_name_hash(const char *s) { /* FNV-1a: a stable per-tensor seed */
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

recur_status_t recur_model_files_virtual(const char *dir, const recur_virtual_tensor_t *vt, int32_t n, uint64_t seed,
                                         recur_dtype_t dtype, recur_model_files_t **out) {
    *out = NULL;
    recur_model_files_t *f = calloc(1, sizeof *f);
    if (!f) return RECUR_E_NOMEM;
    recur_status_t st = RECUR_OK;
    f->format = RECUR_FORMAT_VIRTUAL;
    f->dir = mf_strdup(dir ? dir : ".");
    /* One pseudo file so that recur_model_files_path(f, 0) names the checkpoint. */
    f->files = calloc(1, sizeof *f->files);
    if (!f->dir || !f->files || !(f->files[0].path = mf_strdup("(virtual checkpoint)"))) {
        st = RECUR_E_NOMEM;
        goto fail;
    }
    f->files[0].fd = -1;
    f->n_files = f->cap_files = 1;
    for (int32_t i = 0; i < n; i++) {
        recur_tensor_info_t *t = NULL;
        char *name = mf_strdup(vt[i].name);
        if (!name) { st = RECUR_E_NOMEM; goto fail; }
        if ((st = mf_push_tensor(f, "(virtual checkpoint)", name, &t)) != RECUR_OK) goto fail;
        RECUR_ASSERT(vt[i].n_dims >= 0 && vt[i].n_dims <= RECUR_TENSOR_MAX_DIMS);
        t->dtype = dtype;
        t->n_dims = vt[i].n_dims;
        t->n_elems = 1;
        for (int32_t d = 0; d < t->n_dims; d++) {
            t->shape[d] = vt[i].shape[d];
            t->n_elems *= vt[i].shape[d];
        }
        t->n_bytes = (size_t)t->n_elems * recur_dtype_size(dtype);
        t->virt_seed = seed ^ mf_name_hash(vt[i].name);
        t->virt_lo = vt[i].lo;
        t->virt_hi = vt[i].hi;
    }
    if ((st = mf_build_name_index(f)) != RECUR_OK) goto fail;
    *out = f;
    return RECUR_OK;
fail:
    recur_model_files_free(f);
    return st;
}

recur_status_t recur_tensor_read_f32(const recur_tensor_info_t *t, int64_t first, int64_t n_elems, float *dst) {
    if (!t || (!dst && n_elems > 0)) return RECUR_E_INVAL;
    if (first < 0 || n_elems < 0 || first > t->n_elems || n_elems > t->n_elems - first) {
        recur_log_err("tensor '%s': elements [%" PRId64 ", %" PRId64 "+%" PRId64 ") are outside its %" PRId64,
                      t->name, first, first, n_elems, t->n_elems);
        return RECUR_E_RANGE;
    }
    if (!t->data) { /* virtual */
        for (int64_t i = 0; i < n_elems; i++)
            dst[i] = recur_virtual_value(t->virt_seed, (uint64_t)(first + i), t->virt_lo, t->virt_hi);
        return RECUR_OK;
    }
    /* Data may sit at any byte offset (neither format aligns it): memcpy, never a cast. */
    const uint8_t *src = (const uint8_t *)t->data + (size_t)first * recur_dtype_size(t->dtype);
    switch (t->dtype) {
    case RECUR_DTYPE_F32:
        if (n_elems > 0) memcpy(dst, src, (size_t)n_elems * 4);
        return RECUR_OK;
    case RECUR_DTYPE_F16:
    case RECUR_DTYPE_BF16: {
        const bool f16 = t->dtype == RECUR_DTYPE_F16;
        for (int64_t i = 0; i < n_elems; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * (size_t)i, 2);
            dst[i] = f16 ? recur_f16_to_f32(h) : recur_bf16_to_f32(h);
        }
        return RECUR_OK;
    }
    default:
        return RECUR_E_INVAL;
    }
}
