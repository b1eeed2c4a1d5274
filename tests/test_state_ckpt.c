/* test_state_ckpt.c: session checkpoints (worker/recur_state_ckpt) without a model.
 *
 * A "full state" of random bytes for made-up RWKV-7 and xLSTM dimensions (f32 and bf16) is
 * split into the shards of a tp x pp layout the way the model splits it (layers in even
 * stages, the first n_layer % pp stages one more; heads n_head / tp per rank), saved as a
 * checkpoint, and loaded by every rank of every other layout: each loaded shard must equal
 * the same layout's split of the full state, byte for byte. Then: damaged checkpoints
 * (a flipped byte, a truncated or missing shard, a manifest of another model, of another
 * state dtype, garbage) are refused with the reason; the export container round-trips and
 * refuses damage; old generations are removed; the content hash ignores the path and sees
 * a changed byte; an RWKV-7 state-tuning safetensors file becomes the wkv part; the paths a
 * worker accepts in a SlotOp (recur_ckpt_path_check). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recur_state_ckpt.h"
#include "recur_testutil.h"

static int failures;
#define CHECK(c) RECUR_CHECK(&failures, c)

/* The shard of (pp_rank, tp_rank) in a tp x pp layout (recur_model_plan_shard's rule). */
static recur_ckpt_shard_t plan(const recur_state_layout_t *l, int tp, int pp, int pr, int tr) {
    recur_ckpt_shard_t s;
    memset(&s, 0, sizeof s);
    int base = l->n_layer / pp, extra = l->n_layer % pp;
    s.pp_rank = pr, s.tp_rank = tr;
    s.layer_begin = pr * base + (pr < extra ? pr : extra);
    s.layer_end = s.layer_begin + base + (pr < extra ? 1 : 0);
    s.n_head = l->n_head / tp;
    s.head_begin = tr * s.n_head;
    s.bytes = recur_state_layout_shard_bytes(l, s.layer_end - s.layer_begin, s.n_head);
    return s;
}

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

typedef struct { int tp, pp; } grid_t;

/* Saves `full` under layout g as the checkpoint at path (generation gen), as the worker's
 * ranks do (each writes its shard, rank 0 the manifest). */
static recur_status_t save_layout(const recur_ckpt_identity_t *id, const recur_state_layout_t *l, const uint8_t *full,
                                  grid_t g, const char *path, uint64_t gen) {
    recur_ckpt_shard_t whole = plan(l, 1, 1, 0, 0);
    const void *srcb[1] = {full};
    recur_ckpt_manifest_t m;
    memset(&m, 0, sizeof m);
    m.id = *id;
    m.tp = g.tp, m.pp = g.pp, m.generation = gen;
    snprintf(m.meta.session_id, sizeof m.meta.session_id, "chat-7");
    snprintf(m.meta.model, sizeof m.meta.model, "default");
    int32_t pend[2] = {11, 12};
    m.meta.pending = pend, m.meta.n_pending = 2, m.meta.n_consumed = 99;
    uint8_t unsent[3] = {'\n', 0xff, 'U'};   /* any bytes: a stop string cut inside a character too */
    m.meta.unsent = unsent, m.meta.n_unsent = 3;
    m.n_shards = g.tp * g.pp;
    m.shards = calloc((size_t)m.n_shards, sizeof *m.shards);
    recur_status_t s = RECUR_OK;
    for (int r = 0; r < m.n_shards && s == RECUR_OK; r++) {
        recur_ckpt_shard_t sh = plan(l, g.tp, g.pp, r / g.tp, r % g.tp);
        uint8_t *b = malloc(sh.bytes);
        s = recur_state_reshard(l, &sh, b, 1, &whole, srcb, NULL, 0);
        if (s == RECUR_OK) s = recur_ckpt_write_shard(path, gen, &sh, b, NULL, 0);
        m.shards[r] = sh;
        m.state_bytes += sh.bytes;
        free(b);
    }
    if (s == RECUR_OK) s = recur_ckpt_manifest_write(path, &m, NULL, 0);
    free(m.shards);
    return s;
}

