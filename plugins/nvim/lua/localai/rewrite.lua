-- Rewrite a range by instruction: stream the replacement, show it as a diff against the
-- original (old lines highlighted, new ones as virtual lines), and on accept put it in with one
-- nvim_buf_set_text (one undo step). Until then the buffer is never touched, so reject leaves
-- it exactly as it was.
local config = require("localai.config")
local client = require("localai.client")
local util = require("localai.util")

local api = vim.api
local M = {}

local ns_range = api.nvim_create_namespace("localai.rewrite.range") -- tracks the range through edits
local ns_view = api.nvim_create_namespace("localai.rewrite") -- the diff
local diff = vim.text and vim.text.diff or vim.diff

---@class localai.Rewrite
---@field buf integer
---@field mark integer    extmark spanning the range
---@field linewise boolean
---@field old string[]    the lines of the original text
---@field text string     the replacement so far
---@field req localai.Request?
---@field done boolean
local pending = {} ---@type table<integer, localai.Rewrite>

local function range(p)
  local m = api.nvim_buf_get_extmark_by_id(p.buf, ns_range, p.mark, { details = true })
  return m[1], m[2], m[3].end_row, m[3].end_col
end

local function pad(line, width)
  return line .. string.rep(" ", math.max(0, width - vim.fn.strdisplaywidth(line)))
end

