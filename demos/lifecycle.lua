--[[
lifecycle.lua - namespaces and the counter lifecycle, through the gateway and the
regions' /v1 API: namespaces of each type and retention, an observed clear on us-east
while a partitioned us-west keeps counting (after heal exactly us-west's unobserved
increments survive, everywhere), a delete (gone everywhere, and counting again starts from
0), a regional namespace that is never replicated, and a counter that expires after its
namespace's retention (3 s) while one kept busy does not.

  ./scripts/scenario demos/lifecycle.lua [--base-port N]

Every check is logged as it holds; the first that does not fails the run (exit 1). Leaves
the lab healed and deletes the namespaces it made, passed or failed. Uses force-sync, so
it does not wait for the lab's own sync rounds; expiry is noticed by the regions' own scan.
]]

heal()
local run = unique("life")
local NS = run .. ".shop"       -- eventual, retention 1 h: clear and delete
local BRIEF = run .. ".trial"   -- eventual, retention 3 s: expiry
local LOCAL = run .. ".edge"    -- regional: never replicated
local made = {}
-- At the end: healed, the namespaces deleted, and a sync round so that every region has
-- dropped their counters before whatever runs next.
finally(function()
  heal()
  for _, ns in ipairs(made) do
    request("gateway", "DELETE", "/v1/namespaces/" .. ns, nil, { expect_status = 200 })
  end
  force_sync()
end)

-- ---------------------------------------------------------------- helpers

local function counter_path(ns, name)
  return "/v1/counters/" .. ns .. "/" .. name
end

