-- commit.lua: make every job staged by one push visible at once, or none of them.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  push id (see stage.lua)      ARGV[2] '1' if this is a re-send
-- ARGV[3]  ttl seconds of finished records (for jobs dead at once: a parent failed)
-- ARGV[4..18] the push spec (see push_spec; the same as each stage.lua call)
-- ARGV[19] '1' if any job of the push has a de-duplication key
-- ARGV[20] '1': drop the push instead (its producer gave up: a bad parameter set)
-- Returns  {'OK', first id, count, new, status, ...}: runs in push order (as push.lua)
--       or {'FULL', pending, max_length, adding}   (nothing added; the staged jobs are gone)
--       or {'NOPARENT', QUEUE/ID} (nothing added; the staged jobs are gone)
--       or {'GONE'}  (nothing staged under that id: it expired)
--       or {'DROPPED'}  (asked to drop it: nothing added; the staged jobs are gone)
local P = KEYS[1]
local push_id, resend, ttl = ARGV[1], ARGV[2], ARGV[3]
local spec = push_spec(ARGV, 4)
local keyed = ARGV[4 + SPEC_LEN] == '1'
local abandon = ARGV[5 + SPEC_LEN] == '1'
local list = P .. K.stage .. push_id

local prior = replayed(P, push_id, resend)
if prior then return prior end
local now = now_s()
local runs = staged_runs(P, push_id)
if #runs == 0 then return {'GONE'} end
local staged = ids_of(runs)

local function drop(ids)
  for _, id in ipairs(ids) do redis.call('DEL', job_key(P, id)) end
  redis.call('DEL', list)
  redis.call('ZREM', P .. K.staging, push_id)
end

if abandon then
  drop(staged)
  return {'DROPPED'}
end

local state, unknown = parents_state(spec)

-- De-duplication, as push.lua does it; a staged job that loses is deleted. Without keys
-- every staged job is new and visible (no per-job pass: a push may hold a million).
local final, new, keys_by_id, visible = staged, nil, {}, staged
if keyed then
  final, new, visible = {}, {}, {}
  local by_key = {}
  for j, id in ipairs(staged) do
    local key = redis.call('HGET', job_key(P, id), F.key)
    local winner = key and (by_key[key] or holder(P, key))
    if winner then
      final[j], new[j] = winner, false
    else
      final[j], new[j] = id, true
      visible[#visible + 1] = id
      if key then
        by_key[key] = id
        keys_by_id[id] = key
      end
    end
  end
end

if not state then
  drop(staged)
  return {'NOPARENT', unknown}
end

local full = too_full(P, #visible)
if full then
  drop(staged)
  return full
end

local losers = {}
if keyed then
  for j, id in ipairs(staged) do
    if not new[j] then losers[#losers + 1] = id end
  end
end
drop(losers)
local fate = attach(P, visible, spec, state, now)
if #losers > 0 then runs = nil end  -- the visible ids' runs are found from them
local status = publish(P, visible, keys_by_id, spec, now, fate, state, ttl, runs)
local reply = {'OK'}
if runs then  -- every staged job is new: the reply's runs are the staged ones
  for _, run in ipairs(runs) do add_run(reply, run[1], '1', status, run[2]) end
else
  for j, id in ipairs(final) do
    add_run(reply, id, new[j] and '1' or '0',
      new[j] and status or (read(job_key(P, id), F.status).status or status))
  end
end
return remember(P, push_id, flat_runs(reply))
