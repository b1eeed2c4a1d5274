/* recur_state_ckpt.c: see recur_state_ckpt.h. */
#include "recur_state_ckpt.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "recur_file.h"
#include "recur_log.h"
#include "recur_model_files.h"
#include "recur_state_file.h"

/* Returns a failure's status without logging: the message is already in msg (or logged). */
#define TRY_(expr) do { recur_status_t s_ = (expr); if (s_ != RECUR_OK) return s_; } while (0)

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* dir of path ("." when none) into out. */
static void dir_name(const char *path, char *out, size_t n) {
    const char *s = strrchr(path, '/');
    if (!s) snprintf(out, n, ".");
    else if (s == path) snprintf(out, n, "/");
    else snprintf(out, n, "%.*s", (int)(s - path), path);
}

recur_status_t recur_ckpt_path_check(const char *path, const char *dir, char *msg, size_t msg_n) {
    char shown[96];
    if (!path || !*path) return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "checkpoint path: empty");
    recur_name_printable(path, 80, shown, sizeof shown);
    if (strlen(path) >= 4096) return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "checkpoint path \"%s\": too long", shown);
    const char *name = base_name(path);
    if (!recur_name_is_safe(name, 200))
        return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "checkpoint path \"%s\": the file name must be 1..200 characters of "
                     "A-Z a-z 0-9 . _ - and not start with '.'", shown);
    for (const char *p = path; *p;) {   /* every component, "a/../b" and "../b" alike */
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == 2 && p[0] == '.' && p[1] == '.')
            return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "checkpoint path \"%s\": a \"..\" component", shown);
        p += l + (e ? 1 : 0);
    }
    if (!dir) return RECUR_OK;
    char d[4096], rd[PATH_MAX], rdir[PATH_MAX];
    dir_name(path, d, sizeof d);
    if (!realpath(dir, rdir))
        return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "checkpoint path \"%s\": the session directory %s cannot be resolved: "
                     "%s", shown, dir, strerror(errno));
    if (!realpath(d, rd) || strcmp(rd, rdir))
        return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "checkpoint path \"%s\": not directly in the session directory %s",
                     shown, dir);
    return RECUR_OK;
}