/* Loads every rank of layout g from path and compares with the split of full. */
static int check_load(const recur_ckpt_identity_t *id, const recur_state_layout_t *l, const uint8_t *full, grid_t g,
                      const char *path) {
    recur_ckpt_shard_t whole = plan(l, 1, 1, 0, 0);
    const void *srcb[1] = {full};
    int bad = 0;
    for (int r = 0; r < g.tp * g.pp; r++) {
        recur_ckpt_shard_t sh = plan(l, g.tp, g.pp, r / g.tp, r % g.tp);
        uint8_t *want = malloc(sh.bytes), *got = malloc(sh.bytes);
        char msg[512] = "";
        recur_state_reshard(l, &sh, want, 1, &whole, srcb, NULL, 0);
        memset(got, 0xEE, sh.bytes);
        uint64_t rd = 0;
        recur_status_t s = recur_ckpt_load(path, id, &sh, got, &rd, msg, sizeof msg);
        if (s != RECUR_OK || memcmp(got, want, sh.bytes)) {
            fprintf(stderr, "load %s into tp %d pp %d rank %d: %s %s\n", path, g.tp, g.pp, r, recur_status_str(s), msg);
            bad++;
        }
        CHECK(rd >= sh.bytes);   /* it read (at least) what it needs */
        free(want);
        free(got);
    }
    return bad;
}

static void test_layouts(const char *dir, const char *arch, recur_dtype_t dt) {
    recur_ckpt_identity_t id;
    memset(&id, 0, sizeof id);
    snprintf(id.arch, sizeof id.arch, "%s", arch);
    id.n_vocab = 300, id.n_layer = 5, id.n_embd = 24, id.n_head = 4;
    id.head_size = !strcmp(arch, "rwkv7") ? 6 : 10;
    id.head_size_k = !strcmp(arch, "rwkv7") ? 6 : 8;
    id.state_dtype = dt;
    snprintf(id.content_hash, sizeof id.content_hash, "fnv1a64s:0123456789abcdef");
    recur_state_layout_t l;
    CHECK(recur_state_layout_init(&id, &l) == RECUR_OK);
    size_t n = recur_state_layout_shard_bytes(&l, id.n_layer, id.n_head);
    uint8_t *full = malloc(n);
    uint64_t rng = 0x1234 + (uint64_t)dt;
    for (size_t i = 0; i < n; i++) full[i] = (uint8_t)recur_test_rng_next(&rng);
    const grid_t grids[] = {{1, 1}, {2, 1}, {4, 1}, {1, 2}, {2, 2}, {1, 5}, {4, 3}, {2, 4}};
    const int ng = (int)(sizeof grids / sizeof grids[0]);
    int loads = 0;
    for (int a = 0; a < ng; a++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s-%s-%d.ckpt", dir, arch, recur_dtype_name(dt), a);
        if (save_layout(&id, &l, full, grids[a], path, 3) != RECUR_OK) {
            fprintf(stderr, "save %s failed\n", path);
            failures++;
            continue;
        }
        for (int b = 0; b < ng; b++, loads++) failures += check_load(&id, &l, full, grids[b], path);
    }
    printf("ok   %s %s: %d layouts saved, each loaded by %d layouts (every rank byte-identical)\n", arch,
           recur_dtype_name(dt), ng, ng);
    free(full);
    (void)loads;
}

static void expect_refused(const char *path, const recur_ckpt_identity_t *id, const recur_ckpt_shard_t *sh,
                           const char *needle, const char *what) {
    char msg[512] = "";
    uint8_t *b = malloc(sh->bytes);
    recur_status_t s = recur_ckpt_load(path, id, sh, b, NULL, msg, sizeof msg);
    int ok = s != RECUR_OK && contains(msg, needle);
    printf("%s %s: %s\n", ok ? "ok  " : "FAIL", what, msg);
    if (!ok) failures++;
    free(b);
}

static void copy_file(const char *from, const char *to) {
    void *d = NULL;
    size_t n = 0;
    CHECK(recur_read_file(from, &d, &n) == 0);
    CHECK(recur_write_file(to, d, n) == 0);
    free(d);
}

