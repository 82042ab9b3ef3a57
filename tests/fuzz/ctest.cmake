# fuzz.smoke (label fuzz): 30 seconds of every libFuzzer target, all at once, through
# tests/fuzz/run.sh, which builds build-fuzz/ with clang on its first run (about a
# minute) and only rebuilds what changed afterwards. Included from tests/CMakeLists.txt
# of the main (gcc) build; the fuzz targets themselves are never built here.
#
# The test fails when a target crashes, leaks, hangs or runs out of memory; the output
# names the reproducer (see tests/fuzz/README.md). It needs clang and libclang-rt-14-dev
# (./scripts/setup --test) and fails with that sentence without them: a missing compiler
# must not turn into a silently skipped suite.
#
# RUN_SERIAL: the three targets keep both cores busy for 30 s; run next to the
# integration tests they would only make those slower and their deadlines tighter.
add_test(NAME fuzz.smoke COMMAND ${CMAKE_CURRENT_LIST_DIR}/run.sh 30
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(fuzz.smoke PROPERTIES LABELS "fuzz" TIMEOUT 400 RUN_SERIAL TRUE)