static uint32_t crc32_of(const void *p, uint64_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    const Bytef *b = p;
    while (n > 0) {   /* zlib takes uInt lengths */
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

/* Reads the whole regular file path (at most max bytes) into a malloc'ed buffer (NUL after
 * the end). */
static recur_status_t read_all(const char *path, size_t max, char **out, size_t *n, char *msg, size_t msg_n) {
    *out = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: %lld bytes, more than the %zu a checkpoint file may have", path,
                     (long long)st.st_size, max);
    }
    size_t sz = (size_t)st.st_size;
    char *b = malloc(sz + 1);
    if (!b) {
        close(fd);
        return recur_fail_msg(msg, msg_n, RECUR_E_NOMEM, "%s: out of memory for %zu bytes", path, sz);
    }
    size_t got = 0;
    while (got < sz) {
        ssize_t r = read(fd, b + got, sz - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != sz) {
        free(b);
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: short read (%zu of %zu bytes)", path, got, sz);
    }
    b[sz] = '\0';
    *out = b;
    *n = sz;
    return RECUR_OK;
}

/* ------------------------------------------------------------------ identity */

void recur_ckpt_identity_of(const recur_model_info_t *info, const char *content_hash, recur_ckpt_identity_t *id) {
    memset(id, 0, sizeof *id);
    snprintf(id->arch, sizeof id->arch, "%s", info->arch_name ? info->arch_name : "");
    id->n_vocab = info->n_vocab, id->n_layer = info->n_layer, id->n_embd = info->n_embd;
    id->n_head = info->n_head, id->head_size = info->head_size;
    id->head_size_k = info->head_size_k ? info->head_size_k : info->head_size;
    id->state_dtype = info->state_dtype;
    snprintf(id->content_hash, sizeof id->content_hash, "%s", content_hash ? content_hash : "");
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull
static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

static recur_status_t hash_file(uint64_t *h, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        recur_log_err("%s: cannot open for the content hash: %s", path, strerror(errno));
        return RECUR_E_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return RECUR_E_IO;
    }
    const char *name = base_name(path);
    uint64_t size = (uint64_t)st.st_size;
    *h = fnv1a(*h, name, strlen(name) + 1);
    *h = fnv1a(*h, &size, sizeof size);
    enum { HEAD = 16384, BLK = 4096, N_MID = 11 };
    static uint8_t buf[HEAD];
    struct { uint64_t off; size_t n; } parts[N_MID + 2];
    int np = 0;
    parts[np].off = 0, parts[np++].n = HEAD;
    for (int i = 1; i <= N_MID; i++) parts[np].off = size / (N_MID + 1) * (uint64_t)i, parts[np++].n = BLK;
    parts[np].off = size > BLK ? size - BLK : 0, parts[np++].n = BLK;
    for (int i = 0; i < np; i++) {
        if (parts[i].off >= size) continue;
        size_t want = parts[i].n;
        if ((uint64_t)want > size - parts[i].off) want = (size_t)(size - parts[i].off);
        ssize_t r = pread(fd, buf, want, (off_t)parts[i].off);
        if (r < 0 || (size_t)r != want) {
            close(fd);
            recur_log_err("%s: cannot read for the content hash", path);
            return RECUR_E_IO;
        }
        *h = fnv1a(*h, buf, want);
    }
    close(fd);
    return RECUR_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

recur_status_t recur_ckpt_content_hash(const char *model_path, char *out, size_t n) {
    struct stat st;
    if (!model_path || stat(model_path, &st) != 0) {
        recur_log_err("%s: cannot stat the model for its content hash: %s", model_path ? model_path : "(null)",
                      strerror(errno));
        return RECUR_E_IO;
    }
    uint64_t h = FNV_OFFSET;
    char dir[4096];
    if (S_ISDIR(st.st_mode)) snprintf(dir, sizeof dir, "%s", model_path);
    else if (ends_with(model_path, ".index.json")) dir_name(model_path, dir, sizeof dir);
    else dir[0] = '\0';
    if (!dir[0]) {
        RECUR_TRY(hash_file(&h, model_path));
    } else {
        DIR *d = opendir(dir);
        if (!d) {
            recur_log_err("%s: cannot list the model directory: %s", dir, strerror(errno));
            return RECUR_E_IO;
        }
        char **names = NULL;
        size_t nn = 0, cap = 0;
        struct dirent *e;
        recur_status_t s = RECUR_OK;
        while ((e = readdir(d)) != NULL) {
            if (!ends_with(e->d_name, ".safetensors") && !ends_with(e->d_name, ".bin") && !ends_with(e->d_name, ".json"))
                continue;
            if (nn == cap) {
                cap = cap ? 2 * cap : 16;
                char **q = realloc(names, cap * sizeof *q);
                if (!q) { s = RECUR_E_NOMEM; break; }
                names = q;
            }
            if (!(names[nn] = strdup(e->d_name))) { s = RECUR_E_NOMEM; break; }
            nn++;
        }
        closedir(d);
        if (s == RECUR_OK) qsort(names, nn, sizeof *names, cmp_str);
        for (size_t i = 0; i < nn && s == RECUR_OK; i++) {
            char p[8192];
            snprintf(p, sizeof p, "%s/%s", dir, names[i]);
            struct stat fs;
            if (stat(p, &fs) == 0 && S_ISREG(fs.st_mode)) s = hash_file(&h, p);
        }
        for (size_t i = 0; i < nn; i++) free(names[i]);
        free(names);
        if (s != RECUR_OK) return s;
    }
    snprintf(out, n, "fnv1a64s:%016" PRIx64, h);
    return RECUR_OK;
}

/* ------------------------------------------------------------------ layout */

recur_status_t recur_state_layout_init(const recur_ckpt_identity_t *id, recur_state_layout_t *l) {
    memset(l, 0, sizeof *l);
    l->n_layer = id->n_layer, l->n_head = id->n_head;
    const size_t e = recur_dtype_size(id->state_dtype);
    if (!strcmp(id->arch, "rwkv7")) {
        l->n_seg = 2;
        l->seg_bytes[0] = 2 * (size_t)id->n_embd * sizeof(float), l->per_head[0] = 0;
        l->seg_bytes[1] = (size_t)id->head_size * (size_t)id->head_size * e, l->per_head[1] = 1;
        return RECUR_OK;
    }
    if (!strcmp(id->arch, "xlstm")) {
        l->n_seg = 3;
        l->seg_bytes[0] = (size_t)id->head_size_k * (size_t)id->head_size * e, l->per_head[0] = 1;
        l->seg_bytes[1] = (size_t)id->head_size_k * sizeof(float), l->per_head[1] = 1;
        l->seg_bytes[2] = sizeof(float), l->per_head[2] = 1;
        return RECUR_OK;
    }
    recur_log_err("state layout: unknown architecture '%s'", id->arch);
    return RECUR_E_UNSUPPORTED;
}

static size_t layer_bytes(const recur_state_layout_t *l, int32_t nh) {
    size_t b = 0;
    for (int32_t s = 0; s < l->n_seg; s++) b += l->per_head[s] ? (size_t)nh * l->seg_bytes[s] : l->seg_bytes[s];
    return b;
}

size_t recur_state_layout_shard_bytes(const recur_state_layout_t *l, int32_t n_layers, int32_t n_heads) {
    return (size_t)n_layers * layer_bytes(l, n_heads);
}

/* Offset in a shard (nh heads) of layer li (local), segment s, head hl (local). */
static size_t seg_offset(const recur_state_layout_t *l, int32_t nh, int32_t li, int32_t s, int32_t hl) {
    size_t o = (size_t)li * layer_bytes(l, nh);
    for (int32_t k = 0; k < s; k++) o += l->per_head[k] ? (size_t)nh * l->seg_bytes[k] : l->seg_bytes[k];
    return o + (l->per_head[s] ? (size_t)hl * l->seg_bytes[s] : 0);
}

void recur_ckpt_shard_of(const recur_model_info_t *info, recur_ckpt_shard_t *sh) {
    memset(sh, 0, sizeof *sh);
    sh->pp_rank = info->shard.pp_rank, sh->tp_rank = info->shard.tp_rank;
    sh->layer_begin = info->shard.layer_begin, sh->layer_end = info->shard.layer_end;
    sh->head_begin = info->shard.head_begin, sh->n_head = info->shard.n_head;
    sh->bytes = info->state_bytes;
}

static int holds(const recur_ckpt_shard_t *s, int32_t layer, int32_t head) {
    return layer >= s->layer_begin && layer < s->layer_end &&
           (head < 0 || (head >= s->head_begin && head < s->head_begin + s->n_head));
}

/* The first source holding (layer, head) (head -1: the layer's replicated part). */
static int32_t find_src(int32_t n_src, const recur_ckpt_shard_t *src, int32_t layer, int32_t head) {
    for (int32_t i = 0; i < n_src; i++)
        if (holds(&src[i], layer, head)) return i;
    return -1;
}

int recur_state_reshard_needs(const recur_state_layout_t *l, const recur_ckpt_shard_t *dst, int32_t n_src,
                              const recur_ckpt_shard_t *src, int32_t s) {
    for (int32_t g = dst->layer_begin; g < dst->layer_end; g++) {
        for (int32_t k = 0; k < l->n_seg; k++) {
            if (!l->per_head[k]) {
                if (find_src(n_src, src, g, -1) == s) return 1;
                continue;
            }
            for (int32_t h = dst->head_begin; h < dst->head_begin + dst->n_head; h++)
                if (find_src(n_src, src, g, h) == s) return 1;
        }
    }
    return 0;
}

recur_status_t recur_state_reshard(const recur_state_layout_t *l, const recur_ckpt_shard_t *dst_sh, void *dst,
                                   int32_t n_src, const recur_ckpt_shard_t *src, const void *const *src_buf,
                                   char *msg, size_t msg_n) {
    if ((uint64_t)recur_state_layout_shard_bytes(l, dst_sh->layer_end - dst_sh->layer_begin, dst_sh->n_head) !=
        dst_sh->bytes)
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "reshard: the destination shard has %llu bytes, its layout %zu",
                     (unsigned long long)dst_sh->bytes,
                     recur_state_layout_shard_bytes(l, dst_sh->layer_end - dst_sh->layer_begin, dst_sh->n_head));
    for (int32_t i = 0; i < n_src; i++)
        if ((uint64_t)recur_state_layout_shard_bytes(l, src[i].layer_end - src[i].layer_begin, src[i].n_head) !=
            src[i].bytes)
            return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "reshard: source shard %d has %llu bytes, its layout %zu",
                         (int)i, (unsigned long long)src[i].bytes,
                         recur_state_layout_shard_bytes(l, src[i].layer_end - src[i].layer_begin, src[i].n_head));
    uint8_t *out = dst;
    for (int32_t g = dst_sh->layer_begin; g < dst_sh->layer_end; g++) {
        const int32_t li = g - dst_sh->layer_begin;
        for (int32_t k = 0; k < l->n_seg; k++) {
            if (!l->per_head[k]) {
                int32_t s = find_src(n_src, src, g, -1);
                if (s < 0 || !src_buf[s])
                    return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "reshard: no shard holds layer %d", (int)g);
                memcpy(out + seg_offset(l, dst_sh->n_head, li, k, 0),
                       (const uint8_t *)src_buf[s] + seg_offset(l, src[s].n_head, g - src[s].layer_begin, k, 0),
                       l->seg_bytes[k]);
                continue;
            }
            for (int32_t h = dst_sh->head_begin; h < dst_sh->head_begin + dst_sh->n_head;) {
                int32_t s = find_src(n_src, src, g, h);
                if (s < 0 || !src_buf[s])
                    return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "reshard: no shard holds layer %d head %d", (int)g,
                                 (int)h);
                /* the run of heads this source holds contiguously */
                int32_t end = src[s].head_begin + src[s].n_head;
                if (end > dst_sh->head_begin + dst_sh->n_head) end = dst_sh->head_begin + dst_sh->n_head;
                memcpy(out + seg_offset(l, dst_sh->n_head, li, k, h - dst_sh->head_begin),
                       (const uint8_t *)src_buf[s] +
                           seg_offset(l, src[s].n_head, g - src[s].layer_begin, k, h - src[s].head_begin),
                       (size_t)(end - h) * l->seg_bytes[k]);
                h = end;
            }
        }
    }
    return RECUR_OK;
}

