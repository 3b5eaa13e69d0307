-- KEYS[1] entry, KEYS[2] recency, KEYS[3] expiry; ARGV value, ttl ms, max entries (0 = none).
-- Runs after prune.lua (prepended when the script is loaded).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl_ms = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl_ms)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZADD', KEYS[3], now + ttl_ms / 1000, KEYS[1])
local cap = tonumber(ARGV[3])
if cap > 0 then
  prune(KEYS[2], KEYS[3], now)
  local excess = redis.call('ZCARD', KEYS[2]) - cap
  if excess > 0 then
    local victims = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
    for _, key in ipairs(victims) do
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[2], key)
      redis.call('ZREM', KEYS[3], key)
    end
  end
end
return 1
