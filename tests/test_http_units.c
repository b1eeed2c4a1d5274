/* test_http_units.c: the HTTP API's small modules without a server:
 *   - chat templates: the built-in RWKV World and plain prompts byte for byte (system,
 *     user, assistant turns; blank lines inside a message collapsed for World only; trim),
 *     the choice by arch, a template file parsed (escapes, stops, flags) and rendering the
 *     same prompt as the built-in it copies, and bad files refused with the line number;
 *   - metrics: counters, gauges and histogram buckets in the Prometheus text (cumulative
 *     buckets, +Inf = count, the sum), the TTFT/ITL split, per-rank series only once seen,
 *     and reporting from 4 threads at once adds up exactly;
 *   - API keys: the right key among several matches; a prefix, an extension, a wrong byte
 *     and the empty key do not; a key file with comments, blanks and white space; the
 *     index of the matching key (--max-requests-per-key counts per key);
 *   - sessions over HTTP: a session's later chat turn renders as the continuation, and the
 *     first turn's prompt + the reply + the continuation is byte for byte the prompt of the
 *     whole conversation (both built-ins; a reply that the template would trim is where it
 *     stops holding, as documented); request bodies with session_id (accepted, copied into
 *     the GenerateRequest; n > 1, bad ids refused), /v1/sessions bodies (create, fork;
 *     unknown fields, bad ids, other ops refused), session ids (length, UTF-8, control
 *     characters), and every accepted body's protobuf message passes recur_proto's checks;
 *   - the session metrics series, as the coordinator publishes them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recur_chat_template.h"
#include "recur_http.h"
#include "recur_http_parse.h"
#include "recur_metrics.h"
#include "recur_proto.h"

static int failures;
#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (cond) printf("ok   ");                                                          \
        else printf("FAIL "), failures++;                                                  \
        printf(__VA_ARGS__);                                                                \
        printf("\n");                                                                       \
    } while (0)

static char *render(const recur_chat_template_t *t, const recur_chat_message_t *m, size_t n) {
    char *out = NULL;
    if (recur_chat_template_render(t, m, n, &out) != RECUR_OK) return NULL;
    return out;
}

static void test_templates(void) {
    recur_chat_template_t *w = NULL, *p = NULL, *f = NULL;
    CHECK(recur_chat_template_builtin("rwkv7", &w) == RECUR_OK && !strcmp(recur_chat_template_name(w), "rwkv-world"),
          "rwkv7 -> rwkv-world");
    CHECK(recur_chat_template_builtin("xlstm", &p) == RECUR_OK && !strcmp(recur_chat_template_name(p), "plain"),
          "xlstm -> plain");
    recur_chat_message_t m[] = {{RECUR_CHAT_SYSTEM, "  Be brief.\n"},
                                {RECUR_CHAT_USER, "Line one\n\n\nLine two\r\n\r\nthree"},
                                {RECUR_CHAT_ASSISTANT, "Sure."},
                                {RECUR_CHAT_USER, "Again"}};
    char *a = render(w, m, 4), *b = render(p, m, 4);
    const char *wa = "System: Be brief.\n\nUser: Line one\nLine two\nthree\n\nAssistant: Sure.\n\nUser: Again\n\nAssistant:";
    const char *pb = "System: Be brief.\n\nUser: Line one\n\n\nLine two\r\n\r\nthree\n\nAssistant: Sure.\n\nUser: Again\n\n"
                     "Assistant:";
    CHECK(a && !strcmp(a, wa), "rwkv-world prompt (blank lines collapsed, trimmed): %s", a ? "as expected" : "NULL");
    CHECK(b && !strcmp(b, pb), "plain prompt (content as written, trimmed)");
    const char *const *stops;
    CHECK(recur_chat_template_stops(w, &stops) == 1 && !strcmp(stops[0], "\n\nUser:"), "rwkv-world stop \\n\\nUser:");
    char *out = NULL;
    CHECK(recur_chat_template_render(w, m, 0, &out) == RECUR_E_INVAL && !out, "no messages refused");

    const char *file = "# the RWKV World format, as a file\n"
                       "name = \"world-copy\"\n"
                       "system_prefix = \"System: \"\n  system_suffix=\"\\n\\n\"   # comment\n"
                       "user_prefix = \"User: \"\nuser_suffix = \"\\n\\n\"\n"
                       "assistant_prefix = \"Assistant: \"\nassistant_suffix = \"\\n\\n\"\n"
                       "generation_prompt = \"Assistant:\"\n"
                       "stop = \"\\n\\nUser:\"\nstop = \"\\\"quoted\\\"\\t\"\n"
                       "trim = true\ncollapse_blank_lines = true\n";
    char err[256];
    CHECK(recur_chat_template_parse(file, strlen(file), &f, err, sizeof err) == RECUR_OK, "template file parses: %s",
          f ? recur_chat_template_name(f) : err);
    if (f) {
        char *c = render(f, m, 4);
        CHECK(c && !strcmp(c, wa), "the file renders the built-in's prompt");
        free(c);
        CHECK(recur_chat_template_stops(f, &stops) == 2 && !strcmp(stops[1], "\"quoted\"\t"), "escapes in a stop");
    }
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"name = \"x\"\nfoo = \"y\"\n", "line 2: unknown key 'foo'"},
        {"user_prefix \"x\"\n", "line 1: expected 'key = value'"},
        {"\n\nuser_prefix = \"x\n", "line 3: the string has no closing"},
        {"user_prefix = \"\\q\"\n", "unknown escape"},
        {"user_prefix = \"a\"\nuser_prefix = \"b\"\n", "line 2: user_prefix is set twice"},
        {"trim = yes\n", "trim expects true or false"},
        {"user_prefix = x\n", "expects a double-quoted string"},
        {"user_prefix = \"a\" b\n", "unexpected text after the string"},
        {"stop = \"\"\n", "an empty stop string"},
        {"stop=\"a\"\nstop=\"b\"\nstop=\"c\"\nstop=\"d\"\nstop=\"e\"\n", "line 5: more than 4 stop strings"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        recur_chat_template_t *t = NULL;
        recur_status_t s = recur_chat_template_parse(bad[i].text, strlen(bad[i].text), &t, err, sizeof err);
        CHECK(s == RECUR_E_FORMAT && !t && strstr(err, bad[i].want), "bad template %zu refused: %s", i, err);
    }
    recur_chat_template_t *t = NULL;
    CHECK(recur_chat_template_load("/nonexistent/tmpl", &t, err, sizeof err) == RECUR_E_IO && strstr(err, "cannot open"),
          "missing file: %s", err);
    free(a);
    free(b);
    recur_chat_template_free(w);
    recur_chat_template_free(p);
    recur_chat_template_free(f);
}

static unsigned long long metric(const char *text, const char *name) {
    const char *p = text;
    size_t n = strlen(name);
    while ((p = strstr(p, name))) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return strtoull(p + n + 1, NULL, 10);
        p += n;
    }
    return ~0ull;
}

static void *metrics_thread(void *ud) {
    recur_metrics_t *m = ud;
    for (int i = 0; i < 10000; i++) {
        uint64_t last = 0;
        recur_metrics_token(m, 1000, &last, 1000 + 5000000);   /* TTFT 5 ms */
        recur_metrics_http(m, "/v1/completions", 200);
    }
    return NULL;
}

