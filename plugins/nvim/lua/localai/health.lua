-- :checkhealth localai: Neovim, the `localai` command, the daemon on the socket, the model.
local client = require("localai.client")
local config = require("localai.config")

local M = {}

-- A request run to its end while :checkhealth waits (never starts a daemon).
local function call(method, timeout_ms)
  local done, value, err = false, nil, nil
  client.call(method, nil, function(e, v)
    done, value, err = true, v, e
  end, { autostart = false })
  if not vim.wait(timeout_ms or 5000, function()
    return done
  end, 10) then
    return nil, { code = "timeout", message = ("no answer to `%s` within %d ms"):format(method, timeout_ms or 5000) }
  end
  return value, err
end

function M.check()
  local health = vim.health
  health.start("localai")

  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. tostring(vim.version()))
  else
    health.error("Neovim 0.10 or newer is required (vim.uv, inline virtual text)")
  end
  if not require("localai").did_setup then
    health.warn("require('localai').setup() was not called: no automatic completion, no mappings",
      { "call require('localai').setup({}) (lazy.nvim: `opts = {}`)" })
  end

  local cmd = config.options.daemon.cmd
  local exe = type(cmd) == "table" and cmd[1] or nil
  if exe and vim.fn.executable(exe) == 1 then
    health.ok(("`%s` found: %s"):format(exe, vim.fn.exepath(exe)))
  elseif config.options.daemon.autostart then
    health.warn(("`%s` is not on PATH: the plugin cannot start the daemon"):format(tostring(exe)),
      { ("install localai: `%s`"):format(require("localai.util").install_hint()), "or set `daemon.cmd` in setup() to the command that starts it" })
  else
    health.info(("`%s` is not on PATH (daemon.autostart is off)"):format(tostring(exe)))
  end

  local path = config.socket()
  local st, err = call("status")
  if err then
    local what = err.code == "daemon_not_running" and ("no localai daemon answers on %s"):format(path)
      or ("no answer from the daemon on %s: %s"):format(path, err.message)
    health.error(what, {
      "start one: `localai serve --background`",
      "or keep daemon.autostart = true (the default) with `localai` on PATH: the first request starts it",
      "a daemon on another socket? set LOCALAI_SOCKET or setup({ socket = ... })",
    })
    return
  end
  health.ok(("daemon running on %s (pid %d, version %s, protocol %s)"):format(path, st.pid, st.version or "?",
    tostring(st.protocol or "?")))

  local listing, lerr = call("actions")
  if lerr or not listing then
    health.warn("the daemon did not list its actions: " .. (lerr and lerr.message or "no answer"),
      { "a daemon older than this plugin? restart it: `localai stop; localai serve --background`" })
  else
    local names = {}
    for _, a in ipairs(listing.actions or {}) do
      names[#names + 1] = a.name
    end
    health.ok(("actions (%d): %s"):format(#names, table.concat(names, ", ")))
    for _, e in ipairs(listing.errors or {}) do
      health.error(("action file %s:%d: %s"):format(e.file, e.line, e.message),
        { "fix the file: the daemon reloads it when it changes", "`localai actions` lists the same" })
    end
  end

  local want = config.options.model or st.default_model
  local models = call("models") or {}
  for _, m in ipairs(models.models or {}) do
    if m.name == want or m.path == want then
      if m.downloaded then
        health.ok(("model %s: %s"):format(m.name, m.path))
      else
        health.error(("model %s is not downloaded"):format(m.name), { ("run `localai pull %s`"):format(m.name) })
      end
      return
    end
  end
  if want and want:match("%.gguf$") then
    if vim.fn.filereadable(want) == 1 then
      health.ok("model file " .. want)
    else
      health.error("no model file at " .. want, { "fix `model` in setup(), or `localai pull` a catalog model" })
    end
  else
    health.error(("model %s is not in the catalog"):format(tostring(want)), { "`localai models` lists the known models" })
  end
end

return M
