-- purge.lua: delete every dead job of a queue (the dead-letter queue is emptied).
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- Returns  the number of jobs deleted
local P = KEYS[1]
local ids = redis.call('ZRANGE', P .. K.dead, 0, -1)
for _, id in ipairs(ids) do redis.call('DEL', job_key(P, id)) end
forget(P, ids)
redis.call('DEL', P .. K.dead)
return #ids
