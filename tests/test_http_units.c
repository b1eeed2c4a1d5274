/* test_http_units.c: the HTTP API's small modules without a server:
 *   - chat templates: the built-in RWKV World and plain prompts byte for byte (system,
 *     user, assistant turns; blank lines inside a message collapsed for World only; trim),
 *     the choice by arch, a template file parsed (escapes, stops, flags) and rendering the
 *     same prompt as the built-in it copies, and bad files refused with the line number;
 *   - metrics: counters, gauges and histogram buckets in the Prometheus text (cumulative
 *     buckets, +Inf = count, the sum), the TTFT/ITL split, per-rank series only once seen,
 *     and reporting from 4 threads at once adds up exactly;
 *   - API keys: the right key among several matches; a prefix, an extension, a wrong byte
 *     and the empty key do not; a key file with comments, blanks and white space. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recur_chat_template.h"
#include "recur_http.h"
#include "recur_metrics.h"

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

int main(void) {
    test_templates();
    test_metrics();
    test_keys();
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
