/* recur_main.c: the `recur` command-line program.
 *
 *   recur logits   --model PATH --tokens 1,2,3 --out FILE     logits after each token
 *   recur generate [--model PATH] --prompt TEXT [sampling]     stream generated text
 *   recur worker   --connect tcp://HOST:PORT --model PATH      serve a coordinator
 *   recur keygen   --out DIR                                  CURVE keys for serve / worker
 *   recur version | help
 *
 * Exit codes: 0 success, 1 runtime failure (bad model file, I/O), 2 bad usage. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "recur_backend.h"
#include "recur_bench.h"
#include "recur_comm.h"
#include "recur_curve.h"
#include "recur_log.h"
#include "recur_model.h"
#include "recur_proto.h"
#include "recur_state_file.h"
#include "recur_tokenizer.h"
#include "recur_tokenizer_pick.h"
#include "recur_state_ckpt.h"
#include "recur_worker.h"
#include "recur_serve.h"

#define RECUR_EXIT_USAGE 2

static void usage(FILE *to) {
    fprintf(to,
            "usage: recur <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate   generate text from a prompt, streamed to stdout\n"
            "  logits     write the logits after each given token to a file\n"
            "  bench      measure decode and prefill speed against the hardware limits\n"
            "  worker     serve a coordinator's step plans with a model (one rank, or mpirun for several)\n"
            "  serve      serve a model to clients: coordinator here, worker group as a child (README: Serving)\n"
            "  client     send one prompt to a recur serve and stream the text (or --health)\n"
            "  keygen     write CURVE key files for serve/worker --curve-keys (recur keygen --out DIR [--force])\n"
            "  version    print the version\n"
            "  help       this message\n"
            "\n"
            "recur generate [--model PATH] --prompt TEXT [--max-tokens N] [--temperature T]\n"
            "               [--top-p P] [--top-k K] [--min-p P] [--seed S] [--tokenizer VOCAB]\n"
            "               [--ignore-eos] [--state f32|bf16] [--state-in F]\n"
            "  PATH is a .bin, a .safetensors, an index json or a model directory; without\n"
            "  --model the bundled tiny RWKV-7 (834K parameters, byte-level) is used. The\n"
            "  tokenizer: --tokenizer (a tokenizer.json or a World vocab file), else one in the\n"
            "  model's directory, else the bundled one for the model's vocabulary. Models with\n"
            "  a BOS token (xLSTM: 0) get it before the prompt; generation stops at EOS.\n"
            "  Defaults: --max-tokens 200 --temperature 1.0 --top-p 1.0 --top-k 0 (off)\n"
            "  --min-p 0 (off) --seed 0; --temperature 0 is greedy decoding.\n"
            "\n"
            "recur logits --model PATH --tokens ID,ID,... --out FILE [--state-in F] [--state-out F]\n"
            "             [--chunk N] [--state f32|bf16]\n"
            "  Writes [n_tokens][n_vocab] little-endian float32: the logits after each token,\n"
            "  starting from the initial state (or --state-in). Token ids are used as given.\n"
            "  --state-out writes the final state (the slot's bytes in the model's state layout,\n"
            "  its matrices in the --state dtype); --chunk sets how many tokens one forward pass\n"
            "  takes (default 128).\n"
            "\n"
            "  PATH may also be rwkv7-7b, xlstm-7b, rwkv7-tiny8 or xlstm-tiny8: random weights at\n"
            "  those shapes (as in bench; --layers N keeps the first N layers).\n"
            "  Split across ranks: mpirun -np N recur logits --tp T --pp P ... (T x P = N; one rank\n"
            "  per GPU with --backend cuda). The last stage's first rank writes --out; with\n"
            "  --state-out each rank writes its shard to F.shard-<pp rank>-<tp rank> and rank 0 a\n"
            "  manifest (JSON) to F; --state-in reads the same set back (same T and P).\n"
            "\n"
            "recur worker --connect tcp://HOST:PORT --model PATH [--slots N] [--max-tokens N] [--tp T --pp P]\n"
            "             [--heartbeat-ms MS] [--idle-limit-ms MS] [--curve-keys DIR] [--session-dir DIR]\n"
            "  Loads the model (this rank's shard under mpirun), says hello to the coordinator's\n"
            "  worker endpoint and runs the step plans and slot operations it sends until it says\n"
            "  shutdown. --slots: state slots including padding slot 0 (default: as many as fit on\n"
            "  cuda, 64 on cpu); --max-tokens: rows per forward piece (default 512). Exits 0 on\n"
            "  shutdown, 3 when the coordinator was silent for --idle-limit-ms (default 30000),\n"
            "  1 on a device failure. --curve-keys DIR: encrypt and authenticate the link with CURVE\n"
            "  (DIR/worker.key and DIR/server.pub, from recur keygen; the coordinator must run with\n"
            "  --curve-keys too). --session-dir DIR: checkpoint paths the coordinator sends must lie in DIR.\n"
            "\n"
            "recur keygen --out DIR [--force]\n"
            "  Writes a CURVE key pair for the coordinator (server.key, server.pub) and one for the\n"
            "  workers (worker.key, worker.pub) into DIR, the .key files mode 0600. Existing files are\n"
            "  kept unless --force. README: Security.\n"
            "\n"
            "recur bench [options]   (recur bench --help for the list)\n"
            "\n"
            "common options: --backend cpu|cuda (default cpu) --weights bf16|f32|int8|fp8 (matrix\n"
            "  storage; default bf16, which the CPU keeps as f32; int8/fp8 quantize the projections at\n"
            "  load, README 'Weights') --state f32|bf16 (storage of the recurrent state's\n"
            "  matrices; default f32; bf16 halves a slot) --log-level debug|info|warn|error (default\n"
            "  warn; env RECUR_LOG)\n");
}

/* ---------------------------------------------------------------- argument parsing */

