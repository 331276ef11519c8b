-- capacity.lua: a worker with declared capacity registers (or renews) its record in the
-- queue's slot, or withdraws it; the claims of every worker read these records.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  worker name      ARGV[2] seconds the record lives (0: withdraw it now)
-- ARGV[3]  capacity: JSON object, resource -> amount (slots, gpu, cpu, mem_gb, ...)
-- ARGV[4]  GPU ids: JSON array of strings     ARGV[5] pools served: JSON array
-- ARGV[6]  host       ARGV[7] '1': strict FIFO (nothing passes a blocked head)
-- Returns  the number of live resource workers of the queue
local P = KEYS[1]
local name, ttl = ARGV[1], tonumber(ARGV[2])
local record = P .. K.cap .. name
if ttl <= 0 then
  redis.call('DEL', record, P .. K.held .. name)
  redis.call('ZREM', P .. K.capacity, name)
else
  local now = now_s()
  redis.call('HSET', record, 'cap', ARGV[3], 'gpus', ARGV[4], 'pools', ARGV[5], 'host', ARGV[6],
    'strict', ARGV[7])
  redis.call('EXPIRE', record, math.ceil(ttl))
  redis.call('ZADD', P .. K.capacity, now + ttl, name)
  -- A new worker may fit what nobody else could: blocked workers look again.
  for _, pool in ipairs(cjson.decode(ARGV[5])) do res_freed(P, pool) end
end
return redis.call('ZCARD', P .. K.capacity)