static void test_damage(const char *dir) {
    recur_ckpt_identity_t id;
    memset(&id, 0, sizeof id);
    snprintf(id.arch, sizeof id.arch, "rwkv7");
    id.n_vocab = 300, id.n_layer = 3, id.n_embd = 16, id.n_head = 2, id.head_size = id.head_size_k = 4;
    id.state_dtype = RECUR_DTYPE_F32;
    snprintf(id.content_hash, sizeof id.content_hash, "fnv1a64s:aaaaaaaaaaaaaaaa");
    recur_state_layout_t l;
    recur_state_layout_init(&id, &l);
    size_t n = recur_state_layout_shard_bytes(&l, id.n_layer, id.n_head);
    uint8_t *full = malloc(n);
    for (size_t i = 0; i < n; i++) full[i] = (uint8_t)(i * 7 + 3);
    char path[600], shard[700];
    snprintf(path, sizeof path, "%s/damage.ckpt", dir);
    grid_t g = {2, 1};
    CHECK(save_layout(&id, &l, full, g, path, 1) == RECUR_OK);
    recur_ckpt_shard_t mine = plan(&l, 1, 1, 0, 0);
    CHECK(check_load(&id, &l, full, (grid_t){1, 1}, path) == 0);

    /* manifest contents */
    recur_ckpt_manifest_t m;
    CHECK(recur_ckpt_manifest_read(path, &m, NULL, 0) == RECUR_OK);
    CHECK(m.tp == 2 && m.pp == 1 && m.generation == 1 && m.n_shards == 2 && m.meta.n_consumed == 99 &&
          m.meta.n_pending == 2 && m.meta.pending[1] == 12 && !strcmp(m.meta.session_id, "chat-7") &&
          m.meta.n_unsent == 3 && !memcmp(m.meta.unsent, "\n\xffU", 3) &&
          m.state_bytes == m.shards[0].bytes + m.shards[1].bytes && m.state_bytes > n && !strcmp(m.shards[1].file, "damage.ckpt.g1.shard-0-1"));
    recur_ckpt_manifest_free(&m);

    /* another model, another dtype, other dimensions */
    recur_ckpt_identity_t other = id;
    snprintf(other.content_hash, sizeof other.content_hash, "fnv1a64s:bbbbbbbbbbbbbbbb");
    expect_refused(path, &other, &mine, "saved from another model (weights with content hash", "another model's state");
    other = id, other.state_dtype = RECUR_DTYPE_BF16;
    recur_state_layout_t lb;
    recur_state_layout_init(&other, &lb);
    recur_ckpt_shard_t mine_b = plan(&lb, 1, 1, 0, 0);
    expect_refused(path, &other, &mine_b, "a state stored as f32, but this server keeps bf16", "another state dtype");
    other = id, other.n_embd = 32;
    expect_refused(path, &other, &mine, "saved from another model (rwkv7, 3 layers, width 16", "other dimensions");

    /* a flipped byte in a shard */
    CHECK(recur_ckpt_shard_path(path, 1, 0, 1, shard, sizeof shard) == RECUR_OK);
    char keep[720];
    snprintf(keep, sizeof keep, "%s.keep", shard);
    copy_file(shard, keep);
    void *d = NULL;
    size_t dn = 0;
    recur_read_file(shard, &d, &dn);
    ((uint8_t *)d)[dn / 2] ^= 0x10;
    recur_write_file(shard, d, dn);
    expect_refused(path, &id, &mine, "corrupt (CRC-32", "a flipped bit");
    /* truncated */
    recur_write_file(shard, d, dn - 3);
    expect_refused(path, &id, &mine, "truncated", "a truncated shard");
    free(d);
    /* missing */
    unlink(shard);
    expect_refused(path, &id, &mine, "cannot open", "a missing shard");
    copy_file(keep, shard);
    unlink(keep);
    CHECK(check_load(&id, &l, full, (grid_t){1, 1}, path) == 0);
    /* the manifest: truncated, garbage, a path in a shard name, a hole in the heads */
    void *mj = NULL;
    size_t mn = 0;
    recur_read_file(path, &mj, &mn);
    char bad[720];
    snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
    recur_write_file(bad, mj, mn / 2);
    expect_refused(bad, &id, &mine, "not a checkpoint manifest", "a truncated manifest");
    recur_write_file(bad, "garbage", 7);
    expect_refused(bad, &id, &mine, "not a checkpoint manifest", "a garbage manifest");
    char *txt = calloc(1, mn + 64);
    memcpy(txt, mj, mn);
    char *f = strstr(txt, "damage.ckpt.g1.shard-0-1");
    memcpy(f, "../../etc/passwd/shard-0-1", 24);
    recur_write_file(bad, txt, mn);
    expect_refused(bad, &id, &mine, "not a plain name", "a shard name with a path");
    memcpy(txt, mj, mn);
    f = strstr(txt, "\"head_begin\":1");
    CHECK(f != NULL);
    if (f) f[13] = '0';   /* both shards claim head 0: head 1 is nowhere */
    recur_write_file(bad, txt, mn);
    expect_refused(bad, &id, &mine, "some layer and head is in no shard", "a hole in the heads");
    memcpy(txt, mj, mn);
    f = strstr(txt, "\"tp_rank\":1");
    CHECK(f != NULL);
    if (f) f[10] = '0';   /* both shards say tp rank 0 (found by fuzz_state_ckpt) */
    recur_write_file(bad, txt, mn);
    expect_refused(bad, &id, &mine, "two shards of one rank", "two shards of one rank");
    free(txt);
    free(mj);

    /* export / import */
    uint8_t *blob = NULL;
    size_t bn = 0;
    char msg[512] = "";
    CHECK(recur_ckpt_export(path, &blob, &bn, msg, sizeof msg) == RECUR_OK);
    char imp[700];
    snprintf(imp, sizeof imp, "%s/imported.ckpt", dir);
    recur_ckpt_meta_t meta;
    memset(&meta, 0, sizeof meta);
    snprintf(meta.session_id, sizeof meta.session_id, "copy");
    meta.n_consumed = 5;
    CHECK(recur_ckpt_import(blob, bn, &id, imp, 4, &meta, msg, sizeof msg) == RECUR_OK);
    CHECK(check_load(&id, &l, full, (grid_t){1, 1}, imp) == 0);
    CHECK(check_load(&id, &l, full, (grid_t){2, 1}, imp) == 0);
    CHECK(recur_ckpt_manifest_read(imp, &m, NULL, 0) == RECUR_OK);
    CHECK(m.generation == 4 && !strcmp(m.meta.session_id, "copy") && m.meta.n_consumed == 5 && m.meta.n_pending == 0);
    recur_ckpt_manifest_free(&m);
    blob[bn - 5] ^= 1;
    int s = recur_ckpt_import(blob, bn, &id, imp, 5, &meta, msg, sizeof msg);
    CHECK(s == RECUR_E_FORMAT && contains(msg, "corrupt"));
    blob[bn - 5] ^= 1;
    s = recur_ckpt_import(blob, bn - 1, &id, imp, 5, &meta, msg, sizeof msg);
    CHECK(s == RECUR_E_FORMAT && contains(msg, "truncated"));
    s = recur_ckpt_import(blob, bn, &other, imp, 5, &meta, msg, sizeof msg);
    CHECK(s == RECUR_E_FORMAT && contains(msg, "another model"));
    s = recur_ckpt_import((const uint8_t *)"RECURCK1\xff\xff\x00\x00", 12, &id, imp, 5, &meta, msg, sizeof msg);
    CHECK(s == RECUR_E_FORMAT && contains(msg, "truncated"));
    CHECK(check_load(&id, &l, full, (grid_t){1, 1}, imp) == 0);   /* the refused imports wrote nothing over it */
    free(blob);
    printf("ok   export / import round trip, damaged blobs refused\n");

    /* generations: a second save keeps the first until its manifest is in; remove cleans */
    CHECK(save_layout(&id, &l, full, (grid_t){1, 1}, path, 2) == RECUR_OK);
    char g1[700], g2[700];
    recur_ckpt_shard_path(path, 1, 0, 0, g1, sizeof g1);
    recur_ckpt_shard_path(path, 2, 0, 0, g2, sizeof g2);
    CHECK(access(g1, F_OK) == 0 && access(g2, F_OK) == 0);
    CHECK(recur_ckpt_remove(path, 2, 0) == RECUR_OK);
    CHECK(access(g1, F_OK) != 0 && access(g2, F_OK) == 0 && access(shard, F_OK) != 0);
    CHECK(check_load(&id, &l, full, (grid_t){2, 1}, path) == 0);
    CHECK(recur_ckpt_remove(path, 0, 1) == RECUR_OK);
    CHECK(access(g2, F_OK) != 0 && access(path, F_OK) != 0);
    free(full);
}

