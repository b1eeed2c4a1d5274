/* recur_serve.c: `recur serve` (the coordinator in this process, the worker group as a
 * child process) and `recur client` (a small streaming client of the ZeroMQ API).
 *
 * serve: binds the client and worker endpoints, launches `recur worker --connect <worker
 * endpoint>` (or `mpirun -np T*P recur worker --tp T --pp P ...`, the launcher taken from
 * $RECUR_MPIRUN, default RECUR_SERVE_MPIRUN below) in its own process group
 * (so a terminal's Ctrl-C reaches only serve, which then shuts the workers down in order),
 * prints "recur serve: listening on ENDPOINT" once the workers are ready, and runs the
 * coordinator loop. The OpenAI-compatible HTTP API (coordinator/recur_http.h) runs in this
 * process too, on --host/--port, as a client of the coordinator over inproc://; serve prints
 * "recur serve: http on http://HOST:PORT" next to the protobuf endpoint. Without --model
 * the bundled tiny model is served. SIGINT/SIGTERM: Shutdown to the workers (open HTTP
 * streams end with an error event), stop the HTTP server, wait for the child (10 s, then
 * SIGKILL), exit 0. The child exiting on its own: every request ends with an error, serve
 * exits 1. If serve itself is killed (SIGKILL), the workers exit by their idle limit. */
#include "recur_serve.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_chat_template.h"
#include "recur_coord.h"
#include "recur_curve.h"
#include "recur_http.h"
#include "recur_dtype.h"
#include "recur_log.h"
#include "recur_metrics.h"
#include "recur_tokenizer_pick.h"
#include "recur_msgsock.h"
#include "recur_proto.h"

/* The launcher of a worker group of several ranks when $RECUR_MPIRUN is not set. The group
 * is on this node, so the ranks talk over shared memory (pml ob1, btl self,vader): no TCP
 * BTL, whose listener binds every interface, and no UCX; ORTE's own traffic stays on
 * loopback. (Open MPI 4.1's mpirun still listens on the wildcard address for ORTE daemons,
 * with no option to bind it elsewhere: README "Security".) */
#define RECUR_SERVE_MPIRUN \
    "mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl self,vader --mca oob_tcp_if_include lo"

/* Signals seen (SIGINT/SIGTERM): the first starts a graceful drain, the second stops at
 * once. Written by the handler only. */
static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    if (g_stop < 2) g_stop++;
}

static int arg_long(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "recur: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

typedef struct serve_state {
    pid_t child;        /* -1: external workers (started by the user's mpirun) */
    int child_status;   /* -1 while it runs; the last status when serve gave up on it */
    int announced;
    long drain_s;       /* the grace period of a drain */
    double drain_deadline;   /* 0: not draining */
    char **args;        /* the worker group's command line */
    long restarts, max_restarts;
    uint64_t lost_seen; /* recur_coord_lost_count at the last look */
    const char *http_host;   /* for the announcement */
    int http_port;
} serve_state_t;

/* Starts the worker group in its own process group (so a terminal's Ctrl-C reaches only
 * serve) with a parent-death signal, so it cannot outlive a serve that is killed. */
static pid_t launch_group(char **args) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) {
        if (pid > 0) setpgid(pid, pid);
        return pid;
    }
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    /* SIGTERM when serve dies: mpirun forwards it to its ranks, a lone worker exits */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);   /* serve died before prctl took effect */
    execvp(args[0], args);
    fprintf(stderr, "recur serve: cannot run %s: %s\n", args[0], strerror(errno));
    _exit(127);
}

/* SIGKILL to pid and every process below it. mpirun may put its ranks in process groups
 * of their own, so killing mpirun's group can leave a rank behind (stopped or blocked in a
 * collective forever): walk /proc for the descendants first, then kill them all. */
static void kill_tree(pid_t root) {
    enum { MAX_PROCS = 4096 };
    static pid_t pids[MAX_PROCS], ppids[MAX_PROCS];   /* one caller (the loop thread) */
    int n = 0;
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && (e = readdir(d)) != NULL && n < MAX_PROCS;) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = '\0';
        const char *rp = strrchr(buf, ')');   /* "pid (comm) state ppid ...": comm may hold spaces */
        char state;
        int ppid;
        if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2) continue;
        pids[n] = (pid_t)atoi(e->d_name), ppids[n] = (pid_t)ppid, n++;
    }
    if (d) closedir(d);
    pid_t found[MAX_PROCS];
    int nf = 0;
    found[nf++] = root;
    for (int i = 0; i < nf; i++)
        for (int j = 0; j < n && nf < MAX_PROCS; j++)
            if (ppids[j] == found[i]) found[nf++] = pids[j];
    for (int i = nf - 1; i >= 0; i--) kill(found[i], SIGKILL);
}

/* The worker group ended or was declared lost: fail its requests and start it again (up to
 * max_restarts times, 1 s apart). Returns 1 when serve should stop instead. */
