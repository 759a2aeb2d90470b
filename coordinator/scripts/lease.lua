-- Lease the first eligible queued experiment for one worker: lowest score (priority, then
-- FIFO) across its class's queue and the any-class queue. Skips experiments that exclude
-- this worker or its owner or whose twin it leased (a merge and its replicate, queued
-- together), explores of a task without a head on this class (one that cannot run there),
-- and, for a worker that lost trust, baselines and replicates (runs that other decisions
-- rest on unchecked). Increments the fencing token and records the deadline.
-- KEYS[1] this class's queue   KEYS[2] the any-class queue   KEYS[3] leases (zset by deadline)
-- KEYS[4] this class's owners (zset by the last lease each got)
-- KEYS[5] the workers that lost trust (set)
-- ARGV[1] worker_id   ARGV[2] owner   ARGV[3] hardware class   ARGV[4] now   ARGV[5] lease_ttl_s
-- ARGV[6] experiment key prefix   ARGV[7] head key prefix   ARGV[8] entries scanned per queue
-- ARGV[9] replicate_wait_s: after this long queued, an experiment that excludes this worker
--         (or owner) may go to it anyway (a swarm of one still replicates, on itself)
-- Returns {experiment_id, fencing_token, kind, task_id, bundle_hash}, or nil when nothing is
-- eligible.
-- An idle poll writes nothing (no append-only file fsync per poll).
local worker_id, owner, hardware = ARGV[1], ARGV[2], ARGV[3]
local distrusted = redis.call('SISMEMBER', KEYS[5], worker_id) == 1

local function eligible(experiment_id)
  local f = redis.call('HMGET', ARGV[6] .. experiment_id,
    'state', 'kind', 'task_id', 'exclude_worker', 'exclude_owner', 'created_s', 'twin')
  if f[1] ~= 'queued' then return false end
  local waited = tonumber(ARGV[4]) - (tonumber(f[6]) or tonumber(ARGV[4])) >= tonumber(ARGV[9])
  if f[4] == worker_id and not waited then return false end
  if f[7] and f[7] ~= '' and not waited and
      redis.call('HGET', ARGV[6] .. f[7], 'worker_id') == worker_id then
    return false  -- a merge and its replicate run on two workers
  end
  if f[5] and f[5] ~= '' and f[5] == owner and not waited then return false end
  if distrusted and (f[2] == 'baseline' or f[2] == 'replicate') then return false end
  if f[2] == 'explore' then  -- judged once the head is measured, but may run meanwhile
    return redis.call('HEXISTS', ARGV[7] .. f[3] .. ':' .. hardware, 'commit') == 1
  end
  return true
end

local function first(queue)
  local limit, batch, start = tonumber(ARGV[8]), 64, 0
  while start < limit do
    local items = redis.call('ZRANGE', queue, start, start + batch - 1, 'WITHSCORES')
    if #items == 0 then return nil, nil end
    for i = 1, #items, 2 do
      if eligible(items[i]) then return items[i], tonumber(items[i + 1]) end
    end
    start = start + batch
  end
  return nil, nil
end

local a, score_a = first(KEYS[1])
local b, score_b = first(KEYS[2])
local experiment_id, queue
if a and (not b or score_a <= score_b) then
  experiment_id, queue = a, KEYS[1]
elseif b then
  experiment_id, queue = b, KEYS[2]
else
  return nil
end
redis.call('ZREM', queue, experiment_id)
local key = ARGV[6] .. experiment_id
local token = redis.call('HINCRBY', key, 'fencing_token', 1)
local deadline = tonumber(ARGV[4]) + tonumber(ARGV[5])
redis.call('HSET', key, 'state', 'leased', 'worker_id', worker_id, 'owner', owner,
  'measured_on', hardware, 'lease_deadline', deadline, 'leased_s', ARGV[4])
redis.call('ZADD', KEYS[3], deadline, experiment_id)
redis.call('ZADD', KEYS[4], ARGV[4], owner)
local about = redis.call('HMGET', key, 'kind', 'task_id', 'bundle_hash')
return {experiment_id, token, about[1], about[2], about[3]}
