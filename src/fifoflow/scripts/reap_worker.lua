-- reap_worker.lua: a worker was seen dead (its connections closed, or its pid gone): its
-- jobs go back to their places in line now, not when their leases run out. Each counts
-- as a lost lease, exactly as an expired one. Its capacity record (if it declared any)
-- goes too, so no claim waits for a dead worker to take a job.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  the dead worker's name
-- ARGV[2]  ttl seconds of finished records      ARGV[3] max_lost default
-- Returns  the ids put back (or made dead)
local P = KEYS[1]
local worker = ARGV[1]
local policy = {ttl = tonumber(ARGV[2]), max_lost = tonumber(ARGV[3])}
local now = now_s()
local reaped = {}
for _, id in ipairs(redis.call('ZRANGE', P .. K.running, 0, -1)) do
  if redis.call('HGET', job_key(P, id), F.worker) == worker then
    lose(P, id, now, policy)
    reaped[#reaped + 1] = id
  end
end
if redis.call('ZREM', P .. K.capacity, worker) == 1 then
  redis.call('DEL', P .. K.cap .. worker, P .. K.held .. worker)
end
return reaped