static int restart_group(recur_coord_t *c, serve_state_t *st, const char *why) {
    fprintf(stderr, "recur serve: %s\n", why);
    recur_coord_fail_all(c, why);
    if (st->restarts >= st->max_restarts) {
        fprintf(stderr, "recur serve: %ld restarts used (--max-worker-restarts): stopping\n", st->restarts);
        return 1;
    }
    st->restarts++;
    usleep(1000000);   /* a crash loop does not spin; mpirun releases its ports */
    st->child = launch_group(st->args);
    if (st->child < 0) {
        fprintf(stderr, "recur serve: cannot restart the worker group: %s\n", strerror(errno));
        return 1;
    }
    st->child_status = -1;
    fprintf(stderr, "recur serve: worker group restarted (restart %ld of %ld, pid %d)\n", st->restarts,
            st->max_restarts, (int)st->child);
    return 0;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int serve_tick(recur_coord_t *c, void *ud) {
    serve_state_t *st = ud;
    if (g_stop >= 2) return 1;   /* a second signal: stop now */
    if (g_stop == 1) {
        if (st->drain_deadline == 0) {
            st->drain_deadline = mono_s() + (double)st->drain_s;
            recur_coord_drain(c);
            fprintf(stderr, "recur serve: draining: %d requests in flight, up to %ld s (a second signal stops now)\n",
                    recur_coord_live_requests(c), st->drain_s);
        }
        if (recur_coord_live_requests(c) == 0) return 1;
        if (mono_s() >= st->drain_deadline) {
            fprintf(stderr, "recur serve: drain deadline passed with %d requests in flight: stopping\n",
                    recur_coord_live_requests(c));
            return 1;
        }
    }
    int status;
    if (st->child > 0 && recur_coord_lost_count(c) != st->lost_seen) {
        /* a rank stopped answering (SIGSTOP, a hang): kill the whole group; its exit is
         * noticed below and it is started again */
        st->lost_seen = recur_coord_lost_count(c);
        fprintf(stderr, "recur serve: the worker group stopped answering: killing it (pid %d)\n", (int)st->child);
        kill_tree(st->child);
        kill(-st->child, SIGKILL);
    }
    if (st->child > 0 && waitpid(st->child, &status, WNOHANG) == st->child) {
        char why[160];
        snprintf(why, sizeof why, "the worker group exited (%s %d)", WIFEXITED(status) ? "status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        kill(-st->child, SIGKILL);   /* ranks mpirun left behind, if any */
        st->child_status = status;
        st->child = 0;
        if (g_stop || restart_group(c, st, why)) return 1;
    }
    if (!st->announced && recur_coord_ready(c)) {
        printf("recur serve: listening on %s\n", recur_coord_client_endpoint(c));
        int v6 = strchr(st->http_host, ':') != NULL;
        printf("recur serve: http on http://%s%s%s:%d\n", v6 ? "[" : "", st->http_host, v6 ? "]" : "", st->http_port);
        fflush(stdout);
        st->announced = 1;
    }
    return 0;
}

static void serve_usage(FILE *to) {
    fprintf(to,
            "usage: recur serve [--model PATH] [--backend cpu|cuda] [--weights f32|bf16|int8|fp8]\n"
            "                   [--tp T --pp P] [--bind tcp://127.0.0.1:PORT]\n"
            "                   [--worker-bind tcp://127.0.0.1:PORT] [--slots N] [--max-batch N] [--token-budget N]\n"
            "                   [--max-queue N] [--queue-timeout-ms N] [--max-prompt N] [--max-tokens N]\n"
            "                   [--tokenizer PATH] [--worker-timeout-ms N] [--log-level L]\n"
            "                   [--host H] [--port P] [--api-key KEY]... [--api-key-file PATH] [--max-body-bytes N]\n"
            "                   [--max-import-bytes N] [--max-requests-per-key N]\n"
            "                   [--chat-template PATH] [--served-model-name NAME]\n"
            "                   [--external-workers] [--drain-timeout-s N] [--max-worker-restarts N]\n"
            "                   [--curve-keys DIR]\n"
            "  Serves one model: ZeroMQ/protobuf clients on --bind, the OpenAI-compatible HTTP API on\n"
            "  --host (default 127.0.0.1) and --port (default 8000; 0 = a free port, printed).\n"
            "  Without --model: the bundled tiny RWKV-7. --api-key (repeatable) / --api-key-file (one key\n"
            "  per line, '#' comments): every route but /health/live and /health/ready then needs\n"
            "  'Authorization: Bearer KEY'. --max-body-bytes: larger HTTP bodies get 413 (default 4 MiB).\n"
            "  --max-import-bytes: the largest session import (POST /v1/sessions/.../import; default 1 GiB).\n"
            "  --max-requests-per-key N: an API key with N requests in flight gets 429 for the next (default 0:\n"
            "    no limit).\n"
            "  --chat-template: a template file (docs/chat-templates.md) instead of the built-in one\n"
            "  (RWKV World for RWKV-7, plain for xLSTM). --served-model-name: the model id clients use\n"
            "  (default: the model file's name without .bin/.safetensors). README: HTTP API.\n"
            "                   [--state f32|bf16] [--session-dir PATH] [--max-sessions N] [--session-slots N]\n"
            "                   [--session-host-bytes N] [--session-ttl-s N] [--state-variant NAME=PATH ...]\n"
            "                   [--prefix-cache-entries N] [--prefix-cache-block N]\n"
            "  --external-workers: start no worker group; the workers are launched separately (multi-node:\n"
            "    mpirun --hostfile H -np T*P recur worker --connect <the printed worker endpoint> --model PATH\n"
            "    --tp T --pp P [--backend cuda]); bind --worker-bind to an address the nodes can reach.\n"
            "  SIGTERM/SIGINT: drain (no new requests, Health NOT_SERVING; the requests in flight finish)\n"
            "    for up to --drain-timeout-s (default 30), then stop the workers; a second signal stops at once.\n"
            "  A worker group that exits, or stops answering for --worker-timeout-ms, fails its requests and is\n"
            "    started again, up to --max-worker-restarts times (default 5); then serve exits 1.\n"
            "  Sessions (GenerateRequest.session_id, SessionRequest): --session-dir: a checkpoint after every turn\n"
            "    (a directory the coordinator and every worker rank can reach; sessions survive restarts, under any\n"
            "    --tp/--pp); --max-sessions (default 10000); --session-slots: idle sessions kept in state slots\n"
            "    (default half of --slots); --session-host-bytes: workers' host memory per rank for idle sessions\n"
            "    (default 1073741824; 0: none); --session-ttl-s: delete sessions idle this long (default 0: never).\n"
            "  --state-variant NAME=PATH: requests naming model '<id>:NAME' start from the RWKV-7 state-tuning file\n"
            "    PATH (safetensors of blocks.N.att.time_state; scripts/pth_to_safetensors.py converts a .pth).\n"
            "  --prefix-cache-entries N: keep up to N states of prompt prefixes that several requests shared (a\n"
            "    system prompt), in the workers' host memory, at multiples of --prefix-cache-block tokens (default 32);\n"
            "    a prompt starting with one prefills only the rest. Default 0 (off).\n"
            "  --state f32|bf16: how the workers store the recurrent state (default f32).\n"
            "  --curve-keys DIR: coordinator <-> worker traffic authenticated and encrypted with ZeroMQ CURVE; DIR\n"
            "    from `recur keygen --out DIR`. serve reads DIR/server.key and DIR/worker.pub (the worker keys it\n"
            "    accepts) and starts its workers with --curve-keys DIR (they read worker.key and server.pub);\n"
            "    external workers need the same flag. Workers without the right keys are refused and logged.\n");
}

/* The default served model name: the file's (or directory's) name, without a model-file
 * extension; for a model.safetensors[.index.json] inside a directory, the directory's. */
static void default_model_name(const char *path, char *out, size_t n) {
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t l = strlen(tmp);
    while (l > 1 && tmp[l - 1] == '/') tmp[--l] = '\0';
    char *base = strrchr(tmp, '/');
    base = base ? base + 1 : tmp;
    if ((!strcmp(base, "model.safetensors") || !strcmp(base, "model.safetensors.index.json")) && base > tmp + 1) {
        base[-1] = '\0';
        char *up = strrchr(tmp, '/');
        base = up ? up + 1 : tmp;
    }
    static const char *const ext[] = {".safetensors", ".bin", ".pth"};
    size_t bl = strlen(base);
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
        size_t el = strlen(ext[i]);
        if (bl > el && !strcmp(base + bl - el, ext[i])) {
            base[bl - el] = '\0';
            break;
        }
    }
    snprintf(out, n, "%s", *base ? base : "default");
}

int recur_serve_main(int argc, char **argv, int first) {
    recur_coord_config_t cfg = recur_coord_default_config();
    const char *model = NULL, *backend = "cpu", *slots_s = "64", *weights = NULL;
    char bind_c[256] = "tcp://127.0.0.1:0", bind_w[256] = "tcp://127.0.0.1:0";
    long tp = 1, pp = 1, v = 0, drain_s = 30, max_restarts = 5;
    int external = 0;
    recur_http_config_t hc = recur_http_default_config();
    const char *key_file = NULL, *template_path = NULL, *served = NULL;
    const char *keys[64];
    size_t n_keys = 0;
    hc.port = 8000;
    const char *state_dtype = NULL;
    const char *curve_dir = NULL;
    recur_curve_keys_t curve;   /* the coordinator reads it at create */
    enum { MAX_VARIANTS = 64 };
    const char *var_names[MAX_VARIANTS], *var_paths[MAX_VARIANTS];
    char var_buf[MAX_VARIANTS][512];
    int n_var = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            serve_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--external-workers")) {
            external = 1;
            continue;
        }
        if (!val) {
            fprintf(stderr, "recur serve: '%s' needs a value\n", a);
            serve_usage(stderr);
            return 2;
        }
        i++;
        int rc = 0;
        if (!strcmp(a, "--model")) model = val;
        else if (!strcmp(a, "--backend")) backend = val;
        else if (!strcmp(a, "--weights")) { /* passed on to the workers */
            recur_dtype_t wd;
            weights = val;
            if (recur_dtype_parse_weights(val, &wd)) rc = -1, fprintf(stderr, "recur serve: --weights f32|bf16|int8|fp8\n");
        }
        else if (!strcmp(a, "--tokenizer")) cfg.tokenizer_path = val;
        else if (!strcmp(a, "--bind")) snprintf(bind_c, sizeof bind_c, "%s", val);
        else if (!strcmp(a, "--worker-bind")) snprintf(bind_w, sizeof bind_w, "%s", val);
        else if (!strcmp(a, "--tp")) rc = arg_long(a, val, 1, 1024, &tp);
        else if (!strcmp(a, "--pp")) rc = arg_long(a, val, 1, 1024, &pp);
        else if (!strcmp(a, "--slots")) { rc = arg_long(a, val, 2, 1 << 20, &v); slots_s = val; cfg.sched.n_slots = (int32_t)v; }
        else if (!strcmp(a, "--max-batch")) { rc = arg_long(a, val, 1, 1 << 20, &v); cfg.sched.max_batch = (int32_t)v; }
        else if (!strcmp(a, "--token-budget")) { rc = arg_long(a, val, 1, 1 << 24, &v); cfg.sched.token_budget = (int32_t)v; }
        else if (!strcmp(a, "--max-queue")) { rc = arg_long(a, val, 1, 1 << 24, &v); cfg.sched.max_queue = (int32_t)v; }
        else if (!strcmp(a, "--queue-timeout-ms")) { rc = arg_long(a, val, 0, INT32_MAX, &v); cfg.sched.queue_timeout_ms = (uint32_t)v; }
        else if (!strcmp(a, "--max-prompt")) { rc = arg_long(a, val, 0, INT32_MAX, &v); cfg.sched.max_prompt = (int32_t)v; }
        else if (!strcmp(a, "--max-tokens")) { rc = arg_long(a, val, 1, INT32_MAX, &v); cfg.default_max_tokens = (int32_t)v; }
        else if (!strcmp(a, "--worker-timeout-ms")) { rc = arg_long(a, val, 1, INT32_MAX, &v); cfg.worker_timeout_ms = (int32_t)v; }
        else if (!strcmp(a, "--drain-timeout-s")) rc = arg_long(a, val, 0, 24 * 3600, &drain_s);
        else if (!strcmp(a, "--session-dir")) cfg.session_dir = val;
        else if (!strcmp(a, "--curve-keys")) curve_dir = val;
        else if (!strcmp(a, "--prefix-cache-entries")) { rc = arg_long(a, val, 0, 1 << 20, &v); cfg.prefix_cache_entries = (int32_t)v; }
        else if (!strcmp(a, "--prefix-cache-block")) { rc = arg_long(a, val, 1, 1 << 20, &v); cfg.prefix_cache_block = (int32_t)v; }
        else if (!strcmp(a, "--max-sessions")) { rc = arg_long(a, val, 1, 1 << 24, &v); cfg.max_sessions = (int32_t)v; }
        else if (!strcmp(a, "--session-slots")) { rc = arg_long(a, val, 0, 1 << 20, &v); cfg.session_slots = (int32_t)v; }
        else if (!strcmp(a, "--session-ttl-s")) { rc = arg_long(a, val, 0, INT32_MAX, &v); cfg.session_ttl_s = (uint32_t)v; }
        else if (!strcmp(a, "--session-host-bytes")) {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-')
                rc = -1, fprintf(stderr, "recur serve: --session-host-bytes expects a byte count, got '%s'\n", val);
            cfg.session_host_bytes = (uint64_t)x;
        } else if (!strcmp(a, "--state")) {
            if (strcmp(val, "f32") && strcmp(val, "bf16"))
                rc = -1, fprintf(stderr, "recur serve: --state expects f32 or bf16, got '%s'\n", val);
            state_dtype = val;
        } else if (!strcmp(a, "--state-variant")) {
            const char *eq = strchr(val, '=');
            if (!eq || eq == val || !eq[1] || n_var == MAX_VARIANTS || strlen(val) >= sizeof var_buf[0] ||
                memchr(val, ':', (size_t)(eq - val))) {
                rc = -1, fprintf(stderr, "recur serve: --state-variant expects NAME=PATH (NAME without ':'; at most "
                                         "%d), got '%s'\n", MAX_VARIANTS, val);
            } else {
                snprintf(var_buf[n_var], sizeof var_buf[n_var], "%s", val);
                var_buf[n_var][eq - val] = '\0';
                var_names[n_var] = var_buf[n_var], var_paths[n_var] = var_buf[n_var] + (eq - val) + 1;
                for (int k = 0; k < n_var; k++)
                    if (!strcmp(var_names[k], var_names[n_var]))
                        rc = -1, fprintf(stderr, "recur serve: --state-variant %s given twice\n", var_names[k]);
                n_var++;
            }
        }
        else if (!strcmp(a, "--max-worker-restarts")) rc = arg_long(a, val, 0, 1000000, &max_restarts);
        else if (!strcmp(a, "--host")) hc.host = val;
        else if (!strcmp(a, "--port")) { rc = arg_long(a, val, 0, 65535, &v); hc.port = (int)v; }
        else if (!strcmp(a, "--api-key")) {
            if (!*val || n_keys == sizeof keys / sizeof *keys)
                rc = -1, fprintf(stderr, "recur serve: --api-key: an empty key, or more than 64 keys\n");
            else keys[n_keys++] = val;
        } else if (!strcmp(a, "--api-key-file")) key_file = val;
        else if (!strcmp(a, "--max-body-bytes")) { rc = arg_long(a, val, 1, (long)1 << 30, &v); hc.max_body_bytes = (size_t)v; }
        else if (!strcmp(a, "--max-import-bytes")) {
            rc = arg_long(a, val, 1, (long)1 << 40, &v);
            hc.max_import_bytes = (size_t)v;
        } else if (!strcmp(a, "--max-requests-per-key")) {
            rc = arg_long(a, val, 0, 1000000, &v);
            hc.max_requests_per_key = (int32_t)v;
        }
        else if (!strcmp(a, "--chat-template")) template_path = val;
        else if (!strcmp(a, "--served-model-name")) {
            if (!*val || strlen(val) >= RECUR_PROTO_MAX_NAME_BYTES)
                rc = -1, fprintf(stderr, "recur serve: --served-model-name must have 1 to %d bytes\n",
                                 RECUR_PROTO_MAX_NAME_BYTES - 1);
            served = val;
        } else if (!strcmp(a, "--log-level")) {
            int l = recur_log_level_parse(val);
            if (l < 0) rc = -1, fprintf(stderr, "recur serve: bad --log-level '%s'\n", val);
            else recur_log_set_level((recur_log_level_t)l);
        } else {
            fprintf(stderr, "recur serve: unknown option '%s'\n", a);
            rc = -1;
        }
        if (rc) {
            serve_usage(stderr);
            return 2;
        }
    }
    char bundled[PATH_MAX + 64];
    if (!model) {
        if (recur_bundled_path(RECUR_BUNDLED_MODEL, bundled, sizeof bundled) != 0) {
            fprintf(stderr, "recur serve: the bundled model %s was not found (set RECUR_MODELS_DIR or pass --model)\n",
                    RECUR_BUNDLED_MODEL);
            return 1;
        }
        model = bundled;
    }
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
        fprintf(stderr, "recur serve: --backend expects cpu or cuda, got '%s'\n", backend);
        return 2;
    }
    cfg.sched.n_slots = (int32_t)strtol(slots_s, NULL, 10);   /* the worker's pool: --slots, default 64 */
    cfg.client_bind = bind_c, cfg.worker_bind = bind_w;
    cfg.model_path = model;
    cfg.tp = (int32_t)tp, cfg.pp = (int32_t)pp;
    char name[RECUR_PROTO_MAX_NAME_BYTES];
    if (served) snprintf(name, sizeof name, "%s", served);
    else default_model_name(model, name, sizeof name);
    cfg.model_id = name;
    cfg.n_variants = n_var, cfg.variant_names = var_names, cfg.variant_paths = var_paths;

    /* the HTTP side's files: refused here, before anything starts */
    recur_chat_template_t *tmpl = NULL;
    char **file_keys = NULL;
    size_t n_file_keys = 0;
    const char **all_keys = NULL;
    recur_metrics_t *metrics = NULL;
    void *zctx = NULL;
    recur_coord_t *c = NULL;
    recur_http_t *http = NULL;
    int rc = 1;
    if (template_path) {
        char err[512];
        if (recur_chat_template_load(template_path, &tmpl, err, sizeof err) != RECUR_OK) {
            fprintf(stderr, "recur serve: --chat-template %s\n", err);
            rc = 2;
            goto out;
        }
    }
    if (key_file && recur_http_read_key_file(key_file, &file_keys, &n_file_keys) != RECUR_OK) {
        fprintf(stderr, "recur serve: --api-key-file %s could not be used (see above)\n", key_file);
        rc = 2;
        goto out;
    }
    if (key_file && !n_file_keys) {
        fprintf(stderr, "recur serve: --api-key-file %s holds no key\n", key_file);
        rc = 2;
        goto out;
    }
    if (curve_dir) {
        /* ours (server.key, worker.pub) now; the workers' (worker.key, server.pub) too when we
         * launch them, so a missing file stops serve here rather than in a restart loop */
        char msg[512];
        recur_curve_keys_t wk;
        if (recur_curve_load_server(curve_dir, &curve, msg, sizeof msg) != RECUR_OK ||
            (!external && recur_curve_load_client(curve_dir, &wk, msg, sizeof msg) != RECUR_OK)) {
            fprintf(stderr, "recur serve: --curve-keys: %s\n", msg);
            rc = 2;
            goto out;
        }
        memset(&wk, 0, sizeof wk);
        cfg.worker_curve = &curve;
    }
    all_keys = malloc((n_keys + n_file_keys + 1) * sizeof *all_keys);
    if (!all_keys || recur_metrics_create(&metrics) != RECUR_OK) {
        fprintf(stderr, "recur serve: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < n_keys; i++) all_keys[i] = keys[i];
    for (size_t i = 0; i < n_file_keys; i++) all_keys[n_keys + i] = file_keys[i];
    cfg.client_bind_extra = "inproc://recur-http";
    cfg.metrics = metrics;
    zctx = zmq_ctx_new();
    /* a socket per HTTP request in flight, plus ours */
    if (zctx) zmq_ctx_set(zctx, ZMQ_MAX_SOCKETS, hc.max_connections + 64);
    if (!zctx || recur_coord_create(zctx, &cfg, &c) != RECUR_OK) {
        fprintf(stderr, "recur serve: cannot bind %s / %s\n", bind_c, bind_w);
        goto out;
    }
    hc.coord_endpoint = cfg.client_bind_extra;
    hc.model_id = name;
    hc.api_keys = all_keys, hc.n_api_keys = n_keys + n_file_keys;
    hc.chat_template = tmpl;
    hc.metrics = metrics;
    if (recur_http_start(zctx, &hc, &http) != RECUR_OK) {
        fprintf(stderr, "recur serve: cannot start the HTTP server on %s port %d (see above)\n", hc.host, hc.port);
        goto out;
    }
    recur_log_info("recur serve: model '%s' (%s); http on port %d, %zu API key(s), chat template %s", name, model,
                   recur_http_port(http), hc.n_api_keys, tmpl ? template_path : "built-in for the model's arch");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the worker group's command line */
    char self[PATH_MAX], tps[32], pps[32], idle[32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) snprintf(self, sizeof self, "%s", argv[0]);
    else self[n] = '\0';
    snprintf(tps, sizeof tps, "%ld", tp);
    snprintf(pps, sizeof pps, "%ld", pp);
    snprintf(idle, sizeof idle, "%d", cfg.worker_timeout_ms > 10000 ? cfg.worker_timeout_ms : 10000);
    char *args[96];
    int k = 0;
    char launcher[1024], np[32];
    if (tp * pp > 1) {
        const char *env = getenv("RECUR_MPIRUN");
        snprintf(launcher, sizeof launcher, "%s", env && *env ? env : RECUR_SERVE_MPIRUN);
        for (char *t = strtok(launcher, " "); t && k < 60; t = strtok(NULL, " ")) args[k++] = t;
        snprintf(np, sizeof np, "%ld", tp * pp);
        args[k++] = "-np", args[k++] = np;
    }
    const char *tail[] = {self, "worker", "--connect", recur_coord_worker_endpoint(c), "--model", model,
                          "--backend", backend, "--slots", slots_s, "--tp", tps, "--pp", pps, "--idle-limit-ms", idle};
    for (size_t i = 0; i < sizeof tail / sizeof *tail; i++) args[k++] = (char *)tail[i];
    if (state_dtype) args[k++] = "--state", args[k++] = (char *)state_dtype;
    if (curve_dir) args[k++] = "--curve-keys", args[k++] = (char *)curve_dir;
    /* the workers refuse checkpoint paths outside it (recur_ckpt_path_check) */
    if (cfg.session_dir) args[k++] = "--session-dir", args[k++] = (char *)cfg.session_dir;
    if (weights) args[k++] = "--weights", args[k++] = (char *)weights;
    args[k] = NULL;
    if (geteuid() == 0) {   /* Open MPI refuses root unless told */
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    }
    serve_state_t st = {.child_status = -1, .http_host = hc.host, .http_port = recur_http_port(http), .drain_s = drain_s,
                        .args = args, .max_restarts = max_restarts};
    if (external) {
        st.child = -1;
        printf("recur serve: workers connect to %s\n", recur_coord_worker_endpoint(c));
        fflush(stdout);
        recur_log_info("recur serve: waiting for an external worker group (tp %ld x pp %ld) on %s", tp, pp,
                       recur_coord_worker_endpoint(c));
    } else {
        st.child = launch_group(args);
        if (st.child < 0) {
            fprintf(stderr, "recur serve: fork: %s\n", strerror(errno));
            goto out;
        }
        recur_log_info("recur serve: worker group pid %d: %s ...", (int)st.child, args[0]);
    }

    recur_status_t s = recur_coord_run(c, serve_tick, &st);
    rc = 0;
    if (st.child == 0) {   /* the group is gone and was not restarted */
        recur_coord_fail_all(c, "the worker group exited");
        recur_http_stop(http);
        http = NULL;
        rc = g_stop && st.child_status >= 0 && WIFEXITED(st.child_status) && WEXITSTATUS(st.child_status) == 0 ? 0 : 1;
    } else {
        if (s != RECUR_OK) rc = 1;
        recur_coord_shutdown_workers(c, g_stop ? "recur serve got a signal" : "recur serve is stopping");
        recur_http_stop(http);   /* its streams got their finals above; nothing new is accepted */
        http = NULL;
        /* wait for the group, the sockets still open so the Shutdown goes out; external
         * workers are not ours to wait for: give the Shutdown a moment to leave */
        int status = 0, done = external;
        if (external) usleep(300000);
        for (int i = 0; i < 1000 && !done; i++) {
            if (waitpid(st.child, &status, WNOHANG) == st.child) done = 1;
            else usleep(10000);
        }
        if (!done) {
            fprintf(stderr, "recur serve: the worker group did not stop within 10 s: killing it\n");
            kill_tree(st.child);
            kill(-st.child, SIGKILL);
            waitpid(st.child, &status, 0);
            rc = 1;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "recur serve: the worker group exited with %d\n",
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
    }
    recur_coord_stats_t cs;
    recur_coord_get_stats(c, &cs);
    fprintf(stderr,
            "recur serve: %llu requests, %llu steps (max batch %d, mean %.1f), %llu tokens out; coordinator loop "
            "%.1f us per step outside waiting, %.1f us per step on the critical path (result in -> next plan out) "
            "of a %.1f us step period (%.2f%%); worker: round trip %.1f us, its own time %.1f us (forward %.1f us)\n",
            (unsigned long long)cs.requests, (unsigned long long)cs.steps, (int)cs.max_batch_seen,
            cs.steps ? (double)cs.seqs / (double)cs.steps : 0.0, (unsigned long long)cs.tokens_out,
            cs.busy_us_per_step, cs.critical_us_per_step, cs.period_us_per_step,
            cs.period_us_per_step > 0 ? 100.0 * cs.critical_us_per_step / cs.period_us_per_step : 0.0,
            cs.round_trip_us, cs.worker_total_us, cs.worker_forward_us);
    if (curve_dir)
        fprintf(stderr, "recur serve: CURVE on the worker link: %llu worker connections accepted, %llu refused by key, "
                "%llu failed handshakes (no CURVE, or another server key)\n",
                (unsigned long long)cs.worker_keys_accepted, (unsigned long long)cs.worker_keys_refused,
                (unsigned long long)cs.worker_handshakes_failed);
out:
    recur_http_stop(http);
    recur_coord_free(c);
    if (zctx) zmq_ctx_term(zctx);
    recur_metrics_free(metrics);
    recur_chat_template_free(tmpl);
    memset(&curve, 0, sizeof curve);   /* no secret left in memory longer than needed */
    for (size_t i = 0; i < n_file_keys; i++) free(file_keys[i]);
    free(file_keys);
    free(all_keys);
    return rc;
}

/* ------------------------------------------------------------------ client */

static void client_usage(void) {
    fprintf(stderr,
            "usage: recur client --connect ENDPOINT (--prompt TEXT | --health) [--max-tokens N] [--temperature T]\n"
            "                    [--seed S] [--stop STR] [--cancel-after N] [--timeout-ms MS]\n"
            "                    [--repetition-penalty R] [--presence-penalty P] [--frequency-penalty F]\n"
            "                    [--logit-bias ID:BIAS[,ID:BIAS...]] [--logprobs N]\n");
}

/* A float option in [lo, hi] (lo_open: > lo). */
static int arg_float(const char *opt, const char *v, double lo, double hi, int lo_open, float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(lo_open ? x > lo : x >= lo) || !(x <= hi)) {
        fprintf(stderr, "recur client: %s expects a number in %s%g, %g], got '%s'\n", opt, lo_open ? "(" : "[", lo, hi,
                v);
        return -1;
    }
    *out = (float)x;
    return 0;
}

/* --logit-bias "ID:BIAS[,ID:BIAS...]" into e[0..*n) (at most max entries; the server checks
 * the ids against its vocabulary and that they are distinct). */
static int arg_logit_bias(const char *v, Recur__Api__LogitBias *e, size_t max, size_t *n) {
    *n = 0;
    const char *p = v;
    while (*p) {
        char *end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (errno || end == p || *end != ':' || id < 0 || id > INT32_MAX) break;
        p = end + 1;
        double b = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !(b >= -100 && b <= 100) || *n == max) break;
        Recur__Api__LogitBias lb = RECUR__API__LOGIT_BIAS__INIT;
        lb.has_token_id = lb.has_bias = 1, lb.token_id = (int32_t)id, lb.bias = (float)b;
        e[(*n)++] = lb;
        p = *end ? end + 1 : end;
        if (!*end) return 0;
    }
    fprintf(stderr, "recur client: --logit-bias expects ID:BIAS[,ID:BIAS...] with ids >= 0, each bias in [-100, 100] "
            "and at most %zu entries, got '%s'\n", max, v);
    return -1;
}

