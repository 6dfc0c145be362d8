/*
 * HC-GEMM-v1 (SPEC 1) arithmetic, written once for the GPU and the CPU.
 *
 * This header is plain C when the system C compiler builds it (the host library the tests
 * load through ctypes) and CUDA C++ when NVRTC builds it (CuPy RawModule, engine/cupy_backend):
 * `HC_DEVICE` marks every shared function. The element-level functions (SplitMix64, entry
 * extraction, index maps, fmix32, row digests, SHA-256 of one leaf) and the per-thread
 * "bodies" are the same source on both sides, so a host test of them is a test of the
 * arithmetic the GPU runs. The device-only kernels at the end (tiled transpose of B, warp
 * reductions) only change how threads share work, never the arithmetic.
 *
 * Layout (what cuBLAS's 8-bit tensor-core GEMM wants, "TN", both operands K-major): each
 * loop's operand block holds A row-major (n*n entries) followed by B transposed (B[r][c] at
 * n*n + c*n + r). C is written row-major (int32 or float32).
 */
#ifndef HC_KERNELS_H
#define HC_KERNELS_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define HC_CUDA 1
#define HC_DEVICE __device__ __forceinline__
#define HC_CONST __constant__
#define HC_EXTERN extern "C"
#else
#define HC_DEVICE static inline
#define HC_CONST static const
#define HC_EXTERN
#endif

typedef unsigned long long hc_u64;
typedef unsigned int hc_u32;
typedef int hc_i32;
typedef signed char hc_i8;
typedef unsigned char hc_u8;
typedef unsigned short hc_u16;

/* SPEC 1.3 SplitMix64 and SPEC 1.7 fmix32 constants. */
#define HC_GAMMA 0x9E3779B97F4A7C15ULL
#define HC_SM1 0xBF58476D1CE4E5B9ULL
#define HC_SM2 0x94D049BB133111EBULL
#define HC_FMIX_COLUMN 0x9E3779B1U
#define HC_FMIX_M1 0x85EBCA6BU
#define HC_FMIX_M2 0xC2B2AE35U

/* SPEC 1.3: word_t of the stream with key `key` (all arithmetic mod 2^64). */
HC_DEVICE hc_u64 hc_splitmix64(hc_u64 key, hc_u64 t) {
    hc_u64 z = key + (t + 1ULL) * HC_GAMMA;
    z = (z ^ (z >> 30)) * HC_SM1;
    z = (z ^ (z >> 27)) * HC_SM2;
    return z ^ (z >> 31);
}

/* SPEC 1.4: the 8 entries of one word as int8 bytes in stream order (little-endian).
 * With v = b & 0x7F, the byte (v + 0x40) ^ 0x80 is v - 64 as an int8 (no carry). */
HC_DEVICE hc_u64 hc_pack_entries(hc_u64 word) {
    return ((word & 0x7F7F7F7F7F7F7F7FULL) + 0x4040404040404040ULL) ^ 0x8080808080808080ULL;
}

/* SPEC 1.4: entry j (0..7) of a word: (byte_j & 0x7F) - 64. */
HC_DEVICE hc_i32 hc_entry(hc_u64 word, int j) {
    return (hc_i32)((word >> (8 * j)) & 0x7FULL) - 64;
}

/* Exact bfloat16 bits of a small integer |v| <= 64 (8 significant bits fit the mantissa). */
HC_DEVICE hc_u16 hc_bf16_bits(hc_i32 v) {
    union { float f; hc_u32 u; } cast;
    cast.f = (float)v;
    return (hc_u16)(cast.u >> 16);
}

/* Index maps (SPEC 1.5 plus the TN layout): where entry e of a loop's stream lives in its
 * operand block. A = entries [0, n^2) row-major; B = entries [n^2, 2n^2), stored transposed. */
