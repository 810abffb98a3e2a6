-- :LocalAI {action}: run an action (built-in or the user's Python, docs/actions.md) in the
-- daemon over a range or at the cursor, and put its answer where the action says: `replace`
-- shows a diff to accept (the rewrite view, one undo step), `insert` puts it at the cursor
-- (one undo step), `show`, `stdout` and `commandline` open it in a floating window.
local client = require("localai.client")
local config = require("localai.config")
local util = require("localai.util")

local api = vim.api
local M = {}

M.last = nil -- the last action run here: {name, output, text, error} (tests, statusline)

--- The daemon's `actions` answer, waited for (at most `timeout_ms`): {actions, errors} or nil, err.
function M.list(timeout_ms)
  local done, value, err = false, nil, nil
  client.call("actions", nil, function(e, v)
    done, value, err = true, v, e
  end)
  if not vim.wait(timeout_ms or 30000, function()
    return done
  end, 10) then
    return nil, { code = "timeout", message = "the daemon did not list its actions in time" }
  end
  return value, err
end

--- Command-line completion: the names of the daemon's actions.
function M.complete(arglead, cmdline)
  if cmdline:match("^%S*%s+%S+%s") then -- the name is typed: the rest is the instruction
    return {}
  end
  local res = M.list(2000)
  local out = {}
  for _, a in ipairs(res and res.actions or {}) do
    if vim.startswith(a.name, arglead) then
      out[#out + 1] = a.name
    end
  end
  return out
end

local function float(title, text)
  local buf = api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].filetype = "markdown"
  local width = math.max(20, math.floor(vim.o.columns * 0.7))
  local height = math.max(3, math.floor((vim.o.lines - vim.o.cmdheight) * 0.5))
  local win = api.nvim_open_win(buf, true, {
    relative = "editor", width = width, height = height, style = "minimal", border = "rounded",
    row = math.floor((vim.o.lines - height) / 2) - 1, col = math.floor((vim.o.columns - width) / 2),
    title = " " .. title .. " ", title_pos = "center",
  })
  vim.wo[win].wrap = true
  vim.keymap.set("n", "q", "<Cmd>close<CR>", { buffer = buf, nowait = true, desc = "localai: close" })
  local function set(t)
    if api.nvim_buf_is_valid(buf) then
      api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(t, "\n", { plain = true }))
    end
  end
  set(text or "")
  return set
end