/* ------------------------------------------------------------------ manifest */

void recur_ckpt_meta_free(recur_ckpt_meta_t *m) {
    if (!m) return;
    free(m->pending);
    m->pending = NULL;
    m->n_pending = 0;
    free(m->unsent);
    m->unsent = NULL;
    m->n_unsent = 0;
}

void recur_ckpt_manifest_free(recur_ckpt_manifest_t *m) {
    if (!m) return;
    recur_ckpt_meta_free(&m->meta);
    free(m->shards);
    m->shards = NULL;
    m->n_shards = 0;
}

static int parse_dtype(const char *s, recur_dtype_t *d) {
    for (int i = 0; i < RECUR_DTYPE_COUNT; i++)
        if (!strcmp(s, recur_dtype_name((recur_dtype_t)i))) {
            *d = (recur_dtype_t)i;
            return 0;
        }
    return -1;
}

/* A number field in [lo, hi] that is an integer; -1 when missing or bad. */
static int get_u64(const cJSON *o, const char *k, double hi, uint64_t *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0) || x->valuedouble > hi ||
        x->valuedouble != (double)(uint64_t)x->valuedouble)
        return -1;
    *v = (uint64_t)x->valuedouble;
    return 0;
}
static int get_i32(const cJSON *o, const char *k, int32_t *v) {
    uint64_t u;
    if (get_u64(o, k, 2147483647.0, &u)) return -1;
    *v = (int32_t)u;
    return 0;
}
static int get_str(const cJSON *o, const char *k, char *out, size_t n) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(x) || strlen(x->valuestring) >= n) return -1;
    snprintf(out, n, "%s", x->valuestring);
    return 0;
}

#define MAX_U53 9007199254740992.0