static void test_metrics(void) {
    recur_metrics_t *m = NULL;
    CHECK(recur_metrics_create(&m) == RECUR_OK, "metrics created");
    uint64_t accept = 1000000000ull, last = 0;
    recur_metrics_request(m, 16);
    recur_metrics_token(m, accept, &last, accept + 30000000ull);   /* first: TTFT 30 ms */
    recur_metrics_token(m, accept, &last, accept + 32000000ull);   /* ITL 2 ms */
    recur_metrics_token(m, accept, &last, accept + 42000000ull);   /* ITL 10 ms */
    recur_metrics_finished(m, "length", accept, accept + 50000000ull);
    recur_metrics_sched(m, 3, 2, 3, 63);
    recur_metrics_step(m, 2000000, 0, 1500, 1800);
    recur_metrics_ready(m, 1);
    recur_metrics_http(m, "/v1/chat/completions", 429);
    recur_metrics_http(m, "/nowhere", 418);
    char *t = recur_metrics_render(m);
    CHECK(t != NULL, "rendered");
    if (!t) return;
    CHECK(metric(t, "recur_prompt_tokens_total") == 16 && metric(t, "recur_generation_tokens_total") == 3 &&
              metric(t, "recur_requests_total") == 1,
          "counters: prompt 16, generated 3, requests 1");
    CHECK(metric(t, "recur_requests_running") == 3 && metric(t, "recur_requests_waiting") == 2 &&
              metric(t, "recur_slots_used") == 3 && metric(t, "recur_slots_total") == 63 && metric(t, "recur_ready") == 1,
          "gauges");
    CHECK(metric(t, "recur_time_to_first_token_seconds_count") == 1 &&
              metric(t, "recur_time_to_first_token_seconds_bucket{le=\"0.02\"}") == 0 &&
              metric(t, "recur_time_to_first_token_seconds_bucket{le=\"0.04\"}") == 1 &&
              metric(t, "recur_time_to_first_token_seconds_bucket{le=\"+Inf\"}") == 1,
          "TTFT 30 ms lands in (0.02, 0.04]");
    CHECK(metric(t, "recur_inter_token_latency_seconds_count") == 2 &&
              metric(t, "recur_inter_token_latency_seconds_bucket{le=\"0.0025\"}") == 1 &&
              metric(t, "recur_inter_token_latency_seconds_bucket{le=\"0.01\"}") == 2,
          "ITL 2 ms and 10 ms: cumulative buckets");
    CHECK(strstr(t, "recur_inter_token_latency_seconds_sum 0.012000000\n") != NULL, "ITL sum 0.012 s");
    CHECK(strstr(t, "recur_requests_finished_total{reason=\"length\"} 1\n") != NULL, "finished by reason");
    CHECK(metric(t, "recur_rank_step_forward_seconds_count{rank=\"0\"}") == 1 && !strstr(t, "rank=\"1\""),
          "per-rank series for the ranks that reported only");
    CHECK(strstr(t, "recur_http_responses_total{route=\"/v1/chat/completions\",code=\"429\"} 1") &&
              strstr(t, "recur_http_responses_total{route=\"other\",code=\"other\"} 1"),
          "HTTP responses by route and code");
    CHECK(strstr(t, "# TYPE recur_time_to_first_token_seconds histogram\n") && strstr(t, "# TYPE recur_slots_used gauge\n"),
          "TYPE lines");
    free(t);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, metrics_thread, m);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    t = recur_metrics_render(m);
    CHECK(t && metric(t, "recur_generation_tokens_total") == 40003 &&
              metric(t, "recur_time_to_first_token_seconds_count") == 40001 &&
              strstr(t, "recur_http_responses_total{route=\"/v1/completions\",code=\"200\"} 40000\n"),
          "4 threads x 10000 reports add up exactly");
    free(t);
    recur_metrics_free(m);
    recur_metrics_observe(NULL, RECUR_METRICS_TTFT, 1.0);   /* NULL: a no-op */
}

