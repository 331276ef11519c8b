-- requeue.lua: dead jobs go back to their places in line with fresh retries.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1..] job ids, or the single argument '*' for every dead job
-- Returns  the ids re-queued
local P = KEYS[1]
local ids = ARGV
if ARGV[1] == '*' then ids = redis.call('ZRANGE', P .. K.dead, 0, -1) end
local now = now_s()
local done = {}
for _, id in ipairs(ids) do
  local jk = job_key(P, id)
  local cur = read(jk, F.status, F.pool, F.priority, F.key)
  if cur.status == S.dead then
    redis.call('ZREM', P .. K.dead, id)
    redis.call('PERSIST', jk)
    redis.call('HSET', jk, F.failures, 0, F.lost, 0)
    redis.call('HDEL', jk, F.finished_at, F.started_at, F.worker, F.due_at)
    if cur.key and cur.key ~= '' and not redis.call('HGET', P .. K.keys, cur.key) then
      redis.call('HSET', P .. K.keys, cur.key, id)
    end
    enqueue_ready(P, id, cur.pool, cur.priority, now)
    count(P, E.requeued, cur.pool)
    done[#done + 1] = id
  end
end
return done
