/* recur_cuda_device.h: what the CUDA runtime sees. Callable from C whether or not a GPU
 * (or a driver) is present: these never abort. */
#ifndef RECUR_CUDA_DEVICE_H
#define RECUR_CUDA_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no device. */
int recur_cuda_device_count(void);
/* Writes "<name>, sm_<major><minor>, <GiB> GiB" for device `dev` into buf; returns 0 on success. */
int recur_cuda_device_describe(int dev, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
