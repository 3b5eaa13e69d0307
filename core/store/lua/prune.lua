-- Drop index members whose entry has expired (their TTL passed). KEYS[2], KEYS[3] as above.
local function prune(recency, expiry, now)
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 1000)
  for _, key in ipairs(gone) do
    redis.call('ZREM', recency, key)
    redis.call('ZREM', expiry, key)
  end
end