HC_DEVICE hc_u64 hc_a_index(hc_u64 r, hc_u64 c, hc_u64 n) { return r * n + c; }
HC_DEVICE hc_u64 hc_bt_index(hc_u64 r, hc_u64 c, hc_u64 n) { return c * n + r; }
HC_DEVICE hc_u64 hc_entry_dest(hc_u64 e, hc_u64 n) {
    hc_u64 nn = n * n;
    if (e < nn) return e;
    e -= nn;
    return nn + hc_bt_index(e / n, e % n, n);
}

/* SPEC 1.7: fmix32 of uint32(C[r, j]) ^ (j * 0x9E3779B1), mod 2^32. */
HC_DEVICE hc_u32 hc_fmix32(hc_u32 c, hc_u32 j) {
    hc_u32 x = c ^ (j * HC_FMIX_COLUMN);
    x *= HC_FMIX_M1;
    x ^= x >> 13;
    x *= HC_FMIX_M2;
    return x ^ (x >> 16);
}

/* SPEC 1.7: d_r of one int32 row; of one float32 row (exact integers, converted first). */
HC_DEVICE hc_u64 hc_row_digest_i32(const hc_i32 *row, int n) {
    hc_u64 d = 0;
    for (int j = 0; j < n; j++) d += hc_fmix32((hc_u32)row[j], (hc_u32)j);
    return d;
}
HC_DEVICE hc_u64 hc_row_digest_f32(const float *row, int n) {
    hc_u64 d = 0;
    for (int j = 0; j < n; j++) d += hc_fmix32((hc_u32)(hc_i32)row[j], (hc_u32)j);
    return d;
}

/* ---- SHA-256 (FIPS 180-4), streaming, for loop keys (SPEC 1.2) and leaves (SPEC 1.9). */

HC_CONST hc_u32 HC_SHA_K[64] = {
    0x428a2f98U, 0x71374491U, 0xb5c0fbcfU, 0xe9b5dba5U, 0x3956c25bU, 0x59f111f1U,
    0x923f82a4U, 0xab1c5ed5U, 0xd807aa98U, 0x12835b01U, 0x243185beU, 0x550c7dc3U,
    0x72be5d74U, 0x80deb1feU, 0x9bdc06a7U, 0xc19bf174U, 0xe49b69c1U, 0xefbe4786U,
    0x0fc19dc6U, 0x240ca1ccU, 0x2de92c6fU, 0x4a7484aaU, 0x5cb0a9dcU, 0x76f988daU,
    0x983e5152U, 0xa831c66dU, 0xb00327c8U, 0xbf597fc7U, 0xc6e00bf3U, 0xd5a79147U,
    0x06ca6351U, 0x14292967U, 0x27b70a85U, 0x2e1b2138U, 0x4d2c6dfcU, 0x53380d13U,
    0x650a7354U, 0x766a0abbU, 0x81c2c92eU, 0x92722c85U, 0xa2bfe8a1U, 0xa81a664bU,
    0xc24b8b70U, 0xc76c51a3U, 0xd192e819U, 0xd6990624U, 0xf40e3585U, 0x106aa070U,
    0x19a4c116U, 0x1e376c08U, 0x2748774cU, 0x34b0bcb5U, 0x391c0cb3U, 0x4ed8aa4aU,
    0x5b9cca4fU, 0x682e6ff3U, 0x748f82eeU, 0x78a5636fU, 0x84c87814U, 0x8cc70208U,
    0x90befffaU, 0xa4506cebU, 0xbef9a3f7U, 0xc67178f2U};

typedef struct {
    hc_u32 h[8];
    hc_u8 buf[64];
    hc_u32 used;  /* bytes in buf */
    hc_u64 total; /* bytes hashed so far */
} hc_sha256_ctx;

HC_DEVICE hc_u32 hc_rotr(hc_u32 x, int s) { return (x >> s) | (x << (32 - s)); }

HC_DEVICE void hc_sha256_init(hc_sha256_ctx *ctx) {
    ctx->h[0] = 0x6a09e667U; ctx->h[1] = 0xbb67ae85U; ctx->h[2] = 0x3c6ef372U;
    ctx->h[3] = 0xa54ff53aU; ctx->h[4] = 0x510e527fU; ctx->h[5] = 0x9b05688cU;
    ctx->h[6] = 0x1f83d9abU; ctx->h[7] = 0x5be0cd19U;
    ctx->used = 0;
    ctx->total = 0;
}