recur_status_t recur_ckpt_manifest_parse(const char *json, size_t n, const char *what, recur_ckpt_manifest_t *m,
                                         char *msg, size_t msg_n) {
    memset(m, 0, sizeof *m);
    cJSON *root = cJSON_ParseWithLength(json, n);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: not a checkpoint manifest (not a JSON object)", what);
    }
    recur_status_t s = RECUR_E_FORMAT;
    const char *bad = NULL;
    char fmt[64] = "", dt[16] = "";
    int32_t version = 0;
    const cJSON *mo = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *se = cJSON_GetObjectItemCaseSensitive(root, "session");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(root, "shards");
    recur_state_layout_t lay;
    if (get_str(root, "format", fmt, sizeof fmt) || strcmp(fmt, RECUR_CKPT_FORMAT)) bad = "format is not " RECUR_CKPT_FORMAT;
    else if (get_i32(root, "version", &version) || version != RECUR_CKPT_VERSION) bad = "version is not 1";
    else if (!cJSON_IsObject(mo)) bad = "no model";
    else if (get_str(mo, "arch", m->id.arch, sizeof m->id.arch) || get_i32(mo, "n_vocab", &m->id.n_vocab) ||
             get_i32(mo, "n_layer", &m->id.n_layer) || get_i32(mo, "n_embd", &m->id.n_embd) ||
             get_i32(mo, "n_head", &m->id.n_head) || get_i32(mo, "head_size", &m->id.head_size) ||
             get_i32(mo, "head_size_k", &m->id.head_size_k) ||
             get_str(mo, "content_hash", m->id.content_hash, sizeof m->id.content_hash))
        bad = "model: arch, n_vocab, n_layer, n_embd, n_head, head_size, head_size_k and content_hash must be set";
    else if (m->id.n_layer < 1 || m->id.n_head < 1 || m->id.n_embd < 1 || m->id.head_size < 1 || m->id.head_size_k < 1)
        bad = "model: a dimension is 0";
    else if (get_str(root, "state_dtype", dt, sizeof dt) || parse_dtype(dt, &m->id.state_dtype) ||
             m->id.state_dtype == RECUR_DTYPE_F16)
        bad = "state_dtype is not f32 or bf16";
    else if (get_i32(root, "tp", &m->tp) || get_i32(root, "pp", &m->pp) || m->tp < 1 || m->pp < 1)
        bad = "tp and pp must be >= 1";
    else if (get_u64(root, "generation", MAX_U53, &m->generation) || get_u64(root, "state_bytes", MAX_U53, &m->state_bytes))
        bad = "generation and state_bytes must be set";
    else if (!cJSON_IsObject(se)) bad = "no session record";
    else if (get_str(se, "id", m->meta.session_id, sizeof m->meta.session_id) ||
             get_str(se, "model", m->meta.model, sizeof m->meta.model) ||
             get_u64(se, "n_consumed", MAX_U53, &m->meta.n_consumed) ||
             get_u64(se, "created_unix_ms", MAX_U53, &m->meta.created_unix_ms) ||
             get_u64(se, "last_used_unix_ms", MAX_U53, &m->meta.last_used_unix_ms))
        bad = "session: id, model, n_consumed, created_unix_ms and last_used_unix_ms must be set";
    else if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(se, "pending"))) bad = "session.pending is not a list";
    else if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) < 1 || cJSON_GetArraySize(sh) > RECUR_CKPT_MAX_SHARDS ||
             cJSON_GetArraySize(sh) != m->tp * m->pp)
        bad = "shards: one per rank of tp x pp";
    else if (recur_state_layout_init(&m->id, &lay) != RECUR_OK) bad = "model.arch is not rwkv7 or xlstm";
    if (bad) goto out;
    get_str(root, "checkpoint_id", m->checkpoint_id, sizeof m->checkpoint_id);
    const cJSON *pend = cJSON_GetObjectItemCaseSensitive(se, "pending");
    int np = cJSON_GetArraySize(pend);
    if (np > 0 && !(m->meta.pending = malloc((size_t)np * sizeof *m->meta.pending))) {
        s = RECUR_E_NOMEM, bad = "out of memory";
        goto out;
    }
    for (int i = 0; i < np; i++) {
        const cJSON *x = cJSON_GetArrayItem(pend, i);
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 2147483647.0 ||
            x->valuedouble != (double)(int32_t)x->valuedouble) {
            bad = "session.pending: not token ids";
            goto out;
        }
        m->meta.pending[m->meta.n_pending++] = (int32_t)x->valuedouble;
    }
    /* optional (older manifests have none): the bytes a stop string left unsent */
    const cJSON *uns = cJSON_GetObjectItemCaseSensitive(se, "unsent");
    if (uns) {
        int nu = cJSON_IsArray(uns) ? cJSON_GetArraySize(uns) : -1;
        if (nu < 0 || nu > RECUR_CKPT_MAX_UNSENT) {
            bad = "session.unsent: not a list of at most 1024 byte values";
            goto out;
        }
        if (nu > 0 && !(m->meta.unsent = malloc((size_t)nu))) {
            s = RECUR_E_NOMEM, bad = "out of memory";
            goto out;
        }
        for (int i = 0; i < nu; i++) {
            const cJSON *x = cJSON_GetArrayItem(uns, i);
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 255 ||
                x->valuedouble != (double)(int)x->valuedouble) {
                bad = "session.unsent: not byte values";
                goto out;
            }
            m->meta.unsent[m->meta.n_unsent++] = (uint8_t)x->valuedouble;
        }
    }
    m->n_shards = cJSON_GetArraySize(sh);
    if (!(m->shards = calloc((size_t)m->n_shards, sizeof *m->shards))) {
        s = RECUR_E_NOMEM, bad = "out of memory";
        goto out;
    }
    uint64_t total = 0;
    for (int32_t i = 0; i < m->n_shards; i++) {
        const cJSON *x = cJSON_GetArrayItem(sh, i);
        recur_ckpt_shard_t *d = &m->shards[i];
        uint64_t crc = 0;
        if (!cJSON_IsObject(x) || get_str(x, "file", d->file, sizeof d->file) || get_i32(x, "pp_rank", &d->pp_rank) ||
            get_i32(x, "tp_rank", &d->tp_rank) || get_i32(x, "layer_begin", &d->layer_begin) ||
            get_i32(x, "layer_end", &d->layer_end) || get_i32(x, "head_begin", &d->head_begin) ||
            get_i32(x, "n_head", &d->n_head) || get_u64(x, "bytes", MAX_U53, &d->bytes) ||
            get_u64(x, "crc32", 4294967295.0, &crc)) {
            bad = "shards: file, pp_rank, tp_rank, layer_begin, layer_end, head_begin, n_head, bytes and crc32 must be set";
            goto out;
        }
        d->crc32 = (uint32_t)crc;
        if (!d->file[0] || strchr(d->file, '/') || !strcmp(d->file, "..") || !strcmp(d->file, ".")) {
            bad = "shards: a file name is empty or not a plain name";
            goto out;
        }
        if (d->pp_rank >= m->pp || d->tp_rank >= m->tp || d->layer_begin >= d->layer_end ||
            d->layer_end > m->id.n_layer || d->n_head < 1 || d->head_begin + d->n_head > m->id.n_head) {
            bad = "shards: a rank, layer range or head range is outside the model";
            goto out;
        }
        if ((uint64_t)recur_state_layout_shard_bytes(&lay, d->layer_end - d->layer_begin, d->n_head) != d->bytes) {
            bad = "shards: a shard's size does not match its layers and heads";
            goto out;
        }
        /* one shard per rank: shard files are named by rank (an import writes them so), and
         * two shards of one rank would be written to one file */
        for (int32_t k = 0; k < i; k++)
            if (m->shards[k].pp_rank == d->pp_rank && m->shards[k].tp_rank == d->tp_rank) {
                bad = "shards: two shards of one rank";
                goto out;
            }
        total += d->bytes;
    }
    /* every (layer, head) and every layer's replicated part is held by some shard */
    for (int32_t g = 0; g < m->id.n_layer && !bad; g++)
        for (int32_t h = 0; h < m->id.n_head && !bad; h++)
            if (find_src(m->n_shards, m->shards, g, h) < 0) bad = "shards: some layer and head is in no shard";
    if (bad) goto out;
    if (total != m->state_bytes) {
        bad = "state_bytes is not the sum of the shards' bytes";
        goto out;
    }
    s = RECUR_OK;
