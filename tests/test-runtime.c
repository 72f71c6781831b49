/* Runtime tests: device listing and selection errors, program build log and cache, memory
 * accounting, the timings of other libraries' routines, queued timing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "ref.h"
#include "runtime.h"
#include "test-common.h"

/* Type and name of device i in the library's order (platform order, then device order), as
 * OpenCL reports them; 0 when there is no such device. */
static int cl_device_at(size_t i, cl_device_type *type, char *name, size_t cap)
{
    cl_platform_id plats[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, plats, &np) != CL_SUCCESS)
        return 0;
    for (cl_uint p = 0; p < np && p < 16; p++) {
        cl_device_id devs[64];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 64, devs, &nd) != CL_SUCCESS)
            continue;
        if (i < nd)
            return clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof *type, type, NULL) ==
                       CL_SUCCESS &&
                   clGetDeviceInfo(devs[i], CL_DEVICE_NAME, cap, name, NULL) == CL_SUCCESS;
        i -= nd;
    }
    return 0;
}

static void test_list(void)
{
    size_t n = 0;
    b158_status st = b158_device_list(NULL, 0, &n);
    if (st == B158_ERR_NO_PLATFORM) {
        b158_test_skip(b158_last_error());
        return;
    }
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    CU_ASSERT_FATAL(n > 0);
    b158_device_info *d = calloc(n, sizeof *d);
    CU_ASSERT_EQUAL(b158_device_list(d, n, &n), B158_OK);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(d[i].index, (int)i);
        CU_ASSERT(strlen(d[i].name) > 0);
        CU_ASSERT(d[i].compute_units > 0);
        CU_ASSERT(d[i].global_mem > 0 && d[i].max_alloc > 0 && d[i].max_work_group > 0);
        /* exactly the type OpenCL reports for that device */
        cl_device_type type = 0;
        char name[1024] = "";
        CU_ASSERT_FATAL(cl_device_at(i, &type, name, sizeof name));
        CU_ASSERT(strncmp(d[i].name, name, sizeof d[i].name - 1) == 0); /* the same device */
        CU_ASSERT_EQUAL(d[i].is_gpu, (type & CL_DEVICE_TYPE_GPU) != 0);
        CU_ASSERT_EQUAL(d[i].is_cpu, (type & CL_DEVICE_TYPE_CPU) != 0);
    }
    free(d);
}

static b158_status create_on(const char *sel, b158_runtime **rt)
{
    b158_runtime_params p = b158_runtime_default_params();
    p.device = sel;
    return b158_runtime_create(&p, rt);
}

static void test_select(void)
{
    size_t n = 0;
    if (b158_device_list(NULL, 0, &n) != B158_OK) {
        b158_test_skip(b158_last_error());
        return;
    }
    b158_runtime *rt = NULL;
    CU_ASSERT_EQUAL(create_on("999", &rt), B158_ERR_NO_DEVICE);
    CU_ASSERT_PTR_NULL(rt);
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "index 999"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "--list-devices"));
    CU_ASSERT_EQUAL(create_on("-1", &rt), B158_ERR_NO_DEVICE);
    CU_ASSERT_EQUAL(create_on("no-such-device-xyz", &rt), B158_ERR_NO_DEVICE);
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "no-such-device-xyz"));
    CU_ASSERT_PTR_NULL(rt);

    b158_device_info d0;
    CU_ASSERT_EQUAL_FATAL(b158_device_list(&d0, 1, &n), B158_OK);
    CU_ASSERT_EQUAL_FATAL(create_on("0", &rt), B158_OK);
    CU_ASSERT_STRING_EQUAL(b158_runtime_device(rt)->name, d0.name);
    b158_runtime_free(rt);
    /* a case-changed substring of the name selects it too */
    char sub[8] = {0};
    for (int i = 0; i < 4 && d0.name[i]; i++)
        sub[i] = (char)((d0.name[i] >= 'a' && d0.name[i] <= 'z') ? d0.name[i] - 32 : d0.name[i]);
    rt = NULL;
    CU_ASSERT_EQUAL(create_on(sub, &rt), B158_OK);
    b158_runtime_free(rt);
    b158_runtime_free(NULL);
}

