# Checks liblskd_c as built:
#  1. it exports the C API and nothing else;
#  2. SIMD instructions (VEX or EVEX encoded: AVX and later) appear only in functions of the
#     avx2 and avx512f dispatch targets, so the scalar and sse2 paths, and the code that chooses
#     between them, run on any x86-64 CPU. A function from outside lskd's per-target namespace
#     (say an inline function of the standard library) compiled in the avx512f object and kept
#     by the linker for every caller would show up here. An xsimd function instantiated on
#     xsimd::avx512f (say xsimd's double exp, when GCC does not inline it) is allowed: only the
#     avx512f object can instantiate it, so every copy of it was compiled for AVX-512. One on
#     avx2 is not: the avx512f object could instantiate that too.
#
# cmake -DLIBRARY=<path to liblskd_c.so> -DNM=<nm> -DOBJDUMP=<objdump> -P check_library.cmake

foreach(tool NM OBJDUMP)
  if(NOT ${tool} OR NOT EXISTS "${${tool}}")
    message("SKIPPED: ${tool} not found; cannot inspect ${LIBRARY}")
    return()
  endif()
endforeach()

# 1. Exports.
execute_process(COMMAND ${NM} -D --defined-only ${LIBRARY} OUTPUT_VARIABLE symbols
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "nm failed on ${LIBRARY}")
endif()
string(REGEX MATCHALL "[^\n]+" lines "${symbols}")
set(expected lskd_dkd_f32 lskd_dkd_f64 lskd_dkd_options_init lskd_kd_bf16
  lskd_kd_class_weighted_f32 lskd_kd_class_weighted_f64 lskd_kd_f16 lskd_kd_f32 lskd_kd_f64
  lskd_kd_options_init lskd_kd_weighted_f32 lskd_kd_weighted_f64 lskd_last_error
  lskd_multi_temperature_kd_f32 lskd_multi_temperature_kd_f64 lskd_simd_arch lskd_version)
set(exported "")
foreach(line IN LISTS lines)
  string(REGEX REPLACE "^.* " "" name "${line}")
  list(APPEND exported ${name})
endforeach()
list(SORT exported)
if(NOT exported STREQUAL expected)
  message(FATAL_ERROR "liblskd_c exports\n  ${exported}\nexpected exactly\n  ${expected}")
endif()
message(STATUS "exports: ${exported}")

# 2. Where the SIMD instructions are.
# Mangled names (no -C): demangled ones have brackets, which CMake lists do not take apart.
execute_process(COMMAND ${OBJDUMP} -d --no-show-raw-insn ${LIBRARY}
  OUTPUT_FILE ${CMAKE_CURRENT_BINARY_DIR}/liblskd_c.dis RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "objdump failed on ${LIBRARY}")
endif()
# Function headers and instructions whose mnemonic starts with v (vmovups, vfmadd..., vzeroupper);
# GNU objdump puts a tab after the address, llvm-objdump spaces and a tab.
file(STRINGS ${CMAKE_CURRENT_BINARY_DIR}/liblskd_c.dis interesting
  REGEX "^[0-9a-f]+ <.*>:$|^ *[0-9a-f]+:[ \t]+v[a-z0-9]+([ \t]|$)")
set(function "")
set(offenders "")
set(simd_functions 0)
foreach(line IN LISTS interesting)
  if(line MATCHES "^[0-9a-f]+ <(.*)>:$")
    set(function "${CMAKE_MATCH_1}")
    set(counted OFF)
  elseif(function MATCHES "target_avx2|target_avx512f|lskd_detail_kd_f(32|64)_avx(2|512f)"
         OR function MATCHES "^_ZN5xsimd.*NS_7avx512fE")
    if(NOT counted)
      math(EXPR simd_functions "${simd_functions} + 1")
      set(counted ON)
    endif()
  else()
    list(APPEND offenders "${function}")
  endif()
endforeach()
if(offenders)
  list(REMOVE_DUPLICATES offenders)
  list(JOIN offenders "\n  " offenders)
  message(FATAL_ERROR "AVX instructions outside the avx2/avx512f targets, in:\n  ${offenders}")
endif()
if(simd_functions EQUAL 0)
  message(FATAL_ERROR "no AVX instruction at all in ${LIBRARY}: is the dispatch built?")
endif()
message(STATUS "AVX instructions only in the ${simd_functions} functions of the avx2/avx512f targets")