typedef struct opts {
    const char *model, *prompt, *tokens, *out, *tokenizer, *state_in, *state_out, *backend, *connect;
    const char *curve_keys, *session_dir;   /* worker */
    recur_dtype_t weights, state;
    long max_tokens, top_k, chunk, tp, pp, layers;
    long slots;                        /* model slots; -1: the command's own choice */
    long heartbeat_ms, idle_limit_ms;  /* worker */
    double temperature, top_p, min_p;
    unsigned long long seed;
    int ignore_eos;
} opts_t;

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "recur: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "recur: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parses argv[first..] into o. allowed: the options this command accepts (space-separated). */
static int parse_opts(int argc, char **argv, int first, const char *allowed, opts_t *o) {
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        char key[64];
        if (strncmp(a, "--", 2) != 0 || strlen(a) > 40) {
            fprintf(stderr, "recur: unexpected argument '%s'\n", a);
            return -1;
        }
        snprintf(key, sizeof key, " %s ", a + 2);
        char padded[512];
        snprintf(padded, sizeof padded, " %s ", allowed);
        if (!strstr(padded, key)) {
            fprintf(stderr, "recur: unknown option '%s' for this command\n", a);
            return -1;
        }
        if (strcmp(a, "--ignore-eos") == 0) {
            o->ignore_eos = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "recur: option '%s' needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--tokens")) o->tokens = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "--state-in")) o->state_in = v;
        else if (!strcmp(a, "--state-out")) o->state_out = v;
        else if (!strcmp(a, "--connect")) o->connect = v;
        else if (!strcmp(a, "--curve-keys")) o->curve_keys = v;
        else if (!strcmp(a, "--session-dir")) o->session_dir = v;
        else if (!strcmp(a, "--slots")) rc = parse_long(a, v, 0, 1L << 20, &o->slots);
        else if (!strcmp(a, "--heartbeat-ms")) rc = parse_long(a, v, 1, 3600000, &o->heartbeat_ms);
        else if (!strcmp(a, "--idle-limit-ms")) rc = parse_long(a, v, 1, 86400000, &o->idle_limit_ms);
        else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "recur: --backend expects cpu or cuda, got '%s'\n", v);
                rc = -1;
            }
            o->backend = v;
        } else if (!strcmp(a, "--weights") && recur_dtype_parse_weights(v, &o->weights) == 0) {
            /* f32|bf16|int8|fp8 (recur_dtype.h) */
        } else if (!strcmp(a, "--weights") || !strcmp(a, "--state")) {
            recur_dtype_t *dt = !strcmp(a, "--weights") ? &o->weights : &o->state;
            if (!strcmp(v, "bf16")) *dt = RECUR_DTYPE_BF16;
            else if (!strcmp(v, "f32")) *dt = RECUR_DTYPE_F32;
            else {
                fprintf(stderr, "recur: %s expects %s, got '%s'\n", a,
                        !strcmp(a, "--weights") ? "f32, bf16, int8 or fp8" : "bf16 or f32", v);
                rc = -1;
            }
        }
        else if (!strcmp(a, "--max-tokens")) rc = parse_long(a, v, 0, 1L << 30, &o->max_tokens);
        else if (!strcmp(a, "--top-k")) rc = parse_long(a, v, 0, INT32_MAX, &o->top_k);
        else if (!strcmp(a, "--chunk")) rc = parse_long(a, v, 1, 1 << 20, &o->chunk);
        else if (!strcmp(a, "--tp")) rc = parse_long(a, v, 1, 1024, &o->tp);
        else if (!strcmp(a, "--pp")) rc = parse_long(a, v, 1, 1024, &o->pp);
        else if (!strcmp(a, "--layers")) rc = parse_long(a, v, 1, 1024, &o->layers);
        else if (!strcmp(a, "--temperature")) rc = parse_double(a, v, 0.0, 100.0, &o->temperature);
        else if (!strcmp(a, "--top-p")) rc = parse_double(a, v, 1e-9, 1.0, &o->top_p);
        else if (!strcmp(a, "--min-p")) rc = parse_double(a, v, 0.0, 1.0, &o->min_p);
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "recur: --seed expects a non-negative integer, got '%s'\n", v);
                rc = -1;
            }
        } else if (!strcmp(a, "--log-level")) {
            int lvl = recur_log_level_parse(v);
            if (lvl < 0) {
                fprintf(stderr, "recur: --log-level expects debug|info|warn|error|none, got '%s'\n", v);
                rc = -1;
            } else {
                recur_log_set_level((recur_log_level_t)lvl);
            }
        }
        if (rc) return -1;
    }
    return 0;
}

