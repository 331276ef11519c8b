-- complete.lua: record the outcome of one attempt, then claim the next job(s) for the
-- same slot in the same round trip. Refused (and nothing changes: 'stale') unless the
-- caller holds the job's current fencing token; a report re-sent after a lost reply is
-- recognised (the job's `done` field) and changes nothing either.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  job id                 ARGV[2]  fencing token
-- ARGV[3]  outcome: 'ok' | 'fail' (retry if any left) | 'dead' (no retry)
-- ARGV[4]  result JSON (ok) or one-line error (fail/dead)
-- ARGV[5]  traceback ('' if none)
-- ARGV[6]  more fields to record, as a JSON object ('' = none), e.g. {"flow_run_id": "..."}
-- ARGV[7]  retry base seconds     ARGV[8] retry cap seconds    ARGV[9] jitter in [0.5, 1]
-- ARGV[10] the worker's slot that ran it ('' if none): for the timeline
-- ARGV[11..] the claim request for the slot's next job (N = 0: none), as in claim.lua
--          (res = '1': a worker with declared capacity, res_claim in _resources.lua)
-- Returns  {outcome, next_event_seconds, retry, claimed jobs (10 fields each)...}
--          outcome: 'succeeded' | 'retry' | 'dead' | 'cancelled' | 'stale'
--          retry: 'FAILURES/RETRIES/DELAY_SECONDS' for a retry, else ''
-- Each attempt recorded counts for its worker in K.done_by (what `fifoflow workers` shows).
local P = KEYS[1]
local job_id, token, outcome, payload, tb, extra = ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  ARGV[5], ARGV[6]
local retry_base, retry_cap, jitter = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local slot = ARGV[10]
local req = claim_request(ARGV, 11)
local jk = job_key(P, job_id)
local now = now_s()

local cur = read(jk, F.token, F.status, F.retries, F.key, F.failures, F.pool, F.done,
  F.started_at, F.target, F.worker, F.result_ttl, F.children, F.cancel, F.alloc)
local result = 'stale'
local wake_after = nil  -- a retry due before anything else: wake a worker at the end
local retry_info = ''
if cur.token == token and cur.status == S.running and token ~= '' then
  redis.call('ZREM', P .. K.running, job_id)
  local ran = math.max(now - (tonumber(cur.started_at) or now), 0)
  observe(P, 'run', cur.pool, V.run_buckets, ran)
  local fields = {}
  if extra ~= '' then
    for name, value in pairs(cjson.decode(extra)) do
      fields[#fields + 1] = name
      fields[#fields + 1] = tostring(value)
    end
  end
  if outcome == 'ok' then
    result = S.succeeded
    fields[#fields + 1] = F.result
    fields[#fields + 1] = payload
    fields[#fields + 1] = F.done
    fields[#fields + 1] = token .. '|' .. result
    if cur.failures then redis.call('HDEL', jk, F.error, F.traceback) end
    finish(P, job_id, S.succeeded, now, req.policy.ttl, cur, fields)
    count(P, E.succeeded, cur.pool)
  elseif cur.cancel == '1' then  -- asked to cancel: stopped, recorded cancelled, no retry
    result = S.cancelled
    for _, v in ipairs({F.error, 'Cancelled: ' .. payload, F.traceback, tb,
        F.done, token .. '|' .. result}) do
      fields[#fields + 1] = v
    end
    finish(P, job_id, S.cancelled, now, req.policy.ttl, cur, fields)
    count(P, E.cancelled, cur.pool)
  else
    local failures = (tonumber(cur.failures) or 0) + 1
    local retry = outcome == 'fail' and failures <= tonumber(cur.retries or '0')
    result = retry and 'retry' or S.dead
    for _, v in ipairs({F.error, payload, F.traceback, tb, F.failures, failures,
        F.done, token .. '|' .. result}) do
      fields[#fields + 1] = v
    end
    count(P, E.failed, cur.pool)
    if retry then
      local delay = math.min(retry_base * (2 ^ (failures - 1)), retry_cap) * jitter
      redis.call('HSET', jk, F.token, '', unpack(fields))
      wake_after = schedule(P, K.retry, job_id, now + delay, cur.pool)
      retry_info = failures .. '/' .. (cur.retries or '0') .. '/' .. string.format('%.3f', delay)
      count(P, E.retried, cur.pool)
    else
      finish(P, job_id, S.dead, now, req.policy.ttl, cur, fields)
      count(P, E.dead, cur.pool)
    end
  end
  timeline(P, job_id, cur, slot, now, result)
  if cur.worker and cur.worker ~= '' then redis.call('HINCRBY', P .. K.done_by, cur.worker, 1) end
  if cur.alloc and cur.alloc ~= '' then res_freed(P, cur.pool) end
elseif cur.done and token ~= '' and string.sub(cur.done, 1, #token + 1) == token .. '|' then
  result = string.sub(cur.done, #token + 2)  -- a re-sent report: the first one's outcome
end

local out = {}
if req.n > 0 then
  housekeep(P, now, false, req.policy)
  out = req.res and res_claim(P, req, now) or claim(P, req, now)
end
-- The time to the next event matters only to a slot that is about to go idle.
local soonest = -1
if req.n == 0 or #out < req.n * 10 then soonest = next_event(P, now) end
if wake_after then wake(P, wake_after) end
table.insert(out, 1, retry_info)
table.insert(out, 1, tostring(soonest))
table.insert(out, 1, result)
return out