static void test_build_error(void)
{
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_AUTO);
    if (!rt)
        return;
    cl_program prog = NULL;
    b158_status st =
        b158_rt_build(rt, "broken.cl",
                      "__kernel void k(__global float *x) { x[0] = undeclared_thing_42; }", &prog);
    CU_ASSERT_EQUAL(st, B158_ERR_BUILD);
    CU_ASSERT_PTR_NULL(prog);
    const char *msg = b158_last_error();
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "broken.cl"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "undeclared_thing_42")); /* from the build log */
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "-cl-std=CL")); /* the options (1.2, or 3.0 for int dot) */
}

/* The library's log, kept off stderr while the test captures it */
static void drop_log(b158_log_level level, const char *message, void *user)
{
    (void)level, (void)message, (void)user;
}

/* Creating a runtime builds probe programs (what the device's compiler takes), and a failed
 * build is not silent everywhere (PoCL prints the compiler's error count on stderr), so a probe
 * is asked only where it can build: creating a runtime of either variant writes nothing to the
 * process's stderr (fd 2, captured) beyond the library's own log (a callback here). Where the
 * device names a sub-group extension (Intel's runtime) the GPU variant's sub-group probe builds;
 * where this CPU has AVX-512BW, PoCL's CPU device builds the AVX-512 probe (Intel's compiler
 * takes none of those builtins). */
static void test_probes_quiet(void)
{
    fflush(stderr);
    FILE *cap = tmpfile();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cap);
    const int saved = dup(2);
    CU_ASSERT_FATAL(saved >= 0);
    CU_ASSERT_FATAL(dup2(fileno(cap), 2) >= 0);
    b158_log_set(drop_log, NULL);
    b158_runtime *rt[2] = {NULL, NULL};
    b158_status st[2];
    for (int v = 0; v < 2; v++) {
        b158_runtime_params p = b158_runtime_default_params();
        p.variant = v ? B158_VARIANT_GPU : B158_VARIANT_CPU;
        st[v] = b158_runtime_create(&p, &rt[v]);
    }
    fflush(stderr);
    b158_log_set(NULL, NULL);
    dup2(saved, 2);
    close(saved);
    char text[512] = "";
    const long n = fseek(cap, 0, SEEK_END) == 0 ? ftell(cap) : -1;
    rewind(cap);
    text[fread(text, 1, sizeof text - 1, cap)] = '\0';
    fclose(cap);
    if (st[0] == B158_ERR_NO_PLATFORM || st[0] == B158_ERR_NO_DEVICE) {
        b158_test_skip("no OpenCL device");
        return;
    }
    CU_ASSERT_EQUAL(st[0], B158_OK);
    CU_ASSERT_EQUAL(st[1], B158_OK);
    if (n != 0)
        fprintf(stderr, "\nwritten to stderr while creating runtimes (%ld bytes): %s", n, text);
    CU_ASSERT_EQUAL(n, 0);
    const int asked = !getenv("B158_PORTABLE");
    if (rt[1] && rt[1]->info.has_subgroups && !b158_rt_nvidia_gpu(rt[1]) && asked &&
        !getenv("B158_SUBGROUPS"))
        CU_ASSERT_NOT_EQUAL(rt[1]->tune.subgroups, 0);
    if (rt[0] && rt[0]->info.is_cpu && asked && b158_rt_host_avx512bw() &&
        strstr(rt[0]->info.platform, "Portable Computing Language"))
        CU_ASSERT_NOT_EQUAL(rt[0]->tune.x86_avx512bw, 0);
    if (rt[0] && rt[0]->tune.x86_avx512bw && asked && b158_rt_host_avx512vnni() &&
        !getenv("B158_VNNI"))
        CU_ASSERT_NOT_EQUAL(rt[0]->tune.x86_vnni, 0);
    b158_runtime_free(rt[0]);
    b158_runtime_free(rt[1]);
}

static int count_files(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -1 '%s' 2>/dev/null | grep -c '\\.bin$'", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = 0;
        pclose(p);
    }
    return n;
}