HC_DEVICE void hc_sha256_compress(hc_u32 *h, const hc_u8 *block) {
    hc_u32 w[64];
    for (int t = 0; t < 16; t++)
        w[t] = ((hc_u32)block[4 * t] << 24) | ((hc_u32)block[4 * t + 1] << 16) |
               ((hc_u32)block[4 * t + 2] << 8) | (hc_u32)block[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        hc_u32 s0 = hc_rotr(w[t - 15], 7) ^ hc_rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        hc_u32 s1 = hc_rotr(w[t - 2], 17) ^ hc_rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    hc_u32 a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        hc_u32 t1 = k + (hc_rotr(e, 6) ^ hc_rotr(e, 11) ^ hc_rotr(e, 25)) +
                    ((e & f) ^ (~e & g)) + HC_SHA_K[t] + w[t];
        hc_u32 t2 = (hc_rotr(a, 2) ^ hc_rotr(a, 13) ^ hc_rotr(a, 22)) +
                    ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

HC_DEVICE void hc_sha256_update(hc_sha256_ctx *ctx, const hc_u8 *p, hc_u64 len) {
    ctx->total += len;
    while (len > 0) {
        if (ctx->used == 0 && len >= 64) { /* whole blocks straight from the input */
            hc_sha256_compress(ctx->h, p);
            p += 64;
            len -= 64;
            continue;
        }
        ctx->buf[ctx->used++] = *p++;
        len--;
        if (ctx->used == 64) {
            hc_sha256_compress(ctx->h, ctx->buf);
            ctx->used = 0;
        }
    }
}

HC_DEVICE void hc_sha256_final(hc_sha256_ctx *ctx, hc_u8 *out) {
    hc_u64 bits = ctx->total * 8ULL;
    ctx->buf[ctx->used++] = 0x80;
    if (ctx->used > 56) {
        while (ctx->used < 64) ctx->buf[ctx->used++] = 0;
        hc_sha256_compress(ctx->h, ctx->buf);
        ctx->used = 0;
    }
    while (ctx->used < 56) ctx->buf[ctx->used++] = 0;
    for (int k = 0; k < 8; k++) ctx->buf[56 + k] = (hc_u8)(bits >> (56 - 8 * k));
    hc_sha256_compress(ctx->h, ctx->buf);
    for (int k = 0; k < 8; k++) {
        out[4 * k] = (hc_u8)(ctx->h[k] >> 24);
        out[4 * k + 1] = (hc_u8)(ctx->h[k] >> 16);
        out[4 * k + 2] = (hc_u8)(ctx->h[k] >> 8);
        out[4 * k + 3] = (hc_u8)ctx->h[k];
    }
}

/* SPEC 1.1: hash ascii(seed + ":" + str(i)) into ctx (decimal, no padding). */
HC_DEVICE void hc_sha256_loop_seed(hc_sha256_ctx *ctx, const hc_u8 *seed, int seed_len,
                                   hc_u64 i) {
    hc_u8 digits[21];
    int len = 0;
    do {
        digits[20 - len] = (hc_u8)('0' + (int)(i % 10ULL));
        i /= 10ULL;
        len++;
    } while (i > 0);
    digits[20 - len] = (hc_u8)':';
    hc_sha256_update(ctx, seed, (hc_u64)seed_len);
    hc_sha256_update(ctx, digits + 20 - len, (hc_u64)(len + 1));
}

/* SPEC 1.2: key = first 8 bytes of SHA256(ascii(loop_seed_i)), little-endian. */
HC_DEVICE hc_u64 hc_loop_key(const hc_u8 *seed, int seed_len, hc_u64 i) {
    hc_sha256_ctx ctx;
    hc_u8 digest[32];
    hc_sha256_init(&ctx);
    hc_sha256_loop_seed(&ctx, seed, seed_len, i);
    hc_sha256_final(&ctx, digest);
    hc_u64 key = 0;
    for (int k = 7; k >= 0; k--) key = (key << 8) | digest[k];
    return key;
}

/* SPEC 1.8-1.9: leaf = SHA256(ascii(loop_seed_i) || u64le(d_0) || ... || u64le(d_{n-1})). */
HC_DEVICE void hc_leaf(const hc_u8 *seed, int seed_len, hc_u64 i, const hc_u64 *digests,
                       int n, hc_u8 *out) {
    hc_sha256_ctx ctx;
    hc_u8 le[8];
    hc_sha256_init(&ctx);
    hc_sha256_loop_seed(&ctx, seed, seed_len, i);
    for (int r = 0; r < n; r++) {
        hc_u64 d = digests[r];
        for (int k = 0; k < 8; k++) le[k] = (hc_u8)(d >> (8 * k));
        hc_sha256_update(&ctx, le, 8);
    }
    hc_sha256_final(&ctx, out);
}

/* ---- Per-thread bodies: one call per GPU thread, or per iteration of a host loop. ---- */

/* Thread `tid` < count: the key of loop start + tid. */
HC_DEVICE void hc_keys_body(hc_u64 tid, const hc_u8 *seed, int seed_len, hc_u64 start,
                            int count, hc_u64 *keys) {
    if (tid < (hc_u64)count) keys[tid] = hc_loop_key(seed, seed_len, start + tid);
}

/* Thread `tid` < count * n*n/8: word t of A (A's entries are stream words 0 .. n*n/8 - 1),
 * stored row-major as 8 entries of type T. One SplitMix64 word per thread. */
#define HC_DEFINE_GENERATE_A(SUFFIX, T, CONV)                                               \
    HC_DEVICE void hc_generate_a_body_##SUFFIX(hc_u64 tid, const hc_u64 *keys, int n,      \
                                               int count, T *out) {                        \
        hc_u64 words = (hc_u64)n * (hc_u64)n / 8ULL;                                       \
        if (tid >= words * (hc_u64)count) return;                                          \
        hc_u64 loop = tid / words, t = tid % words;                                        \
        hc_u64 word = hc_splitmix64(keys[loop], t);                                        \
        T *dst = out + loop * 2ULL * (hc_u64)n * (hc_u64)n + 8ULL * t;                     \
        for (int j = 0; j < 8; j++) dst[j] = CONV(hc_entry(word, j));                      \
    }

/* Thread `tid` < count * n*n/8: word t of B (stream word n*n/8 + t), its 8 entries stored
 * transposed through hc_entry_dest (scattered: the host form; the GPU uses a tiled kernel). */
#define HC_DEFINE_GENERATE_BT(SUFFIX, T, CONV)                                              \
    HC_DEVICE void hc_generate_bt_body_##SUFFIX(hc_u64 tid, const hc_u64 *keys, int n,     \
                                                int count, T *out) {                       \
        hc_u64 nn = (hc_u64)n * (hc_u64)n, words = nn / 8ULL;                              \
        if (tid >= words * (hc_u64)count) return;                                          \
        hc_u64 loop = tid / words, t = words + tid % words;                                \
        hc_u64 word = hc_splitmix64(keys[loop], t);                                        \
        T *block = out + loop * 2ULL * nn;                                                 \
        for (int j = 0; j < 8; j++)                                                        \
            block[hc_entry_dest(8ULL * t + (hc_u64)j, (hc_u64)n)] = CONV(hc_entry(word, j)); \
    }

