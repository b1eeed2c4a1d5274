/* recur_chat_template.c: see recur_chat_template.h. */
#include "recur_chat_template.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { F_NAME, F_SYS_PRE, F_SYS_SUF, F_USER_PRE, F_USER_SUF, F_ASST_PRE, F_ASST_SUF, F_GEN, N_FIELDS };
static const char *const k_keys[N_FIELDS] = {"name",        "system_prefix",    "system_suffix",    "user_prefix",
                                             "user_suffix", "assistant_prefix", "assistant_suffix", "generation_prompt"};

struct recur_chat_template {
    char *f[N_FIELDS];
    char *stop[RECUR_CHAT_MAX_STOP];
    size_t n_stop;
    int trim, collapse;
};

void recur_chat_template_free(recur_chat_template_t *t) {
    if (!t) return;
    for (int i = 0; i < N_FIELDS; i++) free(t->f[i]);
    for (size_t i = 0; i < t->n_stop; i++) free(t->stop[i]);
    free(t);
}

/* Fills every unset field with "" so render never sees NULL. */
static recur_status_t finish(recur_chat_template_t *t) {
    for (int i = 0; i < N_FIELDS; i++)
        if (!t->f[i] && !(t->f[i] = strdup(""))) return RECUR_E_NOMEM;
    return RECUR_OK;
}

