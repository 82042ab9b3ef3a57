# Runs naive_spec.lua inside the spec host and passes only if busted fails it for the
# sandbox's reasons: a policy that uses io or writes counterd.x must not pass its spec.
#   cmake -DHOST=<lua_spec_host> -DDIR=<tests/lua/sandbox> -P expect_fail.cmake
execute_process(COMMAND ${HOST} ${DIR} --output=plainTerminal ${DIR}/naive_spec.lua
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 50)
set(all "${out}${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "naive_spec.lua passed: the policies ran outside the sandbox\n${all}")
endif()
foreach(want "0 successes" "io_in_call.lua:4: attempt to index global 'io' (a nil value)"
        "writes_counterd_in_call.lua:4: counterd.x cannot be changed from a sandbox")
  string(FIND "${all}" "${want}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "naive_spec.lua failed, but not with \"${want}\":\n${all}")
  endif()
endforeach()
message(STATUS "naive_spec.lua fails as it must (exit ${rc})")
