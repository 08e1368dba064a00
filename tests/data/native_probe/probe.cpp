// edgecal's native build test probe: one `key=value` line per fact (features: 1 or 0).
#include <cstdio>

#include <c_api.h>
#include <cpu.h>
#include <layer.h>
#include <mat.h>
#include <option.h>
#include <paramdict.h>

int main()
{
    std::printf("ncnn=%s\n", ncnn_version());
    std::printf("cpu_count=%d\n", ncnn::get_cpu_count());
#if defined(__aarch64__) || defined(__arm__)
    std::printf("neon=%d\n", (ncnn::cpu_support_arm_neon() ? 1 : 0));
    std::printf("vfpv4=%d\n", (ncnn::cpu_support_arm_vfpv4() ? 1 : 0));
    std::printf("asimdhp=%d\n", (ncnn::cpu_support_arm_asimdhp() ? 1 : 0));
    std::printf("asimddp=%d\n", (ncnn::cpu_support_arm_asimddp() ? 1 : 0));
    std::printf("bf16=%d\n", (ncnn::cpu_support_arm_bf16() ? 1 : 0));
    std::printf("i8mm=%d\n", (ncnn::cpu_support_arm_i8mm() ? 1 : 0));
#endif
#if defined(__x86_64__)
    std::printf("avx=%d\n", (ncnn::cpu_support_x86_avx() ? 1 : 0));
    std::printf("avx2=%d\n", (ncnn::cpu_support_x86_avx2() ? 1 : 0));
    std::printf("avx512=%d\n", (ncnn::cpu_support_x86_avx512() ? 1 : 0));
#endif
    // a ReLU over 8x16x16 values -1.5, 0.5, -1.5, ... (half of them 0.5): sum 512
    ncnn::Option opt;
    opt.num_threads = 2;
    ncnn::Layer* relu = ncnn::create_layer("ReLU");
    ncnn::ParamDict pd;
    relu->load_param(pd);
    relu->create_pipeline(opt);
    ncnn::Mat m(16, 16, 8);
    float* p = m;
    for (int i = 0; i < 16 * 16 * 8; i++)
        p[i] = (i % 2) ? 0.5f : -1.5f;
    relu->forward_inplace(m, opt);
    double sum = 0;
    for (int i = 0; i < 16 * 16 * 8; i++)
        sum += p[i];
    relu->destroy_pipeline(opt);
    delete relu;
    std::printf("relu_sum=%g\n", sum);
    return 0;
}
