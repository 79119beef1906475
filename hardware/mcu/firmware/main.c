/* Example firmware: runs the exported policy on an STM32F405 (or QEMU's netduinoplus2).
 *
 * 1. prints the model hash;
 * 2. int8 self-check: every vector in vectors.h through POLICY_INFER_Q, compared with the numpy reference's
 *    outputs, each result printed as hex ("q ...");
 * 3. float wrapper: raw observations through POLICY_ACT (the call a control loop makes), the bits of each
 *    action printed and compared ("f ...");
 * 4. timing: SysTick ticks of a calibrated 2-instruction spin loop and of INFER_REPS inferences ("ticks ...").
 *    Under `qemu -icount` the ticks are proportional to executed instructions; on a real board they are CPU
 *    cycles at the SysTick clock.
 * Exit code: the number of mismatches (capped at 255), via semihosting. The same file builds for the host
 * (platform_host.c) so the two outputs can be compared line by line. */
#include <stdint.h>

#include "platform.h"
#include "vectors.h"

#define INFER_REPS 32u
#define SPIN_ITERS 20000u

static char line[256];

static char *put_str(char *p, const char *s)
{
    while (*s) *p++ = *s++;
    return p;
}

static char *put_hex(char *p, uint32_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    int i;
    for (i = digits - 1; i >= 0; --i) *p++ = hex[(v >> (4 * i)) & 0xFu];
    return p;
}

static char *put_u32(char *p, uint32_t v)
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

static void emit(char *p)
{
    *p++ = '\n';
    *p = '\0';
    platform_puts(line);
}

int main(void)
{
    int8_t out[POLICY_ACT_DIM];
    float act[POLICY_ACT_DIM];
    uint32_t i, j, mismatches = 0, t0, base, spin, infer, wrap;
    char *p;

    emit(put_str(put_str(line, "hash "), POLICY_MODEL_HASH));
    for (i = 0; i < VEC_NQ; ++i) {
        POLICY_INFER_Q(&vec_in_q[i * POLICY_OBS_DIM], out);
        p = put_str(line, "q ");
        for (j = 0; j < POLICY_ACT_DIM; ++j) {
            p = put_hex(p, (uint8_t)out[j], 2);
            mismatches += out[j] != vec_out_q[i * POLICY_ACT_DIM + j];
        }
        emit(p);
    }
    for (i = 0; i < VEC_NF; ++i) {
        int rc = POLICY_ACT(&vec_obs[i * POLICY_OBS_DIM], act);
        p = put_str(line, rc == 0 ? "f" : "f refused");
        for (j = 0; j < POLICY_ACT_DIM; ++j) {
            union { float f; uint32_t u; } bits;
            bits.f = act[j];
            *p++ = ' ';
            p = put_hex(p, bits.u, 8);
            mismatches += rc != 0 || bits.u != vec_act_bits[i * POLICY_ACT_DIM + j];
        }
        emit(p);
    }
    p = put_u32(put_str(line, "mismatches "), mismatches);
    emit(p);

    platform_ticks_start();
    t0 = platform_ticks();
    base = platform_ticks() - t0;
    t0 = platform_ticks();
    platform_spin(SPIN_ITERS);
    spin = platform_ticks() - t0;
    t0 = platform_ticks();
    for (i = 0; i < INFER_REPS; ++i) POLICY_INFER_Q(&vec_in_q[(i % VEC_NQ) * POLICY_OBS_DIM], out);
    infer = platform_ticks() - t0;
    t0 = platform_ticks();
    for (i = 0; i < INFER_REPS; ++i) (void)POLICY_ACT(&vec_obs[(i % VEC_NF) * POLICY_OBS_DIM], act);
    wrap = platform_ticks() - t0;
    p = put_u32(put_str(line, "ticks base "), base);
    p = put_u32(put_str(p, " spin_iters "), SPIN_ITERS);
    p = put_u32(put_str(p, " spin "), spin);
    p = put_u32(put_str(p, " reps "), INFER_REPS);
    p = put_u32(put_str(p, " infer "), infer);
    p = put_u32(put_str(p, " act "), wrap);
    emit(p);
    return mismatches > 255u ? 255 : (int)mismatches;
}
