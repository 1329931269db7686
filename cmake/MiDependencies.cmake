# Finds BLIS, LAPACKE, jansson and libm, and defines imported targets
# mi_dep::blis, mi_dep::lapacke, mi_dep::jansson.
find_package(PkgConfig REQUIRED)

# Debian's libblis-dev ships no blis.pc: use pkg-config when a blis.pc exists,
# else find the header and library directly.
pkg_check_modules(BLIS QUIET IMPORTED_TARGET blis)
if(BLIS_FOUND)
  add_library(mi_dep::blis ALIAS PkgConfig::BLIS)
else()
  find_path(BLIS_INCLUDE_DIR blis.h PATH_SUFFIXES blis REQUIRED)
  find_library(BLIS_LIBRARY blis REQUIRED)
  add_library(mi_dep::blis UNKNOWN IMPORTED)
  set_target_properties(mi_dep::blis PROPERTIES
    IMPORTED_LOCATION "${BLIS_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${BLIS_INCLUDE_DIR}")
endif()

# Debian's lapacke.pc requires lapack.pc, which requires a blas.pc that BLIS
# does not install, so pkg-config cannot resolve it: find it directly.
find_path(LAPACKE_INCLUDE_DIR lapacke.h REQUIRED)
find_library(LAPACKE_LIBRARY lapacke REQUIRED)
add_library(mi_dep::lapacke UNKNOWN IMPORTED)
set_target_properties(mi_dep::lapacke PROPERTIES
  IMPORTED_LOCATION "${LAPACKE_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${LAPACKE_INCLUDE_DIR}")
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
add_library(mi_dep::jansson ALIAS PkgConfig::JANSSON)
find_library(MATH_LIBRARY m REQUIRED)
