"""The Cortex-M DSP (``__ARM_FEATURE_DSP``) part of the generated source: one packed stream per layer and the
fully connected kernel. The layout and its arithmetic are explained in :mod:`robot_rl.hardware.mcu.dsp_layout`;
this module writes them out as C and Thumb-2 assembly.

The kernel is a top-level assembly function (AAPCS: ``r0`` layer, ``r1`` output, ``r2`` widened input), so
every compiler and optimisation level runs the same instructions. Registers: ``r0`` stream, ``r1`` input word
pointer (then the rows' ``e`` bytes), ``r2`` input end, ``r3`` output, ``r4..r7`` the four accumulators,
``r8/r9`` two widened input words, ``r10/r11`` two weight words (then requantization scratch), ``r12`` the
output zero point, ``lr`` passes left. Per two widened input words (4 inputs x 4 rows = 16 MACs) the inner loop
runs 17 instructions: one ``LDRD`` of inputs, two ``LDRD`` of weights, four ``SXTB16``, eight ``SMLAD``,
``CMP``/``BNE``. Each output costs 9 more (``LDRD`` multiplier and rounding term, ``LSL``, ``SMMLAR``, ``ADD``
sign, ``UBFX`` e, ``ASR``, ``ADD`` zero point, ``SSAT``, ``STRB``), each row pair 2 (``SUB``, ``ASR`` #8).
"""
from __future__ import annotations

import numpy as np

from robot_rl.hardware.mcu import dsp_layout
from robot_rl.hardware.mcu.quantize import QuantizedModel


