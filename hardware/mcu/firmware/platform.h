/* What the example firmware needs from its platform: text out, an exit code, and an instruction-ish clock.
 * platform_semihost.c implements it on the STM32F405 (semihosting + SysTick); platform_host.c with stdio. */
#ifndef RRL_PLATFORM_H
#define RRL_PLATFORM_H
#include <stdint.h>

void platform_puts(const char *s);
void platform_exit(int code);
/* Start the free-running counter; platform_ticks() then returns ticks elapsed since (0 on the host). */
void platform_ticks_start(void);
uint32_t platform_ticks(void);
/* Spin n iterations of a 2-instruction loop (calibrates ticks per instruction under QEMU -icount). */
void platform_spin(uint32_t n);
#endif