out:
    cJSON_Delete(root);
    if (s != RECUR_OK) {
        recur_ckpt_manifest_free(m);
        return recur_fail_msg(msg, msg_n, s, "%s: bad checkpoint manifest: %s", what, bad ? bad : "?");
    }
    return RECUR_OK;
}

recur_status_t recur_ckpt_manifest_read(const char *path, recur_ckpt_manifest_t *m, char *msg, size_t msg_n) {
    memset(m, 0, sizeof *m);
    char *json = NULL;
    size_t n = 0;
    TRY_(read_all(path, RECUR_CKPT_MAX_MANIFEST_BYTES, &json, &n, msg, msg_n));
    recur_status_t s = recur_ckpt_manifest_parse(json, n, path, m, msg, msg_n);
    free(json);
    return s;
}

char *recur_ckpt_manifest_json(const recur_ckpt_manifest_t *m) {
    cJSON *root = cJSON_CreateObject();
    cJSON *mo = cJSON_AddObjectToObject(root, "model");
    cJSON *se = NULL, *sh = NULL, *pend = NULL;
    if (!root || !mo) goto fail;
    cJSON_AddStringToObject(root, "format", RECUR_CKPT_FORMAT);
    cJSON_AddNumberToObject(root, "version", RECUR_CKPT_VERSION);
    cJSON_AddStringToObject(mo, "arch", m->id.arch);
    cJSON_AddNumberToObject(mo, "n_vocab", m->id.n_vocab);
    cJSON_AddNumberToObject(mo, "n_layer", m->id.n_layer);
    cJSON_AddNumberToObject(mo, "n_embd", m->id.n_embd);
    cJSON_AddNumberToObject(mo, "n_head", m->id.n_head);
    cJSON_AddNumberToObject(mo, "head_size", m->id.head_size);
    cJSON_AddNumberToObject(mo, "head_size_k", m->id.head_size_k);
    cJSON_AddStringToObject(mo, "content_hash", m->id.content_hash);
    cJSON_AddStringToObject(root, "checkpoint_id", m->checkpoint_id);
    cJSON_AddStringToObject(root, "state_dtype", recur_dtype_name(m->id.state_dtype));
    cJSON_AddNumberToObject(root, "tp", m->tp);
    cJSON_AddNumberToObject(root, "pp", m->pp);
    cJSON_AddNumberToObject(root, "generation", (double)m->generation);
    cJSON_AddNumberToObject(root, "state_bytes", (double)m->state_bytes);
    if (!(se = cJSON_AddObjectToObject(root, "session"))) goto fail;
    cJSON_AddStringToObject(se, "id", m->meta.session_id);
    cJSON_AddStringToObject(se, "model", m->meta.model);
    cJSON_AddNumberToObject(se, "n_consumed", (double)m->meta.n_consumed);
    cJSON_AddNumberToObject(se, "created_unix_ms", (double)m->meta.created_unix_ms);
    cJSON_AddNumberToObject(se, "last_used_unix_ms", (double)m->meta.last_used_unix_ms);
    if (!(pend = cJSON_AddArrayToObject(se, "pending"))) goto fail;
    for (size_t i = 0; i < m->meta.n_pending; i++) cJSON_AddItemToArray(pend, cJSON_CreateNumber(m->meta.pending[i]));
    if (m->meta.n_unsent) {
        cJSON *uns = cJSON_AddArrayToObject(se, "unsent");
        if (!uns) goto fail;
        for (size_t i = 0; i < m->meta.n_unsent; i++) cJSON_AddItemToArray(uns, cJSON_CreateNumber(m->meta.unsent[i]));
    }
    if (!(sh = cJSON_AddArrayToObject(root, "shards"))) goto fail;
    for (int32_t i = 0; i < m->n_shards; i++) {
        const recur_ckpt_shard_t *d = &m->shards[i];
        cJSON *x = cJSON_CreateObject();
        if (!x) goto fail;
        cJSON_AddItemToArray(sh, x);
        cJSON_AddStringToObject(x, "file", d->file);
        cJSON_AddNumberToObject(x, "pp_rank", d->pp_rank);
        cJSON_AddNumberToObject(x, "tp_rank", d->tp_rank);
        cJSON_AddNumberToObject(x, "layer_begin", d->layer_begin);
        cJSON_AddNumberToObject(x, "layer_end", d->layer_end);
        cJSON_AddNumberToObject(x, "head_begin", d->head_begin);
        cJSON_AddNumberToObject(x, "n_head", d->n_head);
        cJSON_AddNumberToObject(x, "bytes", (double)d->bytes);
        cJSON_AddNumberToObject(x, "crc32", (double)d->crc32);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
fail:
    cJSON_Delete(root);
    return NULL;
}

recur_status_t recur_ckpt_manifest_write(const char *path, const recur_ckpt_manifest_t *m, char *msg, size_t msg_n) {
    char *json = recur_ckpt_manifest_json(m);
    if (!json) return recur_fail_msg(msg, msg_n, RECUR_E_NOMEM, "%s: out of memory for the manifest", path);
    size_t n = strlen(json);
    json[n] = '\n';   /* cJSON's buffer has the NUL there: one line, newline-terminated */
    recur_status_t s = recur_state_file_write(path, json, n + 1, msg, msg_n);
    free(json);
    return s;
}

recur_status_t recur_ckpt_check_identity(const recur_ckpt_manifest_t *m, const recur_ckpt_identity_t *want,
                                         const char *what, char *msg, size_t msg_n) {
    const recur_ckpt_identity_t *g = &m->id;
    if (strcmp(g->arch, want->arch) || g->n_layer != want->n_layer || g->n_embd != want->n_embd ||
        g->n_head != want->n_head || g->head_size != want->head_size || g->head_size_k != want->head_size_k ||
        g->n_vocab != want->n_vocab)
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT,
                     "%s: saved from another model (%s, %d layers, width %d, %d heads, vocabulary %d); this server "
                     "runs %s, %d layers, width %d, %d heads, vocabulary %d", what, g->arch, (int)g->n_layer,
                     (int)g->n_embd, (int)g->n_head, (int)g->n_vocab, want->arch, (int)want->n_layer,
                     (int)want->n_embd, (int)want->n_head, (int)want->n_vocab);
    if (strcmp(g->content_hash, want->content_hash))
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT,
                     "%s: saved from another model (weights with content hash %s; this server's model has %s)", what,
                     g->content_hash, want->content_hash);
    if (g->state_dtype != want->state_dtype)
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT,
                     "%s: a state stored as %s, but this server keeps %s states (recur serve --state %s)", what,
                     recur_dtype_name(g->state_dtype), recur_dtype_name(want->state_dtype),
                     recur_dtype_name(g->state_dtype));
    return RECUR_OK;
}

