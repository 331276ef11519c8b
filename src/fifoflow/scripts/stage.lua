-- stage.lua: one batch of a push of more than one batch. The jobs are written but stay in
-- no set, invisible to workers and counts, until commit.lua makes the whole push visible
-- at once (or drops it). A push whose producer dies before committing is cleaned up by
-- maintain.lua after an hour.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  push id (random; names the stage list)   ARGV[2] batch number
-- ARGV[3]  '1' if this is a re-send                  ARGV[4] id suffix
-- ARGV[5..19] the push spec (see push_spec in _common.lua)
-- ARGV[20] '1': the jobs come as pairs, params (JSON) and de-duplication key ('' = none);
--          '0': as params alone (no job of the push has a key)
-- ARGV[21..] the jobs
-- Returns  the number of batches staged so far (a re-sent batch is not staged twice), or
--          -1: not staged, the batch before it is not (batches are staged in order, so a
--          push's ranks grow with its batches even when a client sends them pipelined)
local P = KEYS[1]
local push_id, batch, resend, suffix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local spec = push_spec(ARGV, 5)
local keyed = ARGV[5 + SPEC_LEN] == '1'
local FIRST = 6 + SPEC_LEN
local list = P .. K.stage .. push_id

if replayed(P, push_id .. ':' .. batch, resend) then return redis.call('LLEN', list) end
if redis.call('LLEN', list) ~= tonumber(batch) then return -1 end
local now = now_s()
local count = #ARGV - FIRST + 1
if keyed then count = count / 2 end
local ids = new_ids(P, suffix, count, now)
if keyed then
  for j, id in ipairs(ids) do
    write_job(P, id, spec, ARGV[FIRST + 2 * (j - 1)], ARGV[FIRST + 2 * (j - 1) + 1])
  end
else
  for j, id in ipairs(ids) do write_job(P, id, spec, ARGV[FIRST + j - 1], '') end
end
redis.call('RPUSH', list, ids[1] .. ' ' .. count)
redis.call('ZADD', P .. K.staging, 'NX', now, push_id)
remember(P, push_id .. ':' .. batch, 1)
return redis.call('LLEN', list)