#define HC_CONV_I8(v) ((hc_i8)(v))
#define HC_CONV_F32(v) ((float)(v))
#define HC_CONV_BF16(v) (hc_bf16_bits(v))

/* int8 A: the 8 entries are already packed in stream order: one aligned 8-byte store. */
HC_DEVICE void hc_generate_a_body_i8(hc_u64 tid, const hc_u64 *keys, int n, int count,
                                     hc_i8 *out) {
    hc_u64 words = (hc_u64)n * (hc_u64)n / 8ULL;
    if (tid >= words * (hc_u64)count) return;
    hc_u64 loop = tid / words, t = tid % words;
    hc_u64 *dst = (hc_u64 *)(out + loop * 2ULL * (hc_u64)n * (hc_u64)n);
    dst[t] = hc_pack_entries(hc_splitmix64(keys[loop], t));
}
HC_DEFINE_GENERATE_A(f32, float, HC_CONV_F32)
HC_DEFINE_GENERATE_A(bf16, hc_u16, HC_CONV_BF16)
HC_DEFINE_GENERATE_BT(i8, hc_i8, HC_CONV_I8)
HC_DEFINE_GENERATE_BT(f32, float, HC_CONV_F32)
HC_DEFINE_GENERATE_BT(bf16, hc_u16, HC_CONV_BF16)

