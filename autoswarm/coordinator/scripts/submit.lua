-- Record a hypothesis and, with a change, queue its experiment (an explore, or a kept change
-- offered to another class), unless identical code was explored before (then the hypothesis
-- is discarded as a duplicate). Idempotent by hypothesis_id. The fields may set a verdict
-- (default pending). With ARGV[7], the change implements that text-only hypothesis: only
-- while it still needs code, which this marks done with the reason ARGV[8]; two proposers
-- implementing one hypothesis at once cannot both succeed.
-- KEYS[1] the hypothesis hash   KEYS[2] the task's hypotheses (zset)   KEYS[3] sequence counter
-- Then, each only when its part is used, in this order:
-- the experiment hash, its queue, all experiments (zset), the task's experiments (zset) and
-- the explored marker of this code (with an experiment, ARGV[3]);
-- the hypothesis it implements (with ARGV[7]).
-- ARGV[1] hypothesis_id   ARGV[2] hypothesis fields (JSON)   ARGV[3] experiment_id ('' for
-- a text-only hypothesis)   ARGV[4] experiment fields (JSON)   ARGV[5] now   ARGV[6] priority
-- ARGV[7] the id of the hypothesis it implements, or ''   ARGV[8] that one's new reason
-- Returns {experiment_id or '', 1 if duplicate else 0, the earlier experiment or ''}, or
-- {'', 0, '', 'implemented'} when the hypothesis it implements no longer needs code.
local hypothesis_key, task_hypotheses_key, seq_key = KEYS[1], KEYS[2], KEYS[3]
local hypothesis_id, hypothesis_fields, experiment_id = ARGV[1], ARGV[2], ARGV[3]
local experiment_fields, now, priority = ARGV[4], ARGV[5], ARGV[6]
local implements_id, implements_reason = ARGV[7], ARGV[8]
local optional = optional_keys(4)
local experiment_key, queue_key, all_key, task_experiments_key, explored_key =
  optional(experiment_id ~= '', 5)
local implements_key = optional(implements_id ~= '')

if redis.call('EXISTS', hypothesis_key) == 1 then
  local f = redis.call('HMGET', hypothesis_key, 'experiment_id', 'duplicate_of')
  local dup = f[2] or ''
  if dup ~= '' then return {'', 1, dup} end
  return {f[1] or '', 0, ''}
end
if implements_key then
  if redis.call('HGET', implements_key, 'needs_code') ~= '1' then
    return {'', 0, '', 'implemented'}
  end
  redis.call('HSET', implements_key, 'needs_code', '0', 'reason', implements_reason)
end
local seq = redis.call('INCR', seq_key)
redis.call('HSET', hypothesis_key, 'verdict', 'pending', 'experiment_id', '')
hset_json(hypothesis_key, hypothesis_fields)
redis.call('HSET', hypothesis_key, 'hypothesis_id', hypothesis_id, 'seq', seq, 'created_s', now)
redis.call('ZADD', task_hypotheses_key, seq, hypothesis_id)
if not experiment_key then return {'', 0, ''} end
local prior = redis.call('GET', explored_key)
if prior then
  redis.call('HSET', hypothesis_key, 'verdict', 'discarded', 'duplicate_of', prior,
    'reason', 'identical code was already explored as experiment ' .. prior)
  return {'', 1, prior}
end
redis.call('SET', explored_key, experiment_id)
enqueue(experiment_key, experiment_id, experiment_fields, priority, queue_key, all_key,
  task_experiments_key, seq_key, now)
redis.call('HSET', hypothesis_key, 'experiment_id', experiment_id)
return {experiment_id, 0, ''}