static void test_keys(void) {
    const char *keys[] = {"sk-alpha", "sk-beta-longer"};
    CHECK(recur_http_key_ok(keys, 2, "sk-beta-longer", 14) && recur_http_key_ok(keys, 2, "sk-alpha", 8), "right keys");
    CHECK(recur_http_key_index(keys, 2, "sk-beta-longer", 14) == 1 && recur_http_key_index(keys, 2, "sk-alpha", 8) == 0 &&
              recur_http_key_index(keys, 2, "sk-gamma", 8) == -1,
          "key index: 1, 0, none");
    CHECK(!recur_http_key_ok(keys, 2, "sk-alph", 7) && !recur_http_key_ok(keys, 2, "sk-alphaX", 9) &&
              !recur_http_key_ok(keys, 2, "sk-alphb", 8) && !recur_http_key_ok(keys, 2, "", 0) &&
              !recur_http_key_ok(keys, 0, "sk-alpha", 8),
          "prefix, extension, one wrong byte, empty, no keys: refused");
    char path[] = "/tmp/recur-keys-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "# comment\n\n   sk-one  \nsk-two\r\n";
    if (fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text)) {
        char **k = NULL;
        size_t n = 0;
        recur_status_t s = recur_http_read_key_file(path, &k, &n);
        CHECK(s == RECUR_OK && n == 2 && !strcmp(k[0], "sk-one") && !strcmp(k[1], "sk-two"), "key file: 2 keys");
        for (size_t i = 0; i < n; i++) free(k[i]);
        free(k);
    }
    if (fd >= 0) close(fd), unlink(path);
    char **k = NULL;
    size_t n = 0;
    CHECK(recur_http_read_key_file("/nonexistent/keys", &k, &n) == RECUR_E_IO && n == 0, "missing key file refused");
}