static void test_hash(const char *dir) {
    char a[700], b[800], sub[640], ha[96], hb[96], hc[96];
    snprintf(a, sizeof a, "%s/model-a.bin", dir);
    snprintf(sub, sizeof sub, "%s/elsewhere", dir);
    mkdir(sub, 0700);
    snprintf(b, sizeof b, "%s/model-a.bin", sub);
    size_t n = 300000;
    uint8_t *d = malloc(n);
    for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(i * 31 + (i >> 9));
    recur_write_file(a, d, n);
    recur_write_file(b, d, n);
    CHECK(recur_ckpt_content_hash(a, ha, sizeof ha) == RECUR_OK);
    CHECK(recur_ckpt_content_hash(b, hb, sizeof hb) == RECUR_OK);
    CHECK(!strcmp(ha, hb) && !strncmp(ha, "fnv1a64s:", 9));
    d[n / 12 * 5 + 100] ^= 1;   /* inside a sampled block (the 5th of 12 steps) */
    recur_write_file(b, d, n);
    CHECK(recur_ckpt_content_hash(b, hc, sizeof hc) == RECUR_OK && strcmp(ha, hc));
    CHECK(recur_ckpt_content_hash(sub, hc, sizeof hc) == RECUR_OK && strcmp(ha, hc));   /* a directory */
    free(d);
    printf("ok   content hash: same bytes elsewhere %s, a changed byte %s\n", hb, hc);
}

