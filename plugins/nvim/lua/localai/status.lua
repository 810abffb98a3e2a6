-- :LocalAIStatus: the daemon (pid, socket), its model, and the timings of this editor's last
-- request. Asks the daemon without starting one.
local client = require("localai.client")
local config = require("localai.config")

local M = {}

local function ms(v)
  return v and ("%.0f ms"):format(v) or "?"
end

--- The timings of the last finished generating request, as one line.
function M.last_line()
  local last = client.last_generation()
  if not last then
    return "last request: none yet"
  end
  local t = last.timings
  local per_tok = (t.predicted_n or 0) > 0 and (" (%.1f ms/token)"):format(t.predicted_ms / t.predicted_n) or ""
  return ("last request: %s, %s: prompt %d tokens (%d cached) in %s, %d tokens generated in %s%s, "
    .. "first token after %s"):format(last.method, last.finish_reason or "?", t.prompt_n or 0, t.cache_n or 0,
    ms(t.prompt_ms), t.predicted_n or 0, ms(t.predicted_ms), per_tok, ms(t.ttft_ms))
end

--- cb(lines, ok): the status as text lines.
function M.lines(cb)
  local path = config.socket()
  client.call("status", nil, function(err, st)
    if err then
      return cb({ ("localai daemon: not running (%s)"):format(err.message), M.last_line() }, false)
    end
    local lines = {
      ("localai daemon: running (pid %d, version %s) on %s"):format(st.pid, st.version or "?", st.socket or path),
    }
    local models = st.models or {}
    if #models == 0 then
      lines[#lines + 1] = ("model: none loaded (default %s; loads on the next request)"):format(st.default_model or "?")
    end
    for _, m in ipairs(models) do
      lines[#lines + 1] = ("model: %s (%s %s, %s, n_ctx %d)%s"):format(m.name, m.arch, m.quant, m.backend, m.n_ctx,
        m.busy and ", busy" or "")
    end
    lines[#lines + 1] = ("requests: %d served, %d running, %d cancelled; tokens: %d generated, %d from the prompt cache")
      :format(st.requests_served or 0, st.active or 0, st.cancelled or 0, st.tokens_generated or 0, st.tokens_cached or 0)
    lines[#lines + 1] = M.last_line()
    cb(lines, true)
  end, { autostart = false })
end

function M.show()
  M.lines(function(lines, ok)
    local chunks = {}
    for i, l in ipairs(lines) do
      chunks[#chunks + 1] = { l .. (i < #lines and "\n" or ""), (i == 1 and not ok) and "WarningMsg" or "Normal" }
    end
    vim.api.nvim_echo(chunks, true, {})
  end)
end

return M