/* first turn's prompt + reply + the continuation == the whole conversation's prompt */
static void test_continuation(void) {
    const char *arch[2] = {"rwkv7", "xlstm"};
    for (int k = 0; k < 2; k++) {
        recur_chat_template_t *t = NULL;
        recur_chat_template_builtin(arch[k], &t);
        recur_chat_message_t first[] = {{RECUR_CHAT_SYSTEM, "Be brief."}, {RECUR_CHAT_USER, "Hello"}};
        recur_chat_message_t next[] = {{RECUR_CHAT_USER, "And then?"}, {RECUR_CHAT_SYSTEM, "Now in French."}};
        const char *reply = " Hi there.\nHow can I help?";   /* as generated: after "Assistant:" */
        recur_chat_message_t whole[] = {first[0], first[1], {RECUR_CHAT_ASSISTANT, reply}, next[0], next[1]};
        char *a = render(t, first, 2), *c = NULL, *w = render(t, whole, 5);
        recur_status_t s = recur_chat_template_render_continuation(t, next, 2, &c);
        char joined[1024];
        snprintf(joined, sizeof joined, "%s%s%s", a ? a : "", reply, c ? c : "");
        CHECK(s == RECUR_OK && a && w && !strcmp(joined, w), "%s: first turn + reply + continuation == whole conversation",
              recur_chat_template_name(t));
        free(c);
        CHECK(recur_chat_template_render_continuation(t, next, 1, &c) == RECUR_OK && c &&
                  !strcmp(c, "\n\nUser: And then?\n\nAssistant:"),
              "%s: the continuation closes the reply (assistant_suffix) and opens the next", recur_chat_template_name(t));
        /* the rwkv-world stop string "\n\nUser:" begins the continuation: a reply that ended
         * on it has it in the state, and the coordinator skips it there */
        CHECK(c && !strncmp(c, "\n\nUser:", 7), "%s: the stop string is a prefix of the continuation",
              recur_chat_template_name(t));
        free(c);
        /* where it does not hold: a reply ending in white space is trimmed in the whole
         * conversation but is in the state as generated */
        recur_chat_message_t whole2[] = {first[0], first[1], {RECUR_CHAT_ASSISTANT, " Hi.  "}, next[0]};
        char *w2 = render(t, whole2, 4);
        c = NULL;
        recur_chat_template_render_continuation(t, next, 1, &c);
        snprintf(joined, sizeof joined, "%s Hi.  %s", a ? a : "", c ? c : "");
        CHECK(w2 && strcmp(joined, w2), "%s: a reply with trailing white space differs (documented)",
              recur_chat_template_name(t));
        free(a), free(c), free(w), free(w2);
        recur_chat_template_free(t);
    }
}

/* body -> GenerateRequest; 0 and the request validated, or -1 with a message */
static int gen_body(int ep, const char *body, recur_http_gen_req_t *g, recur_http_bad_t *b, int *valid) {
    memset(b, 0, sizeof *b);
    *valid = 0;
    cJSON *root = recur_http_parse_json(body, strlen(body), b);
    if (!root) return -1;
    int rc = recur_http_parse_generate(ep, root, 64, g, b);
    cJSON_Delete(root);
    if (rc) return rc;
    if (g->chat) {
        recur_chat_template_t *t = NULL;
        recur_chat_template_builtin("rwkv7", &t);
        rc = recur_http_render_chat(g, t, g->session_id != NULL, b);
        recur_chat_template_free(t);
        if (rc) return rc;
    }
    recur_http_gen_msg_t m;
    recur_http_generate_request(g, 0, "r-1", &m);
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
    env.generate = &m.q;
    recur_proto_error_t err;
    *valid = recur_proto_api_validate(&env, &err) == RECUR_OK;
    return 0;
}