-- AddAndGetCount on target (the gateway or a region's name): the answer.
local function add(target, ns, name, delta)
  local r = request(target, "POST", counter_path(ns, name) .. "/add-and-get", { delta = delta })
  expect(r.namespace, "add: the answer's namespace").to_be(ns)
  expect(r.counter, "add: the answer's counter").to_be(name)
  return r
end

-- GetCount on target (the gateway or a region): the count.
local function count_of(target, ns, name)
  local r, status = request(target, "GET", counter_path(ns, name))
  expect(status).to_be(200)
  return r.count
end

-- GetCount on target answers 404 not_found.
local function gone_at(target, ns, name, label)
  local r = request(target, "GET", counter_path(ns, name), nil, { expect_status = 404 })
  expect(r.error, label).to_be("not_found")
end

local function create(ns, config)
  local r = request("gateway", "PUT", "/v1/namespaces/" .. ns, config)
  made[#made + 1] = ns
  expect(r.namespace, "PUT namespace").to_be(ns)
  expect(r.type, ns .. "'s type").to_be(config.type)
  expect(r.ttl_seconds, ns .. "'s ttl").to_be(config.ttl_seconds or 0)
  expect(r.deleted, ns .. " deleted").to_be(false)
  log(string.format("created namespace %s: %s, ttl %s s, version %s on %s", ns, r.type,
                    tostring(r.ttl_seconds), tostring(r.version), r.region))
  return r
end

-- ---------------------------------------------------------------- namespaces

create(NS, { type = "eventual", ttl_seconds = 3600 })
create(BRIEF, { type = "eventual", ttl_seconds = 3 })
create(LOCAL, { type = "regional", ttl_seconds = 0 })

-- The register replicates with the sync messages: after a round every region runs the
-- same version of each, and the gateway says so.
force_sync()
for _, ns in ipairs({ NS, BRIEF, LOCAL }) do
  local g = request("gateway", "GET", "/v1/namespaces/" .. ns)
  expect(g.converged, ns .. " converged on the gateway").to_be(true)
  for _, region in ipairs(REGIONS) do
    expect(g.regions[region].version, ns .. "'s version on " .. region).to_be(g.version)
    local r = request(region, "GET", "/v1/namespaces/" .. ns)
    expect(r.type, ns .. "'s type on " .. region).to_be(g.type)
  end
end
local listed = {}
for _, n in ipairs(request("gateway", "GET", "/v1/namespaces").namespaces) do
  listed[n.namespace] = n.type
end
expect(listed.default, "default in GET /v1/namespaces").to_be("eventual")
expect(listed[LOCAL], LOCAL .. " in GET /v1/namespaces").to_be("regional")
log("every region runs the same version of the three namespaces; default is listed too")

-- A namespace's type cannot change.
local tc = request("gateway", "PUT", "/v1/namespaces/" .. NS, { type = "regional" },
                   { expect_status = 409 })
expect(tc.error, "changing a type").to_be("type_change")

-- ---------------------------------------------------------------- an observed clear

local name = "views"
for _ = 1, 5 do add("gateway", NS, name, 2) end
force_sync()
for _, region in ipairs(REGIONS) do
  expect(count_of(region, NS, name), name .. " on " .. region .. " before the partition").to_be(10)
end
log("counted 10 through the gateway; every region shows 10")

partition("us-west")
expect(status().regions["us-west"].network_partition, "us-west partitioned").to_be(true)
for _ = 1, 7 do add("us-west", NS, name, 1) end -- us-west keeps counting, unseen

local c = request("us-east", "POST", counter_path(NS, name) .. "/clear", {})
expect(c.cleared, "what us-east's clear observed").to_be(10)
expect(c.count, "us-east's count right after its clear").to_be(0)
log("cleared on us-east: it observed 10, now 0; us-west, cut off, has not seen the clear")

for _ = 1, 4 do add("us-west", NS, name, 1) end -- and keeps counting after the clear
expect(force_sync().regions_synced, "regions that synced while us-west is cut").to_be(2)
expect(count_of("us-east", NS, name), "us-east while us-west is cut").to_be(0)
expect(count_of("eu-west", NS, name), "eu-west took the clear").to_be(0)
expect(count_of("us-west", NS, name), "us-west: its 10 + 11 of its own").to_be(21)
log("while cut: us-east 0, eu-west 0, us-west 21 (the 10 cleared elsewhere + 11 of its own)")

heal("us-west")
expect(force_sync().regions_synced, "regions that synced after heal").to_be(3)
for _, region in ipairs(REGIONS) do
  expect(count_of(region, NS, name), name .. " on " .. region .. " after heal")
    .to_be(11)
end
local listing = request("gateway", "GET", "/v1/counters/" .. NS .. "?limit=10")
expect(listing.counters[name] and listing.counters[name].count, "the namespace's listing").to_be(11)
log("healed: every region counts 11, exactly us-west's 11 increments the clear had not seen")

-- ---------------------------------------------------------------- delete

local doomed = "sessions"
add("gateway", NS, doomed, 5)
force_sync()
local d = request("gateway", "DELETE", counter_path(NS, doomed))
expect(d.deleted, "DELETE answered deleted").to_be(true)
gone_at(d.region, NS, doomed, "the deleted counter on " .. tostring(d.region) .. ", at once")
force_sync()
for _, region in ipairs(REGIONS) do
  gone_at(region, NS, doomed, doomed .. " on " .. region .. " after a sync")
end
gone_at("gateway", NS, doomed, "the deleted counter through the gateway")
local after = request("gateway", "GET", "/v1/counters/" .. NS .. "?limit=10")
expect(after.counters[doomed], "the deleted counter in the listing").to_be(nil)
expect(after.counters[name] ~= nil, "the other counter still listed").to_be(true)
expect(add("gateway", NS, doomed, 1).count, "counting it again starts from 0").to_be(1)
log("deleted " .. doomed .. " (5): 404 everywhere, out of the listing; counted again: 1")

-- ---------------------------------------------------------------- regional

local edge = "hits"
local landed = add("us-east", LOCAL, edge, 3)
expect(landed.count, "regional count where it landed").to_be(3)
force_sync()
expect(count_of("us-east", LOCAL, edge), "us-east after a sync").to_be(3)
for _, region in ipairs({ "us-west", "eu-west" }) do
  gone_at(region, LOCAL, edge, "a regional counter on " .. region)
end
log("regional: 3 on us-east, never replicated (404 on us-west and eu-west after a sync)")

-- ---------------------------------------------------------------- expiry

-- "busy" is counted every second in every region (its retention is 3 s: each region sees
-- a change of its own that often, whatever the sync interval); "idle" is left alone.
local busy = 0
local function touch_busy()
  for _, region in ipairs(REGIONS) do add(region, BRIEF, "busy", 1) end
  busy = busy + #REGIONS
end
touch_busy()
local t0 = now() -- before idle's last change: what follows measures at most its idle time
add("gateway", BRIEF, "idle", 1)
force_sync()
expect(count_of("gateway", BRIEF, "idle"), "idle before its retention").to_be(1)
eventually(function()
  touch_busy()
  gone_at("gateway", BRIEF, "idle", "idle through the gateway")
end, 30, 1)
local took = now() - t0
expect(took, "idle expired no sooner than its retention").at_least(3)
log(string.format("idle gone within %.1f s of the call that last changed it (retention 3 s)", took))
force_sync()
for _, region in ipairs(REGIONS) do
  gone_at(region, BRIEF, "idle", "the expired counter on " .. region)
end
expect(count_of("gateway", BRIEF, "busy"), "busy, changed every second, still counts").to_be(busy)
log("expired everywhere after a sync; busy (changed every second) still counts " .. busy)
