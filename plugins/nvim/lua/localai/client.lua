-- The daemon's protocol (docs/protocol.md) over a vim.uv pipe: newline-delimited JSON, one
-- connection, requests multiplexed by id. Nothing here blocks: the socket is read by libuv and
-- every callback runs scheduled on the main loop. When no daemon answers, one is started with
-- `daemon.cmd` (`localai serve --background`) and the waiting requests go out once it answers.
local config = require("localai.config")
local util = require("localai.util")

local uv = vim.uv
local M = {}

---@class localai.Event
---@field id integer
---@field event "token"|"done"|"error"
---@field text? string
---@field finish_reason? string
---@field model? string
---@field timings? table
---@field result? table
---@field code? string
---@field message? string

---@class localai.Handlers
---@field on_token? fun(text: string, ev: localai.Event)
---@field on_done? fun(ev: localai.Event)
---@field on_error? fun(err: {code: string, message: string})

--- The last requests to finish, newest last: {id, method, finish_reason|error, timings, model}.
M.log = {}
local LOG_SIZE = 20

local conn = nil -- {pipe, path, open, buf}
local queue = {} -- requests waiting for the connection
local requests = {} -- id -> request on the wire
local next_id = 0
local starting = false -- a daemon is being started: new requests wait in the queue
local start_failure = nil -- {at, err}: a failed start is not retried on every keystroke
local RETRY_START_MS = 10000

---@class localai.Request
---@field id integer
---@field method string
---@field done boolean
---@field cancelled boolean
local Request = {}
Request.__index = Request

local function remember(entry)
  table.insert(M.log, entry)
  if #M.log > LOG_SIZE then
    table.remove(M.log, 1)
  end
end

local function finish(req, ev, err)
  if req.done then
    return
  end
  req.done = true
  requests[req.id] = nil
  local entry = { id = req.id, method = req.method, cancelled = req.cancelled }
  if err then
    entry.error = err.code
    remember(entry)
    if req.handlers.on_error then
      req.handlers.on_error(err)
    end
    return
  end
  entry.finish_reason, entry.timings, entry.model = ev.finish_reason, ev.timings, ev.model
  remember(entry)
  if req.handlers.on_done then
    req.handlers.on_done(ev)
  end
end

local function encode(id, method, params)
  local msg = { id = id, method = method }
  if params and next(params) ~= nil then
    msg.params = params
  end
  return vim.json.encode(msg) .. "\n"
end

local function disconnect(c, why)
  if conn ~= c then
    return
  end
  conn = nil
  if not c.pipe:is_closing() then
    c.pipe:close()
  end
  local err = {
    code = "disconnected",
    message = ("the daemon closed the connection%s; its log is %s"):format(
      why and (" (" .. why .. ")") or "",
      (c.path:gsub("%.sock$", "")) .. ".log"
    ),
  }
  for _, req in pairs(requests) do
    finish(req, nil, err)
  end
end

local function write(req)
  requests[req.id] = req
  conn.pipe:write(encode(req.id, req.method, req.params), function(err)
    if err then
      local c = conn
      vim.schedule(function()
        if c then
          disconnect(c, err)
        end
      end)
    end
  end)
end

local function dispatch(line)
  if line:match("^%s*$") then
    return
  end
  local ok, ev = pcall(vim.json.decode, line, { luanil = { object = true, array = true } })
  if not ok or type(ev) ~= "table" then
    return
  end
  local req = ev.id ~= nil and requests[ev.id] or nil
  if not req then
    if ev.id == nil and ev.event == "error" then -- about the connection (permission_denied)
      for _, r in pairs(requests) do
        finish(r, nil, { code = ev.code, message = ev.message })
      end
    end
    return
  end
  if ev.event == "token" then
    if req.handlers.on_token and not req.cancelled then
      req.handlers.on_token(ev.text or "", ev)
    end
  elseif ev.event == "done" then
    finish(req, ev)
  elseif ev.event == "error" then
    finish(req, nil, { code = ev.code, message = ev.message })
  elseif ev.event == "notice" then -- e.g. the daemon compiles its kernels (~15 s, once)
    util.notify(ev.text or "")
  end
end

