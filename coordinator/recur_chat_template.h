/* recur_chat_template.h: turns a list of chat messages (OpenAI's /v1/chat/completions
 * `messages`) into the prompt text a model was trained on, plus the stop strings that end
 * the assistant's turn.
 *
 * A template is a few strings, no programming language (no Jinja): for each role a prefix
 * and a suffix around the message's content, the generation prompt that opens the
 * assistant's reply, and stop strings. The prompt is
 *     for each message: <role>_prefix + content + <role>_suffix
 *     then: generation_prompt
 * with the content trimmed of leading and trailing white space (trim) and, for formats
 * whose turn separator is a blank line, every run of blank lines inside it collapsed to one
 * newline (collapse_blank_lines), so a message cannot end its own turn early.
 *
 * Built-in templates:
 *   "rwkv-world" (arch "rwkv7"): the RWKV World chat format the RWKV-7 World/G1 models were
 *       tuned on: "System: ...\n\nUser: ...\n\nAssistant: ...\n\n" ... "Assistant:", turns
 *       separated by a blank line (so blank lines inside a message are collapsed), stop
 *       "\n\nUser:" (the model starting the user's next turn).
 *   "plain" (arch "xlstm" and anything else): the same "Role: content" transcript for a
 *       base model that was not chat-tuned (xLSTM 7B): a base model continues a transcript
 *       it recognises; content is kept as written (no collapsing), stop "\n\nUser:".
 *
 * Template files (`recur serve --chat-template PATH`): UTF-8 text, one `key = value` per
 * line; blank lines and lines starting with '#' are ignored. Values are double-quoted
 * strings with the escapes \n \r \t \\ \" (anything else after a backslash is an error),
 * or true / false for the two flags. Keys (each at most once, except stop):
 *     name, system_prefix, system_suffix, user_prefix, user_suffix, assistant_prefix,
 *     assistant_suffix, generation_prompt   strings (default "")
 *     stop                                  a string; repeatable, at most RECUR_CHAT_MAX_STOP
 *     trim, collapse_blank_lines            true / false (default false)
 * An unknown key, a missing '=', a bad string or a repeated key is refused with the line
 * number. docs/chat-templates.md shows the two built-ins written as files.
 *
 * Ownership: a template is immutable once made; the caller frees it with
 * recur_chat_template_free. Thread-safety: render and the getters may run on any number of
 * threads at once on one template (they only read it). */
#ifndef RECUR_CHAT_TEMPLATE_H
#define RECUR_CHAT_TEMPLATE_H

#include <stddef.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECUR_CHAT_MAX_STOP 4          /* stop strings per template                 */
#define RECUR_CHAT_MAX_FILE_BYTES 65536 /* a template file larger than this is refused */

typedef struct recur_chat_template recur_chat_template_t;   /* opaque; recur_chat_template.c */

typedef enum recur_chat_role {
    RECUR_CHAT_SYSTEM,      /* OpenAI "system" and "developer" */
    RECUR_CHAT_USER,
    RECUR_CHAT_ASSISTANT,
} recur_chat_role_t;

typedef struct recur_chat_message {
    recur_chat_role_t role;
    const char *content;    /* UTF-8, NUL-terminated */
} recur_chat_message_t;

/* The built-in template for a model architecture ("rwkv7" -> rwkv-world; else plain).
 * RECUR_E_NOMEM. */
recur_status_t recur_chat_template_builtin(const char *arch, recur_chat_template_t **out);

/* Parses a template file's text (see above). On failure *out = NULL and err (n bytes) says
 * what is wrong and on which line: RECUR_E_FORMAT, RECUR_E_NOMEM. */
recur_status_t recur_chat_template_parse(const char *text, size_t len, recur_chat_template_t **out, char *err,
                                         size_t n);
/* Reads and parses a file: RECUR_E_IO (cannot read, or larger than RECUR_CHAT_MAX_FILE_BYTES)
 * or parse's codes; err says which file and why. */
recur_status_t recur_chat_template_load(const char *path, recur_chat_template_t **out, char *err, size_t n);

void recur_chat_template_free(recur_chat_template_t *t);   /* NULL is a no-op */

/* The prompt for msgs[0..n): a malloc'ed NUL-terminated string (the caller frees it).
 * RECUR_E_INVAL when n is 0, RECUR_E_NOMEM. */
recur_status_t recur_chat_template_render(const recur_chat_template_t *t, const recur_chat_message_t *msgs, size_t n,
                                          char **out);

/* A later turn of a session (README "Sessions", HTTP API): the session's state already holds
 * the conversation so far, ending with the assistant's reply as the model generated it (it
 * began after the generation prompt). The continuation closes that reply and adds the new
 * messages:
 *     assistant_suffix, then for each of msgs[0..n): <role>_prefix + content + <role>_suffix,
 *     then generation_prompt
 * so that (the first turn's prompt) + (the reply) + (this) is the prompt of the whole
 * conversation in one request whenever generation_prompt + reply equals assistant_prefix +
 * the reply's content as rendered (built-ins: the reply starts with one space, has no
 * white space at its end and, for rwkv-world, no blank line inside). When the reply ended on
 * a stop string, the state holds that too, and the coordinator skips it at the start of the
 * continuation (recur_coord.h "Sessions"). n may be 0 (only the closing and the generation
 * prompt). A malloc'ed string: RECUR_E_INVAL (a bad role), RECUR_E_NOMEM. */
recur_status_t recur_chat_template_render_continuation(const recur_chat_template_t *t, const recur_chat_message_t *msgs,
                                                       size_t n, char **out);

const char *recur_chat_template_name(const recur_chat_template_t *t);
/* The stop strings (*stops points into t); returns how many. */
size_t recur_chat_template_stops(const recur_chat_template_t *t, const char *const **stops);

#ifdef __cplusplus
}
#endif
#endif