local function render(p)
  api.nvim_buf_clear_namespace(p.buf, ns_view, 0, -1)
  local srow, scol, erow, ecol = range(p)
  local width = api.nvim_win_get_width(0)
  local new = vim.split(p.text, "\n", { plain = true })
  local keys = config.options.keymaps
  local hint = not p.done and " localai: rewriting…"
    or config.options.rewrite.confirm and (" localai: %s%s accept · %s reject"):format(
      p.text == table.concat(p.old, "\n") and "no change · " or "",
      keys.rewrite_accept or ":LocalAIAccept", keys.rewrite_reject or ":LocalAIReject")
    or " localai: applying…"
  api.nvim_buf_set_extmark(p.buf, ns_view, srow, 0, { virt_text = { { hint, "LocalAIHint" } }, virt_text_pos = "eol" })

  local function removed(row)
    api.nvim_buf_set_extmark(p.buf, ns_view, row, 0, { line_hl_group = "LocalAIRewriteOld" })
  end
  local function added(row, lines, above)
    local virt = {}
    for _, l in ipairs(lines) do
      virt[#virt + 1] = { { pad(l, width), "LocalAIRewriteNew" } }
    end
    if #virt > 0 then
      api.nvim_buf_set_extmark(p.buf, ns_view, row, 0, { virt_lines = virt, virt_lines_above = above })
    end
  end

  if p.linewise and p.done then -- a line diff: only what changes is marked
    local hunks = diff(table.concat(p.old, "\n") .. "\n", p.text .. "\n", { result_type = "indices" })
    for _, h in ipairs(hunks) do
      local sa, ca, sb, cb = unpack(h)
      for i = sa, sa + ca - 1 do
        removed(srow + i - 1)
      end
      local lines = vim.list_slice(new, sb, sb + cb - 1)
      if ca == 0 and sa == 0 then
        added(srow, lines, true)
      else
        added(srow + (ca > 0 and sa + ca - 1 or sa) - 1, lines, false)
      end
    end
  else -- while streaming, and for a part of a line: the old text marked, the new one below
    if p.linewise then
      for row = srow, erow do
        removed(row)
      end
    else
      api.nvim_buf_set_extmark(p.buf, ns_view, srow, scol, { end_row = erow, end_col = ecol, hl_group = "LocalAIRewriteOld" })
    end
    added(erow, p.text ~= "" and new or {}, false)
  end
end

--- Drop the pending rewrite of `buf` (cancelling its request); the buffer stays as it is.
function M.clear(buf)
  buf = buf or api.nvim_get_current_buf()
  local p = pending[buf]
  if not p then
    return
  end
  pending[buf] = nil
  if p.req then
    p.req:cancel()
  end
  if api.nvim_buf_is_valid(buf) then
    api.nvim_buf_clear_namespace(buf, ns_view, 0, -1)
    api.nvim_buf_clear_namespace(buf, ns_range, 0, -1)
    for _, key in ipairs({ "rewrite_accept", "rewrite_reject" }) do
      local lhs = config.options.keymaps[key]
      if lhs then
        pcall(vim.keymap.del, "n", lhs, { buffer = buf })
      end
    end
  end
end

--- Apply the pending rewrite of `buf` as one change.
function M.accept(buf)
  buf = buf or api.nvim_get_current_buf()
  local p = pending[buf]
  if not p then
    return util.notify("no rewrite is waiting in this buffer", vim.log.levels.WARN)
  end
  if not p.done then
    return util.notify("the rewrite is still streaming: wait for it, or reject it", vim.log.levels.WARN)
  end
  local srow, scol, erow, ecol = range(p)
  M.clear(buf)
  vim.go.undolevels = vim.go.undolevels -- start a new undo block: one `u` takes exactly this back
  api.nvim_buf_set_text(buf, srow, scol, erow, ecol, vim.split(p.text, "\n", { plain = true }))
  if api.nvim_get_current_buf() == buf then
    api.nvim_win_set_cursor(0, { srow + 1, scol })
  end
end

--- Discard the pending rewrite of `buf`.
function M.reject(buf)
  buf = buf or api.nvim_get_current_buf()
  if not pending[buf] then
    return util.notify("no rewrite is waiting in this buffer", vim.log.levels.WARN)
  end
  M.clear(buf)
end

--- Rewrite [srow, scol) .. (erow, ecol) (0-based, end exclusive) of `buf` as `instruction` says.
---@param opts {buf?: integer, srow: integer, scol: integer, erow: integer, ecol: integer, linewise: boolean, instruction?: string, action?: table}
--- (`action`: the params of an `action` request to send instead of `rewrite`)
function M.start(opts)
  util.highlights()
  local buf = opts.buf or api.nvim_get_current_buf()
  M.clear(buf) -- one rewrite per buffer
  local old = util.get_text(buf, opts.srow, opts.scol, opts.erow, opts.ecol)
  local p = {
    buf = buf,
    linewise = opts.linewise,
    old = vim.split(old, "\n", { plain = true }),
    text = "",
    done = false,
  }
  p.mark = api.nvim_buf_set_extmark(buf, ns_range, opts.srow, opts.scol, {
    end_row = opts.erow,
    end_col = opts.ecol,
    right_gravity = false,
    end_right_gravity = true,
  })
  pending[buf] = p
  local cfg = config.options.rewrite
  local keys = config.options.keymaps
  if cfg.confirm then
    if keys.rewrite_accept then
      vim.keymap.set("n", keys.rewrite_accept, M.accept, { buffer = buf, nowait = true, desc = "localai: apply the rewrite" })
    end
    if keys.rewrite_reject then
      vim.keymap.set("n", keys.rewrite_reject, M.reject, { buffer = buf, nowait = true, desc = "localai: discard the rewrite" })
    end
  end
  render(p)
  local method, params = "rewrite", {
    text = old,
    instruction = opts.instruction,
    language = vim.bo[buf].filetype ~= "" and vim.bo[buf].filetype or nil,
    model = config.options.model,
    max_tokens = cfg.max_tokens,
    temperature = cfg.temperature,
  }
  if opts.action then -- an action with output "replace" (localai.actions): its request instead
    method, params = "action", opts.action
  end
  local req
  req = client.request(method, params, {
    on_token = function(text)
      if pending[buf] == p then
        p.text = p.text .. text
        render(p)
      end
    end,
    on_done = function(ev)
      if pending[buf] ~= p or ev.finish_reason == "cancelled" then
        return
      end
      p.req, p.done = nil, true
      -- an action's answer after its post-processor, else the streamed text
      p.text = (ev.result and ev.result.text or ev.text or p.text):gsub("\n$", "")
      if p.text == "" then
        M.clear(buf)
        return util.notify("the model returned no text: nothing changed", vim.log.levels.WARN)
      end
      if cfg.confirm then
        render(p)
      else
        M.accept(buf)
      end
    end,
    on_error = function(err)
      if pending[buf] == p then
        p.req = nil
        M.clear(buf)
        util.notify((opts.action and (opts.action.name .. " failed: ") or "rewrite failed: ") .. err.message,
          vim.log.levels.ERROR)
      end
    end,
  })
  p.req = req
end

--- The pending rewrite of `buf` (tests, statusline): {text, done, linewise} or nil.
function M.pending(buf)
  local p = pending[buf or api.nvim_get_current_buf()]
  return p and { text = p.text, done = p.done, linewise = p.linewise } or nil
end

--- :[range]LocalAIRewrite {instruction}: a visual selection made with `v` is rewritten
--- characterwise, any other range linewise; no instruction: ask for one.
function M.command(cmd)
  local buf = api.nvim_get_current_buf()
  local srow, erow = cmd.line1 - 1, cmd.line2 - 1
  local scol, ecol, linewise = 0, #(api.nvim_buf_get_lines(buf, erow, erow + 1, false)[1] or ""), true
  local vs, ve = api.nvim_buf_get_mark(buf, "<"), api.nvim_buf_get_mark(buf, ">")
  if cmd.range == 2 and vim.fn.visualmode() == "v" and vs[1] == cmd.line1 and ve[1] == cmd.line2 then
    local last = api.nvim_buf_get_lines(buf, erow, erow + 1, false)[1] or ""
    scol, linewise = vs[2], false
    -- '> is the first byte of the last selected character; the range ends after it
    local char = vim.fn.strcharpart(last:sub(ve[2] + 1), 0, 1)
    ecol = math.min(#last, ve[2] + math.max(#char, 1))
  end
  local function go(instruction)
    if instruction and vim.trim(instruction) ~= "" then
      M.start({ buf = buf, srow = srow, scol = scol, erow = erow, ecol = ecol, linewise = linewise, instruction = instruction })
    end
  end
  if cmd.args ~= "" then
    go(cmd.args)
  else
    vim.ui.input({ prompt = "Rewrite: " }, go)
  end
end

return M
