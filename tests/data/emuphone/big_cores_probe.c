/* tests/phones: native code on the emulated phone, as ncnn runs there. Pins itself to the big
 * cores (the highest /sys/devices/system/cpu/cpuN/cpu_capacity, as ncnn's set_cpu_powersave(2)
 * finds them), runs two threads and checks where they ran, then uses ARMv8.2 fp16 arithmetic and
 * the dot product (SIGILL on a CPU without them).
 * Build: aarch64-linux-gnu-gcc -static -O2 -pthread -march=armv8.2-a+fp16+dotprod */
#define _GNU_SOURCE
#include <arm_neon.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

static void *where(void *arg) {
    *(int *)arg = sched_getcpu();
    return NULL;
}

int main(void) {
    int cap[64], n = 0, maxcap = 0, nbig = 0, ok = 1, at[2];
    for (; n < 64; n++) {
        char path[96];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/cpu_capacity", n);
        FILE *f = fopen(path, "r");
        if (!f) break;
        if (fscanf(f, "%d", &cap[n]) != 1) cap[n] = 0;
        fclose(f);
        if (cap[n] > maxcap) maxcap = cap[n];
    }
    cpu_set_t big;
    CPU_ZERO(&big);
    for (int i = 0; i < n; i++)
        if (cap[i] == maxcap) { CPU_SET(i, &big); nbig++; }
    if (sched_setaffinity(0, sizeof big, &big) != 0) {
        printf("sched_setaffinity(big cores) failed: %s\n", strerror(errno));
        return 1;
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, where, &at[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        if (at[i] < 0 || !CPU_ISSET(at[i], &big)) ok = 0;
    float16x8_t h = vdupq_n_f16((float16_t)1.5f);
    h = vaddq_f16(h, h);
    int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vdupq_n_s8(2), vdupq_n_s8(3));
    printf("cpus %d big %d threads_on_big %d fp16 %.1f dot %d\n", n, nbig, ok,
           (double)vgetq_lane_f16(h, 0), (int)vgetq_lane_s32(acc, 0));
    return 0;
}