local function fail_queue(err, only)
  local keep = {}
  for _, req in ipairs(queue) do
    if only and not only(req) then
      keep[#keep + 1] = req
    else
      finish(req, nil, err)
    end
  end
  queue = keep
end

local function not_running(path)
  return {
    code = "daemon_not_running",
    message = ("no daemon answers on %s: start one with `localai serve --background`"):format(path),
  }
end

local connect

--- Run `daemon.cmd` with LOCALAI_SOCKET=path; cb(err|nil) once it returns.
local function start_daemon(path, cb)
  local cmd = config.options.daemon.cmd
  if type(cmd) ~= "table" or not cmd[1] or vim.fn.executable(cmd[1]) ~= 1 then
    return cb({
      code = "not_installed",
      message = ("cannot start the daemon: `%s` is not on PATH. Install localai "
        .. "(`%s`) or set `daemon.cmd` in require('localai').setup()"):format(
        tostring(type(cmd) == "table" and cmd[1] or cmd), util.install_hint()
      ),
    })
  end
  util.notify("starting the daemon (" .. table.concat(cmd, " ") .. ")")
  local ok, err = pcall(vim.system, cmd, { text = true, env = { LOCALAI_SOCKET = path } }, function(res)
    vim.schedule(function()
      if res.code == 0 then
        return cb(nil)
      end
      local out = vim.trim((res.stderr or "") .. "\n" .. (res.stdout or ""))
      cb({ code = "daemon_start_failed", message = ("`%s` failed (exit %d)%s"):format(
        table.concat(cmd, " "), res.code, out ~= "" and (":\n" .. out) or "") })
    end)
  end)
  if not ok then
    cb({ code = "daemon_start_failed", message = tostring(err) })
  end
end

local function on_connect_failed(path, uverr, started)
  local missing = uverr:match("^ENOENT") or uverr:match("^ECONNREFUSED")
  if not missing then
    local hint = uverr:match("^EACCES") and ": that socket belongs to another user; set LOCALAI_SOCKET" or ""
    return fail_queue({ code = "connect_failed", message = ("cannot connect to %s: %s%s"):format(path, uverr, hint) })
  end
  -- requests that must not start a daemon (status, health) fail now; the others may wait for one
  fail_queue(not_running(path), function(req)
    return req.autostart == false
  end)
  if #queue == 0 then
    return
  end
  if started or not config.options.daemon.autostart then
    return fail_queue(not_running(path))
  end
  if start_failure and uv.now() - start_failure.at < RETRY_START_MS then
    return fail_queue(start_failure.err)
  end
  starting = true
  start_daemon(path, function(err)
    starting = false
    if err then
      start_failure = { at = uv.now(), err = err }
      return fail_queue(err)
    end
    start_failure = nil
    connect(true)
  end)
end

function connect(started)
  local path = config.socket()
  local pipe = uv.new_pipe(false)
  local c = { pipe = pipe, path = path, open = false, buf = "" }
  conn = c
  local ok, handle, fail = pcall(pipe.connect, pipe, path, function(err)
    vim.schedule(function()
      if conn ~= c then
        return
      end
      if err then
        conn = nil
        pipe:close()
        return on_connect_failed(path, err, started)
      end
      c.open = true
      pipe:read_start(function(rerr, chunk)
        if rerr or not chunk then
          return vim.schedule(function()
            disconnect(c, rerr)
          end)
        end
        -- split here (cheap), decode and dispatch on the main loop
        c.buf = c.buf .. chunk
        local lines = {}
        while true do
          local nl = c.buf:find("\n", 1, true)
          if not nl then
            break
          end
          lines[#lines + 1] = c.buf:sub(1, nl - 1)
          c.buf = c.buf:sub(nl + 1)
        end
        if #lines > 0 then
          vim.schedule(function()
            for _, line in ipairs(lines) do
              dispatch(line)
            end
          end)
        end
      end)
      local waiting = queue
      queue = {}
      for _, req in ipairs(waiting) do
        if not req.done then
          write(req)
        end
      end
    end)
  end)
  if not ok or not handle then -- failed at once (a path too long for a socket, ...)
    conn = nil
    pipe:close()
    on_connect_failed(path, tostring(ok and fail or handle), started)
  end
end

--- Send a request; events arrive through `handlers`, on the main loop.
---@param method string
---@param params? table
---@param handlers? localai.Handlers
---@param opts? {autostart?: boolean}  autostart=false: fail rather than start a daemon
---@return localai.Request
function M.request(method, params, handlers, opts)
  next_id = next_id + 1
  local req = setmetatable({
    id = next_id,
    method = method,
    params = params,
    handlers = handlers or {},
    autostart = not (opts and opts.autostart == false),
    done = false,
    cancelled = false,
  }, Request)
  if conn and conn.open then
    write(req)
  else
    queue[#queue + 1] = req
    if not conn and not starting then
      connect(false)
    end
  end
  return req
end

--- Run a request to its end: cb(err, value), value = done.result for status-like methods,
--- the done event for generating ones.
function M.call(method, params, cb, opts)
  return M.request(method, params, {
    on_done = function(ev)
      cb(nil, ev.result ~= nil and ev.result or ev)
    end,
    on_error = function(err)
      cb(err, nil)
    end,
  }, opts)
end

--- Stop the request: the daemon ends it within one decode step (done, finish_reason
--- "cancelled"); no more tokens reach the handlers.
function Request:cancel()
  if self.done or self.cancelled then
    return
  end
  self.cancelled = true
  if requests[self.id] and conn and conn.open then
    conn.pipe:write(encode("cancel-" .. self.id, "cancel", { target = self.id }))
  else -- not sent yet
    for i, req in ipairs(queue) do
      if req == self then
        table.remove(queue, i)
        break
      end
    end
    finish(self, { id = self.id, event = "done", finish_reason = "cancelled", text = "" })
  end
end

--- The newest generating request that ran to its end (for :LocalAIStatus; a completion
--- cancelled by a keystroke says little).
function M.last_generation()
  for i = #M.log, 1, -1 do
    if M.log[i].timings and M.log[i].finish_reason ~= "cancelled" then
      return M.log[i]
    end
  end
end

function M.connected()
  return conn ~= nil and conn.open
end

--- Close the connection (its running requests are cancelled by the daemon).
function M.close()
  if conn then
    disconnect(conn, "closed by the editor")
  end
end

return M
