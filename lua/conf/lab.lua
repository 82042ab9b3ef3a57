--[[
lab.lua - the default lab topology: which services run, on which port offsets.

Ports are base + offset (base 8000 by default, shifted by `./scripts/lab --base-port N`).
The coordinator and the gateway use this when REGION_ENDPOINTS / COORDINATOR_URL are not
set; scripts/lab reads the same table (through `counterd` is not needed: plain Lua).
]]

local lab = {
  base_port = 8000,
  services = {
    { name = "coordinator", role = "coordinator", offset = 0 },
    { name = "us-east", role = "region", offset = 1, node_id = "us-east-1" },
    { name = "us-west", role = "region", offset = 2, node_id = "us-west-1" },
    { name = "eu-west", role = "region", offset = 3, node_id = "eu-west-1" },
    { name = "strong", role = "strong", offset = 4, region = "us-east" },
    { name = "gateway", role = "gateway", offset = 80 },
  },
}

-- The regions, with their URLs for a given base port.
function lab.regions(base)
  base = base or lab.base_port
  local out = {}
  for _, s in ipairs(lab.services) do
    if s.role == "region" then
      out[#out + 1] = { name = s.name, node_id = s.node_id,
                        url = "http://127.0.0.1:" .. (base + s.offset) }
    end
  end
  return out
end

function lab.url(name, base)
  base = base or lab.base_port
  for _, s in ipairs(lab.services) do
    if s.name == name then return "http://127.0.0.1:" .. (base + s.offset) end
  end
  return nil
end

return lab