recur_status_t recur_chat_template_builtin(const char *arch, recur_chat_template_t **out) {
    *out = NULL;
    recur_chat_template_t *t = calloc(1, sizeof *t);
    if (!t) return RECUR_E_NOMEM;
    int world = arch && !strcmp(arch, "rwkv7");
    const char *v[N_FIELDS] = {world ? "rwkv-world" : "plain", "System: ", "\n\n", "User: ", "\n\n", "Assistant: ",
                               "\n\n", "Assistant:"};
    for (int i = 0; i < N_FIELDS; i++)
        if (!(t->f[i] = strdup(v[i]))) goto nomem;
    if (!(t->stop[0] = strdup("\n\nUser:"))) goto nomem;
    t->n_stop = 1;
    t->trim = 1;
    t->collapse = world;
    *out = t;
    return RECUR_OK;
nomem:
    recur_chat_template_free(t);
    return RECUR_E_NOMEM;
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static recur_status_t fail(char *err, size_t n, recur_status_t s, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* Decodes the quoted string starting at *p (at the opening quote) into a new string;
 * *p moves past the closing quote. NULL with err set on a bad string. */
static char *parse_string(const char **p, const char *end, int line, char *err, size_t n) {
    const char *s = *p + 1;
    char *out = malloc((size_t)(end - s) + 1), *o = out;
    if (!out) {
        fail(err, n, RECUR_E_NOMEM, "out of memory");
        return NULL;
    }
    while (s < end && *s != '"') {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        if (s + 1 >= end) break;
        switch (s[1]) {
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case '\\': *o++ = '\\'; break;
        case '"': *o++ = '"'; break;
        default:
            fail(err, n, RECUR_E_FORMAT, "line %d: unknown escape '\\%c' (use \\n \\r \\t \\\\ \\\")", line, s[1]);
            free(out);
            return NULL;
        }
        s += 2;
    }
    if (s >= end) {
        fail(err, n, RECUR_E_FORMAT, "line %d: the string has no closing '\"'", line);
        free(out);
        return NULL;
    }
    *o = '\0';
    *p = s + 1;
    return out;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p;
}

recur_status_t recur_chat_template_parse(const char *text, size_t len, recur_chat_template_t **out, char *err,
                                         size_t n) {
    *out = NULL;
    if (err && n) err[0] = '\0';
    if (memchr(text, '\0', len)) return fail(err, n, RECUR_E_FORMAT, "the template contains a NUL byte");
    recur_chat_template_t *t = calloc(1, sizeof *t);
    if (!t) return fail(err, n, RECUR_E_NOMEM, "out of memory");
    int seen_trim = 0, seen_collapse = 0, line = 0;
    recur_status_t s = RECUR_OK;
    const char *p = text, *tend = text + len;
    while (p < tend && s == RECUR_OK) {
        line++;
        const char *eol = memchr(p, '\n', (size_t)(tend - p));
        if (!eol) eol = tend;
        const char *q = skip_ws(p, eol);
        const char *next = eol < tend ? eol + 1 : tend;
        if (q == eol || *q == '#') {
            p = next;
            continue;
        }
        const char *k0 = q;
        while (q < eol && (*q == '_' || (*q >= 'a' && *q <= 'z'))) q++;
        size_t klen = (size_t)(q - k0);
        q = skip_ws(q, eol);
        if (!klen || q >= eol || *q != '=') {
            s = fail(err, n, RECUR_E_FORMAT, "line %d: expected 'key = value'", line);
            break;
        }
        q = skip_ws(q + 1, eol);
        char key[32];
        snprintf(key, sizeof key, "%.*s", klen < sizeof key ? (int)klen : (int)sizeof key - 1, k0);
        int field = -1;
        for (int i = 0; i < N_FIELDS; i++)
            if (strlen(k_keys[i]) == klen && !strncmp(k_keys[i], k0, klen)) field = i;
        int is_stop = klen == 4 && !strncmp(k0, "stop", 4);
        int is_trim = klen == 4 && !strncmp(k0, "trim", 4);
        int is_coll = klen == 20 && !strncmp(k0, "collapse_blank_lines", 20);
        if (is_trim || is_coll) {
            int *seen = is_trim ? &seen_trim : &seen_collapse;
            int v;
            const char *e = eol;
            while (e > q && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
            if ((size_t)(e - q) == 4 && !strncmp(q, "true", 4)) v = 1;
            else if ((size_t)(e - q) == 5 && !strncmp(q, "false", 5)) v = 0;
            else {
                s = fail(err, n, RECUR_E_FORMAT, "line %d: %s expects true or false", line, key);
                break;
            }
            if (*seen) {
                s = fail(err, n, RECUR_E_FORMAT, "line %d: %s is set twice", line, key);
                break;
            }
            *seen = 1;
            if (is_trim) t->trim = v;
            else t->collapse = v;
            p = next;
            continue;
        }
        if (field < 0 && !is_stop) {
            s = fail(err, n, RECUR_E_FORMAT,
                     "line %d: unknown key '%s' (known: name, system_prefix, system_suffix, user_prefix, user_suffix, "
                     "assistant_prefix, assistant_suffix, generation_prompt, stop, trim, collapse_blank_lines)",
                     line, key);
            break;
        }
        if (q >= eol || *q != '"') {
            s = fail(err, n, RECUR_E_FORMAT, "line %d: %s expects a double-quoted string", line, key);
            break;
        }
        char *v = parse_string(&q, eol, line, err, n);
        if (!v) {
            s = RECUR_E_FORMAT;
            break;
        }
        q = skip_ws(q, eol);
        if (q < eol && *q != '#') {
            free(v);
            s = fail(err, n, RECUR_E_FORMAT, "line %d: unexpected text after the string", line);
            break;
        }
        if (is_stop) {
            if (t->n_stop == RECUR_CHAT_MAX_STOP || !v[0]) {
                s = fail(err, n, RECUR_E_FORMAT, "line %d: %s", line,
                         v[0] ? "more than 4 stop strings" : "an empty stop string");
                free(v);
                break;
            }
            t->stop[t->n_stop++] = v;
        } else if (t->f[field]) {
            free(v);
            s = fail(err, n, RECUR_E_FORMAT, "line %d: %s is set twice", line, key);
        } else {
            t->f[field] = v;
        }
        p = next;
    }
    if (s == RECUR_OK && (s = finish(t)) != RECUR_OK) fail(err, n, s, "out of memory");
    if (s != RECUR_OK) {
        recur_chat_template_free(t);
        return s;
    }
    if (!t->f[F_NAME][0]) {
        free(t->f[F_NAME]);
        if (!(t->f[F_NAME] = strdup("file"))) {
            recur_chat_template_free(t);
            return fail(err, n, RECUR_E_NOMEM, "out of memory");
        }
    }
    *out = t;
    return RECUR_OK;
}

recur_status_t recur_chat_template_load(const char *path, recur_chat_template_t **out, char *err, size_t n) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, n, RECUR_E_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = malloc(RECUR_CHAT_MAX_FILE_BYTES + 1);
    size_t len = buf ? fread(buf, 1, RECUR_CHAT_MAX_FILE_BYTES + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf) return fail(err, n, RECUR_E_NOMEM, "out of memory");
    if (bad || len > RECUR_CHAT_MAX_FILE_BYTES) {
        free(buf);
        return fail(err, n, RECUR_E_IO, "%s: %s", path,
                    bad ? "read error" : "larger than 64 KiB: not a chat template");
    }
    char msg[256];
    recur_status_t s = recur_chat_template_parse(buf, len, out, msg, sizeof msg);
    free(buf);
    if (s != RECUR_OK) fail(err, n, s, "%s: %s", path, msg);
    return s;
}

const char *recur_chat_template_name(const recur_chat_template_t *t) { return t->f[F_NAME]; }

size_t recur_chat_template_stops(const recur_chat_template_t *t, const char *const **stops) {
    *stops = (const char *const *)t->stop;
    return t->n_stop;
}

/* Appends content to *o as the template says (trim, collapse blank lines). */
static char *put_content(const recur_chat_template_t *t, char *o, const char *c) {
    size_t len = strlen(c);
    if (t->trim) {
        while (len && (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r')) c++, len--;
        while (len && (c[len - 1] == ' ' || c[len - 1] == '\t' || c[len - 1] == '\n' || c[len - 1] == '\r')) len--;
    }
    for (size_t i = 0; i < len; i++) {
        if (t->collapse && c[i] == '\r' && i + 1 < len && c[i + 1] == '\n') continue;   /* \r\n -> \n */
        if (t->collapse && c[i] == '\n') {
            /* a run of newlines (with blanks between them) becomes one newline */
            size_t j = i + 1;
            while (j < len && (c[j] == '\n' || c[j] == '\r' || c[j] == ' ' || c[j] == '\t')) j++;
            size_t nl = 0;
            for (size_t k = i; k < j; k++) nl += c[k] == '\n';
            if (nl > 1) {
                *o++ = '\n';
                i = j - 1;
                continue;
            }
        }
        *o++ = c[i];
    }
    return o;
}

static recur_status_t render_(const recur_chat_template_t *t, const char *lead, const recur_chat_message_t *msgs,
                              size_t n, char **out) {
    *out = NULL;
    size_t need = strlen(lead) + strlen(t->f[F_GEN]) + 1;
    for (size_t i = 0; i < n; i++) {
        int r = msgs[i].role;
        if (r < RECUR_CHAT_SYSTEM || r > RECUR_CHAT_ASSISTANT) return RECUR_E_INVAL;
        need += strlen(t->f[F_SYS_PRE + 2 * r]) + strlen(t->f[F_SYS_SUF + 2 * r]) + strlen(msgs[i].content);
    }
    char *buf = malloc(need), *o = buf;
    if (!buf) return RECUR_E_NOMEM;
    memcpy(o, lead, strlen(lead)), o += strlen(lead);
    for (size_t i = 0; i < n; i++) {
        int r = msgs[i].role;
        const char *pre = t->f[F_SYS_PRE + 2 * r], *suf = t->f[F_SYS_SUF + 2 * r];
        memcpy(o, pre, strlen(pre)), o += strlen(pre);
        o = put_content(t, o, msgs[i].content);
        memcpy(o, suf, strlen(suf)), o += strlen(suf);
    }
    memcpy(o, t->f[F_GEN], strlen(t->f[F_GEN])), o += strlen(t->f[F_GEN]);
    *o = '\0';
    *out = buf;
    return RECUR_OK;
}

recur_status_t recur_chat_template_render(const recur_chat_template_t *t, const recur_chat_message_t *msgs, size_t n,
                                          char **out) {
    *out = NULL;
    if (!n) return RECUR_E_INVAL;
    return render_(t, "", msgs, n, out);
}

recur_status_t recur_chat_template_render_continuation(const recur_chat_template_t *t, const recur_chat_message_t *msgs,
                                                       size_t n, char **out) {
    return render_(t, t->f[F_ASST_SUF], msgs, n, out);
}
