/* Elementwise FP32 kernels: gated FFN activations and the residual add.
 * Work-item mapping: one work-item per element; no __local. */

/* out = act(gate) * up; act 0 = silu(g) = g / (1 + e^-g), act 1 = relu(g)^2 (BitNet 2B-4T).
 * relu^2 is kept in FP32: it overflows FP16 on real checkpoints. */
__kernel void glu(__global const float *gate, __global const float *up, __global float *out,
                  int count, int act)
{
    const int i = get_global_id(0);
    if (i >= count)
        return;
    const float g = gate[i];
    float a;
    if (act == 0) {
        a = g / (1.0f + exp(-g));
    } else {
        const float r = fmax(g, 0.0f);
        a = r * r;
    }
    out[i] = a * up[i];
}

/* x += y */
__kernel void add(__global float *x, __global const float *y, int count)
{
    const int i = get_global_id(0);
    if (i < count)
        x[i] += y[i];
}
