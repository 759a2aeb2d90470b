-- Accept one experiment's result: only under the current fencing token of the worker that
-- holds the lease, and only once (a repeat of the accepted report is answered 0). A failed
-- run of a baseline, replicate or merge counts an attempt and is queued again, or
-- dead-lettered after max_attempts; an explore's result is final whatever its status.
-- Everything accepted is queued for the judge.
-- KEYS[1] the experiment hash   KEYS[2] leases (zset)   KEYS[3] dead-letter list
-- KEYS[4] judge queue (zset)    KEYS[5] event stream
-- ARGV[1] experiment_id   ARGV[2] worker_id   ARGV[3] fencing_token   ARGV[4] result (JSON)
-- ARGV[5] status   ARGV[6] now   ARGV[7] max_attempts   ARGV[8] error text   ARGV[9] metric
-- Returns 1 recorded; 0 already recorded; -1 unknown; -2 another worker's; -3 stale token.
local experiment_key, leases_key, dead_key = KEYS[1], KEYS[2], KEYS[3]
local judge_key, events_key = KEYS[4], KEYS[5]
local experiment_id, worker_id, token, result = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local status, now, max_attempts = ARGV[5], ARGV[6], tonumber(ARGV[7])
local error_text, metric = ARGV[8], ARGV[9]

local f = redis.call('HMGET', experiment_key, 'state', 'worker_id', 'fencing_token',
  'reported_token', 'reported_worker', 'kind', 'task_id', 'queue', 'score')
if not f[1] then return -1 end
if f[4] == token and f[5] == worker_id then return 0 end
local current, asked = tonumber(f[3]), tonumber(token)
if asked < current then return -3 end
if f[2] ~= worker_id then return -2 end
if asked ~= current then return -3 end
-- 'queued' with the current token: the lease expired and was reaped, nobody leased it since;
-- the result is still the holder's and still good.
if f[1] ~= 'leased' and f[1] ~= 'queued' then return -3 end
if f[1] == 'queued' then redis.call('ZREM', f[8], experiment_id) end
redis.call('ZREM', leases_key, experiment_id)
redis.call('HSET', experiment_key, 'result', result, 'status', status,
  'reported_token', token, 'reported_worker', worker_id, 'finished_s', now, 'lease_deadline', '')
local outcome = 'done'
if status ~= 'ok' and f[6] ~= 'explore' then
  local attempts = redis.call('HINCRBY', experiment_key, 'attempts', 1)
  redis.call('HSET', experiment_key, 'last_error', error_text)
  if attempts >= max_attempts then
    outcome = 'dead'
  else
    outcome = 'queued'
  end
end
redis.call('HSET', experiment_key, 'state', outcome)
if outcome == 'queued' then
  redis.call('ZADD', f[8], f[9], experiment_id)
else
  if outcome == 'dead' then redis.call('LPUSH', dead_key, experiment_id) end
  redis.call('ZADD', judge_key, now, experiment_id)
end
append_event(events_key, 'type', 'result', 'experiment_id', experiment_id, 'task_id', f[7],
  'kind', f[6], 'status', status, 'metric', metric, 'worker_id', worker_id, 'state', outcome,
  'time_s', now)
return 1
