/* fuzz_proto_internal.c: a message between the coordinator and a worker
 * (recur_proto_internal_unpack). The properties of fuzz_proto_api.c, and on the bodies
 * that carry them: the Status code mapping and the StepResult check against a plan made
 * of the input's own row count. */
#include <string.h>

#include "recur_fuzz.h"
#include "recur_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    recur_proto_error_t err;
    recur_internal_envelope_t *env = (recur_internal_envelope_t *)1;
    recur_status_t s = recur_proto_internal_unpack(data, n, 0, &env, &err);
    if (s != RECUR_OK) {
        RECUR_FUZZ_CHECK(env == NULL);
        RECUR_FUZZ_CHECK(err.msg[0] != '\0' && memchr(err.msg, '\0', sizeof err.msg));
        return 0;
    }
    RECUR_FUZZ_CHECK(env != NULL);
    RECUR_FUZZ_CHECK(recur_proto_internal_validate(env, &err) == RECUR_OK);
    RECUR_FUZZ_CHECK(strcmp(recur_proto_internal_body_name(env->body_case), "none") != 0);

    if (env->body_case == RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT) {
        const Recur__Internal__StepResult *r = env->step_result;
        recur_status_t code = recur_proto_status_code(r->status);
        /* the plan this result would answer: rows sampled where the result has a token */
        Recur__Internal__LogitsMode *plan = malloc((r->n_token ? r->n_token : 1) * sizeof *plan);
        RECUR_FUZZ_CHECK(plan != NULL);
        for (size_t i = 0; i < r->n_token; i++)
            plan[i] = r->token[i] >= 0 ? RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE
                                       : RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE;
        RECUR_FUZZ_CHECK(recur_proto_step_result_matches(r, r->step, r->n_token, plan, &err) == RECUR_OK);
        RECUR_FUZZ_CHECK(recur_proto_step_result_matches(r, r->step + 1, r->n_token, plan, &err) == RECUR_E_PROTO);
        if (code == RECUR_OK) {
            RECUR_FUZZ_CHECK(recur_proto_step_result_matches(r, r->step, r->n_token + 1, NULL, &err) == RECUR_E_PROTO);
            if (r->n_token > 0) {
                plan[0] = plan[0] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE
                              ? RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE
                              : RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE;
                RECUR_FUZZ_CHECK(recur_proto_step_result_matches(r, r->step, r->n_token, plan, &err) == RECUR_E_PROTO);
            }
        }
        free(plan);
    }

    uint8_t *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    s = recur_proto_internal_pack(env, 0, &b1, &n1, &err);
    if (s != RECUR_OK) fprintf(stderr, "accepted, but pack refuses it: %s\n", err.msg);
    RECUR_FUZZ_CHECK(s == RECUR_OK);
    recur_internal_envelope_t *env2 = NULL;
    s = recur_proto_internal_unpack(b1, n1, 0, &env2, &err);
    if (s != RECUR_OK) fprintf(stderr, "our own encoding is refused: %s\n", err.msg);
    RECUR_FUZZ_CHECK(s == RECUR_OK);
    RECUR_FUZZ_CHECK(env2->body_case == env->body_case);
    RECUR_FUZZ_CHECK(recur_proto_internal_pack(env2, 0, &b2, &n2, &err) == RECUR_OK);
    RECUR_FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
    recur_internal_envelope_t *env3 = NULL;
    RECUR_FUZZ_CHECK(recur_proto_internal_unpack(b1, n1, n1 - 1, &env3, &err) == RECUR_E_RANGE && env3 == NULL);
    free(b1);
    free(b2);
    recur_proto_internal_free(env2);
    recur_proto_internal_free(env);
    return 0;
}
