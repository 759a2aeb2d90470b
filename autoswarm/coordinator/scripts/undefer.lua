-- Deferred judgements are due now (what they waited for may have happened: a head measured).
-- KEYS[1] judge queue (zset by when due)
-- ARGV[1] now
-- Returns how many were brought forward.
local judge_key = KEYS[1]
local now = ARGV[1]

local later = redis.call('ZRANGEBYSCORE', judge_key, '(' .. now, '+inf')
for _, experiment_id in ipairs(later) do
  redis.call('ZADD', judge_key, 'XX', now, experiment_id)
end
return #later
