-- Choosing and taking a queued experiment for one worker, shared by lease.lua and
-- heartbeat.lua (prepended to them after lib.lua; no KEYS/ARGV of its own).
-- `w` describes the worker: {id, owner, hardware, now, replicate_wait_s, distrusted,
-- exp_prefix, head_prefix, preempting, owners (the class's owners zset), active_s (how
-- recently another owner must have leased on the class to count as present)}.

-- Whether a worker of an owner other than `owner` leased on this class within w.active_s.
local function other_owner(w, owner)
  local present = redis.call('ZRANGEBYSCORE', w.owners, w.now - w.active_s, '+inf', 'LIMIT', 0, 2)
  for i = 1, #present do
    if present[i] ~= owner then return true end
  end
  return false
end

-- Whether the worker may take this queued experiment now. Not: one that excludes this
-- worker (a replicate) or whose twin it holds (a merge and its replicate run on two
-- workers), until it has waited replicate_wait_s for another worker (since waits_since if
-- set, else since it was created); one that excludes its owner, until then too, and ever
-- when it asks for `two_owners`; one that excludes or was found by its owner (or whose twin
-- a worker of its owner holds) while a worker of another owner is present on the class (a
-- claim is confirmed by another owner whenever one exists); an explore of a task without a
-- head on this class (it could not be judged here); a baseline or replicate, for a worker that lost trust (other
-- decisions rest on them unchecked). With `w.preempting` (a heartbeat's choice, which would
-- preempt the worker's explore): not one that `yields`.
local function eligible(w, experiment_id)
  local f = redis.call('HMGET', w.exp_prefix .. experiment_id,
    'state', 'kind', 'task_id', 'exclude_worker', 'exclude_owner', 'created_s', 'twin', 'yields',
    'waits_since', 'two_owners', 'finder_owner')
  if f[1] ~= 'queued' then return false end
  if w.preempting and f[8] == '1' then return false end
  local since = tonumber(f[9]) or tonumber(f[6]) or w.now
  local waited = w.now - since >= w.replicate_wait_s
  if f[4] == w.id and not waited then return false end
  if f[7] and f[7] ~= '' then
    local holder = redis.call('HMGET', w.exp_prefix .. f[7], 'worker_id', 'owner')
    if holder[1] == w.id and not waited then return false end
    if holder[2] == w.owner and holder[1] ~= w.id and other_owner(w, w.owner) then
      return false
    end
  end
  if f[5] == w.owner and (f[10] == '1' or not waited) then return false end
  if (f[5] == w.owner or f[11] == w.owner) and other_owner(w, w.owner) then return false end
  if w.distrusted and (f[2] == 'baseline' or f[2] == 'replicate') then return false end
  if f[2] == 'explore' then  -- judged once the head is measured, but may run meanwhile
    return redis.call('HEXISTS', w.head_prefix .. f[3] .. ':' .. w.hardware, 'commit') == 1
  end
  return true
end

-- The first experiment of one queue (lowest score: priority, then first in) that the worker
-- may take, looking at most `limit` entries deep and only at scores below `below`; with its
-- score, or nil.
local function first_eligible(w, queue, limit, below)
  local batch, start = 64, 0
  local max = below == '+inf' and below or '(' .. below
  while start < limit do
    local items = redis.call('ZRANGEBYSCORE', queue, '-inf', max, 'WITHSCORES',
      'LIMIT', start, batch)
    if #items == 0 then return nil, nil end
    for i = 1, #items, 2 do
      if eligible(w, items[i]) then return items[i], tonumber(items[i + 1]) end
    end
    start = start + batch
  end
  return nil, nil
end

-- The first experiment the worker may take across its class's queue and the any-class
-- queue: {experiment_id, queue}, or nil.
local function choose(w, class_queue, any_queue, limit, below)
  local a, score_a = first_eligible(w, class_queue, limit, below)
  local b, score_b = first_eligible(w, any_queue, limit, below)
  if a and (not b or score_a <= score_b) then return a, class_queue end
  if b then return b, any_queue end
  return nil, nil
end

-- Lease it to the worker: out of its queue, the fencing token up by one, the deadline
-- recorded. Returns {experiment_id, fencing_token, kind, task_id, bundle_hash}.
local function take(w, experiment_id, queue, leases, owners, ttl_s)
  redis.call('ZREM', queue, experiment_id)
  local key = w.exp_prefix .. experiment_id
  local token = redis.call('HINCRBY', key, 'fencing_token', 1)
  local deadline = w.now + ttl_s
  redis.call('HSET', key, 'state', 'leased', 'worker_id', w.id, 'owner', w.owner,
    'measured_on', w.hardware, 'lease_deadline', deadline, 'leased_s', w.now)
  redis.call('ZADD', leases, deadline, experiment_id)
  redis.call('ZADD', owners, w.now, w.owner)
  local about = redis.call('HMGET', key, 'kind', 'task_id', 'bundle_hash')
  return {experiment_id, token, about[1], about[2], about[3]}
end
