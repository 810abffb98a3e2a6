-- Inline completion: after a pause in typing, ask the daemon to fill in the middle between
-- the text before and after the cursor, and show the answer as ghost text (an extmark).
-- One request at a time: any keystroke that does not type the suggestion cancels the one in
-- flight; typing that does keeps it (and the request streams on).
local config = require("localai.config")
local client = require("localai.client")
local ring = require("localai.ring")
local util = require("localai.util")

local api = vim.api
local M = {}

local ns = api.nvim_create_namespace("localai.complete")
local MARK = 1

-- The suggestion: at most one, in the buffer and at the position where it was asked for.
local s = {
  timer = nil, ---@type uv.uv_timer_t?
  req = nil, ---@type localai.Request?   the request in flight
  buf = nil, ---@type integer?
  row = 0, -- anchor: the cursor when the request was sent (0-based row, byte column)
  col = 0,
  text = "", -- what the daemon sent so far
}

--- Whether automatic suggestions are on for a buffer (filetype table, buftype, b:localai_enabled).
function M.enabled(buf)
  buf = buf or api.nvim_get_current_buf()
  if vim.b[buf].localai_enabled ~= nil then
    return vim.b[buf].localai_enabled == true or vim.b[buf].localai_enabled == 1
  end
  if vim.bo[buf].buftype ~= "" or not vim.bo[buf].modifiable then
    return false
  end
  local fts = config.options.complete.filetypes or {}
  local v = fts[vim.bo[buf].filetype]
  if v == nil then
    v = fts["*"]
  end
  if type(v) == "function" then
    v = v(buf)
  end
  return v ~= false and v ~= nil
end

