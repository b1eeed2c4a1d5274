/* test_xlstm_reference.c: xLSTM on the CPU backend against Hugging Face transformers 5.17
 * (xLSTMForCausalLM, pure-PyTorch path) on small random models made by
 * scripts/make_xlstm_fixtures.py (tests/fixtures/xlstm-*; see tests/fixtures/README.md):
 *   - one prefill of a sequence longer than the chunk (chunkwise + tail) vs HF full and
 *     token-by-token logits; a sequence shorter than the chunk;
 *   - token-by-token decode vs HF; the final state vs HF's cache;
 *   - a state hand-off: HF's state after P tokens loaded into a slot, the rest continued;
 *   - prefill at several chunk sizes == the step path; a varlen batch == each alone.
 * fp32 compute: every logit within 1e-4 of HF (the bf16 model's weights are exactly its
 * bf16 values in both engines, so the same bound holds). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "recur_backend.h"
#include "recur_model.h"
#include "recur_testutil.h"

#define TOL 1e-4f

static int failures;
static float worst;

typedef struct fx {
    char dir[1024];
    int T, P, V;
    int32_t *tok_long, *tok_short;
    size_t n_long, n_short;
} fx_t;

static void *read_rel(const fx_t *f, const char *name, size_t *n) {
    char path[1200];
    void *d = NULL;
    size_t bytes = 0;
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    if (recur_read_file(path, &d, &bytes) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        failures++;
        return NULL;
    }
    *n = bytes / 4;
    return d;
}

static int load_fixture(fx_t *f, const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/%s", name);
    recur_source_path(f->dir, sizeof f->dir, rel);
    char path[1200];
    void *js = NULL;
    size_t bytes = 0;
    snprintf(path, sizeof path, "%s/ref.json", f->dir);
    if (recur_read_file(path, &js, &bytes) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        failures++;
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(js, bytes);
    free(js);
    const cJSON *P = cJSON_GetObjectItem(root, "P"), *V = cJSON_GetObjectItem(root, "V");
    if (!cJSON_IsNumber(P) || !cJSON_IsNumber(V)) {
        fprintf(stderr, "%s/ref.json lacks P or V\n", f->dir);
        cJSON_Delete(root);
        failures++;
        return -1;
    }
    f->P = P->valueint;
    f->V = V->valueint;
    cJSON_Delete(root);
    f->tok_long = read_rel(f, "ref-tokens-long.u32", &f->n_long);
    f->tok_short = read_rel(f, "ref-tokens-short.u32", &f->n_short);
    f->T = (int)f->n_long;
    return f->tok_long && f->tok_short ? 0 : -1;
}

typedef struct run {
    recur_backend_t *b;
    recur_model_t *m;
    size_t S;
} run_t;

static int open_run(run_t *r, const fx_t *f, int n_slots, int max_tokens, int prefill_chunk) {
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = n_slots;
    p.max_tokens = max_tokens;
    p.prefill_chunk = prefill_chunk;
    if (recur_backend_init("cpu", NULL, &r->b) != RECUR_OK || recur_model_load(f->dir, r->b, &p, &r->m) != RECUR_OK) {
        failures++;
        return -1;
    }
    r->S = recur_model_info(r->m)->state_bytes / sizeof(float); /* f32 state */
    return 0;
}

static void close_run(run_t *r) {
    recur_model_free(r->m);
    recur_backend_free(r->b);
}

static int fwd(run_t *r, int32_t slot, const int32_t *t, int32_t n, recur_logits_mode_t mode, float *lg) {
    recur_batch_t bt = {.n_seq = 1, .tokens = t, .seq_len = &n, .slot = &slot, .logits = mode};
    return recur_model_forward(r->m, &bt, lg);
}

static void cmp(const float *got, const float *ref, size_t n, float tol, const char *what) {
    float e = 0.f;
    if (!recur_allclose(got, ref, n, tol, 0.f, what, &e)) failures++;
    if (tol == TOL && !(e <= worst)) worst = e;
}

