/* fuzz_http.c: the HTTP API's request bodies (coordinator/recur_http_parse.h), exactly as
 * recur_http.c reads them. The first byte picks what the rest is:
 *   0 (mod 6): a /v1/completions body;
 *   1: a /v1/chat/completions body, rendered with the rwkv-world template (bit 3 of the
 *      first byte: as a session's later turn, the continuation);
 *   2: the same with the plain template (xLSTM's);
 *   3: a POST /v1/sessions body (create);
 *   4: a POST /v1/sessions/{id}/fork body;
 *   5: a session id from a path (recur_http_session_id_check).
 * Properties: a refusal has a status (400, or 503 never here: the template is given) and a
 * message; an accepted body gives, for every choice, a GenerateRequest (or a
 * SessionRequest) that passes recur_proto_api_validate and packs (what is accepted can be
 * sent to the coordinator); a chat prompt is valid UTF-8, and its continuation rendering is
 * the template's assistant_suffix followed by the whole rendering (the definition in
 * recur_chat_template.h); an accepted session id is 1..128 bytes of UTF-8 without control
 * characters. */
#include <string.h>

#include "recur_fuzz.h"
#include "recur_http_parse.h"
#include "recur_proto.h"
#include "recur_utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static int utf8_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t l = recur_utf8_len((const uint8_t *)s + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

static void check_bad(const recur_http_bad_t *b) {
    RECUR_FUZZ_CHECK(b->status == 400);
    RECUR_FUZZ_CHECK(b->msg[0] != '\0' && memchr(b->msg, '\0', sizeof b->msg));
}

/* the envelope passes the API's checks and packs */
static void check_sendable(recur_api_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t s = recur_proto_api_validate(env, &err);
    if (s != RECUR_OK) fprintf(stderr, "accepted, but the coordinator would refuse it: %s\n", err.msg);
    RECUR_FUZZ_CHECK(s == RECUR_OK);
    uint8_t *b = NULL;
    size_t nb = 0;
    s = recur_proto_api_pack(env, 0, &b, &nb, &err);
    if (s != RECUR_OK) fprintf(stderr, "accepted, but it does not pack: %s\n", err.msg);
    RECUR_FUZZ_CHECK(s == RECUR_OK);
    free(b);
}

static void fuzz_generate(int ep, const recur_chat_template_t *t, int continuation, const char *body, size_t n) {
    recur_http_bad_t b;
    memset(&b, 0, sizeof b);
    cJSON *root = recur_http_parse_json(body, n, &b);
    if (!root) {
        check_bad(&b);
        return;
    }
    recur_http_gen_req_t g;
    int rc = recur_http_parse_generate(ep, root, 64, &g, &b);
    cJSON_Delete(root);
    if (!rc && g.chat) {
        rc = recur_http_render_chat(&g, t, continuation, &b);
        if (!rc) {
            const char *p = g.prompts[0].text;
            RECUR_FUZZ_CHECK(utf8_ok(p, strlen(p)));
            /* continuation == assistant_suffix + the whole rendering ("\n\n" for both built-ins) */
            char *other = NULL;
            recur_status_t s = continuation ? recur_chat_template_render(t, g.msgs, g.n_msgs, &other)
                                            : recur_chat_template_render_continuation(t, g.msgs, g.n_msgs, &other);
            RECUR_FUZZ_CHECK(s == RECUR_OK);
            const char *cont = continuation ? p : other, *whole = continuation ? other : p;
            RECUR_FUZZ_CHECK(strlen(cont) == strlen(whole) + 2 && !memcmp(cont, "\n\n", 2) && !strcmp(cont + 2, whole));
            free(other);
        }
    }
    if (rc) {
        check_bad(&b);
        recur_http_gen_req_clear(&g);
        return;
    }
    RECUR_FUZZ_CHECK(g.n >= 1 && g.n_prompts >= 1 && (size_t)g.n * g.n_prompts <= 64);
    RECUR_FUZZ_CHECK(!g.session_id || (g.n == 1 && g.n_prompts == 1));
    for (size_t i = 0; i < g.n_prompts * (size_t)g.n; i++) {
        char rid[80];
        snprintf(rid, sizeof rid, "cmpl-fuzz-%zu", i);
        recur_http_gen_msg_t m;
        recur_http_generate_request(&g, i, rid, &m);
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
        env.generate = &m.q;
        check_sendable(&env);
    }
    recur_http_gen_req_clear(&g);
}

static void fuzz_session_body(Recur__Api__SessionOp op, const char *body, size_t n) {
    recur_http_sess_body_t s;
    recur_http_bad_t b;
    memset(&b, 0, sizeof b);
    if (recur_http_parse_session_body(op, body, n, &s, &b)) {
        check_bad(&b);
        RECUR_FUZZ_CHECK(!s.session_id && !s.model);
        return;
    }
    Recur__Api__SessionRequest q;
    recur_http_session_request(op, "http-session", "source-id", &s, &q);
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
    env.session = &q;
    check_sendable(&env);
    recur_http_sess_body_clear(&s);
}

static void fuzz_session_id(const char *id, size_t n) {
    recur_http_bad_t b;
    memset(&b, 0, sizeof b);
    if (recur_http_session_id_check(id, n, "session_id", &b)) {
        check_bad(&b);
        return;
    }
    RECUR_FUZZ_CHECK(n >= 1 && n <= 128 && !memchr(id, '\0', n) && utf8_ok(id, n));
    for (size_t i = 0; i < n; i++) RECUR_FUZZ_CHECK((uint8_t)id[i] >= 0x20 && id[i] != 0x7f);
    char copy[129];
    memcpy(copy, id, n);
    copy[n] = '\0';
    Recur__Api__SessionRequest q;
    static const Recur__Api__SessionOp ops[] = {RECUR__API__SESSION_OP__SESSION_OP_GET,
                                                RECUR__API__SESSION_OP__SESSION_OP_DELETE,
                                                RECUR__API__SESSION_OP__SESSION_OP_EXPORT,
                                                RECUR__API__SESSION_OP__SESSION_OP_FORK};
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        recur_http_session_request(ops[k], "http-session", copy, NULL, &q);
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
        env.session = &q;
        check_sendable(&env);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    static recur_chat_template_t *world, *plain;
    if (!world) {
        RECUR_FUZZ_CHECK(recur_chat_template_builtin("rwkv7", &world) == RECUR_OK);
        RECUR_FUZZ_CHECK(recur_chat_template_builtin("xlstm", &plain) == RECUR_OK);
    }
    if (n < 1) return 0;
    int mode = data[0] % 6, continuation = (data[0] >> 3) & 1;
    /* the server keeps a NUL after the body (its buffer is a C string): the same here */
    char *body = malloc(n);
    RECUR_FUZZ_CHECK(body != NULL);
    memcpy(body, data + 1, n - 1);
    body[n - 1] = '\0';
    size_t len = n - 1;
    switch (mode) {
    case 0: fuzz_generate(RECUR_HTTP_EP_COMPLETIONS, world, 0, body, len); break;
    case 1: fuzz_generate(RECUR_HTTP_EP_CHAT, world, continuation, body, len); break;
    case 2: fuzz_generate(RECUR_HTTP_EP_CHAT, plain, continuation, body, len); break;
    case 3: fuzz_session_body(RECUR__API__SESSION_OP__SESSION_OP_CREATE, body, len); break;
    case 4: fuzz_session_body(RECUR__API__SESSION_OP__SESSION_OP_FORK, body, len); break;
    default: fuzz_session_id(body, len); break;
    }
    free(body);
    return 0;
}
