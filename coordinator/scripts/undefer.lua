-- Deferred judgements are due now (what they waited for may have happened: a head measured).
-- KEYS[1] judge queue (zset by when due)
-- ARGV[1] now
-- Returns how many were brought forward.
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
for _, experiment_id in ipairs(later) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[1], experiment_id)
end
return #later