recur_status_t recur_ckpt_shard_path(const char *manifest, uint64_t gen, int32_t pp_rank, int32_t tp_rank, char *out,
                                     size_t n) {
    int k = snprintf(out, n, "%s.g%llu.shard-%d-%d", manifest, (unsigned long long)gen, (int)pp_rank, (int)tp_rank);
    if (k < 0 || (size_t)k >= n) {
        recur_log_err("checkpoint file name for %s is too long", manifest);
        return RECUR_E_RANGE;
    }
    return RECUR_OK;
}

/* ------------------------------------------------------------------ shards */

recur_status_t recur_ckpt_write_shard(const char *manifest, uint64_t gen, recur_ckpt_shard_t *sh, const void *data,
                                      char *msg, size_t msg_n) {
    char path[4096 + 128];
    if (recur_ckpt_shard_path(manifest, gen, sh->pp_rank, sh->tp_rank, path, sizeof path) != RECUR_OK)
        return recur_fail_msg(msg, msg_n, RECUR_E_RANGE, "%s: checkpoint path too long", manifest);
    const char *name = base_name(path);
    if (strlen(name) >= sizeof sh->file)
        return recur_fail_msg(msg, msg_n, RECUR_E_RANGE, "%s: checkpoint file name too long", manifest);
    snprintf(sh->file, sizeof sh->file, "%s", name);
    sh->crc32 = crc32_of(data, sh->bytes);
    return recur_state_file_write(path, data, (size_t)sh->bytes, msg, msg_n);
}

/* Reads shard s of m (in dir) and checks its size and CRC. */
static recur_status_t read_shard(const char *dir, const recur_ckpt_shard_t *s, void **out, char *msg, size_t msg_n) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, s->file);
    *out = NULL;
    char *b = NULL;
    size_t n = 0;
    recur_status_t st = read_all(path, (size_t)s->bytes, &b, &n, msg, msg_n);
    if (st == RECUR_E_FORMAT || (st == RECUR_OK && n != s->bytes)) {
        free(b);
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: %s; the manifest says %llu bytes (truncated or not this "
                     "checkpoint's file)", path, st == RECUR_OK ? "wrong size" : "too large",
                     (unsigned long long)s->bytes);
    }
    if (st != RECUR_OK) return st;
    uint32_t c = crc32_of(b, n);
    if (c != s->crc32) {
        free(b);
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: corrupt (CRC-32 %08x, the manifest says %08x)", path,
                     (unsigned)c, (unsigned)s->crc32);
    }
    *out = b;
    return RECUR_OK;
}