-- The range of the command: {srow, scol, erow, ecol (0-based, end exclusive), linewise}, or nil.
local function selection(cmd, buf)
  if cmd.range == 0 then
    return nil
  end
  local srow, erow = cmd.line1 - 1, cmd.line2 - 1
  local scol, ecol, linewise = 0, #(api.nvim_buf_get_lines(buf, erow, erow + 1, false)[1] or ""), true
  local vs, ve = api.nvim_buf_get_mark(buf, "<"), api.nvim_buf_get_mark(buf, ">")
  if cmd.range == 2 and vim.fn.visualmode() == "v" and vs[1] == cmd.line1 and ve[1] == cmd.line2 then
    local last = api.nvim_buf_get_lines(buf, erow, erow + 1, false)[1] or ""
    local char = vim.fn.strcharpart(last:sub(ve[2] + 1), 0, 1)
    scol, ecol, linewise = vs[2], math.min(#last, ve[2] + math.max(#char, 1)), false
  end
  return { srow = srow, scol = scol, erow = erow, ecol = ecol, linewise = linewise }
end

local SEVERITY = { "error", "warning", "info", "hint" }

--- The `context` of an action request: the selection, the file, the cursor, the lines around
--- it, the diagnostics of the selected lines (or the cursor's line), the working directory.
function M.context(buf, sel, instruction)
  local cursor = api.nvim_win_get_cursor(0)
  local n = config.options.actions.context_lines
  local first = math.max(0, cursor[1] - 1 - n)
  local name = api.nvim_buf_get_name(buf)
  local lo, hi = sel and sel.srow or cursor[1] - 1, sel and sel.erow or cursor[1] - 1
  local diags = {}
  for _, d in ipairs(vim.diagnostic.get(buf)) do
    if d.lnum >= lo and d.lnum <= hi then
      diags[#diags + 1] = { line = d.lnum + 1, column = d.col + 1, severity = SEVERITY[d.severity], message = d.message }
    end
  end
  return {
    text = sel and util.get_text(buf, sel.srow, sel.scol, sel.erow, sel.ecol) or nil,
    file = name ~= "" and vim.fn.fnamemodify(name, ":p") or nil,
    filetype = vim.bo[buf].filetype ~= "" and vim.bo[buf].filetype or nil,
    line = cursor[1],
    column = cursor[2] + 1,
    buffer = table.concat(api.nvim_buf_get_lines(buf, first, cursor[1] + n, false), "\n"),
    diagnostics = #diags > 0 and diags or nil,
    cwd = vim.fn.getcwd(),
    instruction = instruction ~= "" and instruction or nil,
    shell = vim.o.shell ~= "" and vim.fn.fnamemodify(vim.o.shell, ":t") or nil,
  }
end

local function failed(name, err)
  M.last = { name = name, error = err.message }
  util.notify(("%s failed: %s"):format(name, err.message), vim.log.levels.ERROR)
end

--- Run action `name` on `sel` (nil: at the cursor) of `buf`.
function M.run(name, sel, instruction, buf)
  buf = buf or api.nvim_get_current_buf()
  local cfg = config.options.actions
  local params = {
    name = name,
    context = M.context(buf, sel, instruction or ""),
    model = config.options.model,
    max_tokens = cfg.max_tokens,
    temperature = cfg.temperature,
  }
  local cursor = api.nvim_win_get_cursor(0)
  client.call("actions", nil, function(lerr, listing)
    local info
    for _, a in ipairs(not lerr and listing.actions or {}) do
      if a.name == name then
        info = a
      end
    end
    if not info then
      local broken = {}
      for _, e in ipairs(not lerr and listing.errors or {}) do
        broken[#broken + 1] = ("%s:%d: %s"):format(e.file, e.line, e.message)
      end
      return failed(name, lerr or { message = ("no action named %q%s"):format(name,
        #broken > 0 and (" (an action file failed to load: " .. table.concat(broken, "; ") .. ")") or "") })
    end
    M.last = { name = name, output = info.output }
    if info.output == "replace" and sel then
      return require("localai.rewrite").start(vim.tbl_extend("force", sel, { buf = buf, action = params }))
    end
    local set, streamed = nil, ""
    if info.output ~= "insert" then
      set = float(name, "…")
    end
    client.request("action", params, {
      on_token = function(text)
        streamed = streamed .. text
        if set then
          set(streamed)
        end
      end,
      on_done = function(ev)
        if ev.finish_reason == "cancelled" then
          return
        end
        local text = ev.result and ev.result.text or ev.text or ""
        M.last.text = text
        if set then
          return set(text)
        end
        if not api.nvim_buf_is_valid(buf) then
          return
        end
        vim.go.undolevels = vim.go.undolevels -- its own undo step
        local row, col = cursor[1] - 1, cursor[2]
        if sel then
          row, col = sel.erow, sel.ecol
        end
        api.nvim_buf_set_text(buf, row, col, row, col, vim.split(text, "\n", { plain = true }))
      end,
      on_error = function(err)
        failed(name, err)
      end,
    })
  end)
end

--- :[range]LocalAI {action} [instruction]
function M.command(cmd)
  local name, rest = (cmd.args or ""):match("^%s*(%S+)%s*(.-)%s*$")
  if not name then
    local res, err = M.list(5000)
    if err or not res then
      return util.notify("cannot list the actions: " .. (err and err.message or "no answer"), vim.log.levels.ERROR)
    end
    local names = {}
    for _, a in ipairs(res.actions) do
      names[#names + 1] = ("%-16s %-11s %s"):format(a.name, a.output, a.help)
    end
    return util.notify("actions:\n" .. table.concat(names, "\n"))
  end
  local buf = api.nvim_get_current_buf()
  M.run(name, selection(cmd, buf), rest, buf)
end

return M
