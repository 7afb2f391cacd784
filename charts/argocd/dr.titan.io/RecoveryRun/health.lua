-- Argo CD health of a dr.titan.io/v1alpha1 RecoveryRun: one run of a DisasterRecovery.
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

-- kstatus: a status written for an older spec (before a Pause or an Abort, say) says nothing
-- about this one.
if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

local ready = condition(status, "Ready") or {}
local phase = status.phase

-- Failed covers a refused run, one of a missing or invalid recovery, and an aborted one.
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "Failed") .. ": " .. (ready.message or "the run failed")
  return hs
end

if phase == "Succeeded" then
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    hs.status = "Degraded"
    hs.message = (ready.message or "") .. "; " .. (degraded.reason or "Degraded") .. ": "
      .. (degraded.message or "")
    return hs
  end
  hs.status = "Healthy"
  hs.message = ready.message or "the run succeeded"
  return hs
end

-- spec.action: Pause holds the run until it is resumed.
if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "paused: no attempt starts until spec.action is Resume"
  return hs
end

-- A gated step waits for a second person's approval (titan-dr approve RUN STEP).
if phase == "WaitingForApproval" then
  local approved = condition(status, "Approved") or {}
  hs.status = "Suspended"
  hs.message = "waiting for approval: " .. (approved.message or "")
  return hs
end

-- Pending, Running, Validating, RollingBack, and any phase added later.
hs.status = "Progressing"
hs.message = phase or "waiting to begin"
if phase ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = phase .. ": " .. ready.message
end
return hs
