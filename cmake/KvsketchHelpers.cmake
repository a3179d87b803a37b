# One place for our compile flags: warnings and -march apply to our own
# targets only, never to generated or third-party code.
function(kvsketch_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-qual
    -Wformat=2 -Wundef -Wvla -Wimplicit-fallthrough)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
  if(KVSKETCH_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(KVSKETCH_ARCH)
    target_compile_options(${target} PRIVATE -march=${KVSKETCH_ARCH})
  endif()
endfunction()

# kvsketch_cc_library(NAME n SRCS ... DEPS ...)
function(kvsketch_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SRCS})
  target_include_directories(${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
  kvsketch_set_warnings(${A_NAME})
endfunction()

# kvsketch_cc_binary(NAME n SRCS ... DEPS ...)
function(kvsketch_cc_binary)
  cmake_parse_arguments(A "" "NAME;OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS})
  kvsketch_set_warnings(${A_NAME})
  if(A_OUTPUT_NAME)
    set_target_properties(${A_NAME} PROPERTIES OUTPUT_NAME ${A_OUTPUT_NAME})
  endif()
endfunction()

# kvsketch_cc_test(NAME n SRCS ... DEPS ... [LABELS ...])
# One binary per test file group; registered with ctest through
# gtest_discover_tests so each TEST is its own ctest entry.
function(kvsketch_cc_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gmock GTest::gtest_main)
  kvsketch_set_warnings(${A_NAME})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 600)
  endif()
  if(KVSKETCH_SANITIZE)
    math(EXPR A_TIMEOUT "${A_TIMEOUT} * 4")  # sanitized code is 2-4x slower
  endif()
  gtest_discover_tests(${A_NAME}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES TIMEOUT ${A_TIMEOUT} LABELS "${A_LABELS}"
    DISCOVERY_TIMEOUT 60)
endfunction()
