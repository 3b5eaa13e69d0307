-- KEYS[1] recency, KEYS[2] expiry. Returns the number of live entries.
-- Runs after prune.lua (prepended when the script is loaded).
local t = redis.call('TIME')
prune(KEYS[1], KEYS[2], tonumber(t[1]) + tonumber(t[2]) / 1000000)
return redis.call('ZCARD', KEYS[1])
