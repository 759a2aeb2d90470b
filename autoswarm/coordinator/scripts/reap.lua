-- Expired leases back to the queue, one attempt counted each; after max_attempts the
-- experiment goes to the dead-letter list (and to the judge, to record why).
-- KEYS[1] leases (zset by deadline)   KEYS[2] dead-letter list   KEYS[3] judge queue (zset)
-- KEYS[4] event stream
-- ARGV[1] now   ARGV[2] max_attempts   ARGV[3] experiment key prefix   ARGV[4] most to reap
-- Returns {experiment_id, 'queued' | 'dead', ...}.
local leases_key, dead_key, judge_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_s, max_attempts, experiment_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local most = tonumber(ARGV[4])

local now = tonumber(now_s)
local due = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now, 'LIMIT', 0, most)
local out = {}
for _, experiment_id in ipairs(due) do
  redis.call('ZREM', leases_key, experiment_id)
  local key = experiment_prefix .. experiment_id
  local f = redis.call('HMGET', key, 'state', 'lease_deadline', 'worker_id', 'queue', 'score',
    'task_id')
  if f[1] == 'leased' and tonumber(f[2]) and tonumber(f[2]) <= now then
    local attempts = redis.call('HINCRBY', key, 'attempts', 1)
    local err = 'lease expired: worker ' .. tostring(f[3]) .. ' stopped renewing it'
    local outcome = 'queued'
    if attempts >= max_attempts then outcome = 'dead' end
    redis.call('HSET', key, 'state', outcome, 'last_error', err, 'lease_deadline', '')
    if outcome == 'dead' then
      redis.call('LPUSH', dead_key, experiment_id)
      redis.call('ZADD', judge_key, now, experiment_id)
    else
      redis.call('ZADD', f[4], f[5], experiment_id)
    end
    append_event(events_key, 'type', 'expired', 'experiment_id', experiment_id,
      'task_id', f[6], 'worker_id', tostring(f[3]), 'state', outcome, 'time_s', now_s)
    out[#out + 1] = experiment_id
    out[#out + 1] = outcome
  end
end
return out