/* Thread `tid` < rows: d_r of row tid of the row-major product(s) c (rows = count * n). */
HC_DEVICE void hc_digest_body_i32(hc_u64 tid, const hc_i32 *c, int n, hc_u64 rows,
                                  hc_u64 *out) {
    if (tid < rows) out[tid] = hc_row_digest_i32(c + tid * (hc_u64)n, n);
}
HC_DEVICE void hc_digest_body_f32(hc_u64 tid, const float *c, int n, hc_u64 rows,
                                  hc_u64 *out) {
    if (tid < rows) out[tid] = hc_row_digest_f32(c + tid * (hc_u64)n, n);
}

/* Thread `tid` < count: leaf of loop start + tid from its n digests. */
HC_DEVICE void hc_leaf_body(hc_u64 tid, const hc_u8 *seed, int seed_len, hc_u64 start,
                            int count, const hc_u64 *digests, int n, hc_u8 *leaves) {
    if (tid < (hc_u64)count)
        hc_leaf(seed, seed_len, start + tid, digests + tid * (hc_u64)n, n, leaves + 32ULL * tid);
}

#ifdef HC_CUDA
/* ---- CUDA kernels (NVRTC). Names match the host loops below one to one. ---- */

HC_DEVICE hc_u64 hc_tid(void) { return (hc_u64)blockIdx.x * blockDim.x + threadIdx.x; }

HC_EXTERN __global__ void hc_keys(const hc_u8 *seed, int seed_len, hc_u64 start, int count,
                                  hc_u64 *keys) {
    hc_keys_body(hc_tid(), seed, seed_len, start, count, keys);
}

#define HC_KERNEL_A(SUFFIX, T)                                                              \
    HC_EXTERN __global__ void hc_generate_a_##SUFFIX(const hc_u64 *keys, int n, int count,  \
                                                     T *out) {                              \
        hc_generate_a_body_##SUFFIX(hc_tid(), keys, n, count, out);                         \
    }
HC_KERNEL_A(i8, hc_i8)
HC_KERNEL_A(f32, float)
HC_KERNEL_A(bf16, hc_u16)

/* B transposed through shared memory: a block makes a 64 x 64 tile of B (64 rows x 8 words,
 * 2 words per thread, 256 threads), then writes it out column by column, so global stores
 * are contiguous. Grid (n/64, n/64, count); same entries and hc_bt_index as the host body. */
#define HC_KERNEL_BT(SUFFIX, T, CONV)                                                        \
    HC_EXTERN __global__ void hc_generate_bt_##SUFFIX(const hc_u64 *keys, int n, int count,  \
                                                      T *out) {                              \
        __shared__ hc_i8 tile[64][65];                                                       \
        hc_u64 nn = (hc_u64)n * (hc_u64)n;                                                   \
        hc_u64 loop = blockIdx.z, r0 = 64ULL * blockIdx.y, c0 = 64ULL * blockIdx.x;          \
        hc_u64 key = keys[loop];                                                             \
        for (int k = threadIdx.x; k < 512; k += blockDim.x) {                                \
            int rr = k >> 3, ww = k & 7;                                                     \
            hc_u64 e = nn + (r0 + rr) * (hc_u64)n + c0 + 8ULL * ww;                          \
            hc_u64 word = hc_splitmix64(key, e / 8ULL);                                      \
            for (int j = 0; j < 8; j++) tile[rr][8 * ww + j] = (hc_i8)hc_entry(word, j);     \
        }                                                                                    \
        __syncthreads();                                                                     \
        T *block = out + loop * 2ULL * nn + nn;                                              \
        for (int k = threadIdx.x; k < 4096; k += blockDim.x) {                               \
            int cc = k >> 6, rr = k & 63;                                                    \
            block[hc_bt_index(r0 + rr, c0 + cc, (hc_u64)n)] = CONV((hc_i32)tile[rr][cc]);    \
        }                                                                                    \
    }
