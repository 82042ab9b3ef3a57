--[[
run.lua - runs one scenario file against a running lab: the glue between the scenario
library (lib.lua, which knows nothing of counterd) and counterd's non-blocking host.

counterd --role scenario (core/roles/scenario.c) loads this file and lib.lua, compiles the
scenario file, and runs main() as a task on the event loop, so every HTTP call and sleep
of the scenario yields to the loop instead of blocking. main returns the exit status:
0 every expectation held, 1 one failed (or the scenario raised an error), 2 no lab
answers on the base port. It must never read or write files: the C side loads them.
]]

local http, json = counterd.http, counterd.json

local M = {}

-- The lab's URLs for a base port: lua/conf/lab.lua's topology, the strong service at
-- base + 4 unless the topology names it.
local function lab_urls(base)
  local lab = counterd.conf("lab")
  return {
    gateway = lab.url("gateway", base),
    coordinator = lab.url("coordinator", base),
    strong = lab.url("strong", base) or ("http://127.0.0.1:" .. (base + 4)),
    regions = lab.regions(base),
  }
end

-- nil when every service the scenario needs answers GET /health, else a sentence.
local function lab_missing(urls, base)
  local names, calls = { "gateway", "coordinator" }, {}
  for _, r in ipairs(urls.regions) do names[#names + 1] = r.name end
  for i, name in ipairs(names) do
    local url = urls[name] or urls.regions[i - 2].url
    calls[i] = { url = url .. "/health", timeout_ms = 2000 }
  end
  local answers = http.multi(calls)
  local down, detail = {}, {}
  for i, a in ipairs(answers) do
    if a.status ~= 200 then
      down[#down + 1] = string.format("%s %s", names[i], calls[i].url)
      detail[#detail + 1] = string.format("%s (%s)", names[i], a.error or ("HTTP " .. a.status))
    end
  end
  if #down == 0 then return nil end
  local what = #down == #names and "no lab is running" or
               "the lab is not complete (" .. table.concat(detail, ", ") .. ")"
  return string.format("%s on base port %d: no answer from %s.\nStart one with " ..
                       "./scripts/lab up --base-port %d, or give the base port of yours with " ..
                       "--base-port N.", what, base, table.concat(down, ", "), base)
end

-- host: {script = path, base_port = N, write = fn(fd, text), getinfo = debug.getinfo}
function M.main(lib, chunk, env, host)
  local urls = lab_urls(host.base_port)
  local missing = lab_missing(urls, host.base_port)
  if missing then
    host.write(2, "scenario " .. host.script .. ": " .. missing .. "\n")
    return 2
  end
  local token = counterd.config.admin_token
  local t = {
    request = http.request,
    json = json,
    sleep = function(s) counterd.sleep(s * 1000) end,
    now = function() return counterd.now_ms() / 1000 end,
    write = function(line) host.write(1, line .. "\n") end,
    getinfo = host.getinfo,
    urls = urls,
    headers = token and { "Authorization: Bearer " .. token } or nil,
    token = function() return counterd.token():sub(1, 8) end,
  }
  -- The scenario sees this file's safe globals (no io, no os.execute, no loadfile) and
  -- the library; not the counterd table, so a scenario runs anywhere lib.lua does.
  for k, v in pairs(_G) do
    if k ~= "counterd" and k ~= "_G" then env[k] = v end
  end
  env._G = env
  local r = lib.run(t, chunk, env)
  if r.ok then
    host.write(1, string.format("PASS %s (%d expectations held, %.1f s)\n", host.script, r.held,
                                r.elapsed))
    return 0
  end
  host.write(2, string.format("%s %s\n", r.failure and "FAIL" or "ERROR", r.message))
  return 1
end

return M
