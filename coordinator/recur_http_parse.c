/* recur_http_parse.c: see recur_http_parse.h. Moved out of recur_http.c unchanged in what
 * it accepts and refuses, so the fuzz target and the unit tests run the server's own code. */
#include "recur_http_parse.h"
#include "recur_sbuf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_utf8.h"

#define MAX_TOP_KEYS 64         /* top-level fields in a request body */
#define MAX_MESSAGES 4096       /* chat messages per request          */

/* ------------------------------------------------------------------ small helpers */

static int utf8_valid_n(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        size_t l = recur_utf8_len(p + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}
static int utf8_valid(const char *s) { return utf8_valid_n(s, strlen(s)); }

/* cJSON 1.7 keeps the error position of its latest parse in a global: one parse at a time */
static pthread_mutex_t g_json_mu = PTHREAD_MUTEX_INITIALIZER;

void recur_http_gen_req_clear(recur_http_gen_req_t *g) {
    free(g->model);
    free(g->session_id);
    for (size_t i = 0; i < g->n_prompts; i++) free(g->prompts[i].text), free(g->prompts[i].ids);
    free(g->prompts);
    for (size_t i = 0; i < g->n_msgs; i++) free(g->msg_text[i]);
    free(g->msg_text);
    free(g->msgs);
    for (size_t i = 0; i < g->n_stops; i++) free(g->stops[i]);
    memset(g, 0, sizeof *g);
}

int recur_http_badf(recur_http_bad_t *b, const char *param, const char *code, const char *fmt, ...) {
    b->status = 400;
    snprintf(b->param, sizeof b->param, "%s", param ? param : "");
    snprintf(b->code, sizeof b->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->msg, sizeof b->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *json_type(const cJSON *v) {
    return cJSON_IsString(v) ? "a string" : cJSON_IsNumber(v) ? "a number" : cJSON_IsBool(v) ? "a boolean"
         : cJSON_IsArray(v)  ? "an array" : cJSON_IsObject(v) ? "an object" : cJSON_IsNull(v) ? "null" : "invalid";
}

static int get_number(const cJSON *v, const char *name, double lo, double hi, double *out, recur_http_bad_t *b) {
    if (!cJSON_IsNumber(v)) return recur_http_badf(b, name, "invalid_type", "'%s' must be a number, got %s", name, json_type(v));
    double x = v->valuedouble;
    if (!isfinite(x) || x < lo || x > hi)
        return recur_http_badf(b, name, "invalid_value", "'%s' must be between %g and %g, got %g", name, lo, hi, x);
    *out = x;
    return 0;
}

static int get_int(const cJSON *v, const char *name, double lo, double hi, int64_t *out, recur_http_bad_t *b) {
    if (!cJSON_IsNumber(v)) return recur_http_badf(b, name, "invalid_type", "'%s' must be an integer, got %s", name, json_type(v));
    double x = v->valuedouble;
    if (!isfinite(x) || x != floor(x))
        return recur_http_badf(b, name, "invalid_type", "'%s' must be an integer, got %g", name, x);
    if (x < lo || x > hi)
        return recur_http_badf(b, name, "invalid_value", "'%s' must be between %.0f and %.0f, got %.0f", name, lo, hi, x);
    *out = (int64_t)x;
    return 0;
}

static int get_bool(const cJSON *v, const char *name, int *out, recur_http_bad_t *b) {
    if (!cJSON_IsBool(v)) return recur_http_badf(b, name, "invalid_type", "'%s' must be true or false, got %s", name, json_type(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string that must be valid UTF-8 without NUL; copied into *out. */
static int get_string(const cJSON *v, const char *name, char **out, recur_http_bad_t *b) {
    if (!cJSON_IsString(v)) return recur_http_badf(b, name, "invalid_type", "'%s' must be a string, got %s", name, json_type(v));
    if (!utf8_valid(v->valuestring)) return recur_http_badf(b, name, "invalid_value", "'%s' is not valid UTF-8", name);
    if (!(*out = strdup(v->valuestring))) return recur_http_badf(b, name, NULL, "out of memory");
    return 0;
}

static int add_stop(recur_http_gen_req_t *g, const cJSON *v, const char *name, recur_http_bad_t *b) {
    if (g->n_stops == RECUR_PROTO_MAX_STOP)
        return recur_http_badf(b, "stop", "invalid_value", "too many stop strings (at most %d, the chat template's included)",
                    RECUR_PROTO_MAX_STOP);
    char *s = NULL;
    if (get_string(v, name, &s, b)) return -1;
    if (!*s || strlen(s) > RECUR_PROTO_MAX_STOP_BYTES) {
        free(s);
        return recur_http_badf(b, "stop", "invalid_value", "a stop string must have 1 to %d bytes", RECUR_PROTO_MAX_STOP_BYTES);
    }
    g->stops[g->n_stops++] = s;
    return 0;
}

static int parse_stop(recur_http_gen_req_t *g, const cJSON *v, recur_http_bad_t *b) {
    if (cJSON_IsString(v)) return add_stop(g, v, "stop", b);
    if (!cJSON_IsArray(v))
        return recur_http_badf(b, "stop", "invalid_type", "'stop' must be a string or an array of strings, got %s", json_type(v));
    const cJSON *it;
    cJSON_ArrayForEach(it, v) if (add_stop(g, it, "stop", b)) return -1;
    return 0;
}

/* An array of token ids into *ids / *n. */
static int parse_ids(const cJSON *arr, const char *name, int32_t **ids, size_t *n, recur_http_bad_t *b) {
    size_t k = (size_t)cJSON_GetArraySize(arr);
    *ids = malloc((k ? k : 1) * sizeof **ids);
    *n = 0;
    if (!*ids) return recur_http_badf(b, name, NULL, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        int64_t x;
        if (get_int(it, name, 0, INT32_MAX, &x, b)) return -1;
        (*ids)[(*n)++] = (int32_t)x;
    }
    return 0;
}

/* A text prompt: non-empty (the coordinator takes no empty prompt, and its message would
 * name the protobuf field, not this one). */
static int get_prompt_text(const cJSON *v, char **out, recur_http_bad_t *b) {
    if (get_string(v, "prompt", out, b)) return -1;
    if (!**out) return recur_http_badf(b, "prompt", "invalid_value", "'prompt' must not be empty");
    return 0;
}

static int parse_prompt(recur_http_gen_req_t *g, const cJSON *v, recur_http_bad_t *b) {
    if (cJSON_IsString(v)) {
        if (!(g->prompts = calloc(1, sizeof *g->prompts))) return recur_http_badf(b, "prompt", NULL, "out of memory");
        g->n_prompts = 1;
        return get_prompt_text(v, &g->prompts[0].text, b);
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return recur_http_badf(b, "prompt", "invalid_type",
                    "'prompt' must be a string, an array of strings, an array of token ids or an array of arrays of "
                    "token ids (non-empty), got %s", cJSON_IsArray(v) ? "an empty array" : json_type(v));
    const cJSON *first = v->child;
    if (cJSON_IsNumber(first)) {   /* one prompt as token ids */
        if (!(g->prompts = calloc(1, sizeof *g->prompts))) return recur_http_badf(b, "prompt", NULL, "out of memory");
        g->n_prompts = 1;
        return parse_ids(v, "prompt", &g->prompts[0].ids, &g->prompts[0].n_ids, b);
    }
    size_t k = (size_t)cJSON_GetArraySize(v);
    if (!(g->prompts = calloc(k, sizeof *g->prompts))) return recur_http_badf(b, "prompt", NULL, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        recur_http_prompt_t *p = &g->prompts[g->n_prompts++];
        if (cJSON_IsString(first) && cJSON_IsString(it)) {
            if (get_prompt_text(it, &p->text, b)) return -1;
        } else if (cJSON_IsArray(first) && cJSON_IsArray(it)) {
            if (cJSON_GetArraySize(it) == 0)
                return recur_http_badf(b, "prompt", "invalid_value", "'prompt': a prompt of token ids must not be empty");
            if (parse_ids(it, "prompt", &p->ids, &p->n_ids, b)) return -1;
        } else {
            return recur_http_badf(b, "prompt", "invalid_type",
                        "'prompt': an array must hold only strings, only token ids or only arrays of token ids");
        }
    }
    return 0;
}

/* Chat messages into g->msgs / g->msg_text (rendered later: recur_http_render_chat). */
static int parse_messages(recur_http_gen_req_t *g, const cJSON *v, recur_http_bad_t *b) {
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return recur_http_badf(b, "messages", "invalid_type", "'messages' must be a non-empty array, got %s",
                    cJSON_IsArray(v) ? "an empty array" : json_type(v));
    size_t k = (size_t)cJSON_GetArraySize(v);
    if (k > MAX_MESSAGES) return recur_http_badf(b, "messages", "invalid_value", "more than %d messages", MAX_MESSAGES);
    recur_chat_message_t *m = g->msgs = calloc(k, sizeof *m);
    char **owned = g->msg_text = calloc(k, sizeof *owned);
    if (!m || !owned) return recur_http_badf(b, "messages", NULL, "out of memory");
    g->n_msgs = k;   /* clear frees every slot, filled or not */
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        char name[48];
        snprintf(name, sizeof name, "messages[%zu]", i);
        if (!cJSON_IsObject(it))
            return recur_http_badf(b, name, "invalid_type", "'%s' must be an object with 'role' and 'content', got %s", name,
                        json_type(it));
        const cJSON *role = NULL, *content = NULL, *f;
        cJSON_ArrayForEach(f, it) {
            if (!strcmp(f->string, "role")) role = f;
            else if (!strcmp(f->string, "content")) content = f;
            else if (!strcmp(f->string, "name")) continue;   /* OpenAI's participant name: not shown to the model */
            else
                return recur_http_badf(b, name, "unknown_field", "'%s.%.64s': unknown field (a message has role, content and name)",
                            name, f->string);
        }
        if (!cJSON_IsString(role)) return recur_http_badf(b, name, "invalid_type", "'%s.role' must be a string", name);
        const char *r = role->valuestring;
        if (!strcmp(r, "system") || !strcmp(r, "developer")) m[i].role = RECUR_CHAT_SYSTEM;
        else if (!strcmp(r, "user")) m[i].role = RECUR_CHAT_USER;
        else if (!strcmp(r, "assistant")) m[i].role = RECUR_CHAT_ASSISTANT;
        else
            return recur_http_badf(b, name, "invalid_value", "'%s.role' is '%.64s': recur takes system, developer, user and assistant",
                        name, r);
        if (cJSON_IsString(content)) {
            if (get_string(content, name, &owned[i], b)) return -1;
        } else if (cJSON_IsArray(content)) {   /* content parts: text ones only */
            recur_sbuf_t s = {0};
            const cJSON *part;
            cJSON_ArrayForEach(part, content) {
                const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
                const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
                    free(s.p);
                    return recur_http_badf(b, name, "invalid_value", "'%s.content': only parts {\"type\": \"text\", \"text\": ...} "
                                "are supported", name);
                }
                recur_sbuf_str(&s, tx->valuestring);
            }
            if (s.oom || !(owned[i] = s.p ? s.p : strdup(""))) {
                free(s.p);
                return recur_http_badf(b, name, NULL, "out of memory");
            }
            if (!utf8_valid(owned[i])) return recur_http_badf(b, name, "invalid_value", "'%s.content' is not valid UTF-8", name);
        } else if (cJSON_IsNull(content) && m[i].role == RECUR_CHAT_ASSISTANT) {
            if (!(owned[i] = strdup(""))) return recur_http_badf(b, name, NULL, "out of memory");
        } else {
            return recur_http_badf(b, name, "invalid_type", "'%s.content' must be a string or an array of text parts, got %s", name,
                        content ? json_type(content) : "nothing");
        }
        m[i].content = owned[i];
        i++;
    }
    return 0;
}

int recur_http_render_chat(recur_http_gen_req_t *g, const recur_chat_template_t *t, int continuation,
                           recur_http_bad_t *b) {
    if (!g->chat || !g->n_msgs || g->prompts) return recur_http_badf(b, "messages", NULL, "no chat messages to render");
    if (!(g->prompts = calloc(1, sizeof *g->prompts))) return recur_http_badf(b, "messages", NULL, "out of memory");
    g->n_prompts = 1;
    recur_status_t s = continuation ? recur_chat_template_render_continuation(t, g->msgs, g->n_msgs, &g->prompts[0].text)
                                    : recur_chat_template_render(t, g->msgs, g->n_msgs, &g->prompts[0].text);
    if (s != RECUR_OK) return recur_http_badf(b, "messages", NULL, "out of memory");
    const char *const *ts;
    size_t nts = recur_chat_template_stops(t, &ts);
    for (size_t j = 0; j < nts && g->n_stops < RECUR_PROTO_MAX_STOP; j++)
        if ((g->stops[g->n_stops] = strdup(ts[j]))) g->n_stops++;
    return 0;
}

static int parse_logit_bias(recur_http_gen_req_t *g, const cJSON *v, recur_http_bad_t *b) {
    if (!cJSON_IsObject(v))
        return recur_http_badf(b, "logit_bias", "invalid_type", "'logit_bias' must be an object mapping token ids to biases");
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        if (g->n_bias == RECUR_PROTO_MAX_LOGIT_BIAS)
            return recur_http_badf(b, "logit_bias", "invalid_value", "'logit_bias' has more than %d entries", RECUR_PROTO_MAX_LOGIT_BIAS);
        char *end;
        errno = 0;
        long id = strtol(it->string, &end, 10);
        if (!*it->string || *end || errno || id < 0 || id > INT32_MAX || !isdigit((unsigned char)it->string[0]))
            return recur_http_badf(b, "logit_bias", "invalid_value", "'logit_bias': key '%.40s' is not a token id", it->string);
        double x;
        if (get_number(it, "logit_bias", -100, 100, &x, b)) return -1;
        for (size_t j = 0; j < g->n_bias; j++)
            if (g->bias[j].token_id == (int32_t)id)
                return recur_http_badf(b, "logit_bias", "invalid_value", "'logit_bias': token %ld appears twice", id);
        Recur__Api__LogitBias lb = RECUR__API__LOGIT_BIAS__INIT;
        lb.has_token_id = lb.has_bias = 1, lb.token_id = (int32_t)id, lb.bias = (float)x;
        g->bias[g->n_bias] = lb;
        g->biasp[g->n_bias] = &g->bias[g->n_bias];
        g->n_bias++;
    }
    return 0;
}

/* The fields each endpoint takes; a field whose value is null counts as absent. Fields that
 * ask for something recur does not do are refused with a message, not ignored. */
static const struct {
    const char *name;
    int eps;
} k_fields[] = {
    {"model", 3}, {"prompt", 1}, {"messages", 2}, {"max_tokens", 3}, {"max_completion_tokens", 2},
    {"temperature", 3}, {"top_p", 3}, {"top_k", 3}, {"min_p", 3}, {"repetition_penalty", 3},
    {"presence_penalty", 3}, {"frequency_penalty", 3}, {"seed", 3}, {"n", 3}, {"stop", 3}, {"stop_token_ids", 3},
    {"stream", 3}, {"stream_options", 3}, {"logprobs", 3}, {"top_logprobs", 2}, {"logit_bias", 3},
    {"ignore_eos", 3}, {"user", 3}, {"echo", 1}, {"suffix", 1}, {"best_of", 1}, {"priority", 3},
    {"response_format", 2}, {"tools", 2}, {"tool_choice", 2}, {"parallel_tool_calls", 2}, {"functions", 2},
    {"function_call", 2}, {"session_id", 3},
};

int recur_http_parse_generate(int ep, const cJSON *root, int32_t max_choices, recur_http_gen_req_t *g,
                              recur_http_bad_t *b) {
    memset(g, 0, sizeof *g);
    g->chat = ep == RECUR_HTTP_EP_CHAT;
    g->n = 1;
    if (!cJSON_IsObject(root)) return recur_http_badf(b, NULL, "invalid_type", "the body must be a JSON object, got %s", json_type(root));
    const cJSON *f, *prompt = NULL, *messages = NULL;
    int n_keys = 0;
    cJSON_ArrayForEach(f, root) {
        if (++n_keys > MAX_TOP_KEYS) return recur_http_badf(b, NULL, "invalid_value", "more than %d fields", MAX_TOP_KEYS);
        for (const cJSON *e = root->child; e != f; e = e->next)
            if (!strcmp(e->string, f->string))
                return recur_http_badf(b, f->string, "duplicate_field", "'%s' appears twice", f->string);
        int known = 0;
        for (size_t i = 0; i < sizeof k_fields / sizeof *k_fields; i++)
            if (!strcmp(k_fields[i].name, f->string) && (k_fields[i].eps & ep)) known = 1;
        if (!known)
            return recur_http_badf(b, f->string, "unknown_field", "unknown field '%.64s' for %s", f->string,
                        ep == RECUR_HTTP_EP_CHAT ? "/v1/chat/completions" : "/v1/completions");
    }
    cJSON_ArrayForEach(f, root) {
        const char *k = f->string;
        int64_t x;
        double d;
        if (cJSON_IsNull(f)) continue;
        if (!strcmp(k, "model")) {
            if (get_string(f, k, &g->model, b)) return -1;
            if (strlen(g->model) > RECUR_PROTO_MAX_NAME_BYTES) /* the request's limit for it */
                return recur_http_badf(b, k, "invalid_value", "'model' must have at most %d bytes",
                                       RECUR_PROTO_MAX_NAME_BYTES);
        } else if (!strcmp(k, "session_id")) {
            if (!cJSON_IsString(f))
                return recur_http_badf(b, k, "invalid_type", "'session_id' must be a string, got %s", json_type(f));
            if (recur_http_session_id_check(f->valuestring, strlen(f->valuestring), k, b)) return -1;
            if (!(g->session_id = strdup(f->valuestring))) return recur_http_badf(b, k, NULL, "out of memory");
        } else if (!strcmp(k, "prompt")) {
            prompt = f;
        } else if (!strcmp(k, "messages")) {
            messages = f;
        } else if (!strcmp(k, "max_tokens") || !strcmp(k, "max_completion_tokens")) {
            if (get_int(f, k, 1, INT32_MAX, &x, b)) return -1;
            if (g->has_max_tokens && (uint32_t)x != g->max_tokens)
                return recur_http_badf(b, k, "invalid_value", "max_tokens and max_completion_tokens disagree");
            g->has_max_tokens = 1, g->max_tokens = (uint32_t)x;
        } else if (!strcmp(k, "temperature")) {
            if (get_number(f, k, 0, 100, &d, b)) return -1;
            g->has_temperature = 1, g->temperature = (float)d;
        } else if (!strcmp(k, "top_p")) {
            if (get_number(f, k, 0, 1, &d, b)) return -1;
            /* as a float: a tiny positive number rounds to 0, which the protocol refuses */
            if ((float)d <= 0.0f)
                return recur_http_badf(b, k, "invalid_value", "'top_p' must be greater than 0 (use temperature 0 for greedy)");
            g->has_top_p = 1, g->top_p = (float)d;
        } else if (!strcmp(k, "top_k")) {
            if (get_int(f, k, -1, INT32_MAX, &x, b)) return -1;   /* -1: off, as in vLLM */
            g->has_top_k = 1, g->top_k = x < 0 ? 0 : (int32_t)x;
        } else if (!strcmp(k, "min_p")) {
            if (get_number(f, k, 0, 1, &d, b)) return -1;
            g->has_min_p = 1, g->min_p = (float)d;
        } else if (!strcmp(k, "repetition_penalty")) {
            if (get_number(f, k, 1e-6, 100, &d, b)) return -1;
            g->has_rep = 1, g->rep = (float)d;
        } else if (!strcmp(k, "presence_penalty")) {
            if (get_number(f, k, -2, 2, &d, b)) return -1;
            g->has_pres = 1, g->pres = (float)d;
        } else if (!strcmp(k, "frequency_penalty")) {
            if (get_number(f, k, -2, 2, &d, b)) return -1;
            g->has_freq = 1, g->freq = (float)d;
        } else if (!strcmp(k, "seed")) {
            /* JSON numbers reach us as doubles: integers are exact up to 2^53 */
            if (get_int(f, k, -9007199254740992.0, 9007199254740992.0, &x, b)) return -1;
            g->has_seed = 1, g->seed = (uint64_t)x;
        } else if (!strcmp(k, "n")) {
            if (get_int(f, k, 1, max_choices, &x, b)) return -1;
            g->n = (int32_t)x;
        } else if (!strcmp(k, "best_of")) {
            if (get_int(f, k, 1, 1, &x, b)) return -1;
        } else if (!strcmp(k, "stop")) {
            if (parse_stop(g, f, b)) return -1;
        } else if (!strcmp(k, "stop_token_ids")) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (!cJSON_IsArray(f)) return recur_http_badf(b, k, "invalid_type", "'stop_token_ids' must be an array of token ids");
            if (cJSON_GetArraySize(f) > RECUR_PROTO_MAX_STOP_TOKENS)
                return recur_http_badf(b, k, "invalid_value", "more than %d stop_token_ids", RECUR_PROTO_MAX_STOP_TOKENS);
            int rc = parse_ids(f, k, &ids, &n, b);
            if (!rc) memcpy(g->stop_ids, ids, n * sizeof *ids), g->n_stop_ids = n;
            free(ids);
            if (rc) return -1;
        } else if (!strcmp(k, "stream")) {
            if (get_bool(f, k, &g->stream, b)) return -1;
        } else if (!strcmp(k, "stream_options")) {
            if (!cJSON_IsObject(f)) return recur_http_badf(b, k, "invalid_type", "'stream_options' must be an object");
            const cJSON *o;
            cJSON_ArrayForEach(o, f) {
                if (!strcmp(o->string, "include_usage")) {
                    if (!cJSON_IsNull(o) && get_bool(o, "stream_options.include_usage", &g->include_usage, b)) return -1;
                } else if (!strcmp(o->string, "continuous_usage_stats")) {
                    return recur_http_badf(b, "stream_options", "unsupported", "'stream_options.continuous_usage_stats' is not "
                                "supported");
                } else {
                    return recur_http_badf(b, "stream_options", "unknown_field", "unknown field 'stream_options.%.64s' (known: "
                                "include_usage)", o->string);
                }
            }
        } else if (!strcmp(k, "logprobs")) {
            if (g->chat) {
                if (get_bool(f, k, &g->chat_logprobs, b)) return -1;
            } else {
                if (get_int(f, k, 0, RECUR_PROTO_MAX_LOGPROBS, &x, b)) return -1;
                g->has_logprobs = 1, g->logprobs = (uint32_t)x;
            }
        } else if (!strcmp(k, "top_logprobs")) {
            if (get_int(f, k, 0, RECUR_PROTO_MAX_LOGPROBS, &x, b)) return -1;
            g->has_top_logprobs = 1, g->logprobs = (uint32_t)x;
        } else if (!strcmp(k, "logit_bias")) {
            if (parse_logit_bias(g, f, b)) return -1;
        } else if (!strcmp(k, "ignore_eos")) {
            if (get_bool(f, k, &g->ignore_eos, b)) return -1;
        } else if (!strcmp(k, "priority")) {
            if (get_int(f, k, INT32_MIN, INT32_MAX, &x, b)) return -1;
            g->priority = (int32_t)x;
        } else if (!strcmp(k, "user")) {
            if (!cJSON_IsString(f)) return recur_http_badf(b, k, "invalid_type", "'user' must be a string, got %s", json_type(f));
        } else if (!strcmp(k, "echo")) {
            int e;
            if (get_bool(f, k, &e, b)) return -1;
            if (e) return recur_http_badf(b, k, "unsupported", "'echo': true is not supported");
        } else if (!strcmp(k, "suffix")) {
            if (!cJSON_IsString(f) || f->valuestring[0])
                return recur_http_badf(b, k, "unsupported", "'suffix' is not supported (insertion needs a fill-in-the-middle model)");
        } else if (!strcmp(k, "response_format")) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(f, "type");
            if (!cJSON_IsObject(f) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text"))
                return recur_http_badf(b, k, "unsupported", "'response_format': only {\"type\": \"text\"} is supported");
        } else if (!strcmp(k, "tools") || !strcmp(k, "functions")) {
            if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) > 0)
                return recur_http_badf(b, k, "unsupported", "'%s': tool calling is not supported", k);
        } else if (!strcmp(k, "tool_choice") || !strcmp(k, "function_call")) {
            if (!cJSON_IsString(f) || strcmp(f->valuestring, "none"))
                return recur_http_badf(b, k, "unsupported", "'%s': tool calling is not supported (only \"none\")", k);
        } else if (!strcmp(k, "parallel_tool_calls")) {
            int e;
            if (get_bool(f, k, &e, b)) return -1;
        }
    }
    if (g->include_usage && !g->stream)
        return recur_http_badf(b, "stream_options", "invalid_value", "'stream_options' is only allowed with stream: true");
    if (g->has_top_logprobs && !g->chat_logprobs)
        return recur_http_badf(b, "top_logprobs", "invalid_value", "'top_logprobs' needs 'logprobs': true");
    if (g->chat && g->chat_logprobs) g->has_logprobs = 1;
    if (!g->chat && !prompt) return recur_http_badf(b, "prompt", "missing_field", "'prompt' is required");
    if (g->chat && !messages) return recur_http_badf(b, "messages", "missing_field", "'messages' is required");
    if (prompt && parse_prompt(g, prompt, b)) return -1;
    if (messages && parse_messages(g, messages, b)) return -1;
    size_t n_prompts = g->chat ? 1 : g->n_prompts;   /* chat: the one rendered later */
    if ((size_t)g->n * n_prompts > (size_t)max_choices)
        return recur_http_badf(b, "n", "invalid_value", "%zu prompts x n %d = more than %d choices", n_prompts, (int)g->n,
                    (int)max_choices);
    if (g->session_id && (g->n != 1 || g->n_prompts > 1))
        return recur_http_badf(b, g->n != 1 ? "n" : "prompt", "invalid_value",
                    "a request with 'session_id' continues one conversation: n must be 1 and 'prompt' one prompt");
    return 0;
}

/* Where the JSON text body[0..n) has a NUL: a raw NUL byte (never valid JSON, but cJSON
 * takes one inside a string) or the escape \u0000 inside a string. cJSON's strings are C
 * strings, so either would silently cut the text there. Returns the offset, or n. */
static size_t find_nul(const char *body, size_t n) {
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = body[i];
        if (c == '\0') return i;
        if (!in_str) {
            in_str = c == '"';
            continue;
        }
        if (c == '"') in_str = 0;
        else if (c == '\\' && i + 1 < n) {
            if (body[i + 1] == 'u' && i + 5 < n && !memcmp(body + i + 2, "0000", 4)) return i;
            i++;   /* the escaped character (a quote or a backslash is not the string's end) */
        }
    }
    return n;
}

