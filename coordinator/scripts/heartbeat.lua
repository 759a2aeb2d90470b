-- Renew a lease: only the current fencing token of the worker holding it. A lease whose
-- experiment was withdrawn while it ran (withdraw.lua) answers cancel to its holder alone.
-- A young explore is preempted: when its worker can switch runs, the explore has run for
-- less than a share of its task's budget (as its worker says; a lease waiting behind the
-- worker's current run has run for 0 s; a worker that does not say: since it was leased),
-- and a baseline, replicate or merge waits in the queue that this worker may take
-- (leasing.lua) and that does not yield, the explore
-- goes back to its place in the queue (no attempt counted; its holder's token is stale from
-- now on) and the waiting experiment is leased to this worker in its place. An explore is
-- preempted once at most: it waited for a free worker again then, up to a whole run.
-- KEYS[1] the experiment hash   KEYS[2] leases (zset by deadline)
-- KEYS[3] the worker's class queue   KEYS[4] the any-class queue
-- KEYS[5] the class's owners (zset)   KEYS[6] the workers that lost trust (set)
-- KEYS[7] event stream
-- ARGV[1] experiment_id   ARGV[2] worker_id   ARGV[3] fencing_token   ARGV[4] now
-- ARGV[5] lease_ttl_s   ARGV[6] preempt an explore within this share of its budget (0: never)
-- ARGV[7] owner   ARGV[8] hardware class   ARGV[9] replicate_wait_s
-- ARGV[10] experiment key prefix   ARGV[11] head key prefix   ARGV[12] task key prefix
-- ARGV[13] entries scanned per queue   ARGV[14] the lowest explore score (priority 2)
-- ARGV[15] seconds the explore's run has run, as its worker says ('': not said)
-- Returns {1, cancel (0/1)} renewed; {1, 1, experiment_id, fencing_token, kind, task_id,
-- bundle_hash} preempted for that lease; {-1} unknown; {-2} another worker's; {-3} stale token.
local f = redis.call('HMGET', KEYS[1], 'cancel', 'worker_id', 'fencing_token')
if f[1] == '1' and f[2] == ARGV[2] and tonumber(f[3]) == tonumber(ARGV[3]) then return {1, 1} end
local check = check_lease(KEYS[1], ARGV[2], ARGV[3])
if check ~= 1 then return {check} end
local now = tonumber(ARGV[4])
local deadline = now + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'lease_deadline', deadline)
redis.call('ZADD', KEYS[2], deadline, ARGV[1])

local share = tonumber(ARGV[6])
if share <= 0 then return {1, 0} end
local e = redis.call('HMGET', KEYS[1], 'kind', 'leased_s', 'task_id', 'queue', 'score', 'preempted')
if e[1] ~= 'explore' or (tonumber(e[6]) or 0) > 0 then return {1, 0} end
local w = {
  id = ARGV[2], owner = ARGV[7], hardware = ARGV[8], now = now,
  replicate_wait_s = tonumber(ARGV[9]), exp_prefix = ARGV[10], head_prefix = ARGV[11],
  owners = KEYS[5], active_s = math.max(300, 5 * tonumber(ARGV[5])),
  distrusted = redis.call('SISMEMBER', KEYS[6], ARGV[2]) == 1, preempting = true,
}
-- What waits first (cheap when nothing does), then the explore's age against its budget.
local waiting, queue = choose(w, KEYS[3], KEYS[4], tonumber(ARGV[13]), ARGV[14])
if not waiting then return {1, 0} end
local spec = redis.call('HGET', ARGV[12] .. e[3], 'spec')
local ok, decoded = pcall(cjson.decode, spec or '')
local budget = ok and type(decoded) == 'table' and tonumber(decoded['budget_s'])
local ran = tonumber(ARGV[15]) or (now - (tonumber(e[2]) or now))
if not budget or ran >= share * budget then return {1, 0} end

redis.call('HSET', KEYS[1], 'state', 'queued', 'lease_deadline', '')
redis.call('HINCRBY', KEYS[1], 'fencing_token', 1)  -- its run is over: a late report is stale
redis.call('HINCRBY', KEYS[1], 'preempted', 1)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', e[4], e[5], ARGV[1])
local taken = take(w, waiting, queue, KEYS[2], KEYS[5], tonumber(ARGV[5]))
redis.call('XADD', KEYS[7], 'MAXLEN', '~', 100000, '*', 'type', 'preempted',
  'experiment_id', ARGV[1], 'task_id', e[3], 'worker_id', ARGV[2], 'to', waiting,
  'kind', taken[3], 'time_s', ARGV[4])
return {1, 1, taken[1], taken[2], taken[3], taken[4], taken[5]}
