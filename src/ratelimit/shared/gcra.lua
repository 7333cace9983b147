-- keygate: every applicable shared limit of one request, decided atomically (GCRA).
--
-- KEYS[i]          the bucket of limit i: its theoretical arrival time (TAT), in microseconds
--                  of the server's clock, or absent for a full bucket.
-- ARGV[2i - 1]     limit i's emission interval (one token), in microseconds.
-- ARGV[2i]         limit i's burst (bucket size).
--
-- The same arithmetic as governor, which keeps the replica-local buckets: a request is allowed
-- when now >= TAT - interval * (burst - 1), and then TAT becomes max(TAT, now) + interval.
-- Either every limit allows and all are charged, or none is charged.
--
-- Returns {1} when allowed; {0, i, wait, reset} when refused, for the refusing limit i with the
-- longest wait: wait is the time until the request would be allowed, reset the time until that
-- bucket is full again (both in microseconds).
--
-- Time is the server's (TIME), so replicas' clocks do not matter. Every key written expires when
-- its bucket is full again (SET ... PX), so memory is bounded by the callers active in one refill
-- period.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- One MGET for every bucket: each redis.call costs the server a command dispatch.
local stored = redis.call('MGET', unpack(KEYS))
local next_tat = {}
local refused, longest, refused_tau = 0, -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tau = interval * (tonumber(ARGV[2 * i]) - 1)
  local tat = now
  if stored[i] then
    tat = tonumber(stored[i]) or now
  end
  if tat < now then
    tat = now
  end
  local allowed_at = tat - tau
  if now < allowed_at then
    local wait = allowed_at - now
    if wait > longest then
      refused, longest, refused_tau = i, wait, tau
    end
  else
    next_tat[i] = tat + interval
  end
end

if refused > 0 then
  return {0, refused, longest, longest + refused_tau}
end

for i = 1, #KEYS do
  local ttl = math.ceil((next_tat[i] - now) / 1000)
  -- %d: tostring() would print large numbers in exponent form and lose digits (and %d is the
  -- cheapest exact form: Redis' Lua formats it as a C long).
  redis.call('SET', KEYS[i], string.format('%d', next_tat[i]), 'PX', ttl)
end
return {1}
