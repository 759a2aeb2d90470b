-- Index one experiment for the read model. Only the read model's keys (as:ix:*) change;
-- nothing the write path reads is touched. Moves the experiment between index zsets (its
-- old entries are kept in the members hash, its new ones come in ARGV), adjusts its task's
-- counts, and counts each credit item at most once (by its mark).
-- KEYS[1] members hash (experiment_id -> JSON of its entries and labels)
-- KEYS[2] the task's counts hash   KEYS[3] credit marks hash   KEYS[4] owners zset (credit)
-- KEYS[5] teams zset (credit)
-- ARGV[1] experiment_id
-- ARGV[2] JSON {"e": [[zset key, score, member], ...], "l": [count label, ...]}
-- ARGV[3] JSON [[mark, credit hash key, owner, team or '', credit, {field: increment}], ...]
-- Index and credit hash keys come in ARGV, built in autoswarm.coordinator.keys, the way other scripts
-- reach experiment hashes by prefix (one Redis instance is assumed, see keys.py).
-- Returns 1 when this was the experiment's first indexing, else 0.
local members_key, counts_key, marks_key, owners_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local teams_key = KEYS[5]
local experiment_id, entries, credits = ARGV[1], ARGV[2], ARGV[3]

local new = cjson.decode(entries)
local old_raw = redis.call('HGET', members_key, experiment_id)
local wanted, labels = {}, {}
for _, e in ipairs(new.e) do wanted[e[1] .. '\0' .. e[3]] = true end
for _, label in ipairs(new.l) do labels[label] = true end
local had = {}
if old_raw then
  local old = cjson.decode(old_raw)
  for _, e in ipairs(old.e) do
    if not wanted[e[1] .. '\0' .. e[2]] then redis.call('ZREM', e[1], e[2]) end
  end
  for _, label in ipairs(old.l) do
    had[label] = true
    if not labels[label] then redis.call('HINCRBY', counts_key, label, -1) end
  end
end
local stored = {}
for _, e in ipairs(new.e) do
  redis.call('ZADD', e[1], e[2], e[3])
  stored[#stored + 1] = {e[1], e[3]}
end
for _, label in ipairs(new.l) do
  if not had[label] then redis.call('HINCRBY', counts_key, label, 1) end
end
redis.call('HSET', members_key, experiment_id, cjson.encode({e = stored, l = new.l}))
for _, c in ipairs(cjson.decode(credits)) do
  if redis.call('HSETNX', marks_key, c[1], 1) == 1 then
    for field, increment in pairs(c[6]) do
      redis.call('HINCRBYFLOAT', c[2], field, increment)
    end
    redis.call('HSET', c[2], 'owner', c[3], 'team', c[4])
    redis.call('ZINCRBY', owners_key, c[5], c[3])
    if c[4] ~= '' then redis.call('ZINCRBY', teams_key, c[5], c[4]) end
  end
end
if old_raw then return 0 end
return 1
