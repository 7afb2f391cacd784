-- Argo CD health of a dr.titan.io/v1alpha1 DisasterRecovery.
-- Argo CD runs custom scripts with only the base, table and package libraries open,
-- so this uses no string, os or io function.
local hs = {}

local function condition(status, type)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local generation = obj.metadata.generation or 0
local status = obj.status or {}

-- kstatus: a status written for an older spec says nothing about this one. (A new run's
-- first status write has no observedGeneration either, and conditions of the last run.)
if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

-- Not the conditions' own observedGeneration: a finished run is final, and the operator
-- only moves status.observedGeneration when the spec is edited after it.
local ready = condition(status, "Ready") or {}
local phase = status.phase

-- Both are terminal: nothing changes until the spec is fixed or another run is started.
if phase == "Failed" or ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = ready.message or "the recovery failed"
  return hs
end

if phase == "Succeeded" and ready.status == "True" then
  -- A failed non-critical step leaves part of the system unrecovered: say so.
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    hs.status = "Degraded"
    hs.message = (ready.message or "") .. "; " .. (degraded.reason or "Degraded") .. ": "
      .. (degraded.message or "")
    return hs
  end
  hs.status = "Healthy"
  hs.message = ready.message or "the recovery succeeded"
  return hs
end

-- A scenario kept in Git that has never run is fine as it is.
if phase == nil then
  hs.status = "Healthy"
  hs.message = "no run yet"
  return hs
end

-- Pending, Running, Validating, RollingBack, and any phase added later.
hs.status = "Progressing"
hs.message = phase
if ready.message ~= nil and ready.message ~= "" then
  hs.message = phase .. ": " .. ready.message
end
return hs