--- prefix/suffix around (row, col): `prefix_lines` lines before, `suffix_lines` after (the
--- daemon leaves out their far ends when they do not fit the model's context). Third: the
--- lines of both.
function M.context(buf, row, col)
  local cfg = config.options.complete
  local n = api.nvim_buf_line_count(buf)
  local before = api.nvim_buf_get_lines(buf, math.max(0, row - cfg.prefix_lines), row, false)
  local line = api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ""
  local after = api.nvim_buf_get_lines(buf, row + 1, math.min(n, row + 1 + cfg.suffix_lines), false)
  local lines = vim.list_extend(vim.list_extend({}, before), { line, unpack(after) })
  before[#before + 1] = line:sub(1, col)
  table.insert(after, 1, line:sub(col + 1))
  return table.concat(before, "\n"), table.concat(after, "\n"), lines
end

-- Lines with six or more non-blank characters are evidence of a repeat; `}` or `end` alone
-- are not, so a repeat must go on to the next line (three at most).
local function must_match(target)
  local pos = 0
  for _ = 1, 3 do
    if pos >= #target then
      break
    end
    local nl = target:find("\n", pos + 1, true)
    local stop = nl or #target
    if #target:sub(pos + 1, stop):gsub("%s", "") >= 6 then
      return stop
    end
    pos = stop
  end
  return pos
end

--- `text` cut where it starts to repeat what follows the cursor, as the daemon cuts it (the
--- buffer may have changed, or an older daemon answered): the whole of it when it begins with
--- `suffix`, or from a line that begins the next non-blank lines after the cursor's line.
--- `prefix` ends with the cursor's line up to the cursor. Trailing blanks before the cut go too.
function M.trim_repeat(text, prefix, suffix)
  local cur_pre = prefix:match("[^\n]*$")
  local blank_pre = not cur_pre:match("%S")
  local below = blank_pre and (cur_pre .. suffix) or (suffix:match("^[^\n]*\n(.*)$") or "")
  while below ~= "" and not below:match("^[^\n]*"):match("%S") do
    below = below:match("^[^\n]*\n(.*)$") or ""
  end
  local cands = {} -- {start (0-based), lead, target}
  if suffix:match("%S") then
    cands[#cands + 1] = { 0, "", suffix }
  end
  if below:match("%S") then
    if blank_pre then
      cands[#cands + 1] = { 0, cur_pre, below }
    end
    local i = text:find("\n", 1, true)
    while i do
      cands[#cands + 1] = { i, "", below }
      i = text:find("\n", i + 1, true)
    end
  end
  for _, c in ipairs(cands) do
    local start, lead, target = c[1], c[2], c[3]
    local seen = lead .. text:sub(start + 1)
    local need = must_match(target)
    local rep
    if #seen >= need then
      rep = seen:sub(1, need) == target:sub(1, need)
    else
      rep = seen:match("%S") ~= nil and target:sub(1, #seen) == seen
    end
    if rep then
      return (text:sub(1, start):gsub("%s+$", ""))
    end
  end
  return text
end

-- What the user typed since the anchor, or nil when the cursor left the suggestion.
local function typed()
  if s.buf ~= api.nvim_get_current_buf() then
    return nil
  end
  local cur = api.nvim_win_get_cursor(0)
  local row, col = cur[1] - 1, cur[2]
  if row < s.row or (row == s.row and col < s.col) or row - s.row > 100 then
    return nil
  end
  local ok, text = pcall(util.get_text, s.buf, s.row, s.col, row, col)
  return ok and text or nil
end

-- The part of the suggestion still to show (trailing blanks trimmed), or nil when what was
-- typed departs from it.
local function remaining()
  local t = typed()
  if t == nil then
    return nil
  end
  if s.text:sub(1, #t) ~= t then
    return nil -- (typing ahead of the stream counts as departing: the text is not known yet)
  end
  return (s.text:sub(#t + 1):gsub("%s+$", ""))
end

local function render(text)
  if not s.buf or not api.nvim_buf_is_valid(s.buf) then
    return
  end
  if text == nil or text == "" then
    pcall(api.nvim_buf_del_extmark, s.buf, ns, MARK)
    return
  end
  local cur = api.nvim_win_get_cursor(0)
  local lines = vim.split(text, "\n", { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], "LocalAISuggestion" } }
  end
  api.nvim_buf_set_extmark(s.buf, ns, cur[1] - 1, cur[2], {
    id = MARK,
    virt_text = lines[1] ~= "" and { { lines[1], "LocalAISuggestion" } } or nil,
    virt_text_pos = "inline",
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = "combine",
    priority = 65535,
  })
end

--- Hide the suggestion and cancel the request in flight.
function M.clear()
  if s.timer then
    s.timer:stop()
  end
  local req = s.req
  s.req = nil
  if req then
    req:cancel()
  end
  if s.buf and api.nvim_buf_is_valid(s.buf) then
    api.nvim_buf_clear_namespace(s.buf, ns, 0, -1)
  end
  s.buf, s.text = nil, ""
end

local function refresh()
  local rest = remaining()
  if rest == nil then
    M.clear()
  else
    render(rest)
  end
end

--- Ask for a suggestion at the cursor now (cancelling the one in flight).
function M.trigger()
  util.highlights()
  M.clear()
  local buf = api.nvim_get_current_buf()
  local cur = api.nvim_win_get_cursor(0)
  local row, col = cur[1] - 1, cur[2]
  local prefix, suffix, lines = M.context(buf, row, col)
  local cfg = config.options.complete
  local params = {
    prefix = prefix,
    suffix = suffix,
    extra = ring.extra(lines),
    model = config.options.model,
    max_tokens = cfg.max_tokens,
    temperature = cfg.temperature,
    stop = (cfg.stop and #cfg.stop > 0) and cfg.stop or nil,
    t_max_predict_ms = cfg.t_max_predict_ms,
  }
  s.buf, s.row, s.col, s.text = buf, row, col, ""
  if cfg.ring_n_chunks > 0 then
    ring.add_around_cursor() -- as llama.vim: what was around earlier requests is context later
  end
  local req
  req = client.request("complete", params, {
    on_token = function(text)
      if s.req == req then
        s.text = s.text .. text
        refresh()
      end
    end,
    on_done = function(ev)
      if s.req ~= req or ev.finish_reason == "cancelled" then
        return
      end
      s.req = nil
      s.text = ev.text or s.text
      -- never repeat what follows the cursor (the daemon cuts it too; the buffer may differ)
      local prefix_now, suffix_now = M.context(s.buf, s.row, s.col)
      s.text = M.trim_repeat(s.text, prefix_now, suffix_now)
      -- "foo)" before an auto-paired ")" would leave "foo))": drop what the line already has
      local after = vim.trim((api.nvim_buf_get_lines(s.buf, s.row, s.row + 1, false)[1] or ""):sub(s.col + 1))
      local text = s.text:gsub("%s+$", "")
      if after ~= "" and not text:find("\n", 1, true) and #text > #after and text:sub(-#after) == after then
        s.text = text:sub(1, -#after - 1)
      end
      local rest = remaining()
      if rest == nil or rest == "" then
        M.clear()
      else
        render(rest)
      end
    end,
    on_error = function(err)
      if s.req == req then
        s.req = nil
        M.clear()
        util.notify(err.message, vim.log.levels.WARN, 30000)
      end
    end,
  })
  s.req = req
end

-- Automatic requests: not mid-line (unless configured), only in insert mode.
local function want_auto()
  if not config.options.complete.auto or not M.enabled() then
    return false
  end
  if config.options.complete.mid_line then
    return true
  end
  local col = api.nvim_win_get_cursor(0)[2]
  local after = api.nvim_get_current_line():sub(col + 1)
  return after:match("^[%s%)%]%}\"'`;:,]*$") ~= nil
end

local function debounce()
  s.timer = s.timer or vim.uv.new_timer()
  s.timer:stop()
  s.timer:start(config.options.complete.debounce_ms, 0, vim.schedule_wrap(function()
    if api.nvim_get_mode().mode:sub(1, 1) == "i" and want_auto() then
      M.trigger()
    end
  end))
end

--- Cursor moved or text changed in insert mode: keep a suggestion the user types through,
--- otherwise drop it (cancelling its request) and ask again after the debounce.
function M.on_change()
  if s.buf then
    local rest = remaining()
    if rest ~= nil and (rest ~= "" or s.req) then
      return render(rest)
    end
    M.clear()
  end
  if want_auto() then
    debounce()
  end
end

--- The suggestion left to accept ("" when none is shown).
function M.visible()
  if not s.buf then
    return ""
  end
  return remaining() or ""
end

--- Insert the suggestion, or its next word or line.
---@param what? "all"|"word"|"line"
---@return boolean accepted
function M.accept(what)
  local rest = M.visible()
  if rest == "" then
    return false
  end
  local piece = rest
  if what == "word" then
    piece = rest:match("^%s*[%w_]+") or rest:match("^%s*[^%w_%s]+") or rest
  elseif what == "line" then
    piece = rest:match("^\n?[^\n]*")
  end
  if piece == rest then
    M.clear() -- all of it: stop the stream too
  end
  local buf = api.nvim_get_current_buf()
  local cur = api.nvim_win_get_cursor(0)
  local row, col = cur[1] - 1, cur[2]
  local lines = vim.split(piece, "\n", { plain = true })
  api.nvim_buf_set_text(buf, row, col, row, col, lines)
  local last = lines[#lines]
  api.nvim_win_set_cursor(0, { row + #lines, (#lines == 1 and col or 0) + #last })
  if s.buf then
    refresh()
  end
  return true
end

--- Test and statusline hook: {pending, text, id, buf, row, col}.
function M.state()
  return { pending = s.req ~= nil, text = s.text, id = s.req and s.req.id, buf = s.buf, row = s.row, col = s.col }
end

function M.attach()
  ring.attach()
  local group = api.nvim_create_augroup("localai.complete", { clear = true })
  api.nvim_create_autocmd({ "InsertEnter", "CursorMovedI", "TextChangedI", "TextChangedP" }, {
    group = group,
    callback = function()
      M.on_change()
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    callback = function()
      M.clear()
    end,
  })
end

return M
