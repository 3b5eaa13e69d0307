-- KEYS[1] recency, KEYS[2] expiry. Deletes every indexed entry; returns how many existed.
local removed = 0
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(keys) do
  removed = removed + redis.call('DEL', key)
end
redis.call('DEL', KEYS[1], KEYS[2])
return removed