/* One line per token to stderr: its id, logprob and text, then the alternatives. */
static void print_logprobs(const Recur__Api__Token *t) {
    if (!t->has_logprob) return;
    fprintf(stderr, "logprob %.5f id %d", (double)t->logprob, (int)t->id);
    for (size_t j = 0; j < t->n_top_logprobs; j++) {
        const Recur__Api__TopLogprob *a = t->top_logprobs[j];
        fputs(j ? ", " : " | top: ", stderr);
        fprintf(stderr, "%d ", (int)a->id);
        fputc('"', stderr);
        for (const unsigned char *c = (const unsigned char *)(a->text ? a->text : ""); *c; c++)
            if (*c == '"' || *c == '\\') fprintf(stderr, "\\%c", *c);
            else if (*c < 0x20) fprintf(stderr, "\\x%02x", *c);
            else fputc(*c, stderr);
        fprintf(stderr, "\" %.5f", (double)a->logprob);
    }
    fputc('\n', stderr);
}

static recur_status_t client_send(recur_msgsock_t *s, recur_api_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t st = recur_msgsock_send_api(s, NULL, env, &err);
    if (st != RECUR_OK) fprintf(stderr, "recur client: cannot send: %s\n", err.msg);
    return st;
}

int recur_client_main(int argc, char **argv, int first) {
    const char *connect = NULL, *prompt = NULL, *stop = NULL;
    long max_tokens = -1, cancel_after = -1, timeout_ms = 60000;
    double temperature = -1;
    unsigned long long seed = 0;
    int has_seed = 0, health = 0;
    float rep_pen = 1.0f, pres_pen = 0.0f, freq_pen = 0.0f;
    int has_rep = 0, has_pres = 0, has_freq = 0;
    long logprobs = -1;
    Recur__Api__LogitBias bias[RECUR_PROTO_MAX_LOGIT_BIAS];
    size_t n_bias = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--health")) { health = 1; continue; }
        const char *val = i + 1 < argc ? argv[++i] : NULL;
        int rc = 0;
        if (!val) rc = -1, fprintf(stderr, "recur client: '%s' needs a value\n", a);
        else if (!strcmp(a, "--connect")) connect = val;
        else if (!strcmp(a, "--prompt")) prompt = val;
        else if (!strcmp(a, "--stop")) stop = val;
        else if (!strcmp(a, "--max-tokens")) rc = arg_long(a, val, 1, INT32_MAX, &max_tokens);
        else if (!strcmp(a, "--cancel-after")) rc = arg_long(a, val, 0, INT32_MAX, &cancel_after);
        else if (!strcmp(a, "--timeout-ms")) rc = arg_long(a, val, 1, INT32_MAX, &timeout_ms);
        else if (!strcmp(a, "--repetition-penalty")) rc = arg_float(a, val, 0, 100, 1, &rep_pen), has_rep = 1;
        else if (!strcmp(a, "--presence-penalty")) rc = arg_float(a, val, -2, 2, 0, &pres_pen), has_pres = 1;
        else if (!strcmp(a, "--frequency-penalty")) rc = arg_float(a, val, -2, 2, 0, &freq_pen), has_freq = 1;
        else if (!strcmp(a, "--logprobs")) rc = arg_long(a, val, 0, RECUR_PROTO_MAX_LOGPROBS, &logprobs);
        else if (!strcmp(a, "--logit-bias")) rc = arg_logit_bias(val, bias, RECUR_PROTO_MAX_LOGIT_BIAS, &n_bias);
        else if (!strcmp(a, "--temperature")) {
            char *end;
            temperature = strtod(val, &end);
            if (*end || end == val || !(temperature >= 0 && temperature <= 100))
                rc = -1, fprintf(stderr, "recur client: --temperature expects a number in [0, 100]\n");
        } else if (!strcmp(a, "--seed")) {
            char *end;
            seed = strtoull(val, &end, 10), has_seed = 1;
            if (*end || end == val || val[0] == '-') rc = -1, fprintf(stderr, "recur client: bad --seed\n");
        } else {
            fprintf(stderr, "recur client: unknown option '%s'\n", a);
            rc = -1;
        }
        if (rc) {
            client_usage();
            return 2;
        }
    }
    if (!connect || (!prompt && !health)) {
        fprintf(stderr, "recur client: --connect and --prompt (or --health) are required\n");
        client_usage();
        return 2;
    }
    void *zctx = zmq_ctx_new();
    recur_msgsock_t *s = NULL;
    if (!zctx || recur_msgsock_connect(zctx, connect, NULL, &s) != RECUR_OK) {
        fprintf(stderr, "recur client: cannot connect to %s\n", connect);
        if (zctx) zmq_ctx_term(zctx);
        return 1;
    }
    char rid[64];
    snprintf(rid, sizeof rid, "client-%d", (int)getpid());
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    Recur__Api__HealthRequest hr = RECUR__API__HEALTH_REQUEST__INIT;
    Recur__Api__GenerateRequest g = RECUR__API__GENERATE_REQUEST__INIT;
    Recur__Api__SamplingParams sp = RECUR__API__SAMPLING_PARAMS__INIT;
    char *stops[1] = {(char *)stop};
    Recur__Api__LogitBias *biasp[RECUR_PROTO_MAX_LOGIT_BIAS];
    if (health) {
        hr.request_id = rid;
        env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH;
        env.health = &hr;
    } else {
        g.request_id = rid;
        g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT;
        g.text = (char *)prompt;
        if (max_tokens > 0) sp.has_max_tokens = 1, sp.max_tokens = (uint32_t)max_tokens;
        if (temperature >= 0) sp.has_temperature = 1, sp.temperature = (float)temperature;
        if (has_seed) sp.has_seed = 1, sp.seed = seed;
        if (stop) sp.n_stop = 1, sp.stop = stops;
        if (has_rep) sp.has_repetition_penalty = 1, sp.repetition_penalty = rep_pen;
        if (has_pres) sp.has_presence_penalty = 1, sp.presence_penalty = pres_pen;
        if (has_freq) sp.has_frequency_penalty = 1, sp.frequency_penalty = freq_pen;
        if (logprobs >= 0) sp.has_logprobs = 1, sp.logprobs = (uint32_t)logprobs;
        for (size_t i = 0; i < n_bias; i++) biasp[i] = &bias[i];
        sp.n_logit_bias = n_bias, sp.logit_bias = biasp;
        g.sampling = &sp;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
        env.generate = &g;
    }
    int rc = 1;
    long n_tokens = 0;
    if (client_send(s, &env) != RECUR_OK) goto done;
    for (;;) {
        recur_api_envelope_t *r = NULL;
        recur_proto_error_t err;
        recur_status_t st = recur_msgsock_recv_api(s, (int32_t)timeout_ms, NULL, &r, &err);
        if (st == RECUR_E_TIMEOUT) {
            fprintf(stderr, "recur client: no answer from %s within %ld ms\n", connect, timeout_ms);
            goto done;
        }
        if (st != RECUR_OK) {
            fprintf(stderr, "recur client: bad answer: %s\n", err.msg);
            goto done;
        }
        if (r->body_case == RECUR__API__ENVELOPE__BODY_ERROR) {
            const Recur__Api__Error *e = r->error->error;
            fprintf(stderr, "recur client: error %d: %s\n", e ? (int)e->code : 0, e && e->message ? e->message : "");
            recur_proto_api_free(r);
            goto done;
        }
        if (r->body_case == RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE) {
            const Recur__Api__HealthResponse *h = r->health_response;
            int ok = h->status == RECUR__API__SERVING_STATUS__SERVING_STATUS_SERVING;
            printf("%s%s%s active %u queued %u free_slots %u\n", ok ? "serving" : "not serving",
                   h->detail ? ": " : "", h->detail ? h->detail : "", h->active_requests, h->queued_requests,
                   h->free_slots);
            rc = ok ? 0 : 1;
            recur_proto_api_free(r);
            goto done;
        }
        if (r->body_case == RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE) {
            fprintf(stderr, "recur client: cancel: %s\n", r->cancel_response->found ? "found" : "not found");
            recur_proto_api_free(r);
            continue;
        }
        if (r->body_case != RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE) {
            recur_proto_api_free(r);
            continue;
        }
        const Recur__Api__GenerateResponse *gr = r->generate_response;
        for (size_t i = 0; i < gr->n_tokens; i++) fputs(gr->tokens[i]->text ? gr->tokens[i]->text : "", stdout);
        fflush(stdout);
        for (size_t i = 0; i < gr->n_tokens; i++) print_logprobs(gr->tokens[i]);
        n_tokens += (long)gr->n_tokens;
        if (gr->final) {
            const Recur__Api__GenerateFinal *f = gr->final;
            putchar('\n');
            const char *why = f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_STOP ? "stop"
                              : f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_LENGTH ? "length"
                              : f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_CANCELLED ? "cancelled"
                                                                                                      : "error";
            fprintf(stderr, "recur client: finished: %s; prompt %u tokens, completion %u tokens%s%s\n", why,
                    f->usage ? f->usage->prompt_tokens : 0, f->usage ? f->usage->completion_tokens : 0,
                    f->error ? "; " : "", f->error && f->error->message ? f->error->message : "");
            rc = f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_ERROR ? 1 : 0;
            recur_proto_api_free(r);
            goto done;
        }
        recur_proto_api_free(r);
        if (cancel_after >= 0 && n_tokens >= cancel_after) {
            Recur__Api__CancelRequest cq = RECUR__API__CANCEL_REQUEST__INIT;
            cq.request_id = rid;
            recur_api_envelope_t ce = RECUR__API__ENVELOPE__INIT;
            ce.body_case = RECUR__API__ENVELOPE__BODY_CANCEL;
            ce.cancel = &cq;
            if (client_send(s, &ce) != RECUR_OK) goto done;
            cancel_after = -1;
        }
    }
done:
    recur_msgsock_close(s);
    zmq_ctx_term(zctx);
    return rc;
}
