/* recur_backend.c: choosing and releasing a backend. */
#include "recur_backend.h"

#include <string.h>

#include "recur_backend_cpu.h"
#include "recur_log.h"

recur_status_t recur_backend_init(const char *name, recur_backend_t **out) {
    *out = NULL;
    if (!name || strcmp(name, "cpu") == 0) return recur_backend_cpu_init(out);
    recur_log_err("unknown backend '%s' (available: cpu)", name);
    return RECUR_E_UNSUPPORTED;
}

void recur_backend_free(recur_backend_t *b) {
    if (b && b->iface.free) b->iface.free(b);
}

const char *recur_backend_name(const recur_backend_t *b) {
    return b ? b->iface.name(b) : "(none)";
}
