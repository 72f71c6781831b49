/* b158-cl-run: command-line front end of the engine (device listing; generation follows). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b158/b158.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-cl-run [options]\n"
               "  --list-devices       print the OpenCL devices and the capabilities b158-cl uses\n"
               "  --device SEL         device index or name substring (default: $B158_DEVICE, "
               "else the first GPU, else any)\n"
               "  -h, --help           this text\n");
}

static double gib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

static int list_devices(void)
{
    size_t n = 0;
    if (b158_device_list(NULL, 0, &n) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    b158_device_info *devs = calloc(n, sizeof *devs);
    if (!devs || b158_device_list(devs, n, &n) != B158_OK) {
        fprintf(stderr, "error: %s\n", devs ? b158_last_error() : "out of memory");
        free(devs);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const b158_device_info *d = &devs[i];
        printf("device %d: %s\n", d->index, d->name);
        printf("  platform          %s\n", d->platform);
        printf("  vendor / driver   %s / %s\n", d->vendor, d->driver);
        printf("  type              %s\n", d->is_gpu ? "GPU" : d->is_cpu ? "CPU" : "other");
        printf("  version           %s; %s\n", d->version, d->c_version);
        printf("  compute units     %u\n", d->compute_units);
        printf("  global memory     %.2f GiB (largest buffer %.2f GiB)\n", gib(d->global_mem),
               gib(d->max_alloc));
        printf("  local memory      %llu KiB\n", (unsigned long long)(d->local_mem / 1024));
        printf("  max work-group    %zu\n", d->max_work_group);
        printf("  fp16              %s\n", d->has_fp16 ? "yes (cl_khr_fp16)" : "no");
        printf("  subgroups         %s\n", d->has_subgroups ? "yes" : "no");
        printf("  integer dot       %s\n", d->has_int_dot ? "yes (cl_khr_integer_dot_product)" : "no");
        printf("  kernel variant    %s\n", d->is_gpu ? "gpu (local-memory tiles)" :
                                                      "cpu (register unpacking, no barriers)");
    }
    free(devs);
    return 0;
}

int main(int argc, char **argv)
{
    const char *device = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list-devices") == 0)
            return list_devices();
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            device = argv[++i];
            continue;
        }
        fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    b158_runtime_params p = b158_runtime_default_params();
    p.device = device;
    b158_runtime *rt = NULL;
    if (b158_runtime_create(&p, &rt) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    fprintf(stderr, "device: %s (%s)\nerror: text generation is not available in this build yet; "
                    "--list-devices works\n",
            b158_runtime_device(rt)->name, b158_runtime_device(rt)->platform);
    b158_runtime_free(rt);
    return 1;
}
