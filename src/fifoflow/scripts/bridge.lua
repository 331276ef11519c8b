-- bridge.lua: move the oldest items of a raw Redis list (pushed with LPUSH, so the oldest
-- at the right) into the queue as jobs, in their order, atomically: the items leave the
-- list in the same step as their jobs appear (or, refused, as they enter the rejected
-- list), so a bridge that dies at any point loses and duplicates nothing. The caller read
-- and checked the items first; the list's tail must still be those very items (a digest),
-- else nothing changes. The two lists lie outside the queue's hash tag: on one server any
-- key may be touched; on Redis Cluster they must share the queue's tag (Bridge checks;
-- docs/ways-in.md).
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  the source list          ARGV[2] its rejected list (entries: JSON with a reason)
-- ARGV[3]  sha1 of the list's last N items as LRANGE lists them, each as 'LENGTH:ITEM'
-- ARGV[4]  N                        ARGV[5] id suffix (4 hex digits of the queue name)
-- ARGV[6]  ttl seconds of finished records
-- ARGV[7..] the push spec (SPEC_LEN values; see push_spec in _common.lua), then N pairs,
--          oldest item first: 'ok', params (JSON) | 'bad', the rejected list's entry
-- Returns  {'OK', moved, rejected}
--       or {'CHANGED'}  (the tail is not what was checked: read it again; nothing changed)
--       or {'FULL', pending, max_length, adding}   (nothing changed)
local P = KEYS[1]
local source, rejected, digest, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local suffix, ttl = ARGV[5], ARGV[6]
local spec = push_spec(ARGV, 7)
local FIRST = 7 + SPEC_LEN

local tail = redis.call('LRANGE', source, -n, -1)
local parts = {}
for i, item in ipairs(tail) do parts[i] = #item .. ':' .. item end
if #tail ~= n or redis.sha1hex(table.concat(parts)) ~= digest then return {'CHANGED'} end

local fresh = 0
for i = FIRST, #ARGV, 2 do
  if ARGV[i] == 'ok' then fresh = fresh + 1 end
end
local full = too_full(P, fresh)
if full then return full end

local now = now_s()
local ids = new_ids(P, suffix, fresh, now)
local k, bad = 0, 0
for i = FIRST, #ARGV, 2 do
  if ARGV[i] == 'ok' then
    k = k + 1
    write_job(P, ids[k], spec, ARGV[i + 1], '', now)
  else
    redis.call('LPUSH', rejected, ARGV[i + 1])
    bad = bad + 1
  end
end
if fresh > 0 then
  local fate = attach(P, ids, spec, {}, now)
  publish(P, ids, {}, spec, now, fate, {}, ttl)
end
redis.call('LTRIM', source, 0, -(n + 1))
return {'OK', fresh, bad}