static void test_build_cache(void)
{
    char dir[] = "/tmp/b158-cache-XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    b158_runtime_params p = b158_runtime_default_params();
    p.cache_dir = dir;
    b158_runtime *rt = NULL;
    b158_status st = b158_runtime_create(&p, &rt);
    if (st == B158_ERR_NO_PLATFORM || st == B158_ERR_NO_DEVICE) {
        b158_test_skip(b158_last_error());
        return;
    }
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    /* a unique source, so the entry is new */
    char src[256];
    snprintf(src, sizeof src, "__kernel void k(__global int *x) { x[get_global_id(0)] = %u; }",
             b158_test_rand() >> 1); /* an int, so no conversion warning */
    cl_program prog = NULL;
    CU_ASSERT_EQUAL(b158_rt_build(rt, "cache-test", src, &prog), B158_OK);
    if (prog)
        clReleaseProgram(prog);
    CU_ASSERT_EQUAL(count_files(dir), 1);
    /* second build is served from the cache; a corrupted entry falls back to source */
    CU_ASSERT_EQUAL(b158_rt_build(rt, "cache-test", src, &prog), B158_OK);
    if (prog)
        clReleaseProgram(prog);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "for f in '%s'/*.bin; do echo garbage > \"$f\"; done", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
    prog = NULL;
    CU_ASSERT_EQUAL(b158_rt_build(rt, "cache-test", src, &prog), B158_OK);
    CU_ASSERT_PTR_NOT_NULL(prog);
    if (prog)
        clReleaseProgram(prog);
    b158_runtime_free(rt);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

static void test_memory(void)
{
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_AUTO);
    if (!rt)
        return;
    uint64_t base = b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT);
    b158_buf a, b, c;
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_WEIGHTS, 1000, &a), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_KV_CACHE, 2000, &b), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, 3000, &c), B158_OK);
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_WEIGHTS), 1000);
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_KV_CACHE), 2000);
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_SCRATCH), 3000);
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT), base + 6000);
    CU_ASSERT(b158_runtime_mem_peak(rt) >= base + 6000);
    /* reads and writes are bounds-checked */
    char buf[16] = {0};
    CU_ASSERT_EQUAL(b158_buf_write(rt, &a, 995, 16, buf), B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(b158_buf_read(rt, &a, 0, 16, buf), B158_OK);
    b158_buf_free(rt, &b);
    b158_buf_free(rt, &b); /* second free is a no-op */
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_KV_CACHE), 0);
    /* more than the device allows: one clear error, counters untouched */
    b158_buf huge;
    const b158_device_info *d = b158_runtime_device(rt);
    CU_ASSERT_EQUAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)d->max_alloc + 1, &huge),
                    B158_ERR_DEVICE_MEMORY);
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "MiB"));
    CU_ASSERT_PTR_NULL(huge.mem);
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_SCRATCH), 3000);
    b158_buf_free(rt, &a);
    b158_buf_free(rt, &c);
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT), base);
}

/* Mapped host memory: device reads land in it and device writes come from it, byte for byte,
 * and it does not count as device memory. */
static void test_host_memory(void)
{
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_AUTO);
    if (!rt)
        return;
    const size_t n = (size_t)b158_test_randint(1, 300000);
    const uint64_t base = b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT);
    b158_host_mem h;
    CU_ASSERT_EQUAL_FATAL(b158_host_alloc(rt, n, &h), B158_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h.ptr);
    CU_ASSERT_EQUAL(b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT), base);
    unsigned char *want = malloc(n), *back = malloc(n), *p = h.ptr;
    for (size_t i = 0; i < n; i++)
        want[i] = (unsigned char)b158_test_randint(0, 255);
    b158_buf d;
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, n, &d), B158_OK);
    CU_ASSERT_EQUAL(b158_buf_write(rt, &d, 0, n, want), B158_OK);
    memset(p, 0xa5, n);
    CU_ASSERT_EQUAL(b158_buf_read(rt, &d, 0, n, p), B158_OK);
    CU_ASSERT_EQUAL(memcmp(p, want, n), 0);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)~want[i];
    CU_ASSERT_EQUAL(b158_buf_write(rt, &d, 0, n, p), B158_OK);
    CU_ASSERT_EQUAL(b158_buf_read(rt, &d, 0, n, back), B158_OK);
    int same = 1;
    for (size_t i = 0; i < n; i++)
        same &= back[i] == (unsigned char)~want[i];
    CU_ASSERT(same);
    b158_buf_free(rt, &d);
    b158_host_free(rt, &h);
    CU_ASSERT_PTR_NULL(h.mem);
    b158_host_free(rt, &h); /* second free is a no-op */
    free(want), free(back);
}