static void test_parse(void) {
    recur_http_gen_req_t g;
    recur_http_bad_t b;
    int valid;
    int rc = gen_body(RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"Hi\",\"session_id\":\"chat-1\",\"max_tokens\":3}", &g, &b,
                      &valid);
    CHECK(rc == 0 && valid && g.session_id && !strcmp(g.session_id, "chat-1"), "completions with session_id: accepted");
    recur_http_gen_msg_t m;
    if (!rc) {
        recur_http_generate_request(&g, 0, "r", &m);
        CHECK(m.q.session_id && !strcmp(m.q.session_id, "chat-1") && !strcmp(m.q.text, "Hi"), "session_id in the GenerateRequest");
    }
    recur_http_gen_req_clear(&g);
    rc = gen_body(RECUR_HTTP_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Go\"}],\"session_id\":\"c\"}", &g, &b,
                  &valid);
    CHECK(rc == 0 && valid && g.prompts && !strcmp(g.prompts[0].text, "\n\nUser: Go\n\nAssistant:") && g.n_stops == 1,
          "chat with session_id (a later turn): the continuation and the template's stop");
    recur_http_gen_req_clear(&g);
    static const struct {
        int ep;
        const char *body, *code;
    } bad[] = {
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"x\",\"session_id\":\"\"}", "invalid_session_id"},
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"x\",\"session_id\":\"a\\u0007\"}", "invalid_session_id"},
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"x\",\"session_id\":[1]}", "invalid_type"},
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"x\",\"n\":2,\"session_id\":\"s\"}", "invalid_value"},
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":[\"x\",\"y\"],\"session_id\":\"s\"}", "invalid_value"},
        {RECUR_HTTP_EP_CHAT, "{\"messages\":[],\"session_id\":\"s\"}", "invalid_type"},
        /* found by fuzz_http: accepted, then refused by the protocol (or silently cut at a NUL) */
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"\"}", "invalid_value"},
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"ab\\u0000cd\"}", "invalid_value"},
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":[[],[1,2]]}", "invalid_value"},
        {RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"x\",\"top_p\":1e-50}", "invalid_value"},
        {RECUR_HTTP_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\u0000\"}]}", "invalid_value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rc = gen_body(bad[i].ep, bad[i].body, &g, &b, &valid);
        CHECK(rc != 0 && b.status == 400 && !strcmp(b.code, bad[i].code) && b.msg[0], "refused (%s): %s", bad[i].code, b.msg);
        recur_http_gen_req_clear(&g);
    }
    /* an escaped backslash before u0000 is text, not a NUL */
    rc = gen_body(RECUR_HTTP_EP_COMPLETIONS, "{\"prompt\":\"a\\\\u0000\"}", &g, &b, &valid);
    CHECK(rc == 0 && valid && !strcmp(g.prompts[0].text, "a\\u0000"), "\"a\\\\u0000\" is the text a\\u0000");
    recur_http_gen_req_clear(&g);
    memset(&b, 0, sizeof b);
    const char raw[] = "{\"prompt\":\"a\0b\"}";
    CHECK(!recur_http_parse_json(raw, sizeof raw - 1, &b) && !strcmp(b.code, "invalid_json"), "a raw NUL byte: %s", b.msg);
    char id[200];
    memset(id, 'x', sizeof id);
    CHECK(!recur_http_session_id_check(id, 128, "s", &b) && recur_http_session_id_check(id, 129, "s", &b) &&
              recur_http_session_id_check("", 0, "s", &b) && recur_http_session_id_check("a\xff", 2, "s", &b) &&
              recur_http_session_id_check("a\0b", 3, "s", &b) && !recur_http_session_id_check("chat/1 \xc3\xa9", 9, "s", &b),
          "session ids: 1..128 bytes of UTF-8 without control characters ('/' and spaces are fine)");
    /* /v1/sessions bodies */
    recur_http_sess_body_t sb;
    CHECK(!recur_http_parse_session_body(RECUR__API__SESSION_OP__SESSION_OP_CREATE, "", 0, &sb, &b) && !sb.session_id,
          "create: an empty body");
    const char *cb = "{\"session_id\":\"a\",\"model\":\"m:v\"}";
    rc = recur_http_parse_session_body(RECUR__API__SESSION_OP__SESSION_OP_CREATE, cb, strlen(cb), &sb, &b);
    Recur__Api__SessionRequest q;
    recur_http_session_request(RECUR__API__SESSION_OP__SESSION_OP_CREATE, "r", NULL, &sb, &q);
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
    env.session = &q;
    recur_proto_error_t err;
    CHECK(!rc && !strcmp(q.session_id, "a") && !strcmp(q.model, "m:v") && recur_proto_api_validate(&env, &err) == RECUR_OK,
          "create {session_id, model}: a valid SessionRequest");
    recur_http_sess_body_clear(&sb);
    const char *fb = "{\"session_id\":\"copy\"}";
    rc = recur_http_parse_session_body(RECUR__API__SESSION_OP__SESSION_OP_FORK, fb, strlen(fb), &sb, &b);
    recur_http_session_request(RECUR__API__SESSION_OP__SESSION_OP_FORK, "r", "orig", &sb, &q);
    CHECK(!rc && !strcmp(q.session_id, "orig") && !strcmp(q.new_session_id, "copy") &&
              recur_proto_api_validate(&env, &err) == RECUR_OK,
          "fork {session_id}: source from the path, the copy's id from the body");
    recur_http_sess_body_clear(&sb);
    static const struct {
        Recur__Api__SessionOp op;
        const char *body, *code;
    } sbad[] = {
        {RECUR__API__SESSION_OP__SESSION_OP_FORK, "{\"model\":\"m\"}", "unknown_field"},
        {RECUR__API__SESSION_OP__SESSION_OP_CREATE, "{\"session_id\":5}", "invalid_type"},
        {RECUR__API__SESSION_OP__SESSION_OP_CREATE, "{\"session_id\":\"a\",\"session_id\":\"b\"}", "duplicate_field"},
        {RECUR__API__SESSION_OP__SESSION_OP_CREATE, "[1]", "invalid_type"},
        {RECUR__API__SESSION_OP__SESSION_OP_CREATE, "{\"model\":\"\"}", "invalid_value"},
        {RECUR__API__SESSION_OP__SESSION_OP_CREATE, "{", "invalid_json"},
        {RECUR__API__SESSION_OP__SESSION_OP_GET, "{}", "invalid_value"},
    };
    for (size_t i = 0; i < sizeof sbad / sizeof *sbad; i++) {
        rc = recur_http_parse_session_body(sbad[i].op, sbad[i].body, strlen(sbad[i].body), &sb, &b);
        CHECK(rc && b.status == 400 && !strcmp(b.code, sbad[i].code) && !sb.session_id && !sb.model,
              "session body refused (%s): %s", sbad[i].code, b.msg);
    }
}