def _words(values: np.ndarray, per_line: int = 8) -> str:
    flat = [f"0x{int(v):08x}u" for v in np.asarray(values, np.uint32).ravel()]
    return ",\n".join("    " + ", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line))


def supported(qm: QuantizedModel) -> bool:
    return dsp_layout.supported(qm)


def _asm_kernel(n: str) -> str:
    """Thumb-2 for ``void <n>_fc_kernel(const <n>_layer_t *L, int8_t *y, const int32_t *xw)``."""
    lines = [
        ".pushsection .text.{n}_fc_kernel,\"ax\",%progbits",
        ".syntax unified", ".thumb", ".p2align 2",
        ".global {n}_fc_kernel", ".hidden {n}_fc_kernel", ".type {n}_fc_kernel, %function", ".thumb_func",
        ".macro {n}_row acc, lsb",  # one output: requantize acc, store, advance
        "ldrd r10, r11, [r0], #8",  # multiplier, 2^(e-1)
        "lsl r8, \\acc, #1",
        "smmlar r8, r8, r10, r11",
        "add r8, r8, \\acc, asr #31",
        "ubfx r9, r1, #\\lsb, #8",
        "asr r8, r8, r9",
        "add r8, r8, r12",
        "ssat r8, #8, r8",
        "strb r8, [r3], #1",
        ".endm",
        "{n}_fc_kernel:",
        "push {{r4-r11, lr}}",
        "sub sp, sp, #12",  # two locals, stack kept 8-byte aligned
        "str r2, [sp, #0]",  # widened input start
        "ldrh r3, [r0, #8]",
        "str r3, [sp, #4]",  # tail flag
        "mov r3, r1",
        "ldrh r1, [r0, #4]",
        "add r2, r2, r1, lsl #2",  # input end
        "ldrh lr, [r0, #6]",
        "ldrsh r12, [r0, #10]",
        "ldr r0, [r0, #0]",
        "cmp lr, #0",
        "beq 3f",
        "2:",  # pass over two row pairs
        "ldr r1, [sp, #0]",
        "ldmia r0!, {{r4-r7}}",  # acc_a, acc_hi of both pairs: the biases
        "1:",
        "ldrd r8, r9, [r1], #8",
        "ldrd r10, r11, [r0], #8",
        "smlad r5, r10, r8, r5", "sxtb16 r10, r10", "smlad r4, r10, r8, r4",
        "smlad r7, r11, r8, r7", "sxtb16 r11, r11", "smlad r6, r11, r8, r6",
        "ldrd r10, r11, [r0], #8",
        "smlad r5, r10, r9, r5", "sxtb16 r10, r10", "smlad r4, r10, r9, r4",
        "smlad r7, r11, r9, r7", "sxtb16 r11, r11", "smlad r6, r11, r9, r6",
        "cmp r1, r2",
        "bne 1b",
        "sub r5, r5, r4", "asr r5, r5, #8",  # row b = (acc_hi - acc_a) / 256, exact modulo 2^32
        "sub r7, r7, r6", "asr r7, r7, #8",
        "ldr r1, [r0], #4",  # the four rows' e
        "{n}_row r4, 0", "{n}_row r5, 8", "{n}_row r6, 16", "{n}_row r7, 24",
        "subs lr, lr, #1",
        "bne 2b",
        "3:",
        "ldr r1, [sp, #4]",
        "cmp r1, #0",
        "beq 5f",
        "ldr r1, [sp, #0]",  # a last, odd pair
        "ldmia r0!, {{r4, r5}}",
        "4:",
        "ldrd r8, r9, [r1], #8",
        "ldrd r10, r11, [r0], #8",
        "smlad r5, r10, r8, r5", "sxtb16 r10, r10", "smlad r4, r10, r8, r4",
        "smlad r5, r11, r9, r5", "sxtb16 r11, r11", "smlad r4, r11, r9, r4",
        "cmp r1, r2",
        "bne 4b",
        "sub r5, r5, r4", "asr r5, r5, #8",
        "ldr r1, [r0], #4",
        "{n}_row r4, 0", "{n}_row r5, 8",
        "5:",
        "add sp, sp, #12",
        "pop {{r4-r11, pc}}",
        ".purgem {n}_row",
        ".size {n}_fc_kernel, .-{n}_fc_kernel",
        ".popsection",
    ]
    def c_literal(line: str) -> str:
        return '    "' + line.replace("\\", "\\\\").replace('"', '\\"') + '\\n"'

    return "\n".join(c_literal(ln.format(n=n)) for ln in lines)


def dsp_source(qm: QuantizedModel, n: str) -> str:
    """The ``#ifdef <N>_USE_DSP`` branch: streams, layer table, kernel. ``n`` is the checked C prefix."""
    consts, table = [], []
    for i, layer in enumerate(qm.layers):
        packed = dsp_layout.pack_layer(layer)
        out, inp = layer.weight.shape
        consts.append(f"/* layer {i}: {inp} -> {out}{', ReLU (zero point -128: SSAT clamps it)' if layer.relu else ''}; "
                      f"{packed.passes} passes of 4 rows{' + 1 of 2' if packed.tail else ''}, {packed.in_words} "
                      f"input words */\n"
                      f"static const uint32_t {n}_s{i}[{len(packed.stream)}] = {{\n{_words(packed.stream)}\n}};\n")
        table.append(f"    {{{n}_s{i}, {packed.in_words}u, {packed.passes}u, {int(packed.tail)}u, "
                     f"{layer.out_zero_point}}}")
    max_words = max(dsp_layout.pad4(w) // 2 for w in qm.widths)
    return f"""/* Cortex-M DSP kernel: weights, biases and requantization constants packed at export time into one stream
 * per layer (robot_rl/hardware/mcu/dsp_layout.py), read by {n}_fc_kernel (assembly below). */
typedef struct {{
    const uint32_t *stream;  /* offset 0: per pass: accumulator starts, weight words, e bytes, (multiplier, 2^(e-1)) */
    uint16_t in_words;       /* offset 4: widened input words (inputs padded to 4, / 2) */
    uint16_t passes;         /* offset 6: passes over 4 rows */
    uint16_t tail;           /* offset 8: 1: one more pass over 2 rows */
    int16_t out_zp;          /* offset 10 */
}} {n}_layer_t;
typedef char {n}_layer_layout_check[sizeof({n}_layer_t) == 12 ? 1 : -1];

{chr(10).join(consts)}
static const {n}_layer_t {n}_layers[{len(qm.layers)}] = {{
{("," + chr(10)).join(table)}
}};

static int32_t {n}_xw[{max_words}];  /* the input widened to int16x2 words, once per layer */

void {n}_fc_kernel(const {n}_layer_t *L, int8_t *y, const int32_t *xw);
__asm__(
{_asm_kernel(n)}
);

/* Sign-extend bytes (1, 3) of a word into two int16 lanes: one SXTB16 with its built-in rotation. */
static int32_t {n}_sxtb16_ror8(uint32_t v)
{{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}}

/* One fully connected layer: widen the input once (bytes (0, 2) and (1, 3) of each word as int16 pairs, the
 * order the weights were packed in), then the kernel. */
static void {n}_fc(const {n}_layer_t *L, const int8_t *x, int8_t *y)
{{
    const uint32_t words = L->in_words;
    uint32_t g;
    for (g = 0; g < words; g += 2u) {{
        uint32_t v;
        memcpy(&v, x + 2u * g, 4);
        {n}_xw[g] = __sxtb16((int32_t)v);
        {n}_xw[g + 1u] = {n}_sxtb16_ror8(v);
    }}
    {n}_fc_kernel(L, y, {n}_xw);
}}
"""
