/* test_cuda_device.c: the CUDA runtime finds the GPU (label gpu: exits 77 without one). */
#include <stdio.h>

#include "recur_cuda_device.h"
#include "recur_testutil.h"

int main(void) {
    int n = recur_cuda_device_count();
    if (n == 0) {
        fprintf(stderr, "no CUDA device: skipped\n");
        return RECUR_TEST_SKIP;
    }
    int failures = 0;
    for (int d = 0; d < n; d++) {
        char desc[256];
        RECUR_CHECK(&failures, recur_cuda_device_describe(d, desc, sizeof desc) == 0);
        fprintf(stderr, "device %d: %s\n", d, desc);
    }
    RECUR_CHECK(&failures, recur_cuda_device_describe(n, (char[8]){0}, 8) != 0); /* out of range -> error */
    return failures ? 1 : 0;
}
