-- GCRA over integer nanoseconds: the arithmetic of `Quota::decide` in
-- src/rate_limit/gcra.rs, for all the checks of one request, all or nothing.
--
-- KEYS[i]   the state of check i: its TAT, nanoseconds since the Unix epoch,
--           as a decimal string.
-- ARGV[1]   "0": read the time with TIME (the server's clock, so that every
--           instance agrees); otherwise a fixed "now" in nanoseconds since
--           the epoch, at least 10 digits (tests compare with gcra.rs).
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]
--           emission interval T, tolerance tau = burst * T, and increment
--           cost * T of check i, in nanoseconds.
--
-- Returns 5 values per check: allowed (1/0), remaining, reset_after_ns,
-- retry_after_ns, and the TAT after the decision (a decimal string).
--
-- A stored TAT more than tau ahead of now (only a backward clock step makes
-- one) counts as exactly tau ahead, as in `Quota::decide`.
--
-- Lua numbers are doubles: a Unix time in nanoseconds (about 1.8e18) does
-- not fit their 53 bits, so times are kept as (seconds, nanoseconds) pairs
-- and only differences (a backlog, at most tau + cost * T) are single
-- numbers. Those are exact below 2^53 ns (104 days).

local now_s, now_ns
if ARGV[1] == '0' then
  local time = redis.call('TIME')
  now_s = tonumber(time[1])
  now_ns = tonumber(time[2]) * 1000
else
  now_s = tonumber(string.sub(ARGV[1], 1, -10))
  now_ns = tonumber(string.sub(ARGV[1], -9))
end

-- The key's backlog: how far its TAT lies after now (0 when idle or absent),
-- at most the tolerance. A TAT is written at most tolerance ahead of the
-- TIME that admitted it and only comes closer as time passes, so a TAT
-- further ahead means the clock stepped back since (an NTP step, a
-- fail-over to a replica whose clock is behind): it is read as a bucket just
-- emptied, not as a lock-out for the size of the step.
-- Returns the backlog, and whether it was clamped.
local function backlog_of(tat, tolerance)
  if not tat then
    return 0, false
  end
  local ahead = (tonumber(string.sub(tat, 1, -10)) - now_s) * 1e9
    + (tonumber(string.sub(tat, -9)) - now_ns)
  if ahead > tolerance then
    return tolerance, true
  end
  if ahead > 0 then
    return ahead, false
  end
  return 0, false
end

local function remaining_for(tolerance, backlog, interval)
  local room = tolerance - backlog
  if room <= 0 then
    return 0
  end
  return math.floor(room / interval)
end

local count = #KEYS
local backlogs = {}
local stored = {}
local clamped = {}
local decided = {}
local tentative = {}
local all_allowed = true
for i = 1, count do
  local interval = tonumber(ARGV[3 * i - 1])
  local tolerance = tonumber(ARGV[3 * i])
  local increment = tonumber(ARGV[3 * i + 1])
  local backlog = tentative[KEYS[i]]
  if backlog == nil then
    stored[i] = redis.call('GET', KEYS[i])
    backlog, clamped[i] = backlog_of(stored[i], tolerance)
  end
  backlogs[i] = backlog
  local new_backlog = backlog + increment
  if new_backlog <= tolerance then
    decided[i] = { 1, remaining_for(tolerance, new_backlog, interval), new_backlog, 0, new_backlog }
    tentative[KEYS[i]] = new_backlog
  else
    all_allowed = false
    decided[i] = { 0, remaining_for(tolerance, backlog, interval), backlog, new_backlog - tolerance, -1 }
  end
end

local function tat_after(backlog)
  local total = now_ns + backlog
  local carry = math.floor(total / 1e9)
  return string.format('%d%09d', now_s + carry, total - carry * 1e9)
end

local reply = {}
for i = 1, count do
  local decision = decided[i]
  local tat = stored[i] or '0'
  if all_allowed then
    tat = tat_after(decision[5])
    if tonumber(ARGV[3 * i + 1]) > 0 or clamped[i] then
      -- The key expires when its TAT passes: idle state and no state mean
      -- the same, so memory is bounded by the keys active right now.
      redis.call('SET', KEYS[i], tat, 'PX', math.max(1, math.ceil(decision[5] / 1e6)))
    end
  elseif clamped[i] then
    -- Not a consumption: the state is written back as it was read, so the
    -- clamp holds as the clock moves on (left as it was, the TAT would be
    -- clamped again at every check and refuse for the size of the step).
    tat = tat_after(backlogs[i])
    redis.call('SET', KEYS[i], tat, 'PX', math.max(1, math.ceil(backlogs[i] / 1e6)))
    if decision[1] == 1 then
      local interval = tonumber(ARGV[3 * i - 1])
      decision = { 1, remaining_for(tonumber(ARGV[3 * i]), backlogs[i], interval), backlogs[i], 0 }
    end
  elseif decision[1] == 1 then
    -- Nothing is consumed: an admitting check reports its state as it is
    -- (a check of cost 0).
    local interval = tonumber(ARGV[3 * i - 1])
    local tolerance = tonumber(ARGV[3 * i])
    local backlog = backlogs[i]
    if backlog <= tolerance then
      decision = { 1, remaining_for(tolerance, backlog, interval), backlog, 0 }
      tat = tat_after(backlog)
    else
      decision = { 0, 0, backlog, backlog - tolerance }
    end
  end
  reply[#reply + 1] = decision[1]
  reply[#reply + 1] = decision[2]
  reply[#reply + 1] = decision[3]
  reply[#reply + 1] = decision[4]
  reply[#reply + 1] = tat
end
return reply