recur_status_t recur_ckpt_load(const char *path, const recur_ckpt_identity_t *want, const recur_ckpt_shard_t *mine,
                               void *buf, uint64_t *bytes_read, char *msg, size_t msg_n) {
    if (bytes_read) *bytes_read = 0;
    recur_ckpt_manifest_t m;
    TRY_(recur_ckpt_manifest_read(path, &m, msg, msg_n));
    recur_status_t s = recur_ckpt_check_identity(&m, want, path, msg, msg_n);
    recur_state_layout_t lay;
    void **bufs = NULL;
    if (s == RECUR_OK) s = recur_state_layout_init(want, &lay);
    if (s == RECUR_OK && (uint64_t)recur_state_layout_shard_bytes(&lay, mine->layer_end - mine->layer_begin,
                                                                  mine->n_head) != mine->bytes)
        s = recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "%s: this rank's state shard (%llu bytes) does not match the state "
                  "layout", path, (unsigned long long)mine->bytes);
    if (s == RECUR_OK && !(bufs = calloc((size_t)m.n_shards, sizeof *bufs)))
        s = recur_fail_msg(msg, msg_n, RECUR_E_NOMEM, "%s: out of memory", path);
    char dir[4096];
    dir_name(path, dir, sizeof dir);
    for (int32_t i = 0; s == RECUR_OK && i < m.n_shards; i++) {
        if (!recur_state_reshard_needs(&lay, mine, m.n_shards, m.shards, i)) continue;
        s = read_shard(dir, &m.shards[i], &bufs[i], msg, msg_n);
        if (s == RECUR_OK && bytes_read) *bytes_read += m.shards[i].bytes;
    }
    if (s == RECUR_OK)
        s = recur_state_reshard(&lay, mine, buf, m.n_shards, m.shards, (const void *const *)bufs, msg, msg_n);
    for (int32_t i = 0; bufs && i < m.n_shards; i++) free(bufs[i]);
    free(bufs);
    recur_ckpt_manifest_free(&m);
    return s;
}

recur_status_t recur_ckpt_remove(const char *path, uint64_t keep_gen, int with_manifest) {
    if (with_manifest && unlink(path) != 0 && errno != ENOENT) {
        recur_log_warn("%s: cannot remove: %s", path, strerror(errno));
        return RECUR_E_IO;
    }
    char dir[4096], prefix[1024];
    dir_name(path, dir, sizeof dir);
    snprintf(prefix, sizeof prefix, "%s.g", base_name(path));
    size_t pl = strlen(prefix);
    DIR *d = opendir(dir);
    if (!d) return with_manifest ? RECUR_OK : RECUR_E_IO;
    struct dirent *e;
    recur_status_t s = RECUR_OK;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, pl)) continue;
        char *end = NULL;
        unsigned long long g = strtoull(e->d_name + pl, &end, 10);
        if (end == e->d_name + pl || strncmp(end, ".shard-", 7)) continue;
        if (keep_gen && g == keep_gen && !strstr(end, ".tmp.")) continue;
        char f[8192];
        snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
        if (unlink(f) != 0 && errno != ENOENT) {
            recur_log_warn("%s: cannot remove: %s", f, strerror(errno));
            s = RECUR_E_IO;
        }
    }
    closedir(d);
    return s;
}

/* ------------------------------------------------------------------ state tuning */

recur_status_t recur_ckpt_load_tuned(const char *path, const recur_ckpt_identity_t *want,
                                     const recur_ckpt_shard_t *mine, void *buf, char *msg, size_t msg_n) {
    if (strcmp(want->arch, "rwkv7"))
        return recur_fail_msg(msg, msg_n, RECUR_E_UNSUPPORTED, "%s: state-tuning files are RWKV-7's; this model is %s", path,
                     want->arch);
    recur_state_layout_t lay;
    TRY_(recur_state_layout_init(want, &lay));
    if ((uint64_t)recur_state_layout_shard_bytes(&lay, mine->layer_end - mine->layer_begin, mine->n_head) !=
        mine->bytes)
        return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "%s: this rank's state shard does not match the state layout", path);
    recur_model_files_t *f = NULL;
    if (recur_model_files_open(path, &f) != RECUR_OK)
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: not a readable safetensors state file (see the log)", path);
    recur_status_t s = RECUR_OK;
    const int32_t H = want->n_head, N = want->head_size;
    /* every *time_state tensor must be a layer's, of the model's shape */
    for (int32_t i = 0; i < recur_model_files_n_tensors(f) && s == RECUR_OK; i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(f, i);
        int layer = -1, used = 0;
        if (!strstr(t->name, "time_state")) continue;
        if (sscanf(t->name, "blocks.%d.att.time_state%n", &layer, &used) != 1 || t->name[used] != '\0' || layer < 0 ||
            layer >= want->n_layer)
            s = recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: tensor '%s' is not blocks.<0..%d>.att.time_state", path,
                      t->name, (int)want->n_layer - 1);
        else if (t->n_dims != 3 || t->shape[0] != H || t->shape[1] != N || t->shape[2] != N)
            s = recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: %s has shape [%lld, %lld, %lld], the model needs [%d, %d, %d]",
                      path, t->name, (long long)t->shape[0], t->n_dims > 1 ? (long long)t->shape[1] : 0ll,
                      t->n_dims > 2 ? (long long)t->shape[2] : 0ll, (int)H, (int)N, (int)N);
    }
    float *tmp = s == RECUR_OK ? malloc((size_t)mine->n_head * (size_t)N * (size_t)N * sizeof(float)) : NULL;
    if (s == RECUR_OK && !tmp) s = recur_fail_msg(msg, msg_n, RECUR_E_NOMEM, "%s: out of memory", path);
    if (s == RECUR_OK) memset(buf, 0, (size_t)mine->bytes);
    for (int32_t g = mine->layer_begin; g < mine->layer_end && s == RECUR_OK; g++) {
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.att.time_state", (int)g);
        const recur_tensor_info_t *t = recur_model_files_find(f, name);
        if (!t) {
            s = recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: no %s (a state-tuning file has one per layer)", path, name);
            break;
        }
        const int64_t per = (int64_t)N * N;
        s = recur_tensor_read_f32(t, (int64_t)mine->head_begin * per, (int64_t)mine->n_head * per, tmp);
        if (s != RECUR_OK) {
            s = recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: cannot read %s", path, name);
            break;
        }
        uint8_t *dst = (uint8_t *)buf + seg_offset(&lay, mine->n_head, g - mine->layer_begin, 1, 0);
        const size_t cnt = (size_t)mine->n_head * (size_t)per;
        if (want->state_dtype == RECUR_DTYPE_BF16) {
            for (size_t i = 0; i < cnt; i++) {
                uint16_t h = recur_f32_to_bf16(tmp[i]);
                memcpy(dst + 2 * i, &h, 2);
            }
        } else {
            memcpy(dst, tmp, cnt * sizeof(float));
        }
    }
    free(tmp);
    recur_model_files_free(f);
    return s;
}

