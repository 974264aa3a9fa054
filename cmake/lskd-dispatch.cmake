# Runtime dispatch in xsimd's model: one translation unit per instruction set, each compiled
# with that set's flags and its own LSKD_TARGET_NAMESPACE (so their inline functions never
# merge at link time), chosen at run time from what the CPU reports.
#
# lskd_add_dispatch_objects(<prefix> SOURCES <file>...)
#   Makes one OBJECT library <prefix>_<arch> per architecture in LSKD_DISPATCH_ARCHS, from the
#   same sources, with these compile definitions:
#     LSKD_TARGET_NAMESPACE   target_<arch>
#     LSKD_DISPATCH_ARCH      the lskd/xsimd architecture type (lskd::simd::scalar, xsimd::sse2,
#                             xsimd::fma3<xsimd::avx2>, xsimd::avx512f)
#     LSKD_DISPATCH_SUFFIX    <arch>, to paste into function names
#   and sets <prefix>_OBJECTS in the caller's scope to the list of $<TARGET_OBJECTS:...>.

set(LSKD_DISPATCH_ARCHS scalar sse2 avx2 avx512f)

function(lskd_dispatch_arch_info arch type_var flags_var)
  if(arch STREQUAL "scalar")
    set(type "lskd::simd::scalar")
    set(flags "")
  elseif(arch STREQUAL "sse2")
    set(type "xsimd::sse2")
    set(flags -msse2)
  elseif(arch STREQUAL "avx2")
    set(type "xsimd::fma3<xsimd::avx2>")
    set(flags -mavx2 -mfma)
  elseif(arch STREQUAL "avx512f")
    set(type "xsimd::avx512f")
    # xsimd 8.1's float horizontal sum for avx512f uses an AVX512DQ instruction, so this
    # unit also needs -mavx512dq (and cpu_supports<xsimd::avx512f> checks for DQ too).
    set(flags -mavx512f -mavx512dq -mavx2 -mfma)
  else()
    message(FATAL_ERROR "lskd: unknown dispatch architecture '${arch}'")
  endif()
  set(${type_var} "${type}" PARENT_SCOPE)
  set(${flags_var} "${flags}" PARENT_SCOPE)
endfunction()

function(lskd_add_dispatch_objects prefix)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;LIBRARIES")
  set(objects "")
  foreach(arch IN LISTS LSKD_DISPATCH_ARCHS)
    lskd_dispatch_arch_info(${arch} type flags)
    set(target ${prefix}_${arch})
    add_library(${target} OBJECT ${arg_SOURCES})
    target_link_libraries(${target} PRIVATE lskd::lskd ${arg_LIBRARIES})
    target_compile_definitions(${target} PRIVATE
      LSKD_TARGET_NAMESPACE=target_${arch}
      "LSKD_DISPATCH_ARCH=${type}"
      LSKD_DISPATCH_SUFFIX=${arch})
    if(arch STREQUAL "scalar")
      target_compile_definitions(${target} PRIVATE LSKD_FORCE_SCALAR)
    endif()
    target_compile_options(${target} PRIVATE ${flags})
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
    list(APPEND objects $<TARGET_OBJECTS:${target}>)
  endforeach()
  set(${prefix}_OBJECTS ${objects} PARENT_SCOPE)
endfunction()
