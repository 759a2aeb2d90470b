-- Record a hypothesis and, with a change, queue its experiment (an explore, or a kept change
-- offered to another class), unless identical code was explored before (then the hypothesis
-- is discarded as a duplicate). Idempotent by hypothesis_id. The fields may set a verdict
-- (default pending). With ARGV[7], the change implements that text-only hypothesis (KEYS[9]):
-- only while it still needs code, which this marks done with the reason ARGV[8]; two
-- proposers implementing one hypothesis at once cannot both succeed.
-- KEYS[1] the hypothesis hash   KEYS[2] the task's hypotheses (zset)   KEYS[3] sequence counter
-- KEYS[4] the experiment hash   KEYS[5] the experiment's queue   KEYS[6] all experiments (zset)
-- KEYS[7] the task's experiments (zset)   KEYS[8] the explored marker of this code
-- KEYS[9] the hypothesis it implements (any key when ARGV[7] is '')
-- ARGV[1] hypothesis_id   ARGV[2] hypothesis fields (JSON)   ARGV[3] experiment_id ('' for
-- a text-only hypothesis)   ARGV[4] experiment fields (JSON)   ARGV[5] now   ARGV[6] priority
-- ARGV[7] the id of the hypothesis it implements, or ''   ARGV[8] that one's new reason
-- Returns {experiment_id or '', 1 if duplicate else 0, the earlier experiment or ''}, or
-- {'', 0, '', 'implemented'} when the hypothesis it implements no longer needs code.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local f = redis.call('HMGET', KEYS[1], 'experiment_id', 'duplicate_of')
  local dup = f[2] or ''
  if dup ~= '' then return {'', 1, dup} end
  return {f[1] or '', 0, ''}
end
if ARGV[7] ~= '' then
  if redis.call('HGET', KEYS[9], 'needs_code') ~= '1' then return {'', 0, '', 'implemented'} end
  redis.call('HSET', KEYS[9], 'needs_code', '0', 'reason', ARGV[8])
end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'verdict', 'pending', 'experiment_id', '')
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'hypothesis_id', ARGV[1], 'seq', seq, 'created_s', ARGV[5])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
if ARGV[3] == '' then return {'', 0, ''} end
local prior = redis.call('GET', KEYS[8])
if prior then
  redis.call('HSET', KEYS[1], 'verdict', 'discarded', 'duplicate_of', prior,
    'reason', 'identical code was already explored as experiment ' .. prior)
  return {'', 1, prior}
end
redis.call('SET', KEYS[8], ARGV[3])
enqueue(KEYS[4], ARGV[3], ARGV[4], ARGV[6], KEYS[5], KEYS[6], KEYS[7], KEYS[3], ARGV[5])
redis.call('HSET', KEYS[1], 'experiment_id', ARGV[3])
return {ARGV[3], 0, ''}
