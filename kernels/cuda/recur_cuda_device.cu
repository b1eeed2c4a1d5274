/* recur_cuda_device.cu: device discovery for the CUDA backend. */
#include "recur_cuda_device.h"

#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int recur_cuda_device_count(void) {
    int n = 0;
    /* cudaErrorNoDevice / cudaErrorInsufficientDriver simply mean "no GPU here". */
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int recur_cuda_device_describe(int dev, char *buf, size_t n) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    snprintf(buf, n, "%s, sm_%d%d, %.1f GiB", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}