cJSON *recur_http_parse_json(const char *body, size_t n, recur_http_bad_t *b) {
    size_t z = find_nul(body, n);
    if (z < n) {
        recur_http_badf(b, NULL, body[z] ? "invalid_value" : "invalid_json", "%s at byte %zu: recur takes no NUL characters",
             body[z] ? "the escape \\u0000" : "a NUL byte", z);
        return NULL;
    }
    const char *end = NULL;
    pthread_mutex_lock(&g_json_mu);
    /* body[n] is the NUL the caller keeps: the text must end exactly there (nothing after the
     * value, no NUL inside) */
    cJSON *root = cJSON_ParseWithLengthOpts(body, n + 1, &end, 1);
    pthread_mutex_unlock(&g_json_mu);
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        recur_http_badf(b, NULL, "invalid_json", "the body is not valid JSON (parsing stopped at byte %zu of %zu)", at, n);
    }
    return root;
}

void recur_http_generate_request(const recur_http_gen_req_t *g, size_t choice, const char *rid,
                                 recur_http_gen_msg_t *m) {
    const recur_http_prompt_t *p = &g->prompts[choice / (size_t)g->n];
    Recur__Api__SamplingParams sp = RECUR__API__SAMPLING_PARAMS__INIT;
    sp.has_max_tokens = g->has_max_tokens, sp.max_tokens = g->max_tokens;
    sp.has_temperature = g->has_temperature, sp.temperature = g->temperature;
    sp.has_top_p = g->has_top_p, sp.top_p = g->top_p;
    sp.has_top_k = g->has_top_k, sp.top_k = g->top_k;
    sp.has_min_p = g->has_min_p, sp.min_p = g->min_p;
    sp.has_repetition_penalty = g->has_rep, sp.repetition_penalty = g->rep;
    sp.has_presence_penalty = g->has_pres, sp.presence_penalty = g->pres;
    sp.has_frequency_penalty = g->has_freq, sp.frequency_penalty = g->freq;
    /* n choices of one prompt with one seed: seed, seed+1, ... (else all n would be equal) */
    sp.has_seed = g->has_seed, sp.seed = g->seed + (uint64_t)(choice % (size_t)g->n);
    sp.has_logprobs = g->has_logprobs, sp.logprobs = g->logprobs;
    sp.has_ignore_eos = g->ignore_eos, sp.ignore_eos = g->ignore_eos;
    sp.n_stop = g->n_stops, sp.stop = (char **)g->stops;
    sp.n_stop_token_ids = g->n_stop_ids, sp.stop_token_ids = (int32_t *)g->stop_ids;
    sp.n_logit_bias = g->n_bias, sp.logit_bias = (Recur__Api__LogitBias **)g->biasp;
    m->sp = sp;
    Recur__Api__TokenIds ti = RECUR__API__TOKEN_IDS__INIT;
    m->ti = ti;
    Recur__Api__GenerateRequest q = RECUR__API__GENERATE_REQUEST__INIT;
    q.request_id = (char *)rid;
    q.model = g->model;
    if (p->text) {
        q.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT;
        q.text = p->text;
    } else {
        m->ti.n_ids = p->n_ids, m->ti.ids = p->ids;
        q.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TOKEN_IDS;
        q.token_ids = &m->ti;
    }
    q.sampling = &m->sp;
    q.has_priority = g->priority != 0, q.priority = g->priority;
    q.session_id = g->session_id;
    m->q = q;
}

