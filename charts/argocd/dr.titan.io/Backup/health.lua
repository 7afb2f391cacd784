-- Argo CD health of a dr.titan.io/v1alpha1 Backup.
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

-- kstatus: a status written for an older spec says nothing about this one.
if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

-- The operator records an attempt (observedGeneration) before its snapshot is taken; until
-- it ends, Ready is absent (first attempt) or still about the previous spec.
local ready = condition(status, "Ready")
if ready == nil or (ready.observedGeneration ~= nil and ready.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for a snapshot of generation " .. generation
  return hs
end

-- Ready is False when the newest attempt failed: its message names why.
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or ready.reason or "the newest backup attempt failed"
  return hs
end
if ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = ready.message or "waiting for the newest backup attempt"
  return hs
end

-- A backup whose newest snapshot does not restore is no backup. A check that could not
-- run at all (no endpoint, no Job) says nothing about the snapshot: shown, not failed.
local verified = condition(status, "Verified")
if verified ~= nil and verified.status == "False" and verified.reason == "RestoreFailed" then
  hs.status = "Degraded"
  hs.message = verified.message or "the newest snapshot did not restore"
  return hs
end

hs.status = "Healthy"
hs.message = ready.message or ""
if verified ~= nil and verified.message ~= nil and verified.message ~= "" then
  hs.message = hs.message .. "; " .. verified.message
end
return hs
