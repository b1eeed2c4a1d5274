/* fuzz_proto_api.c: a client's message to the coordinator (recur_proto_api_unpack).
 * Properties: a refused message has a reason and no output; an accepted one passes
 * validate, packs again (what we accept we could send), and its encoding is canonical:
 * unpack(pack(m)) packs to the same bytes. */
#include <string.h>

#include "recur_fuzz.h"
#include "recur_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    recur_proto_error_t err;
    recur_api_envelope_t *env = (recur_api_envelope_t *)1;
    recur_status_t s = recur_proto_api_unpack(data, n, 0, &env, &err);
    if (s != RECUR_OK) {
        RECUR_FUZZ_CHECK(env == NULL);
        RECUR_FUZZ_CHECK(err.msg[0] != '\0' && memchr(err.msg, '\0', sizeof err.msg));
        return 0;
    }
    RECUR_FUZZ_CHECK(env != NULL);
    RECUR_FUZZ_CHECK(recur_proto_api_validate(env, &err) == RECUR_OK);
    (void)recur_proto_api_is_request(env);
    RECUR_FUZZ_CHECK(strcmp(recur_proto_api_body_name(env->body_case), "none") != 0);

    uint8_t *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    s = recur_proto_api_pack(env, 0, &b1, &n1, &err);
    if (s != RECUR_OK) fprintf(stderr, "accepted, but pack refuses it: %s\n", err.msg);
    RECUR_FUZZ_CHECK(s == RECUR_OK);
    recur_api_envelope_t *env2 = NULL;
    s = recur_proto_api_unpack(b1, n1, 0, &env2, &err);
    if (s != RECUR_OK) fprintf(stderr, "our own encoding is refused: %s\n", err.msg);
    RECUR_FUZZ_CHECK(s == RECUR_OK);
    RECUR_FUZZ_CHECK(env2->body_case == env->body_case);
    RECUR_FUZZ_CHECK(recur_proto_api_pack(env2, 0, &b2, &n2, &err) == RECUR_OK);
    RECUR_FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
    /* the size limit: one byte less than the encoding is refused */
    recur_api_envelope_t *env3 = NULL;
    RECUR_FUZZ_CHECK(recur_proto_api_unpack(b1, n1, n1 - 1, &env3, &err) == RECUR_E_RANGE && env3 == NULL);
    free(b1);
    free(b2);
    recur_proto_api_free(env2);
    recur_proto_api_free(env);
    return 0;
}