/* "1,2,3" -> ids; every element an integer in [0, INT32_MAX]. */
static int parse_token_list(const char *s, int32_t **ids, size_t *n) {
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    size_t k = 0;
    const char *p = s;
    while (1) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT32_MAX || (*end != ',' && *end != '\0')) {
            fprintf(stderr, "recur: --tokens expects comma-separated non-negative integers, got '%s'\n", s);
            free(v);
            return -1;
        }
        v[k++] = (int32_t)x;
        if (*end == '\0') break;
        p = end + 1;
    }
    *ids = v;
    *n = k;
    return 0;
}

/* ---------------------------------------------------------------- model and tokenizer lookup */

/* The tokenizer for the loaded model (coordinator/recur_tokenizer_pick.h: the same choice
 * `recur serve` makes). */
static recur_status_t load_tokenizer(const opts_t *o, const recur_model_info_t *info, recur_tokenizer_t **tok) {
    return recur_tokenizer_pick(o->tokenizer, o->model, info->arch_name, info->n_vocab, tok);
}

/* The prompt's tokens, after the model's BOS when it has one (xLSTM was trained with
 * BOS = 0 at the start of every document; `recur logits` never adds it). */
static recur_status_t encode_prompt(const recur_tokenizer_t *tok, const recur_model_info_t *info, const char *text,
                                    int32_t **ids, size_t *n_ids) {
    int32_t *raw = NULL;
    size_t n = 0;
    RECUR_TRY(recur_tokenizer_encode(tok, text, strlen(text), &raw, &n));
    if (info->bos_id < 0) {
        *ids = raw;
        *n_ids = n;
        return RECUR_OK;
    }
    int32_t *with = malloc((n + 1) * sizeof *with);
    if (!with) {
        free(raw);
        return RECUR_E_NOMEM;
    }
    with[0] = info->bos_id;
    memcpy(with + 1, raw, n * sizeof *raw);
    free(raw);
    *ids = with;
    *n_ids = n + 1;
    return RECUR_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A command's view of the rank grid: off for a plain run, else MPI is up and comm joins
 * this rank to the others. */
typedef struct dist {
    int on;
    recur_grid_t grid;
    recur_comm_t *comm;
    char tmpdir[PATH_MAX]; /* a random-weight xLSTM's config.json lives here while loaded */
} dist_t;

/* Ranks when asked for a split, or when started by mpirun (even with one rank). */
static int wants_mpi(const opts_t *o) {
    return o->tp * o->pp > 1 || getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

/* The backend (--backend, default cpu; --weights, default bf16 on cuda; under MPI the GPU of
 * the rank's local index) and a model with one request slot (slot 1), pieces of o->chunk
 * tokens: the whole model, or this rank's shard of a --tp x --pp split. */
static recur_status_t open_model(const opts_t *o, dist_t *d, recur_backend_t **b, recur_model_t **m) {
    recur_model_params_t mp = recur_model_default_params();
    mp.n_slots = o->slots >= 0 ? (int32_t)o->slots : 2;
    mp.max_tokens = (int32_t)o->chunk;
    mp.state_dtype = o->state;
    recur_backend_params_t bp = recur_backend_default_params();
    bp.weight_dtype = o->weights;
    if (wants_mpi(o)) {
        RECUR_TRY(recur_comm_world_init(NULL, NULL, (int32_t)o->tp, (int32_t)o->pp, &d->grid));
        d->on = 1;
        bp.device = d->grid.local_rank;
    }
    RECUR_TRY(recur_backend_init(o->backend ? o->backend : "cpu", &bp, b));
    if (d->on) {
        RECUR_TRY(recur_comm_create(&d->grid, *b, &d->comm));
        mp.comm = d->comm;
    }
    if (recur_bench_is_virtual(o->model)) /* random weights at a 7B shape (recur bench --help) */
        RECUR_TRY(recur_bench_load_virtual(o->model, (int32_t)o->layers, RECUR_DTYPE_BF16, *b, &mp, m, d->tmpdir,
                                           sizeof d->tmpdir));
    else
        RECUR_TRY(recur_model_load(o->model, *b, &mp, m));
    return recur_model_state_reset(*m, 1);
}

static void close_model(dist_t *d, recur_backend_t *b, recur_model_t *m) {
    recur_model_free(m);
    recur_bench_remove_tmpdir(d->tmpdir);
    recur_comm_free(d->comm);
    recur_backend_free(b);
    if (d->on) recur_comm_world_finalize();
}

/* A rank that fails after the ranks started working together may leave the others waiting
 * for it in a collective: end the whole job. */
static int dist_fail(const dist_t *d, int rc) {
    if (rc == 1 && d->on && d->comm && d->grid.world_size > 1) {
        recur_log_err("rank %d on %s failed: stopping every rank", d->grid.world_rank, d->grid.host);
        recur_comm_world_abort(rc);
    }
    return rc;
}

/* The file of this rank's state shard under --state-in/--state-out F (recur_state_file.h). */
static recur_status_t shard_file(const dist_t *d, const char *base, char *out, size_t n) {
    return recur_state_shard_path(base, d->on ? d->grid.world_size : 1, d->grid.pp_rank, d->grid.tp_rank, out, n);
}

/* ---------------------------------------------------------------- commands */

static int cmd_logits(int argc, char **argv) {
    opts_t o = {.chunk = 128, .weights = RECUR_DTYPE_BF16, .state = RECUR_DTYPE_F32, .tp = 1, .pp = 1, .slots = -1};
    if (parse_opts(argc, argv, 2, "model tokens out state-in state-out chunk backend weights state log-level tp pp layers", &o))
        goto usage;
    if (!o.model || !o.tokens || !o.out) {
        fprintf(stderr, "recur logits: --model, --tokens and --out are required\n");
        goto usage;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (parse_token_list(o.tokens, &ids, &n_ids)) goto usage;

    int rc = 1, loaded = 0;
    dist_t d = {0};
    recur_backend_t *b = NULL;
    recur_model_t *m = NULL;
    float *logits = NULL;
    void *state = NULL;
    FILE *f = NULL;
    char path[PATH_MAX + 64];
    if (open_model(&o, &d, &b, &m) != RECUR_OK) goto done;
    loaded = 1;
    const recur_model_info_t *info = recur_model_info(m);
    const recur_model_shard_t *sh = &info->shard;
    const int last_stage = sh->pp_rank == sh->pp - 1;      /* has the logits */
    const int writer = last_stage && sh->tp_rank == 0;     /* writes them    */
    if (o.state_in || o.state_out) {
        state = malloc(info->state_bytes);
        if (!state) goto done;
    }
    if (o.state_in) {
        /* raw slot bytes (this rank's shard): a file saved with the other --state dtype or
         * another layout has another size */
        char why[512];
        if (shard_file(&d, o.state_in, path, sizeof path) != RECUR_OK) goto done;
        if (recur_state_file_read(path, state, info->state_bytes, why, sizeof why) != RECUR_OK) {
            recur_log_err("%s (this model's state uses the %s state layout)", why,
                          recur_dtype_name(info->state_dtype));
            goto done;
        }
        if (recur_model_state_set(m, 1, state) != RECUR_OK) goto done;
    }
    logits = last_stage ? malloc(n_ids * (size_t)info->n_vocab * sizeof(float)) : NULL;
    if (last_stage && !logits) {
        recur_log_err("out of memory for %zu x %d logits", n_ids, info->n_vocab);
        goto done;
    }
    int32_t len = (int32_t)n_ids, slot = 1;
    recur_batch_t bt = {.n_seq = 1, .tokens = ids, .seq_len = &len, .slot = &slot, .logits = RECUR_LOGITS_ALL};
    if (n_ids > INT32_MAX || recur_model_forward(m, &bt, logits) != RECUR_OK) goto done;
    if (writer) {
        f = fopen(o.out, "wb");
        if (!f || fwrite(logits, sizeof(float), n_ids * (size_t)info->n_vocab, f) != n_ids * (size_t)info->n_vocab ||
            fclose(f) != 0) {
            f = NULL;
            recur_log_err("%s: cannot write the logits: %s", o.out, strerror(errno));
            goto done;
        }
        f = NULL;
    }
    if (o.state_out) {
        if (recur_model_state_get(m, 1, state) != RECUR_OK) goto done;
        if (shard_file(&d, o.state_out, path, sizeof path) != RECUR_OK ||
            recur_state_file_write(path, state, info->state_bytes, NULL, 0) != RECUR_OK)
            goto done;
        /* rank 0 of a split also writes the manifest */
        if (d.on && d.grid.world_size > 1 && d.grid.world_rank == 0 &&
            recur_state_write_manifest(o.state_out, info, d.grid.tp, d.grid.pp, NULL, 0) != RECUR_OK)
            goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    free(ids);
    free(logits);
    free(state);
    if (loaded) rc = dist_fail(&d, rc);
    close_model(&d, b, m);
    return rc;
usage:
    usage(stderr);
    return RECUR_EXIT_USAGE;
}

static int cmd_generate(int argc, char **argv) {
    opts_t o = {.max_tokens = 200, .temperature = 1.0, .top_p = 1.0, .chunk = 128, .weights = RECUR_DTYPE_BF16,
                .state = RECUR_DTYPE_F32, .tp = 1, .pp = 1, .slots = -1};
    if (parse_opts(argc, argv, 2,
                   "model prompt max-tokens temperature top-p top-k min-p seed tokenizer ignore-eos backend weights "
                   "state state-in log-level tp pp", &o))
        goto usage;
    if (!o.prompt) {
        fprintf(stderr, "recur generate: --prompt is required\n");
        goto usage;
    }
    char bundled[PATH_MAX + 64];
    if (!o.model) {
        if (recur_bundled_path(RECUR_BUNDLED_MODEL, bundled, sizeof bundled) != 0) {
            fprintf(stderr, "recur: the bundled model %s was not found (set RECUR_MODELS_DIR or pass --model)\n",
                    RECUR_BUNDLED_MODEL);
            return 1;
        }
        o.model = bundled;
    }

    int rc = 1, loaded = 0;
    dist_t d = {0};
    recur_backend_t *b = NULL;
    recur_model_t *m = NULL;
    recur_tokenizer_t *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (open_model(&o, &d, &b, &m) != RECUR_OK) goto done;
    loaded = 1;
    const recur_model_info_t *info = recur_model_info(m);
    /* every rank runs the same steps (they all get the sampled tokens); rank 0 prints */
    FILE *text_out = d.on && d.grid.world_rank != 0 ? NULL : stdout;
    if (load_tokenizer(&o, info, &tok) != RECUR_OK) goto done;
    if (recur_tokenizer_vocab_size(tok) > info->n_vocab) {
        recur_log_err("the tokenizer has %d tokens but the model only %d", recur_tokenizer_vocab_size(tok),
                      info->n_vocab);
        goto done;
    }
    /* Sampling runs on the backend (its sample op); the step counter makes each token's
     * draw depend only on (seed, position), so a seed reproduces a text. */
    recur_sample_row_t sp = {.temperature = (float)o.temperature, .top_k = (int32_t)o.top_k, .top_p = (float)o.top_p,
                             .min_p = (float)o.min_p, .seed = o.seed, .step = 0};
    if (encode_prompt(tok, info, o.prompt, &ids, &n_ids) != RECUR_OK) goto done;
    if (n_ids == 0) {
        fprintf(stderr, "recur generate: the prompt is empty; give at least one character\n");
        rc = RECUR_EXIT_USAGE;
        goto done;
    }
    if (n_ids > INT32_MAX) goto done;
    if (o.state_in) {   /* start from a saved state (as recur logits --state-in) */
        void *st = malloc(info->state_bytes);
        char why[512], path[PATH_MAX + 64];
        recur_status_t s = st ? shard_file(&d, o.state_in, path, sizeof path) : RECUR_E_NOMEM;
        if (s == RECUR_OK) s = recur_state_file_read(path, st, info->state_bytes, why, sizeof why);
        if (s == RECUR_E_IO || s == RECUR_E_FORMAT) recur_log_err("%s", why);
        if (s == RECUR_OK) s = recur_model_state_set(m, 1, st);
        free(st);
        if (s != RECUR_OK) goto done;
    }

    int32_t slot = 1, len = (int32_t)n_ids, next = 0;
    /* ids past the tokenizer's (padding rows of a vocabulary) are never sampled */
    int32_t eos = o.ignore_eos ? -1 : recur_tokenizer_eos(tok), n_vocab_tok = recur_tokenizer_vocab_size(tok);
    recur_batch_t bt = {.n_seq = 1, .tokens = ids, .seq_len = &len, .slot = &slot, .logits = RECUR_LOGITS_LAST};
    double t0 = now_s();
    if (o.max_tokens == 0) bt.logits = RECUR_LOGITS_NONE;
    if ((o.max_tokens == 0 ? recur_model_forward(m, &bt, NULL)
                           : recur_model_forward_sample(m, &bt, &sp, n_vocab_tok, &next)) != RECUR_OK)
        goto done;
    double t1 = now_s();
    long n_gen = 0;
    while (n_gen < o.max_tokens) {
        n_gen++;
        if (next == eos) break;
        const char *bytes;
        size_t nb;
        if (recur_tokenizer_token_bytes(tok, next, &bytes, &nb) != RECUR_OK) goto done;
        if (text_out && nb && fwrite(bytes, 1, nb, text_out) != nb) goto done;
        if (text_out) fflush(text_out);
        if (n_gen == o.max_tokens) break;
        int32_t cur = next;
        len = 1;
        bt.tokens = &cur;
        sp.step++;
        if (recur_model_forward_sample(m, &bt, &sp, n_vocab_tok, &next) != RECUR_OK) goto done;
    }
    double t2 = now_s();
    if (text_out) fputc('\n', text_out);
    recur_log_info("prompt %zu tokens in %.3f s (%.1f tok/s); generated %ld tokens in %.3f s (%.1f tok/s)", n_ids,
                   t1 - t0, (double)n_ids / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen, t2 - t1,
                   (double)n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    rc = 0;
done:
    free(ids);
    recur_tokenizer_free(tok);
    if (loaded) rc = dist_fail(&d, rc);
    close_model(&d, b, m);
    return rc;
usage:
    usage(stderr);
    return RECUR_EXIT_USAGE;
}

/* World rank 0 by the launcher's environment (Open MPI, PMIx, MPICH), or no launcher: known
 * before MPI starts, for checks that only rank 0 needs to pass. */
static int env_rank0(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v) return atoi(v) == 0;
    }
    return 1;
}

/* recur keygen --out DIR [--force]: the CURVE key files of recur_curve.h. */
static int cmd_keygen(int argc, char **argv) {
    const char *dir = NULL;
    int force = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--force")) force = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) dir = argv[++i];
        else {
            fprintf(stderr, "recur keygen: unexpected argument '%s'\nusage: recur keygen --out DIR [--force]\n",
                    argv[i]);
            return RECUR_EXIT_USAGE;
        }
    }
    if (!dir) {
        fprintf(stderr, "recur keygen: --out DIR is required\nusage: recur keygen --out DIR [--force]\n");
        return RECUR_EXIT_USAGE;
    }
    char msg[1024];
    recur_status_t s = recur_curve_keygen(dir, force, msg, sizeof msg);
    if (s != RECUR_OK) {
        fprintf(stderr, "recur keygen: %s\n", msg);
        return s == RECUR_E_INVAL ? RECUR_EXIT_USAGE : 1;
    }
    printf("recur keygen: wrote %s/server.key, server.pub, worker.key, worker.pub (the .key files mode 0600)\n"
           "  recur serve --curve-keys %s ...     (reads server.key, worker.pub)\n"
           "  recur worker --curve-keys %s ...    (reads worker.key, server.pub)\n", dir, dir, dir);
    return 0;
}

static int cmd_worker(int argc, char **argv) {
    opts_t o = {.max_tokens = 512, .weights = RECUR_DTYPE_BF16, .state = RECUR_DTYPE_F32, .tp = 1, .pp = 1,
                .slots = -1, .heartbeat_ms = 1000, .idle_limit_ms = 30000};
    if (parse_opts(argc, argv, 2,
                   "connect model backend weights state slots max-tokens tp pp heartbeat-ms idle-limit-ms log-level "
                   "curve-keys session-dir",
                   &o))
        goto usage;
    if (o.curve_keys && env_rank0()) {
        /* rank 0 reads them again to connect; checked here too so that bad keys stop the
         * launch before a model is loaded */
        recur_curve_keys_t k;
        char msg[512];
        recur_status_t ks = recur_curve_load_client(o.curve_keys, &k, msg, sizeof msg);
        memset(&k, 0, sizeof k);
        if (ks != RECUR_OK) {
            fprintf(stderr, "recur worker: --curve-keys: %s\n", msg);
            return 1;
        }
    }
    if (!o.connect || !o.model) {
        fprintf(stderr, "recur worker: --connect and --model are required\n");
        goto usage;
    }
    if (o.max_tokens < 1) {
        fprintf(stderr, "recur worker: --max-tokens must be >= 1\n");
        goto usage;
    }
    if (o.slots == 1) {
        fprintf(stderr, "recur worker: --slots must be 0 (fit to memory) or >= 2 (slot 0 is padding)\n");
        goto usage;
    }
    int on_cuda = o.backend && !strcmp(o.backend, "cuda");
    if (o.slots < 0) o.slots = on_cuda ? 0 : 64;   /* a GPU's memory is the pool; a CPU run stays small */
    o.chunk = o.max_tokens;

    int rc = 1, loaded = 0, code = RECUR_WORKER_EXIT_FAILED;
    dist_t d = {0};
    recur_backend_t *b = NULL;
    recur_model_t *m = NULL;
    char ckpt[RECUR_PROTO_MAX_NAME_BYTES], chash[96];
    if (recur_bench_is_virtual(o.model)) {
        snprintf(ckpt, sizeof ckpt, "virtual:%s", o.model);
        snprintf(chash, sizeof chash, "%.90s", ckpt);   /* the spec is the content */
    } else if (recur_worker_checkpoint_id(o.model, ckpt, sizeof ckpt) != RECUR_OK ||
               recur_ckpt_content_hash(o.model, chash, sizeof chash) != RECUR_OK) {
        goto done;
    }
    if (open_model(&o, &d, &b, &m) != RECUR_OK) goto done;
    loaded = 1;
    recur_worker_params_t wp = recur_worker_default_params();
    wp.connect = o.connect;
    wp.backend = o.backend ? o.backend : "cpu";
    wp.checkpoint_id = ckpt;
    wp.content_hash = chash;
    wp.software_version = RECUR_VERSION;
    wp.heartbeat_ms = (int32_t)o.heartbeat_ms;
    wp.idle_limit_ms = (int32_t)o.idle_limit_ms;
    wp.curve_keys_dir = o.curve_keys;
    wp.session_dir = o.session_dir;
    if (recur_worker_run(m, d.comm, &wp, &code) != RECUR_OK) goto done;   /* the ranks may disagree: abort */
    rc = code;
    loaded = 0;   /* every rank stopped together: no abort */
done:
    if (loaded) rc = dist_fail(&d, rc);
    close_model(&d, b, m);
    return rc;
usage:
    usage(stderr);
    return RECUR_EXIT_USAGE;
}

int main(int argc, char **argv) {
    const char *env = getenv("RECUR_LOG");
    recur_log_set_level(RECUR_LOG_WARN);
    if (env && recur_log_level_parse(env) >= 0) recur_log_set_level((recur_log_level_t)recur_log_level_parse(env));
    if (argc < 2) {
        usage(stderr);
        return RECUR_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return cmd_generate(argc, argv);
    if (!strcmp(cmd, "logits")) return cmd_logits(argc, argv);
    if (!strcmp(cmd, "bench")) return recur_bench_main(argc, argv, 2);
    if (!strcmp(cmd, "worker")) return cmd_worker(argc, argv);
    if (!strcmp(cmd, "keygen")) return cmd_keygen(argc, argv);
    if (!strcmp(cmd, "serve")) return recur_serve_main(argc, argv, 2);
    if (!strcmp(cmd, "client")) return recur_client_main(argc, argv, 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("recur %s\n", RECUR_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "recur: unknown command '%s'\n", cmd);
    usage(stderr);
    return RECUR_EXIT_USAGE;
}
