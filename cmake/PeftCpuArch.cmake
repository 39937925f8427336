# Resolves PEFT_CPU_ARCH to compiler flags for the project's own programs.
#
# auto: -march=x86-64-v3 (AVX2, FMA, F16C, BMI) when the compiler accepts it and the build machine
# runs it, else the compiler's default (SSE2 on x86-64). Not `native`: on an AVX-512 machine (AMD Zen 4)
# Eigen 3.4's AVX-512 GEMM kernel reached 88 GFLOP/s per core where its AVX2 kernel reached 108 (and
# oneDNN's AVX-512 one 111): see docs/benchmarks.md. `native` and any other -march value are passed
# as they are; `none` adds nothing. Programs built with AVX2 check at start that the CPU has it
# (peft::backend::require_cpu_features) instead of dying on an illegal instruction.
include(CheckCXXSourceRuns)

function(peft_resolve_cpu_arch out)
  set(arch "${PEFT_CPU_ARCH}")
  if(arch STREQUAL "none" OR arch STREQUAL "")
    set(${out} "" PARENT_SCOPE)
    return()
  endif()
  if(arch STREQUAL "auto")
    if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
      set(${out} "" PARENT_SCOPE)
      return()
    endif()
    set(CMAKE_REQUIRED_FLAGS "-march=x86-64-v3")
    check_cxx_source_runs("
      #include <immintrin.h>
      int main() {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports(\"avx2\") || !__builtin_cpu_supports(\"fma\")) return 1;
        volatile float x = 1.5f;
        __m256 v = _mm256_fmadd_ps(_mm256_set1_ps(x), _mm256_set1_ps(2.0f), _mm256_set1_ps(1.0f));
        return _mm256_cvtss_f32(v) == 4.0f ? 0 : 1;
      }" PEFT_HOST_RUNS_X86_64_V3)
    if(PEFT_HOST_RUNS_X86_64_V3)
      set(${out} "-march=x86-64-v3" PARENT_SCOPE)
    else()
      set(${out} "" PARENT_SCOPE)
    endif()
    return()
  endif()
  set(${out} "-march=${arch}" PARENT_SCOPE)
endfunction()
