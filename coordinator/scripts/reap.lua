-- Expired leases back to the queue, one attempt counted each; after max_attempts the
-- experiment goes to the dead-letter list (and to the judge, to record why).
-- KEYS[1] leases (zset by deadline)   KEYS[2] dead-letter list   KEYS[3] judge queue (zset)
-- KEYS[4] event stream
-- ARGV[1] now   ARGV[2] max_attempts   ARGV[3] experiment key prefix   ARGV[4] most to reap
-- Returns {experiment_id, 'queued' | 'dead', ...}.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, experiment_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], experiment_id)
  local key = ARGV[3] .. experiment_id
  local f = redis.call('HMGET', key, 'state', 'lease_deadline', 'worker_id', 'queue', 'score',
    'task_id')
  if f[1] == 'leased' and tonumber(f[2]) and tonumber(f[2]) <= now then
    local attempts = redis.call('HINCRBY', key, 'attempts', 1)
    local err = 'lease expired: worker ' .. tostring(f[3]) .. ' stopped renewing it'
    local outcome = 'queued'
    if attempts >= tonumber(ARGV[2]) then outcome = 'dead' end
    redis.call('HSET', key, 'state', outcome, 'last_error', err, 'lease_deadline', '')
    if outcome == 'dead' then
      redis.call('LPUSH', KEYS[2], experiment_id)
      redis.call('ZADD', KEYS[3], now, experiment_id)
    else
      redis.call('ZADD', f[4], f[5], experiment_id)
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'type', 'expired',
      'experiment_id', experiment_id, 'task_id', f[6], 'worker_id', tostring(f[3]),
      'state', outcome, 'time_s', ARGV[1])
    out[#out + 1] = experiment_id
    out[#out + 1] = outcome
  end
end
return out
