/* recur_http_parse.h: the HTTP front end's request bodies (coordinator/recur_http.c), read
 * into the protobuf messages sent to the coordinator. Internal to recur_http.c; declared
 * here so that the unit tests (tests/test_http_units.c) and the fuzz target
 * (tests/fuzz/fuzz_http.c) drive exactly the code the server runs.
 *
 * What is read (README "HTTP API" has the fields):
 *   - /v1/completions and /v1/chat/completions bodies -> recur_http_gen_req_t
 *     (recur_http_parse_generate), then one GenerateRequest per choice
 *     (recur_http_generate_request). Chat messages are kept as messages and rendered into
 *     the prompt once the template is known (recur_http_render_chat): as a whole
 *     conversation, or, for a later turn of a session, as its continuation;
 *   - /v1/sessions bodies (create: {"session_id", "model"}; fork: {"session_id"}) ->
 *     recur_http_sess_body_t (recur_http_parse_session_body), then a SessionRequest
 *     (recur_http_session_request);
 *   - session ids from a path or a body (recur_http_session_id_check): what the coordinator
 *     accepts, 1..128 bytes of UTF-8 without NUL or control characters.
 * Every refusal fills a recur_http_bad_t: the HTTP status (400, or 503 when the chat
 * template is not known yet), OpenAI's `param` and `code`, and a message naming the field.
 *
 * The promise the fuzz target checks: a body that is accepted gives protobuf messages that
 * pass recur_proto_api_validate (what is accepted can be sent), and every refusal has a
 * status and a message.
 *
 * Ownership: a recur_http_gen_req_t / recur_http_sess_body_t owns its strings and arrays
 * (freed by its _clear, which also resets it; clearing a zeroed one is a no-op). The
 * protobuf messages filled by recur_http_generate_request / recur_http_session_request point
 * into the request they were made from and into the caller's scratch struct: valid while
 * both live, never freed with protobuf-c. Thread-safety: no shared state except a mutex that
 * serializes cJSON's parser (its error position is a global in cJSON 1.7); any number of
 * threads may parse at once. */
#ifndef RECUR_HTTP_PARSE_H
#define RECUR_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "recur_api.pb-c.h"
#include "recur_chat_template.h"
#include "recur_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { RECUR_HTTP_EP_COMPLETIONS = 1, RECUR_HTTP_EP_CHAT = 2 };

/* A refusal: status (400 ...), OpenAI's param and code ("" when none), a message. */
typedef struct recur_http_bad {
    int status;
    char param[64];
    char code[48];
    char msg[768];
} recur_http_bad_t;

/* Fills *b as a 400 with the parameter and error code (either may be NULL) and the
 * formatted message; returns -1, a parser's failure value. */
