# Runs an example and compares its stdout with the .expected file. Examples call lasync.run
# and run under stock lua5.4; a script whose first lines say "-- runner: lasync" is written
# for the runner (top-level await) and runs under build/bin/lasync instead.
file(STRINGS ${SCRIPT} head LIMIT_COUNT 5)
set(cmd lua5.4 ${SCRIPT})
if(CMD)
  set(cmd ${CMD} ${SCRIPT})
elseif(head MATCHES "-- runner: lasync")
  set(cmd ${RUNNER} ${SCRIPT})
endif()
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(READ ${EXPECTED} want)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${SCRIPT} exited with ${rc}\n${err}")
endif()
if(NOT out STREQUAL want)
  message(FATAL_ERROR "${SCRIPT}: output differs from ${EXPECTED}\n--- got ---\n${out}\n--- want ---\n${want}")
endif()
message("${out}${err}")
