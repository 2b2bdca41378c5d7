-- wrk script for scripts/loadtest.sh. Arguments (after `--`): MODE [TOKENS_FILE]
--   none  plain GET (the /healthz phase)
--   one   every request carries the first token of TOKENS_FILE in Cf-Access-Jwt-Assertion
--   all   the tokens of TOKENS_FILE round-robin, each wrk thread starting at its own offset
-- done() prints one `loadtest-result` line that the shell script parses. Responses are not
-- inspected in Lua (a response() callback would slow wrk down); wrk itself counts every
-- status >= 400 in summary.errors.status, and the script fails the phase if it is not 0.

local HEADER = "Cf-Access-Jwt-Assertion"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

local function read_tokens(path)
  local tokens = {}
  local f = assert(io.open(path, "r"), "cannot open the tokens file")
  for line in f:lines() do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  f:close()
  assert(#tokens > 0, "the tokens file is empty")
  return tokens
end

local requests, count, next_index

function init(args)
  local mode = args[1] or "none"
  if mode == "none" then
    return
  end
  local tokens = read_tokens(args[2])
  if mode == "one" then
    -- A static request: wrk builds it once per thread from wrk.headers after init.
    wrk.headers[HEADER] = tokens[1]
    return
  end
  assert(mode == "all", "mode must be none, one or all")
  -- Formatted once here so that request() costs a table lookup, not a string build.
  requests = {}
  for i, token in ipairs(tokens) do
    requests[i] = wrk.format(nil, nil, { [HEADER] = token })
  end
  count = #requests
  local nthreads = tonumber(args[3]) or 1
  next_index = ((thread_index or 1) - 1) * math.floor(count / nthreads) % count + 1
  request = function()
    local r = requests[next_index]
    next_index = next_index % count + 1
    return r
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "loadtest-result requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d " ..
    "status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
