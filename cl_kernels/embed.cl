/* Embedding row gather: out[m][:] = float(table[ids[m]][:]) from an FP16 table.
 * Work-item mapping: one work-item per (element, token). An id outside [0, n_vocab) writes NaN
 * (the host validates ids first; this only keeps a bad id from reading out of bounds). */

__kernel void embed_rows(__global const half *table, __global const int *ids, __global float *out,
                         int n_embd, int n_vocab, int m_rows)
{
    const int i = get_global_id(0);
    const int m = get_global_id(1);
    if (i >= n_embd || m >= m_rows)
        return;
    const int id = ids[m];
    out[(size_t)m * n_embd + i] =
        (id >= 0 && id < n_vocab) ? vload_half((size_t)id * n_embd + i, table) : NAN;
}
