-- stage.lua: one batch of a push of more than one batch. The jobs are written but stay in
-- no set, invisible to workers and counts, until commit.lua makes the whole push visible
-- at once (or drops it). A push whose producer dies before committing is cleaned up by
-- maintain.lua after an hour.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  push id (random; names the stage list)   ARGV[2] batch number
-- ARGV[3]  '1' if this is a re-send                  ARGV[4] id suffix
-- ARGV[5..19] the push spec (see push_spec in _common.lua)
-- ARGV[20..] pairs: params (JSON), de-duplication key ('' = none)
-- Returns  the number of batches staged so far (a re-sent batch is not staged twice)
local P = KEYS[1]
local push_id, batch, resend, suffix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local spec = push_spec(ARGV, 5)
local FIRST = 5 + SPEC_LEN
local list = P .. K.stage .. push_id

if replayed(P, push_id .. ':' .. batch, resend) then return redis.call('LLEN', list) end
local now = now_s()
local count = (#ARGV - FIRST + 1) / 2
local ids = new_ids(P, suffix, count, now)
for j, id in ipairs(ids) do
  write_job(P, id, spec, ARGV[FIRST + 2 * (j - 1)], ARGV[FIRST + 2 * (j - 1) + 1])
end
redis.call('RPUSH', list, ids[1] .. ' ' .. count)
redis.call('ZADD', P .. K.staging, 'NX', now, push_id)
remember(P, push_id .. ':' .. batch, 1)
return redis.call('LLEN', list)
