/* Platform for the STM32F405 (and the LM3S6965 / nRF51822 builds): ARM semihosting (works under QEMU and under a debugger such as OpenOCD with
 * `arm semihosting enable`; without a debugger attached a BKPT faults) and the SysTick counter. */
#include <stdint.h>

#include "platform.h"

#define SYS_WRITE0 0x04
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static int32_t semihost(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void platform_puts(const char *s) { semihost(SYS_WRITE0, s); }

void platform_exit(int code)
{
    /* SYS_EXIT_EXTENDED carries the exit code (plain SYS_EXIT on 32-bit ARM only says success/failure). */
    uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)code;
    semihost(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

void platform_ticks_start(void)
{
    SYST_CSR = 0;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5u; /* enable, processor clock, no interrupt */
}

uint32_t platform_ticks(void) { return (0x00FFFFFFu - SYST_CVR) & 0x00FFFFFFu; }

void platform_spin(uint32_t n)
{
    if (n == 0) return;
#if defined(__thumb2__) || defined(__clang__)
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
#else /* GCC on Thumb-1 (Cortex-M0) writes divided syntax, where this SUB is the flag-setting one */
    __asm__ volatile("1: sub %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
#endif
}
