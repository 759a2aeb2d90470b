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
local key, experiment_id = KEYS[1], ARGV[1]
local f = redis.call('HMGET', key, 'state', 'worker_id', 'fencing_token', 'reported_token',
  'reported_worker', 'kind', 'task_id', 'queue', 'score')
if not f[1] then return -1 end
if f[4] == ARGV[3] and f[5] == ARGV[2] then return 0 end
local current, asked = tonumber(f[3]), tonumber(ARGV[3])
if asked < current then return -3 end
if f[2] ~= ARGV[2] then return -2 end
if asked ~= current then return -3 end
-- 'queued' with the current token: the lease expired and was reaped, nobody leased it since;
-- the result is still the holder's and still good.
if f[1] ~= 'leased' and f[1] ~= 'queued' then return -3 end
if f[1] == 'queued' then redis.call('ZREM', f[8], experiment_id) end
redis.call('ZREM', KEYS[2], experiment_id)
redis.call('HSET', key, 'result', ARGV[4], 'status', ARGV[5], 'reported_token', ARGV[3],
  'reported_worker', ARGV[2], 'finished_s', ARGV[6], 'lease_deadline', '')
local outcome = 'done'
if ARGV[5] ~= 'ok' and f[6] ~= 'explore' then
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'last_error', ARGV[8])
  if attempts >= tonumber(ARGV[7]) then
    outcome = 'dead'
  else
    outcome = 'queued'
  end
end
redis.call('HSET', key, 'state', outcome)
if outcome == 'queued' then
  redis.call('ZADD', f[8], f[9], experiment_id)
else
  if outcome == 'dead' then redis.call('LPUSH', KEYS[3], experiment_id) end
  redis.call('ZADD', KEYS[4], ARGV[6], experiment_id)
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100000, '*', 'type', 'result',
  'experiment_id', experiment_id, 'task_id', f[7], 'kind', f[6], 'status', ARGV[5],
  'metric', ARGV[9], 'worker_id', ARGV[2], 'state', outcome, 'time_s', ARGV[6])
return 1
