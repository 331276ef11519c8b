-- once.lua: push jobs that were never pushed before, in one of two modes.
--   once-keys (a backfill): a job per key that was never used; the key is remembered in
--     K.once (by push time, forgotten after the given seconds), so a re-run pushes nothing.
--   schedule: a schedule's due ticks. The schedule's watermark (H.last, the newest tick
--     handled) moves from the value the caller read to the newest tick of this call, in
--     the same step as the pushes (compare-and-set): each tick is handled by exactly one
--     call, however many schedulers race for it. Nothing fires while it is paused.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  nonce: a re-sent call (its reply was lost) returns the first reply, adds nothing
-- ARGV[2]  '1' if this is a re-send
-- ARGV[3]  id suffix (4 hex digits of the queue name)
-- ARGV[4]  schedule name ('' = once-keys mode)
-- ARGV[5]  schedule: the watermark the caller read | once-keys: seconds once-keys are kept
--          (0 = for ever)
-- ARGV[6]  schedule: the new watermark (the newest tick handled, fired or skipped)
-- ARGV[7]  schedule: ticks skipped by the catch-up policy
-- ARGV[8]  schedule: the newest tick fired ('' = none)
-- ARGV[9]  n, the length of the push spec; ARGV[10 .. 9 + n] the push spec (see push.lua)
-- ARGV[10 + n ..] pairs: params (JSON), key (the job's de-duplication key and its once-key)
-- Returns  {'OK', id1, new1, status1, ...}  (new: '1' pushed, '0' pushed before; the id is
--          the active job with that key, or '' if none is active any more)
--       or {'FULL', pending, max_length, adding}   (nothing changed)
--       or {'STALE', watermark} | {'PAUSED'} | {'GONE'}  (schedule mode, nothing changed)
local P = KEYS[1]
local nonce, resend, suffix = ARGV[1], ARGV[2], ARGV[3]
local name = ARGV[4]
local spec = push_spec(ARGV, 10)
local FIRST = 10 + tonumber(ARGV[9])

local prior = replayed(P, nonce, resend)
if prior then return prior end
local now = now_s()

local sk = P .. K.schedule .. name
if name ~= '' then
  local s = read(sk, H.spec, H.last, H.paused)
  if not s.spec then return {'GONE'} end
  if s.paused == '1' then return {'PAUSED'} end
  if s.last ~= ARGV[5] or tonumber(ARGV[6]) < tonumber(s.last) then
    return {'STALE', s.last or ''}
  end
elseif tonumber(ARGV[5]) > 0 then
  redis.call('ZREMRANGEBYSCORE', P .. K.once, '-inf', now - tonumber(ARGV[5]))
end

-- Which pairs are new: a once-key used before (once-keys mode), an active job holding the
-- key, or a key repeated in this call are not.
local entries, by_key, fresh = {}, {}, 0
for i = FIRST, #ARGV, 2 do
  local key = ARGV[i + 1]
  local e
  if by_key[key] then
    e = {new = false, slot = by_key[key].slot, id = by_key[key].id}
  elseif name == '' and redis.call('ZSCORE', P .. K.once, key) then
    e = {new = false, id = holder(P, key) or ''}
  else
    local hit = holder(P, key)
    if hit then
      e = {new = false, id = hit}
    else
      fresh = fresh + 1
      e = {new = true, slot = fresh}
    end
  end
  by_key[key] = by_key[key] or e
  entries[#entries + 1] = e
end

local full = too_full(P, fresh)
if full then return full end

local ids = new_ids(P, suffix, fresh, now)
local keys_by_id = {}
for j, e in ipairs(entries) do
  local key = ARGV[FIRST + 2 * (j - 1) + 1]
  if e.new then
    write_job(P, ids[e.slot], spec, ARGV[FIRST + 2 * (j - 1)], key, now)
    keys_by_id[ids[e.slot]] = key
  end
  if name == '' then redis.call('ZADD', P .. K.once, 'NX', now, key) end
end
local status = publish(P, ids, keys_by_id, spec, now)

local out, last_id = {'OK'}, nil
for _, e in ipairs(entries) do
  local id = e.id or ids[e.slot]
  out[#out + 1] = id
  out[#out + 1] = e.new and '1' or '0'
  out[#out + 1] = e.new and status or
    (id ~= '' and read(job_key(P, id), F.status).status or '')
  last_id = id
end

if name ~= '' then
  redis.call('HSET', sk, H.last, ARGV[6])
  redis.call('HINCRBY', sk, H.fired, #entries)
  redis.call('HINCRBY', sk, H.skipped, tonumber(ARGV[7]))
  if ARGV[8] ~= '' and last_id then
    redis.call('HSET', sk, H.last_fired, ARGV[8], H.last_id, last_id)
  end
end
return remember(P, nonce, out)
