/* Platform for running the example firmware's main.c on the build machine (the host-vs-device check). */
#include <stdio.h>
#include <stdlib.h>

#include "platform.h"

void platform_puts(const char *s) { fputs(s, stdout); }

void platform_exit(int code)
{
    fflush(stdout);
    exit(code);
}

void platform_ticks_start(void) {}

uint32_t platform_ticks(void) { return 0; }

void platform_spin(uint32_t n) { (void)n; }