static int released;
static void count_release(void)
{
    released++;
}

/* Routines that another library enqueues (CLBlast's) are timed beside the kernels under their
 * own names, and the release functions run once when the runtime goes. */
static void test_routines(void)
{
    b158_runtime *rt = NULL;
    b158_status st = create_on(NULL, &rt);
    if (st == B158_ERR_NO_PLATFORM || st == B158_ERR_NO_DEVICE) {
        b158_test_skip(b158_last_error());
        return;
    }
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    static const char *const names[B158_RT_MAX_ROUTINES + 1] = {
        "routine_a", "routine_b", "r2", "r3", "r4", "r5", "r6", "r7", "r8"};
    const uint64_t ns = (uint64_t)b158_test_randint(1, 1000000);
    CU_ASSERT_EQUAL(b158_rt_record(rt, "routine_a", ns), B158_OK);
    CU_ASSERT_EQUAL(b158_rt_record(rt, "routine_b", 7), B158_OK);
    CU_ASSERT_EQUAL(b158_rt_record(rt, "routine_a", 5), B158_OK);
    b158_kernel_stats s[B158_KERNEL_COUNT + B158_RT_MAX_ROUTINES + 1];
    memset(s, 0, sizeof s);
    CU_ASSERT_EQUAL_FATAL(b158_runtime_kernel_stats(rt, s, 1), 2); /* no kernel ran yet */
    CU_ASSERT_PTR_NULL(s[1].name);                                 /* cap respected */
    CU_ASSERT_EQUAL_FATAL(b158_runtime_kernel_stats(rt, s, 3), 2);
    CU_ASSERT_STRING_EQUAL(s[0].name, "routine_a");
    CU_ASSERT_EQUAL(s[0].launches, 2);
    CU_ASSERT_EQUAL(s[0].total_ns, ns + 5);
    CU_ASSERT_STRING_EQUAL(s[1].name, "routine_b");
    CU_ASSERT_EQUAL(s[1].launches, 1);
    CU_ASSERT_EQUAL(s[1].total_ns, 7);
    b158_runtime_kernel_stats_reset(rt);
    CU_ASSERT_EQUAL(b158_runtime_kernel_stats(rt, s, 3), 0);
    for (int i = 2; i < B158_RT_MAX_ROUTINES; i++)
        CU_ASSERT_EQUAL(b158_rt_record(rt, names[i], 1), B158_OK);
    CU_ASSERT_EQUAL(b158_rt_record(rt, names[B158_RT_MAX_ROUTINES], 1), B158_ERR_UNSUPPORTED);
    CU_ASSERT_EQUAL(b158_runtime_kernel_stats(rt, s, sizeof s / sizeof s[0]),
                    B158_RT_MAX_ROUTINES - 2);
    released = 0;
    CU_ASSERT_EQUAL(b158_rt_on_release(rt, count_release), B158_OK);
    CU_ASSERT_EQUAL(b158_rt_on_release(rt, count_release), B158_OK);
    CU_ASSERT_EQUAL(released, 0);
    b158_runtime_free(rt);
    CU_ASSERT_EQUAL(released, 1);
}

/* Queued timing: launches enqueued behind the gate run when it opens (their results are
 * there), their events come back timed; what would wait for the held queue (a blocking read,
 * a finish), a launch past the events kept and a second begin fail instead of hanging; a
 * runtime freed with the gate shut lets its launches go. */