static void test_tuned(const char *dir) {
    recur_ckpt_identity_t id;
    memset(&id, 0, sizeof id);
    snprintf(id.arch, sizeof id.arch, "rwkv7");
    id.n_vocab = 300, id.n_layer = 3, id.n_embd = 16, id.n_head = 2, id.head_size = id.head_size_k = 4;
    id.state_dtype = RECUR_DTYPE_F32;
    recur_state_layout_t l;
    recur_state_layout_init(&id, &l);
    float ts[3][2 * 4 * 4];
    recur_test_tensor_t t[3];
    char names[3][64];
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 32; i++) ts[k][i] = (float)(k * 100 + i) * 0.25f;
        snprintf(names[k], sizeof names[k], "blocks.%d.att.time_state", k);
        t[k] = (recur_test_tensor_t){names[k], "F32", 3, {2, 4, 4}, ts[k], sizeof ts[k]};
    }
    char path[600];
    snprintf(path, sizeof path, "%s/tuned.safetensors", dir);
    CHECK(recur_write_safetensors(path, t, 3, NULL) == 0);
    /* rank (pp 1 of 2, tp 1 of 2): layers [2, 3), head 1 */
    recur_ckpt_shard_t sh = plan(&l, 2, 2, 1, 1);
    uint8_t *b = malloc(sh.bytes);
    char msg[512] = "";
    CHECK(recur_ckpt_load_tuned(path, &id, &sh, b, msg, sizeof msg) == RECUR_OK);
    float *f = (float *)b;
    int ok = sh.layer_begin == 2 && sh.layer_end == 3 && sh.head_begin == 1;
    for (int i = 0; i < 2 * 16; i++) ok &= f[i] == 0.0f;                           /* ffn_x, att_x */
    for (int i = 0; i < 16; i++) ok &= f[32 + i] == ts[2][16 + i];                   /* head 1 of layer 2 */
    CHECK(ok);
    free(b);
    /* a wrong shape and a missing layer are refused */
    t[1].shape[1] = 2, t[1].shape[2] = 8;
    CHECK(recur_write_safetensors(path, t, 3, NULL) == 0);
    recur_ckpt_shard_t whole = plan(&l, 1, 1, 0, 0);
    b = malloc(whole.bytes);
    CHECK(recur_ckpt_load_tuned(path, &id, &whole, b, msg, sizeof msg) == RECUR_E_FORMAT &&
          contains(msg, "has shape [2, 2, 8], the model needs [2, 4, 4]"));
    CHECK(recur_write_safetensors(path, t, 1, NULL) == 0);
    CHECK(recur_ckpt_load_tuned(path, &id, &whole, b, msg, sizeof msg) == RECUR_E_FORMAT &&
          contains(msg, "no blocks.1.att.time_state"));
    free(b);
    printf("ok   state-tuning file: the wkv part of each rank's layers and heads, bad shapes refused\n");
}

