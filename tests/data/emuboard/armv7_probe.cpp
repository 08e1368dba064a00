// armv7_probe: a tiny static program that tests/boards/test_emuboard.py cross-compiles with
// arm-linux-gnueabihf-g++ -static and runs on the emulated armv7 board (emuv7).
// It prints one line the test checks: the machine it was built for, a thread's result, NEON
// and hardware-divide arithmetic, and a float conversion through fp16 (VFPv4's vcvt).
#include <cstdint>
#include <cstdio>
#include <thread>

#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

static std::uint32_t divide(std::uint32_t a, std::uint32_t b) { return a / b; }  // udiv (idiva)

int main(int argc, char** argv) {
    std::uint64_t sum = 0;
    std::thread worker([&sum] {
        for (std::uint32_t i = 1; i <= 1000; ++i) sum += i;
    });
    worker.join();
    int neon = 0;
    float lanes = 0.0f;
#if defined(__ARM_NEON)
    neon = 1;
    const float in[4] = {1.5f, 2.5f, 3.0f, 4.0f};
    float32x4_t v = vld1q_f32(in);
    v = vmulq_f32(v, vdupq_n_f32(2.0f));
    lanes = vgetq_lane_f32(v, 0) + vgetq_lane_f32(v, 1) + vgetq_lane_f32(v, 2) + vgetq_lane_f32(v, 3);
#endif
    __fp16 half = static_cast<__fp16>(0.333333f);  // vcvt.f16.f32 with -mfp16-format=ieee
    std::printf("armv7-probe ptr=%u arch=%d neon=%d sum=%llu lanes=%.1f div=%u half=%.6f args=%d\n",
                static_cast<unsigned>(sizeof(void*)), __ARM_ARCH, neon,
                static_cast<unsigned long long>(sum), lanes, divide(1000000007u, 97u),
                static_cast<double>(static_cast<float>(half)), argc - 1);
    (void)argv;
    return 0;
}