static void test_queued(void)
{
    b158_runtime_params p = b158_runtime_default_params();
    b158_runtime *plain = NULL, *rt = NULL;
    b158_status st = b158_runtime_create(&p, &plain);
    if (st == B158_ERR_NO_PLATFORM || st == B158_ERR_NO_DEVICE) {
        b158_test_skip(b158_last_error());
        return;
    }
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    cl_event ev[4];
    CU_ASSERT_EQUAL(b158_rt_queued_begin(plain, ev, 4), B158_ERR_UNSUPPORTED);
    b158_runtime_free(plain);
    p.profile = 1;
    CU_ASSERT_EQUAL_FATAL(b158_runtime_create(&p, &rt), B158_OK);
    const int k = b158_test_randint(1, 700), kp = b158_ternary_k_pad(k), m = 3;
    float *x = malloc((size_t)m * k * 4), s_ref[3], s_dev[3];
    int8_t *q_ref = malloc((size_t)m * k), *q_dev = malloc((size_t)m * kp);
    for (int i = 0; i < m * k; i++)
        x[i] = (float)b158_test_randint(-1000, 1000) / 37.0f;
    b158_ref_quantize(x, k, m, q_ref, s_ref);
    b158_buf bx, bq, bs;
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * k * 4, &bx), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * kp, &bq), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, 3 * 4, &bs), B158_OK);
    CU_ASSERT_EQUAL(b158_buf_write(rt, &bx, 0, (size_t)m * k * 4, x), B158_OK);
    CU_ASSERT_EQUAL(b158_buf_fill(rt, &bq, 0x5a), B158_OK); /* poison */
    CU_ASSERT_EQUAL(b158_rt_finish(rt), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_rt_queued_begin(rt, ev, 3), B158_OK);
    CU_ASSERT_EQUAL(b158_rt_queued_begin(rt, ev, 3), B158_ERR_INVALID_ARG);
    for (int i = 0; i < 3; i++) /* row i alone, then all three */
        CU_ASSERT_EQUAL(b158_op_quantize(rt, &bx, &bq, &bs, k, kp, i < 2 ? 1 : m), B158_OK);
    CU_ASSERT_EQUAL(b158_op_quantize(rt, &bx, &bq, &bs, k, kp, m), B158_ERR_INVALID_ARG);
    /* time enough for the first one to run, were the gate open */
    nanosleep(&(struct timespec){0, 100000000}, NULL);
    cl_int status = CL_COMPLETE;
    CU_ASSERT_EQUAL(
        clGetEventInfo(ev[0], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL),
        CL_SUCCESS);
    CU_ASSERT(status > CL_COMPLETE); /* still queued or submitted */
    CU_ASSERT_EQUAL(b158_buf_read(rt, &bq, 0, (size_t)m * kp, q_dev), B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(b158_rt_finish(rt), B158_ERR_INVALID_ARG);
    int n = -1;
    uint64_t span = 0, busy = 0;
    CU_ASSERT_EQUAL_FATAL(b158_rt_queued_end(rt, &n, &span, &busy), B158_OK);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT(busy > 0);
    CU_ASSERT(busy <= span); /* an in-order queue: one after another */
    CU_ASSERT_EQUAL_FATAL(b158_buf_read(rt, &bq, 0, (size_t)m * kp, q_dev), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_buf_read(rt, &bs, 0, sizeof s_dev, s_dev), B158_OK);
    int same = 1;
    for (int r = 0; r < m; r++) {
        same &= s_dev[r] == s_ref[r];
        for (int i = 0; i < kp; i++)
            same &= q_dev[(size_t)r * kp + i] == (i < k ? q_ref[(size_t)r * k + i] : 0);
    }
    CU_ASSERT(same);
    CU_ASSERT_EQUAL(b158_rt_queued_begin(rt, ev, 1), B158_OK);
    CU_ASSERT_EQUAL(b158_op_quantize(rt, &bx, &bq, &bs, k, kp, m), B158_OK);
    b158_buf_free(rt, &bx);
    b158_buf_free(rt, &bq);
    b158_buf_free(rt, &bs);
    b158_runtime_free(rt); /* the gate still shut */
    free(x), free(q_ref), free(q_dev);
}

/* A recorded launch plan replays its launches with the arguments they had when recorded, on
 * kernel objects of its own (a launch of the same kernel with other buffers in between changes
 * nothing); a buffer command between begin and end fails the plan, which is then not run. */