/* ------------------------------------------------------------------ export container */

static const char CK_MAGIC[8] = {'R', 'E', 'C', 'U', 'R', 'C', 'K', '1'};

recur_status_t recur_ckpt_export(const char *path, uint8_t **out, size_t *n, char *msg, size_t msg_n) {
    *out = NULL;
    *n = 0;
    char *json = NULL;
    size_t jn = 0;
    TRY_(read_all(path, RECUR_CKPT_MAX_MANIFEST_BYTES, &json, &jn, msg, msg_n));
    recur_ckpt_manifest_t m;
    recur_status_t s = recur_ckpt_manifest_parse(json, jn, path, &m, msg, msg_n);
    if (s != RECUR_OK) {
        free(json);
        return s;
    }
    size_t total = sizeof CK_MAGIC + 4 + jn + (size_t)m.state_bytes;
    uint8_t *b = malloc(total);
    if (!b) s = recur_fail_msg(msg, msg_n, RECUR_E_NOMEM, "%s: out of memory for an export of %zu bytes", path, total);
    char dir[4096];
    dir_name(path, dir, sizeof dir);
    size_t o = 0;
    if (s == RECUR_OK) {
        memcpy(b, CK_MAGIC, sizeof CK_MAGIC);
        o = sizeof CK_MAGIC;
        uint32_t L = (uint32_t)jn;
        for (int i = 0; i < 4; i++) b[o++] = (uint8_t)(L >> (8 * i));
        memcpy(b + o, json, jn);
        o += jn;
    }
    for (int32_t i = 0; s == RECUR_OK && i < m.n_shards; i++) {
        void *d = NULL;
        s = read_shard(dir, &m.shards[i], &d, msg, msg_n);
        if (s == RECUR_OK) {
            memcpy(b + o, d, (size_t)m.shards[i].bytes);
            o += (size_t)m.shards[i].bytes;
        }
        free(d);
    }
    free(json);
    recur_ckpt_manifest_free(&m);
    if (s != RECUR_OK) {
        free(b);
        return s;
    }
    *out = b;
    *n = o;
    return RECUR_OK;
}

recur_status_t recur_ckpt_blob_manifest(const uint8_t *blob, size_t n, recur_ckpt_manifest_t *m, char *msg,
                                        size_t msg_n) {
    memset(m, 0, sizeof *m);
    if (n < sizeof CK_MAGIC + 4 || memcmp(blob, CK_MAGIC, sizeof CK_MAGIC))
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "imported state: not a recur checkpoint (no RECURCK1 header)");
    uint32_t L = 0;
    for (int i = 0; i < 4; i++) L |= (uint32_t)blob[sizeof CK_MAGIC + (size_t)i] << (8 * i);
    if (L > n - sizeof CK_MAGIC - 4)
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "imported state: truncated (manifest of %u bytes)", L);
    return recur_ckpt_manifest_parse((const char *)blob + sizeof CK_MAGIC + 4, L, "imported state", m, msg, msg_n);
}

recur_status_t recur_ckpt_import(const uint8_t *blob, size_t n, const recur_ckpt_identity_t *want, const char *path,
                                 uint64_t gen, const recur_ckpt_meta_t *meta, char *msg, size_t msg_n) {
    if (n < sizeof CK_MAGIC + 4 || memcmp(blob, CK_MAGIC, sizeof CK_MAGIC))
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "imported state: not a recur checkpoint (no RECURCK1 header)");
    uint32_t L = 0;
    for (int i = 0; i < 4; i++) L |= (uint32_t)blob[sizeof CK_MAGIC + (size_t)i] << (8 * i);
    size_t o = sizeof CK_MAGIC + 4;
    if (L > n - o) return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "imported state: truncated (manifest of %u bytes)", L);
    recur_ckpt_manifest_t m;
    TRY_(recur_ckpt_manifest_parse((const char *)blob + o, L, "imported state", &m, msg, msg_n));
    o += L;
    recur_status_t s = recur_ckpt_check_identity(&m, want, "imported state", msg, msg_n);
    if (s == RECUR_OK && (uint64_t)(n - o) != m.state_bytes)
        s = recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "imported state: %zu bytes of shards, the manifest says %llu (truncated?)",
                  n - o, (unsigned long long)m.state_bytes);
    /* every shard's CRC before anything is written */
    size_t p = o;
    for (int32_t i = 0; s == RECUR_OK && i < m.n_shards; i++) {
        if (crc32_of(blob + p, m.shards[i].bytes) != m.shards[i].crc32)
            s = recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "imported state: shard %d is corrupt (CRC-32 mismatch)", (int)i);
        p += (size_t)m.shards[i].bytes;
    }
    p = o;
    int32_t written = 0;
    for (int32_t i = 0; s == RECUR_OK && i < m.n_shards; i++) {
        s = recur_ckpt_write_shard(path, gen, &m.shards[i], blob + p, msg, msg_n);
        p += (size_t)m.shards[i].bytes;
        if (s == RECUR_OK) written++;
    }
    if (s == RECUR_OK) {
        recur_ckpt_manifest_t w = m;   /* the blob's layout, our session record */
        w.meta = *meta;
        w.generation = gen;
        s = recur_ckpt_manifest_write(path, &w, msg, msg_n);
    }
    if (s != RECUR_OK) {   /* remove what this import wrote: the names it made, never the blob's */
        char f[4096 + 128];
        for (int32_t i = 0; i < written; i++)
            if (recur_ckpt_shard_path(path, gen, m.shards[i].pp_rank, m.shards[i].tp_rank, f, sizeof f) == RECUR_OK)
                unlink(f);
    }
    recur_ckpt_manifest_free(&m);
    return s;
}