static void test_session_metrics(void) {
    recur_metrics_t *m = NULL;
    recur_metrics_create(&m);
    recur_metrics_sessions_t s = {.fresh = 1, .in_slot = 2, .in_host = 3, .on_disk = 4, .turns = 7,
                                  .cached_tokens = 100, .prefix_lookups = 10, .prefix_hits = 4,
                                  .prefix_tokens_saved = 64, .saves = 5, .loads = 3, .load_failures = 1, .deleted = 2};
    recur_metrics_sessions(m, &s);
    char *t = recur_metrics_render(m);
    CHECK(t && metric(t, "recur_sessions{tier=\"new\"}") == 1 && metric(t, "recur_sessions{tier=\"slot\"}") == 2 &&
              metric(t, "recur_sessions{tier=\"host\"}") == 3 && metric(t, "recur_sessions{tier=\"disk\"}") == 4,
          "sessions per tier");
    CHECK(t && metric(t, "recur_session_turns_total") == 7 && metric(t, "recur_session_prompt_tokens_cached_total") == 100 &&
              metric(t, "recur_prompt_tokens_cached_total") == 164 && metric(t, "recur_prefix_cache_hits_total") == 4 &&
              metric(t, "recur_prefix_cache_misses_total") == 6 && metric(t, "recur_prefix_cache_tokens_saved_total") == 64,
          "turns, cached tokens (sessions + prefix cache), prefix hits / misses / tokens saved");
    CHECK(t && metric(t, "recur_session_checkpoints_total{op=\"load\",result=\"ok\"}") == 2 &&
              metric(t, "recur_session_checkpoints_total{op=\"save\",result=\"ok\"}") == 5 &&
              metric(t, "recur_sessions_removed_total{reason=\"deleted\"}") == 2,
          "checkpoints and removals");
    free(t);
    recur_metrics_free(m);
}

int main(void) {
    test_templates();
    test_metrics();
    test_keys();
    test_continuation();
    test_parse();
    test_session_metrics();
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
