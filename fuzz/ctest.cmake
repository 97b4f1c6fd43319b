# ctest tests of the fuzz targets, registered in the main (g++) build tree:
#   fuzz_build       configures + builds the clang fuzz tree ${CMAKE_BINARY_DIR}/fuzz-smoke
#                    (fixture cohort_fuzz_tree);
#   fuzz_<target>    replays fuzz/regressions/<target>/ then fuzzes for
#                    COHORT_FUZZ_TEST_SECONDS over a scratch copy of the corpus.
# All exit 77 (skipped) when clang-14 / libFuzzer are not installed.
# Included from the top-level CMakeLists.txt; see docs/fuzzing.md.
set(COHORT_FUZZ_TEST_SECONDS 5 CACHE STRING "Seconds each fuzz_<target> ctest test fuzzes")
# Its own tree at -O0 (fuzz-smoke): a cold build in about a third of the
# time of `make fuzz`'s -O1 tree, which it leaves alone.
set(_cohort_fuzz_env COHORT_FUZZ_BUILD_DIR=${CMAKE_BINARY_DIR}/fuzz-smoke FUZZ_OPT=-O0)
add_test(NAME fuzz_build
         COMMAND ${CMAKE_COMMAND} -E env ${_cohort_fuzz_env} ${PROJECT_SOURCE_DIR}/fuzz/run.sh --build-only)
# COST: the longest test, started first so it does not finish last.
set_tests_properties(fuzz_build PROPERTIES FIXTURES_SETUP cohort_fuzz_tree SKIP_RETURN_CODE 77 TIMEOUT 1200
                     LABELS fuzz COST 1000)
file(STRINGS ${PROJECT_SOURCE_DIR}/fuzz/targets.txt _cohort_fuzz_lines REGEX "^fuzz_")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/fuzz/targets.txt)
foreach(_line ${_cohort_fuzz_lines})
  string(REGEX MATCH "^[A-Za-z0-9_]+" _name "${_line}")
  add_test(NAME ${_name}
           COMMAND ${CMAKE_COMMAND} -E env ${_cohort_fuzz_env} ${PROJECT_SOURCE_DIR}/fuzz/run.sh --no-build
                   ${COHORT_FUZZ_TEST_SECONDS} ${_name})
  math(EXPR _timeout "${COHORT_FUZZ_TEST_SECONDS} + 120")
  set_tests_properties(${_name} PROPERTIES FIXTURES_REQUIRED cohort_fuzz_tree SKIP_RETURN_CODE 77
                       TIMEOUT ${_timeout} LABELS fuzz)
endforeach()
