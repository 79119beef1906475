"""Microcontroller deployment (``robot_rl.hardware.mcu``): distil a policy into a small MLP student, quantize it
to int8 in the TFLite scheme, generate C99 sources, and check them bit-exact on the host and on a Cortex-M4.

Pipeline (``robot-rl export-mcu``, :mod:`.export`):

1. :mod:`.distill`  DAgger (BC as the baseline) from any teacher with ``reset()`` + ``act(obs)``;
2. :mod:`.student`  the float student; observation normalization folded into its first layer;
3. :mod:`.quantize` int8 post-training quantization calibrated on states the student visits, a numpy int8
   reference, and quantization-aware fine-tuning when the error gate fails;
4. :mod:`.codegen`  one ``.h``/``.c`` pair (const weights, static scratch, no heap, portable + SMLAD paths);
5. :mod:`.toolchain` host gcc / arm-none-eabi-gcc / qemu-system-arm runs, sizes and instruction counts.

Nothing here imports torch or mujoco at package import time.
"""