/* recur_ckpt_path_check: what a worker accepts as a checkpoint path from a SlotOp. */
static void test_path_check(const char *dir) {
    char sess[600], other[600], link[600], p[1400], msg[400];
    snprintf(sess, sizeof sess, "%s/pc-sessions", dir);
    snprintf(other, sizeof other, "%s/pc-elsewhere", dir);
    snprintf(link, sizeof link, "%s/pc-sessions/detour", dir);
    CHECK(mkdir(sess, 0700) == 0 && mkdir(other, 0700) == 0 && symlink(other, link) == 0);
    snprintf(p, sizeof p, "%s/s-0123456789abcdef.ckpt", sess);
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_OK);
    CHECK(recur_ckpt_path_check(p, NULL, msg, sizeof msg) == RECUR_OK);
    snprintf(p, sizeof p, "%s/../pc-sessions/s-1.ckpt", sess);   /* resolves inside, but ".." is refused */
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_E_INVAL && contains(msg, "\"..\" component"));
    snprintf(p, sizeof p, "%s/../pc-elsewhere/s-1.ckpt", sess);
    CHECK(recur_ckpt_path_check(p, NULL, msg, sizeof msg) == RECUR_E_INVAL);
    snprintf(p, sizeof p, "%s/s-1.ckpt", other);   /* a plain path, another directory */
    CHECK(recur_ckpt_path_check(p, NULL, msg, sizeof msg) == RECUR_OK);
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_E_INVAL &&
          contains(msg, "not directly in the session directory"));
    snprintf(p, sizeof p, "%s/s-1.ckpt", link);    /* a symlinked detour out of the directory */
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_E_INVAL);
    snprintf(p, sizeof p, "%s/.hidden", sess);
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_E_INVAL && contains(msg, "file name"));
    snprintf(p, sizeof p, "%s/", sess);
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_E_INVAL);
    snprintf(p, sizeof p, "%s/a b", sess);
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_E_INVAL);
    CHECK(recur_ckpt_path_check("..", NULL, msg, sizeof msg) == RECUR_E_INVAL);
    CHECK(recur_ckpt_path_check("", NULL, msg, sizeof msg) == RECUR_E_INVAL);
    CHECK(recur_ckpt_path_check("s-1.ckpt", ".", msg, sizeof msg) == RECUR_OK);   /* relative: the cwd */
    snprintf(p, sizeof p, "%s/missing/s-1.ckpt", sess);
    CHECK(recur_ckpt_path_check(p, sess, msg, sizeof msg) == RECUR_E_INVAL);
    printf("ok   checkpoint paths: inside the session directory only; \"..\", symlinked detours, odd names refused\n");
}

int main(void) {
    char dir[512];
    if (recur_make_temp_dir(dir, sizeof dir)) {
        fprintf(stderr, "no temp dir\n");
        return 1;
    }
    test_layouts(dir, "rwkv7", RECUR_DTYPE_F32);
    test_layouts(dir, "rwkv7", RECUR_DTYPE_BF16);
    test_layouts(dir, "xlstm", RECUR_DTYPE_F32);
    test_layouts(dir, "xlstm", RECUR_DTYPE_BF16);
    test_damage(dir);
    test_hash(dir);
    test_tuned(dir);
    test_path_check(dir);
    recur_rm_rf(dir);
    if (failures) fprintf(stderr, "test_state_ckpt: %d failure(s)\n", failures);
    else printf("test_state_ckpt: ok\n");
    return failures ? 1 : 0;
}
