# Finds xsimd and makes its target usable. Debian 12's xsimd 8.1 package exports a target
# that links a library named "xtl" which the package does not need or ship; without a target
# of that name the linker looks for libxtl and fails. Newer xsimd (9 and later) has no such
# link, and then this file only calls find_package.
find_package(xsimd REQUIRED)
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_lskd_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_lskd_xsimd_links MATCHES "(^|;)xtl(;|$)")
    find_package(xtl QUIET)
    if(NOT TARGET xtl)
      add_library(xtl INTERFACE IMPORTED)
    endif()
  endif()
endif()
