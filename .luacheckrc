std = "luajit"
globals = { "counterd" }
max_line_length = 120
-- Specs run inside the host (tests/lua/spec_host.c), which gives them counterd_spec.
files["tests/lua/"] = { std = "+busted", read_globals = { "counterd_spec" } }
-- Scenario files: the functions lua/scenario/lib.lua gives them (see README.md, "Scenarios").
files["demos/"] = {
  read_globals = {
    "increment", "counter", "region_counter", "counters", "status", "partition", "heal",
    "force_sync", "compare", "strong_increment", "strong_counter", "request", "sleep", "now", "log",
    "unique", "finally", "expect", "eventually", "REGIONS",
  },
}
-- wrk scripts: wrk calls these globals, and each of its threads has its own Lua state.
files["scripts/wrk/"] = {
  globals = { "wrk", "setup", "init", "delay", "request", "response", "done", "statuses" },
  read_globals = { "tid" },
}