static void test_fixture(const char *name) {
    fx_t f = {0};
    if (load_fixture(&f, name) != 0) return;
    size_t n = 0, V = (size_t)f.V, T = (size_t)f.T, P = (size_t)f.P;
    float *full = read_rel(&f, "ref-logits-long-full.f32", &n);
    float *step = read_rel(&f, "ref-logits-long-step.f32", &n);
    float *shortl = read_rel(&f, "ref-logits-short-full.f32", &n);
    float *cont = read_rel(&f, "ref-logits-continue.f32", &n);
    float *st_prefix = read_rel(&f, "ref-state-prefix.f32", &n);
    float *st_final = read_rel(&f, "ref-state-final.f32", &n);
    size_t st_n = n;
    if (!full || !step || !shortl || !cont || !st_prefix || !st_final) goto out;
    char what[256];
    float *lg = malloc(T * V * sizeof(float)), *lg2 = malloc(T * V * sizeof(float));
    float *st = NULL;
    run_t r = {0};

    /* one prefill call, the checkpoint's chunk size */
    if (open_run(&r, &f, 6, 512, 0) == 0) {
        const recur_model_info_t *info = recur_model_info(r.m);
        fprintf(stderr, "%s: D=%d L=%d NH=%d DV=%d V=%d chunk=%d state %zu floats, T=%zu P=%zu\n", name,
                info->n_embd, info->n_layer, info->n_head, info->head_size, info->n_vocab, info->prefill_chunk,
                r.S, T, P);
        if (r.S != st_n) { fprintf(stderr, "state size %zu != fixture %zu\n", r.S, st_n); failures++; }
        st = malloc(r.S * sizeof(float));
        recur_model_state_reset(r.m, 1);
        if (fwd(&r, 1, (const int32_t *)f.tok_long, (int32_t)T, RECUR_LOGITS_ALL, lg) != RECUR_OK) failures++;
        snprintf(what, sizeof what, "%s prefill vs HF full", name);
        cmp(lg, full, T * V, TOL, what);
        snprintf(what, sizeof what, "%s prefill vs HF token-by-token", name);
        cmp(lg, step, T * V, TOL, what);
        recur_model_state_get(r.m, 1, st);
        snprintf(what, sizeof what, "%s final state vs HF cache", name);
        if (!recur_allclose(st, st_final, r.S, TOL, TOL, what, NULL)) failures++;

        /* short sequence (shorter than the chunk) */
        recur_model_state_reset(r.m, 2);
        if (fwd(&r, 2, (const int32_t *)f.tok_short, (int32_t)f.n_short, RECUR_LOGITS_ALL, lg2) != RECUR_OK) failures++;
        snprintf(what, sizeof what, "%s short prompt vs HF", name);
        cmp(lg2, shortl, f.n_short * V, TOL, what);

        /* token by token */
        recur_model_state_reset(r.m, 3);
        for (size_t t = 0; t < T; t++)
            if (fwd(&r, 3, (const int32_t *)f.tok_long + t, 1, RECUR_LOGITS_LAST, lg2 + t * V) != RECUR_OK) failures++;
        snprintf(what, sizeof what, "%s decode steps vs HF token-by-token", name);
        cmp(lg2, step, T * V, TOL, what);
        /* chunkwise and step sum in different orders: fp32 rounding, ~1e-5 on logits of |3| */
        snprintf(what, sizeof what, "%s decode steps vs our prefill", name);
        cmp(lg2, lg, T * V, 5e-5f, what);

        /* hand-off: HF's state after P tokens, then the rest */
        recur_model_state_set(r.m, 4, st_prefix);
        if (fwd(&r, 4, (const int32_t *)f.tok_long + P, (int32_t)(T - P), RECUR_LOGITS_ALL, lg2) != RECUR_OK) failures++;
        snprintf(what, sizeof what, "%s continue from HF's state after %zu tokens", name, P);
        cmp(lg2, cont, (T - P) * V, TOL, what);

        /* varlen batch: long (slot 5), short (slot 1), a 1-token decode (slot 2) together */
        int32_t *bt_tok = malloc((T + f.n_short + 1) * sizeof(int32_t));
        memcpy(bt_tok, f.tok_short, f.n_short * 4);
        memcpy(bt_tok + f.n_short, f.tok_long, T * 4);
        bt_tok[f.n_short + T] = 7;
        int32_t lens[3] = {(int32_t)f.n_short, (int32_t)T, 1}, slots[3] = {1, 5, 2};
        float *blg = malloc((T + f.n_short + 1) * V * sizeof(float)), *one = malloc(V * sizeof(float));
        recur_model_state_reset(r.m, 1);
        recur_model_state_reset(r.m, 5);
        recur_model_state_set(r.m, 2, st_prefix);
        recur_batch_t bt = {.n_seq = 3, .tokens = bt_tok, .seq_len = lens, .slot = slots, .logits = RECUR_LOGITS_ALL};
        if (recur_model_forward(r.m, &bt, blg) != RECUR_OK) failures++;
        snprintf(what, sizeof what, "%s batch: short seq vs HF", name);
        cmp(blg, shortl, f.n_short * V, TOL, what);
        snprintf(what, sizeof what, "%s batch: long seq vs alone", name);
        cmp(blg + f.n_short * V, lg, T * V, 0.f, what);
        recur_model_state_set(r.m, 3, st_prefix);
        fwd(&r, 3, bt_tok + f.n_short + T, 1, RECUR_LOGITS_LAST, one);
        snprintf(what, sizeof what, "%s batch: decode row vs alone", name);
        cmp(blg + (f.n_short + T) * V, one, V, 0.f, what);
        free(bt_tok);
        free(blg);
        free(one);
        close_run(&r);
    }

    /* prefill at other chunk sizes (and cut into pieces of 37 rows) == HF */
    static const int chunks[] = {1, 5, 16, 64};
    for (int c = 0; c < 4; c++) {
        if (open_run(&r, &f, 2, 37, chunks[c]) != 0) continue;
        recur_model_state_reset(r.m, 1);
        fwd(&r, 1, (const int32_t *)f.tok_long, (int32_t)T, RECUR_LOGITS_ALL, lg2);
        snprintf(what, sizeof what, "%s prefill chunk %d, pieces of 37", name, chunks[c]);
        cmp(lg2, step, T * V, TOL, what);
        close_run(&r);
    }
    free(lg);
    free(lg2);
    free(st);
out:
    free(full);
    free(step);
    free(shortl);
    free(cont);
    free(st_prefix);
    free(st_final);
    free(f.tok_long);
    free(f.tok_short);
}