static void test_plan(void)
{
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_AUTO);
    if (!rt)
        return;
    const int k = b158_test_randint(1, 700), kp = b158_ternary_k_pad(k);
    float *x = malloc((size_t)2 * k * 4), s_ref[2], s_dev[2];
    int8_t *q_ref = malloc((size_t)2 * k), *q_dev = malloc((size_t)2 * kp);
    CU_ASSERT_FATAL(x && q_ref && q_dev);
    for (int i = 0; i < 2 * k; i++)
        x[i] = (float)b158_test_randint(-1000, 1000) / 29.0f;
    b158_ref_quantize(x, k, 2, q_ref, s_ref);
    b158_buf bx[2], bq[2], bs[2];
    for (int i = 0; i < 2; i++) { /* row i of x in buffers of its own */
        CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)k * 4, &bx[i]), B158_OK);
        CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)kp, &bq[i]), B158_OK);
        CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, 4, &bs[i]), B158_OK);
        CU_ASSERT_EQUAL(b158_buf_write(rt, &bx[i], 0, (size_t)k * 4, x + (size_t)i * k), B158_OK);
    }
    b158_plan plan;
    b158_rt_plan_begin(rt, &plan);
    CU_ASSERT_EQUAL(b158_op_quantize(rt, &bx[0], &bq[0], &bs[0], k, kp, 1), B158_OK);
    b158_rt_plan_end(rt);
    CU_ASSERT_FALSE(plan.failed);
    CU_ASSERT_EQUAL(plan.n, 1);
    CU_ASSERT_EQUAL(b158_op_quantize(rt, &bx[1], &bq[1], &bs[1], k, kp, 1), B158_OK);
    CU_ASSERT_EQUAL(b158_buf_fill(rt, &bq[0], 0x5a), B158_OK); /* poison */
    CU_ASSERT_EQUAL(b158_buf_fill(rt, &bs[0], 0x5a), B158_OK);
    CU_ASSERT_EQUAL(b158_rt_plan_run(rt, &plan), B158_OK);
    int same = 1;
    for (int r = 0; r < 2; r++) {
        CU_ASSERT_EQUAL_FATAL(b158_buf_read(rt, &bq[r], 0, (size_t)kp, q_dev + (size_t)r * kp),
                              B158_OK);
        CU_ASSERT_EQUAL_FATAL(b158_buf_read(rt, &bs[r], 0, 4, &s_dev[r]), B158_OK);
        same &= s_dev[r] == s_ref[r];
        for (int i = 0; i < kp; i++)
            same &= q_dev[(size_t)r * kp + i] == (i < k ? q_ref[(size_t)r * k + i] : 0);
    }
    CU_ASSERT(same);
    b158_plan_free(&plan);
    CU_ASSERT_EQUAL(plan.n, 0);
    /* a fill (or any buffer command) while recording: a replay would go without it */
    b158_rt_plan_begin(rt, &plan);
    CU_ASSERT_EQUAL(b158_buf_fill(rt, &bs[0], 0), B158_OK);
    CU_ASSERT_EQUAL(b158_op_quantize(rt, &bx[0], &bq[0], &bs[0], k, kp, 1), B158_OK);
    b158_rt_plan_end(rt);
    CU_ASSERT(plan.failed);
    CU_ASSERT_EQUAL(b158_rt_plan_run(rt, &plan), B158_ERR_INVALID_ARG);
    b158_plan_free(&plan);
    for (int i = 0; i < 2; i++) {
        b158_buf_free(rt, &bx[i]);
        b158_buf_free(rt, &bq[i]);
        b158_buf_free(rt, &bs[i]);
    }
    free(x), free(q_ref), free(q_dev);
}

static void add_suites(void)
{
    b158_test_suite("devices",
                    (b158_test_case[]){{"list", test_list}, {"select", test_select}, {NULL, NULL}});
    b158_test_suite("build", (b158_test_case[]){{"build_error_has_log", test_build_error},
                                                {"binary_cache", test_build_cache},
                                                {"probes_quiet", test_probes_quiet},
                                                {NULL, NULL}});
    b158_test_suite("memory", (b158_test_case[]){{"counters", test_memory},
                                                 {"mapped_host", test_host_memory},
                                                 {"routine_counters", test_routines},
                                                 {NULL, NULL}});
    b158_test_suite("queue", (b158_test_case[]){{"queued_timing", test_queued},
                                                {"launch_plan", test_plan},
                                                {NULL, NULL}});
}

int main(int argc, char **argv)
{
    return b158_test_main(argc, argv, add_suites);
}
