-- requeue.lua: dead jobs go back to their places in line with fresh retries.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1..] job ids, or the single argument '*' for every dead job
-- Returns  the ids re-queued
local P = KEYS[1]
local ids = ARGV
if ARGV[1] == '*' then ids = redis.call('ZRANGE', P .. 'dead', 0, -1) end
local done = {}
for _, id in ipairs(ids) do
  local jk = P .. 'job:' .. id
  local f = redis.call('HMGET', jk, 'status', 'pool', 'priority', 'key')
  if f[1] == 'dead' then
    redis.call('ZREM', P .. 'dead', id)
    redis.call('PERSIST', jk)
    redis.call('HSET', jk, 'failures', 0)
    redis.call('HDEL', jk, 'finished_at', 'started_at', 'worker', 'due_at')
    if f[4] and f[4] ~= '' and not redis.call('HGET', P .. 'keys', f[4]) then
      redis.call('HSET', P .. 'keys', f[4], id)
    end
    enqueue_ready(P, id, f[2], f[3])
    done[#done + 1] = id
  end
end
return done
