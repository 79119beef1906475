/* Minimal startup for the STM32F405 (Cortex-M4F): the 16 core exception vectors, .data/.bss set-up, the
 * FPU enabled (the policy wrapper uses single-precision floats), then main(); its return value is reported
 * through platform_exit (semihosting on QEMU or under a debugger). No interrupts are used. */
#include <stdint.h>

#include "platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void Reset_Handler(void);
void Fault_Handler(void);

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used)) const vector_t vector_table[16] = {
    (vector_t)(uintptr_t)&_estack,  /* initial stack pointer */
    Reset_Handler,                  /* reset */
    Fault_Handler,                  /* NMI */
    Fault_Handler,                  /* HardFault */
    Fault_Handler,                  /* MemManage */
    Fault_Handler,                  /* BusFault */
    Fault_Handler,                  /* UsageFault */
    0, 0, 0, 0,                     /* reserved */
    Fault_Handler,                  /* SVCall */
    Fault_Handler,                  /* DebugMonitor */
    0,                              /* reserved */
    Fault_Handler,                  /* PendSV */
    Fault_Handler,                  /* SysTick (its interrupt is never enabled) */
};

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; ++dst) *dst = 0;
#if defined(__ARM_FP)
    /* CPACR: full access to coprocessors 10 and 11 (the FPU) before any float instruction runs. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    platform_exit(main());
}

void Fault_Handler(void)
{
    platform_puts("fault\n");
    platform_exit(255);
}
