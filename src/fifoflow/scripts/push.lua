-- push.lua: add one batch of jobs to a queue, all or nothing (a push of more than one
-- batch goes through stage.lua and commit.lua instead).
-- KEYS[1]  queue prefix "ff:{QUEUE}:" (routing and key names)
-- ARGV[1]  nonce: a re-sent push (its reply was lost) returns the first reply, adds nothing
-- ARGV[2]  '1' if this is a re-send      ARGV[3] id suffix (4 hex digits of the queue name)
-- ARGV[4]  ttl seconds of finished records (for jobs dead at once: a parent failed)
-- ARGV[5..19] the push spec (see push_spec in _common.lua: target, priority, pool,
--          retries, timeout, delay, max_lost, parents, gather, on_parent_failure,
--          result_ttl, alias, resources, expected, tags)
-- ARGV[20..] pairs: params (JSON), de-duplication key ('' = none)
-- Returns  {'OK', first id, count, new, status, ...}: runs of consecutive ids in push order
--          (new = '1' added, '0' de-duplicated; see add_run in _common.lua)
--       or {'FULL', pending, max_length, adding}   (nothing added)
--       or {'NOPARENT', QUEUE/ID} / {'ALIAS', alias}  (nothing added)
local P = KEYS[1]
local nonce, resend, suffix, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local spec = push_spec(ARGV, 5)
local FIRST = 5 + SPEC_LEN

local prior = replayed(P, nonce, resend)
if prior then return prior end
local now = now_s()

local state, unknown = parents_state(spec)
if not state then return {'NOPARENT', unknown} end
if spec.alias ~= '' and redis.call('HEXISTS', P .. K.aliases, spec.alias) == 1 then
  return {'ALIAS', spec.alias}
end

-- De-duplication first: a key already queued, delayed or running returns that job; a key
-- repeated within the batch gets the job made for its first occurrence.
local entries, by_key, fresh = {}, {}, 0
for i = FIRST, #ARGV, 2 do
  local key = ARGV[i + 1]
  local e
  if key ~= '' and by_key[key] then
    e = {new = false, slot = by_key[key].slot, id = by_key[key].id}
  else
    local hit = key ~= '' and holder(P, key)
    if hit then
      e = {new = false, id = hit}
    else
      fresh = fresh + 1
      e = {new = true, slot = fresh}
    end
    if key ~= '' then by_key[key] = e end
  end
  entries[#entries + 1] = e
end

local full = too_full(P, fresh)
if full then return full end

local ids = new_ids(P, suffix, fresh, now)
local keys_by_id = {}
for j, e in ipairs(entries) do
  if e.new then
    local params, key = ARGV[FIRST + 2 * (j - 1)], ARGV[FIRST + 2 * (j - 1) + 1]
    write_job(P, ids[e.slot], spec, params, key)
    if key ~= '' then keys_by_id[ids[e.slot]] = key end
  end
end
local fate = attach(P, ids, spec, state, now)
local status = publish(P, ids, keys_by_id, spec, now, fate, state, ttl)

local runs = {'OK'}
for _, e in ipairs(entries) do
  local id = e.id or ids[e.slot]
  add_run(runs, id, e.new and '1' or '0',
    e.id and (read(job_key(P, id), F.status).status or S.queued) or status)
end
return remember(P, nonce, flat_runs(runs))