int recur_http_badf(recur_http_bad_t *b, const char *param, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

typedef struct recur_http_prompt {
    char *text;          /* or */
    int32_t *ids;
    size_t n_ids;
} recur_http_prompt_t;

typedef struct recur_http_gen_req {
    int chat;
    char *model;
    char *session_id;    /* recur's extension: continue (or start) this session        */
    recur_http_prompt_t *prompts;   /* chat: one, made by recur_http_render_chat          */
    size_t n_prompts;
    recur_chat_message_t *msgs;     /* chat: the messages (contents in msg_text)          */
    char **msg_text;
    size_t n_msgs;
    int32_t n;
    int stream, include_usage;
    int has_max_tokens;
    uint32_t max_tokens;
    int has_temperature, has_top_p, has_top_k, has_min_p, has_rep, has_pres, has_freq, has_seed, has_logprobs;
    float temperature, top_p, min_p, rep, pres, freq;
    int32_t top_k;
    uint64_t seed;
    uint32_t logprobs;   /* completions: the int; chat: top_logprobs */
    int chat_logprobs;   /* chat: logprobs: true */
    int has_top_logprobs;
    char *stops[RECUR_PROTO_MAX_STOP];
    size_t n_stops;
    int32_t stop_ids[RECUR_PROTO_MAX_STOP_TOKENS];
    size_t n_stop_ids;
    int ignore_eos;
    int32_t priority;
    Recur__Api__LogitBias bias[RECUR_PROTO_MAX_LOGIT_BIAS];
    Recur__Api__LogitBias *biasp[RECUR_PROTO_MAX_LOGIT_BIAS];
    size_t n_bias;
} recur_http_gen_req_t;

void recur_http_gen_req_clear(recur_http_gen_req_t *g);

/* The JSON text body[0..n) (NUL-terminated at body[n]: nothing may follow the value, and no
 * NUL inside it) as a cJSON tree the caller deletes; NULL with b set (400, "invalid_json",
 * the byte where parsing stopped). */
cJSON *recur_http_parse_json(const char *body, size_t n, recur_http_bad_t *b);

/* A completions (ep RECUR_HTTP_EP_COMPLETIONS) or chat (RECUR_HTTP_EP_CHAT) body into *g
 * (zeroed first; clear it either way). max_choices bounds n x prompts. A chat request has
 * its messages in g->msgs and no prompt yet: render it. With session_id: n must be 1 and
 * there must be one prompt (a session is one conversation). 0, or -1 with b set. */
int recur_http_parse_generate(int ep, const cJSON *root, int32_t max_choices, recur_http_gen_req_t *g,
                              recur_http_bad_t *b);

/* Chat: g->msgs through template t into g->prompts[0], and the template's stop strings added
 * to g's (as many as fit beside the request's own, 16 in all). continuation: the request is
 * a later turn of a session (recur_chat_template_render_continuation), else the whole
 * conversation (recur_chat_template_render). 0, or -1 with b set (out of memory). */
int recur_http_render_chat(recur_http_gen_req_t *g, const recur_chat_template_t *t, int continuation,
                           recur_http_bad_t *b);

/* The GenerateRequest of choice `choice` (0 .. n_prompts x n - 1: prompt choice / n; a seed
 * gives choice i seed + i % n) with request id rid, built in m (the caller's scratch). */
typedef struct recur_http_gen_msg {
    Recur__Api__GenerateRequest q;
    Recur__Api__SamplingParams sp;
    Recur__Api__TokenIds ti;
} recur_http_gen_msg_t;
void recur_http_generate_request(const recur_http_gen_req_t *g, size_t choice, const char *rid,
                                 recur_http_gen_msg_t *m);

/* A session id (from a path, percent-decoded, or a body): 1..128 bytes, valid UTF-8, no
 * control characters. 0, or -1 with b set (400, param `param`, code "invalid_session_id"). */
int recur_http_session_id_check(const char *id, size_t n, const char *param, recur_http_bad_t *b);

/* POST /v1/sessions (op CREATE: optional "session_id" and "model") and POST
 * /v1/sessions/{id}/fork (op FORK: optional "session_id", the copy's id). An empty body (n
 * = 0) is allowed; unknown fields are refused. */
typedef struct recur_http_sess_body {
    char *session_id;
    char *model;
} recur_http_sess_body_t;
void recur_http_sess_body_clear(recur_http_sess_body_t *s);
int recur_http_parse_session_body(Recur__Api__SessionOp op, const char *body, size_t n, recur_http_sess_body_t *s,
                                  recur_http_bad_t *b);

/* The SessionRequest of op with request id rid: CREATE (s: its id and model), FORK (path_id
 * the source; s->session_id the copy), GET / DELETE / EXPORT (path_id), LIST (nothing);
 * IMPORT is built by the caller (chunks). s may be NULL. Built in *q (pointing into the
 * arguments). */
void recur_http_session_request(Recur__Api__SessionOp op, const char *rid, const char *path_id,
                                const recur_http_sess_body_t *s, Recur__Api__SessionRequest *q);

#ifdef __cplusplus
}
#endif
#endif
