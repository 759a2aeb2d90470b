-- Shared helpers and constants, prepended to every script (no KEYS/ARGV of its own).
-- Effects replication: scripts use XADD '*' and the caller's clock (Redis 6.2 needs this).
pcall(redis.replicate_commands)

-- The event stream keeps about this many entries (XADD MAXLEN ~: trimmed in whole nodes).
local EVENTS_MAXLEN = 100000

-- The KEYS of a script's optional parts, handed out in order from KEYS[first]: a caller
-- passes a part's keys only when that part is used, never a placeholder (every key a script
-- touches is passed, and only those). Each call of the returned function takes `count`
-- keys (1 when not given) if `used`, and returns them; it returns nothing when not `used`.
local function optional_keys(first)
  local at = first
  return function(used, count)
    if not used then return end
    count = count or 1
    at = at + count
    return unpack(KEYS, at - count, at - 1)
  end
end

-- A JSON object's fields as a flat {field, value, ...} list of strings.
local function flat_fields(json)
  local flat = {}
  for k, v in pairs(cjson.decode(json)) do
    flat[#flat + 1] = k
    flat[#flat + 1] = tostring(v)
  end
  return flat
end

local function hset_json(key, json)
  if json == nil or json == '' then return end
  local flat = flat_fields(json)
  if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
end

-- Append one event (field, value, ...) to the stream.
local function append_event(stream, ...)
  redis.call('XADD', stream, 'MAXLEN', '~', EVENTS_MAXLEN, '*', ...)
end

local function add_event(stream, json)
  if json == nil or json == '' then return end
  append_event(stream, unpack(flat_fields(json)))
end

-- Queue one experiment unless its id exists. Priority 0 (baseline, replicate) runs before
-- 1 (merge) before 2 (explore); the sequence number keeps each kind first in, first out.
local function enqueue(key, experiment_id, fields_json, priority, queue, all, by_task, seq_key, now)
  if redis.call('EXISTS', key) == 1 then return 0 end
  local seq = redis.call('INCR', seq_key)
  local score = tonumber(priority) * 1e12 + seq
  hset_json(key, fields_json)
  redis.call('HSET', key, 'experiment_id', experiment_id, 'state', 'queued', 'attempts', 0,
    'fencing_token', 0, 'seq', seq, 'score', score, 'queue', queue, 'created_s', now)
  redis.call('ZADD', queue, score, experiment_id)
  redis.call('ZADD', all, seq, experiment_id)
  redis.call('ZADD', by_task, seq, experiment_id)
  return 1
end

-- 1: this worker holds the current lease; -1 unknown; -2 another worker's; -3 stale token.
local function check_lease(key, worker_id, token)
  local f = redis.call('HMGET', key, 'state', 'worker_id', 'fencing_token')
  if not f[1] then return -1 end
  local current = tonumber(f[3])
  local asked = tonumber(token)
  if asked < current then return -3 end
  if f[2] ~= worker_id then return -2 end
  if asked ~= current or f[1] ~= 'leased' then return -3 end
  return 1
end