/* ------------------------------------------------------------------ sessions */

int recur_http_session_id_check(const char *id, size_t n, const char *param, recur_http_bad_t *b) {
    if (n == 0 || n > RECUR_PROTO_MAX_ID_BYTES)
        return recur_http_badf(b, param, "invalid_session_id", "a session id has 1 to %d bytes, got %zu", RECUR_PROTO_MAX_ID_BYTES,
                    n);
    if (memchr(id, '\0', n) || !utf8_valid_n(id, n))
        return recur_http_badf(b, param, "invalid_session_id", "a session id must be UTF-8 text (no NUL)");
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)id[i] < 0x20 || id[i] == 0x7f)
            return recur_http_badf(b, param, "invalid_session_id", "a session id may not contain control characters");
    return 0;
}

void recur_http_sess_body_clear(recur_http_sess_body_t *s) {
    free(s->session_id);
    free(s->model);
    memset(s, 0, sizeof *s);
}

int recur_http_parse_session_body(Recur__Api__SessionOp op, const char *body, size_t n, recur_http_sess_body_t *s,
                                  recur_http_bad_t *b) {
    memset(s, 0, sizeof *s);
    int create = op == RECUR__API__SESSION_OP__SESSION_OP_CREATE;
    if (!create && op != RECUR__API__SESSION_OP__SESSION_OP_FORK)
        return recur_http_badf(b, NULL, "invalid_value", "this request takes no body");
    size_t k = 0;
    while (k < n && isspace((unsigned char)body[k])) k++;
    if (k == n) return 0;   /* no body: every field has its default */
    cJSON *root = recur_http_parse_json(body, n, b);
    if (!root) return -1;
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = recur_http_badf(b, NULL, "invalid_type", "the body must be a JSON object, got %s", json_type(root));
        goto out;
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, root) {
        for (const cJSON *e = root->child; e != f; e = e->next)
            if (!strcmp(e->string, f->string)) {
                rc = recur_http_badf(b, f->string, "duplicate_field", "'%.64s' appears twice", f->string);
                goto out;
            }
        if (cJSON_IsNull(f)) continue;
        if (!strcmp(f->string, "session_id")) {
            if (!cJSON_IsString(f)) {
                rc = recur_http_badf(b, "session_id", "invalid_type", "'session_id' must be a string, got %s", json_type(f));
                goto out;
            }
            if ((rc = recur_http_session_id_check(f->valuestring, strlen(f->valuestring), "session_id", b))) goto out;
            if (!(s->session_id = strdup(f->valuestring))) {
                rc = recur_http_badf(b, NULL, NULL, "out of memory");
                goto out;
            }
        } else if (create && !strcmp(f->string, "model")) {
            if ((rc = get_string(f, "model", &s->model, b))) goto out;
            if (!*s->model || strlen(s->model) >= RECUR_PROTO_MAX_NAME_BYTES) {
                rc = recur_http_badf(b, "model", "invalid_value", "'model' must have 1 to %d bytes", RECUR_PROTO_MAX_NAME_BYTES - 1);
                goto out;
            }
        } else {
            rc = recur_http_badf(b, f->string, "unknown_field", "unknown field '%.64s' (%s)", f->string,
                      create ? "a new session takes session_id and model" : "a fork takes session_id, the copy's id");
            goto out;
        }
    }
out:
    cJSON_Delete(root);
    if (rc) recur_http_sess_body_clear(s);
    return rc;
}

void recur_http_session_request(Recur__Api__SessionOp op, const char *rid, const char *path_id,
                                const recur_http_sess_body_t *s, Recur__Api__SessionRequest *q) {
    Recur__Api__SessionRequest z = RECUR__API__SESSION_REQUEST__INIT;
    *q = z;
    q->request_id = (char *)rid;
    q->has_op = 1, q->op = op;
    switch (op) {
    case RECUR__API__SESSION_OP__SESSION_OP_CREATE:
        q->session_id = s ? s->session_id : NULL;
        q->model = s ? s->model : NULL;
        break;
    case RECUR__API__SESSION_OP__SESSION_OP_FORK:
        q->session_id = (char *)path_id;
        q->new_session_id = s ? s->session_id : NULL;
        break;
    case RECUR__API__SESSION_OP__SESSION_OP_LIST: break;
    default: q->session_id = (char *)path_id; break;
    }
}
