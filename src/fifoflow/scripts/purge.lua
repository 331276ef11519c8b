-- purge.lua: delete every dead job of a queue (the dead-letter queue is emptied).
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- Returns  the number of jobs deleted
local P = KEYS[1]
local ids = redis.call('ZRANGE', P .. 'dead', 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', P .. 'job:' .. id)
end
redis.call('DEL', P .. 'dead')
return #ids
