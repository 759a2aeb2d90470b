-- Claim or keep the coordinator's leadership: the one process of several serving one Redis
-- that runs the background work (reaper, judge loop, indexer).
-- KEYS[1] the leader key
-- ARGV[1] this process's token   ARGV[2] how long the claim holds (ms)   ARGV[3] "1" to let go
-- Returns 1 when this process leads (until the claim lapses), 0 when another one does.
local leader_key = KEYS[1]
local token, hold_ms, let_go = ARGV[1], ARGV[2], ARGV[3] == '1'

local holder = redis.call('GET', leader_key)
if let_go then
  if holder == token then redis.call('DEL', leader_key) end
  return 0
end
if holder == token then
  redis.call('PEXPIRE', leader_key, hold_ms)
  return 1
end
if not holder then
  redis.call('SET', leader_key, token, 'PX', hold_ms)
  return 1
end
return 0
