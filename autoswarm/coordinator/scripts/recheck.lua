-- Measure a result again on another worker: its worker lost trust. Queues the re-check (an
-- experiment of the same kind and code that excludes that worker), points the hypothesis at
-- it (its verdict pending again, with the reason) and records the event. Idempotent by the
-- re-check's id.
-- KEYS[1] the re-check's hash   KEYS[2] its queue   KEYS[3] all experiments (zset)
-- KEYS[4] the task's experiments (zset)   KEYS[5] sequence   KEYS[6] event stream
-- KEYS[7] the hypothesis hash (only with hypothesis fields)
-- ARGV[1] re-check id   ARGV[2] its fields (JSON)   ARGV[3] priority   ARGV[4] now
-- ARGV[5] hypothesis fields (JSON, '' for none)   ARGV[6] event (JSON)
-- Returns 1 queued now, 0 queued before.
local experiment_key, queue_key, all_key = KEYS[1], KEYS[2], KEYS[3]
local task_experiments_key, seq_key, events_key = KEYS[4], KEYS[5], KEYS[6]
local experiment_id, fields, priority, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local hypothesis_fields, event = ARGV[5], ARGV[6]
local optional = optional_keys(7)
local hypothesis_key = optional(hypothesis_fields ~= '')

local queued = enqueue(experiment_key, experiment_id, fields, priority, queue_key, all_key,
  task_experiments_key, seq_key, now)
if queued == 0 then return 0 end
if hypothesis_key then hset_json(hypothesis_key, hypothesis_fields) end
add_event(events_key, event)
return 1