HC_KERNEL_BT(i8, hc_i8, HC_CONV_I8)
HC_KERNEL_BT(f32, float, HC_CONV_F32)
HC_KERNEL_BT(bf16, hc_u16, HC_CONV_BF16)

/* Row digests: one warp per row, lanes stride over columns, shuffle-reduced in uint64
 * (an integer sum: any order gives the same d_r). */
#define HC_KERNEL_DIGEST(SUFFIX, T, TO_U32)                                                  \
    HC_EXTERN __global__ void hc_digest_##SUFFIX(const T *c, int n, hc_u64 rows,             \
                                                 hc_u64 *out) {                              \
        hc_u64 row = hc_tid() / 32ULL;                                                       \
        int lane = threadIdx.x & 31;                                                         \
        if (row >= rows) return;                                                             \
        const T *p = c + row * (hc_u64)n;                                                    \
        hc_u64 d = 0;                                                                        \
        for (int j = lane; j < n; j += 32) d += hc_fmix32(TO_U32(p[j]), (hc_u32)j);         \
        for (int off = 16; off > 0; off >>= 1) d += __shfl_down_sync(0xffffffffU, d, off);   \
        if (lane == 0) out[row] = d;                                                         \
    }
#define HC_I32_TO_U32(v) ((hc_u32)(v))
#define HC_F32_TO_U32(v) ((hc_u32)(hc_i32)(v))
HC_KERNEL_DIGEST(i32, hc_i32, HC_I32_TO_U32)
HC_KERNEL_DIGEST(f32, float, HC_F32_TO_U32)

HC_EXTERN __global__ void hc_leaves(const hc_u8 *seed, int seed_len, hc_u64 start, int count,
                                    const hc_u64 *digests, int n, hc_u8 *leaves) {
    hc_leaf_body(hc_tid(), seed, seed_len, start, count, digests, n, leaves);
}

#else
/* ---- Host loops (system C compiler): the same bodies over every thread index. ---- */

HC_EXTERN void hc_host_keys(const hc_u8 *seed, int seed_len, hc_u64 start, int count,
                            hc_u64 *keys) {
    for (hc_u64 t = 0; t < (hc_u64)count; t++) hc_keys_body(t, seed, seed_len, start, count, keys);
}

#define HC_HOST_GENERATE(SUFFIX, T)                                                          \
    HC_EXTERN void hc_host_generate_a_##SUFFIX(const hc_u64 *keys, int n, int count, T *out) { \
        hc_u64 total = (hc_u64)n * (hc_u64)n / 8ULL * (hc_u64)count;                         \
        for (hc_u64 t = 0; t < total; t++) hc_generate_a_body_##SUFFIX(t, keys, n, count, out); \
    }                                                                                        \
    HC_EXTERN void hc_host_generate_bt_##SUFFIX(const hc_u64 *keys, int n, int count, T *out) { \
        hc_u64 total = (hc_u64)n * (hc_u64)n / 8ULL * (hc_u64)count;                         \
        for (hc_u64 t = 0; t < total; t++) hc_generate_bt_body_##SUFFIX(t, keys, n, count, out); \
    }
HC_HOST_GENERATE(i8, hc_i8)
HC_HOST_GENERATE(f32, float)
HC_HOST_GENERATE(bf16, hc_u16)

