-- Argo CD health for Drover's kinds (management.drover.io): ManagedCluster,
-- RoleTemplate, AccessBinding and ClusterProject. argocd-cm.yaml installs it for each
-- (make manifests writes that file from this one). It reads the conditions as kstatus
-- does (Flux, kubectl wait):
--   Healthy      Ready=True, for the object's current generation;
--   Degraded     Stalled=True: a person must act (the message says what);
--   Suspended    a ManagedCluster with spec.paused: true;
--   Progressing  otherwise: no status yet, a generation not yet observed,
--                Reconciling=True, or not Ready yet.
local hs = {status = "Progressing", message = "Waiting for Drover to report status"}

if obj.kind == "ManagedCluster" and obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Paused: Drover reconciles nothing for this cluster (spec.paused)"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = obj.metadata.generation or 0
-- A condition (or status) written for an older generation says nothing about this one.
local function current(observed)
  return observed == nil or observed >= generation
end
local function describe(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.message = "Waiting for Drover to observe generation " .. generation
  return hs
end

local ready, stalled, reconciling
for _, c in ipairs(obj.status.conditions) do
  if current(c.observedGeneration) then
    if c.type == "Ready" then
      ready = c
    elseif c.type == "Stalled" then
      stalled = c
    elseif c.type == "Reconciling" then
      reconciling = c
    end
  end
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, "Reconciling")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end
if ready ~= nil then
  hs.message = describe(ready, "Not ready")
else
  hs.message = "Waiting for Drover to report Ready for generation " .. generation
end
return hs
