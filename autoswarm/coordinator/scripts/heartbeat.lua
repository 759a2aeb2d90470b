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
-- Then, only from a worker that can switch runs (ARGV[8] not ''):
-- KEYS[3] the worker's class queue   KEYS[4] the any-class queue
-- KEYS[5] the class's owners (zset)   KEYS[6] the workers that lost trust (set)
-- KEYS[7] event stream
-- ARGV[1] experiment_id   ARGV[2] worker_id   ARGV[3] fencing_token   ARGV[4] now
-- ARGV[5] lease_ttl_s   ARGV[6] preempt an explore within this share of its budget (0: never)
-- ARGV[7] owner   ARGV[8] hardware class ('': the worker cannot switch runs)
-- ARGV[9] replicate_wait_s   ARGV[10] experiment key prefix   ARGV[11] head key prefix
-- ARGV[12] task key prefix   ARGV[13] entries scanned per queue
-- ARGV[14] the lowest explore score (priority 2)
-- ARGV[15] seconds the explore's run has run, as its worker says ('': not said)
-- Returns {1, cancel (0/1)} renewed; {1, 1, experiment_id, fencing_token, kind, task_id,
-- bundle_hash} preempted for that lease; {-1} unknown; {-2} another worker's; {-3} stale token.
local experiment_key, leases_key = KEYS[1], KEYS[2]
local experiment_id, worker_id, token, now_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl_s, share, owner, hardware = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local replicate_wait_s, experiment_prefix = tonumber(ARGV[9]), ARGV[10]
local head_prefix, task_prefix, scan = ARGV[11], ARGV[12], tonumber(ARGV[13])
local explore_score, ran_s = ARGV[14], tonumber(ARGV[15])
local optional = optional_keys(3)
local class_queue, any_queue, owners_key, distrusted_key, events_key =
  optional(hardware ~= '', 5)

local f = redis.call('HMGET', experiment_key, 'cancel', 'worker_id', 'fencing_token')
if f[1] == '1' and f[2] == worker_id and tonumber(f[3]) == tonumber(token) then return {1, 1} end
local check = check_lease(experiment_key, worker_id, token)
if check ~= 1 then return {check} end
local now = tonumber(now_s)
local deadline = now + ttl_s
redis.call('HSET', experiment_key, 'lease_deadline', deadline)
redis.call('ZADD', leases_key, deadline, experiment_id)

if share <= 0 or not class_queue then return {1, 0} end
local e = redis.call('HMGET', experiment_key, 'kind', 'leased_s', 'task_id', 'queue', 'score',
  'preempted')
if e[1] ~= 'explore' or (tonumber(e[6]) or 0) > 0 then return {1, 0} end
local w = {
  id = worker_id, owner = owner, hardware = hardware, now = now,
  replicate_wait_s = replicate_wait_s, exp_prefix = experiment_prefix, head_prefix = head_prefix,
  owners = owners_key, active_s = math.max(300, 5 * ttl_s),
  distrusted = redis.call('SISMEMBER', distrusted_key, worker_id) == 1, preempting = true,
}
-- What waits first (cheap when nothing does), then the explore's age against its budget.
local waiting, queue = choose(w, class_queue, any_queue, scan, explore_score)
if not waiting then return {1, 0} end
local spec = redis.call('HGET', task_prefix .. e[3], 'spec')
local ok, decoded = pcall(cjson.decode, spec or '')
local budget = ok and type(decoded) == 'table' and tonumber(decoded['budget_s'])
local ran = ran_s or (now - (tonumber(e[2]) or now))
if not budget or ran >= share * budget then return {1, 0} end

redis.call('HSET', experiment_key, 'state', 'queued', 'lease_deadline', '')
-- Its run is over: a late report under the old token is stale.
redis.call('HINCRBY', experiment_key, 'fencing_token', 1)
redis.call('HINCRBY', experiment_key, 'preempted', 1)
redis.call('ZREM', leases_key, experiment_id)
redis.call('ZADD', e[4], e[5], experiment_id)
local taken = take(w, waiting, queue, leases_key, owners_key, ttl_s)
append_event(events_key, 'type', 'preempted', 'experiment_id', experiment_id, 'task_id', e[3],
  'worker_id', worker_id, 'to', waiting, 'kind', taken[3], 'time_s', now_s)
return {1, 1, taken[1], taken[2], taken[3], taken[4], taken[5]}
