-- Measure a result again on another worker: its worker lost trust. Queues the re-check (an
-- experiment of the same kind and code that excludes that worker), points the hypothesis at
-- it (its verdict pending again, with the reason) and records the event. Idempotent by the
-- re-check's id.
-- KEYS[1] the re-check's hash   KEYS[2] its queue   KEYS[3] all experiments (zset)
-- KEYS[4] the task's experiments (zset)   KEYS[5] sequence   KEYS[6] the hypothesis hash
-- KEYS[7] event stream
-- ARGV[1] re-check id   ARGV[2] its fields (JSON)   ARGV[3] priority   ARGV[4] now
-- ARGV[5] hypothesis fields (JSON, '' for none)   ARGV[6] event (JSON)
-- Returns 1 queued now, 0 queued before.
local queued = enqueue(KEYS[1], ARGV[1], ARGV[2], ARGV[3], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  ARGV[4])
if queued == 0 then return 0 end
hset_json(KEYS[6], ARGV[5])
add_event(KEYS[7], ARGV[6])
return 1