HC_EXTERN void hc_host_digest_i32(const hc_i32 *c, int n, hc_u64 rows, hc_u64 *out) {
    for (hc_u64 t = 0; t < rows; t++) hc_digest_body_i32(t, c, n, rows, out);
}
HC_EXTERN void hc_host_digest_f32(const float *c, int n, hc_u64 rows, hc_u64 *out) {
    for (hc_u64 t = 0; t < rows; t++) hc_digest_body_f32(t, c, n, rows, out);
}

HC_EXTERN void hc_host_leaves(const hc_u8 *seed, int seed_len, hc_u64 start, int count,
                              const hc_u64 *digests, int n, hc_u8 *leaves) {
    for (hc_u64 t = 0; t < (hc_u64)count; t++)
        hc_leaf_body(t, seed, seed_len, start, count, digests, n, leaves);
}

/* ---- CPU miner accelerator (optional; the NumPy backend falls back to ufuncs). ---- */

/* SPEC 1.3-1.5: stream words first_word .. first_word + words - 1 of `key` as float32
 * entries, row-major (the CPU GEMM's layout), 8 per word. Two vectorizable passes over an
 * L1-sized block: packed int8 entries (hc_pack_entries), then int8 -> float32. The bytes of
 * a packed word are read in memory order, which is SPEC 1.4's u64le order on the
 * little-endian hosts this runs on (the host tests would fail elsewhere). */
#define HC_CPU_BLOCK 512
HC_EXTERN void hc_cpu_generate_f32(hc_u64 key, hc_u64 first_word, hc_u64 words, float *out) {
    hc_u64 buf[HC_CPU_BLOCK];
    for (hc_u64 t0 = 0; t0 < words; t0 += HC_CPU_BLOCK) {
        hc_u64 m = words - t0 < HC_CPU_BLOCK ? words - t0 : HC_CPU_BLOCK;
        for (hc_u64 k = 0; k < m; k++)
            buf[k] = hc_pack_entries(hc_splitmix64(key, first_word + t0 + k));
        const hc_i8 *bytes = (const hc_i8 *)buf;
        float *dst = out + 8ULL * t0;
        for (hc_u64 k = 0; k < 8ULL * m; k++) dst[k] = (float)bytes[k];
    }
}

/* SPEC 1.7: digests of `rows` rows of the exact float32 product c (n columns). */
HC_EXTERN void hc_cpu_digest_f32(const float *c, int n, hc_u64 rows, hc_u64 *out) {
    for (hc_u64 r = 0; r < rows; r++) out[r] = hc_row_digest_f32(c + r * (hc_u64)n, n);
}

/* Element-level exports for the host tests. */
HC_EXTERN hc_u64 hc_host_splitmix64(hc_u64 key, hc_u64 t) { return hc_splitmix64(key, t); }
HC_EXTERN hc_u64 hc_host_pack_entries(hc_u64 word) { return hc_pack_entries(word); }
HC_EXTERN hc_i32 hc_host_entry(hc_u64 word, int j) { return hc_entry(word, j); }
HC_EXTERN hc_u16 hc_host_bf16_bits(hc_i32 v) { return hc_bf16_bits(v); }
HC_EXTERN hc_u64 hc_host_entry_dest(hc_u64 e, hc_u64 n) { return hc_entry_dest(e, n); }
HC_EXTERN hc_u32 hc_host_fmix32(hc_u32 c, hc_u32 j) { return hc_fmix32(c, j); }
HC_EXTERN hc_u64 hc_host_loop_key(const hc_u8 *seed, int seed_len, hc_u64 i) {
    return hc_loop_key(seed, seed_len, i);
}
HC_EXTERN void hc_host_sha256(const hc_u8 *p, hc_u64 len, hc_u8 *out) {
    hc_sha256_ctx ctx;
    hc_sha256_init(&ctx);
    hc_sha256_update(&ctx, p, len);
    hc_sha256_final(&ctx, out);
}
#endif /* HC_CUDA */

#endif /* HC_KERNELS_H */
