-- KEYS[1] entry, KEYS[2] recency zset, KEYS[3] expiry zset. Returns the value or nil.
local value = redis.call('GET', KEYS[1])
if value then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], 'XX', tonumber(t[1]) + tonumber(t[2]) / 1000000, KEYS[1])
end
return value
