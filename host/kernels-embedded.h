/* The cl_kernels/ sources compiled into the library (table generated at build time). */
#ifndef B158_HOST_KERNELS_EMBEDDED_H
#define B158_HOST_KERNELS_EMBEDDED_H

#include <stddef.h>

struct b158_embedded_source {
    const char *name; /* file name, e.g. "ternary.cl"; NULL ends the table */
    const char *text; /* NUL-terminated source */
    size_t size;      /* bytes without the NUL */
};

extern const struct b158_embedded_source b158_embedded_sources[];

#endif
