/* Internal: OpenCL device discovery and choice for the runtime (host/runtime-device.c). */
#ifndef B158_HOST_RUNTIME_DEVICE_H
#define B158_HOST_RUNTIME_DEVICE_H

#include <CL/cl.h>

#include "b158/b158.h"

/* The device sel names: an index, or a case-insensitive substring of "platform device"; NULL or
 * "" = $B158_DEVICE, else the first GPU, else the first device. B158_ERR_NO_PLATFORM,
 * B158_ERR_NO_DEVICE (the message lists the devices found) or B158_ERR_OPENCL. */
b158_status b158_device_select(const char *sel, cl_platform_id *platform, cl_device_id *device,
                               int *index);

/* What the engine needs to know of device d of platform p, listed as index. */
void b158_device_fill_info(cl_platform_id p, cl_device_id d, int index, b158_device_info *info);

#endif