/* config.json values that do not describe the weights, or describe a variant recur does
 * not compute, must be refused with a clear status, never computed. */
static void test_bad_configs(void) {
    char src[1024], tmp[512], path[1200];
    recur_source_path(src, sizeof src, "tests/fixtures/xlstm-tiny");
    if (recur_make_temp_dir(tmp, sizeof tmp) != 0) { failures++; return; }
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    char link[1200];
    snprintf(link, sizeof link, "%s/model.safetensors", tmp);
    if (symlink(path, link) != 0) { failures++; return; }
    snprintf(path, sizeof path, "%s/config.json", src);
    void *orig = NULL;
    size_t n = 0;
    if (recur_read_file(path, &orig, &n) != 0) { failures++; return; }
    struct { const char *what, *key, *json; recur_status_t want; } cases[] = {
        {"weight_mode fused", "weight_mode", "\"fused\"", RECUR_E_UNSUPPORTED},
        {"use_bias true", "use_bias", "true", RECUR_E_UNSUPPORTED},
        {"model_type llama", "model_type", "\"llama\"", RECUR_E_UNSUPPORTED},
        {"hidden_size 256", "hidden_size", "256", RECUR_E_FORMAT},
        {"num_heads 4", "num_heads", "4", RECUR_E_FORMAT},
        {"num_hidden_layers 1", "num_hidden_layers", "1", RECUR_E_FORMAT},
        {"num_hidden_layers 3", "num_hidden_layers", "3", RECUR_E_FORMAT},
        {"vocab_size 300", "vocab_size", "300", RECUR_E_FORMAT},
        {"qk_dim_factor 0.25", "qk_dim_factor", "0.25", RECUR_E_FORMAT},
        {"ffn_proj_factor 2", "ffn_proj_factor", "2.0", RECUR_E_FORMAT},
        {"norm_eps -1", "norm_eps", "-1", RECUR_E_FORMAT},
        {"num_heads \"two\"", "num_heads", "\"two\"", RECUR_E_FORMAT},
        /* numbers whose conversion to int or float was undefined (fuzz_xlstm_config) */
        {"qk_dim_factor 1e30", "qk_dim_factor", "1e30", RECUR_E_FORMAT},
        {"ffn_proj_factor 1e300", "ffn_proj_factor", "1e300", RECUR_E_FORMAT},
        {"norm_eps 1e300", "norm_eps", "1e300", RECUR_E_FORMAT},
        {"eps 1e-320 (0 as float)", "eps", "1e-320", RECUR_E_FORMAT},
        {"gate_soft_cap 1e300", "gate_soft_cap", "1e300", RECUR_E_FORMAT},
        {"not JSON", NULL, NULL, RECUR_E_FORMAT},
    };
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s/config.json", tmp);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text;
        if (cases[i].key) {
            cJSON *root = cJSON_ParseWithLength(orig, n);
            cJSON_DeleteItemFromObjectCaseSensitive(root, cases[i].key);
            if (!strcmp(cases[i].key, "hidden_size")) cJSON_DeleteItemFromObjectCaseSensitive(root, "embedding_dim");
            if (!strcmp(cases[i].key, "num_hidden_layers")) cJSON_DeleteItemFromObjectCaseSensitive(root, "num_blocks");
            cJSON_AddItemToObject(root, cases[i].key, cJSON_Parse(cases[i].json));
            text = cJSON_Print(root);
            cJSON_Delete(root);
        } else {
            text = strdup("{\"hidden_size\": 128,");
        }
        recur_write_file(cfg, text, strlen(text));
        free(text);
        recur_backend_t *b = NULL;
        recur_model_t *m = NULL;
        recur_backend_init("cpu", NULL, &b);
        recur_status_t st = recur_model_load(tmp, b, NULL, &m);
        fprintf(stderr, "config %-28s -> %s\n", cases[i].what, recur_status_str(st));
        if (st != cases[i].want || m) failures++;
        recur_model_free(m);
        recur_backend_free(b);
    }
    unlink(cfg); /* and a checkpoint without its config.json */
    recur_backend_t *b = NULL;
    recur_model_t *m = NULL;
    recur_backend_init("cpu", NULL, &b);
    recur_status_t st = recur_model_load(tmp, b, NULL, &m);
    fprintf(stderr, "config %-28s -> %s\n", "missing", recur_status_str(st));
    if (st == RECUR_OK) failures++;
    recur_model_free(m);
    recur_backend_free(b);
    free(orig);
    recur_rm_rf(tmp);
}

int main(void) {
    test_bad_configs();
    test_fixture("xlstm-tiny");
    test_fixture("xlstm-heads256");
    fprintf(stderr, "largest logit error vs transformers: %.3e (bound %.0e)\n", (double)worst, (double)TOL);
    fprintf(stderr, "%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
