-- Ask about code: the question (and the selected lines, as context) goes to the daemon's
-- `chat`, the answer streams into a floating Markdown window; `q` closes it and stops the answer.
local config = require("localai.config")
local client = require("localai.client")
local util = require("localai.util")

local api = vim.api
local M = {}

local function open_window(title)
  local cfg = config.options.ask
  local width = math.max(20, math.floor(vim.o.columns * cfg.width))
  local height = math.max(3, math.floor((vim.o.lines - vim.o.cmdheight) * cfg.height))
  local buf = api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].filetype = "markdown"
  local win = api.nvim_open_win(buf, true, {
    relative = "editor",
    width = width,
    height = height,
    row = math.floor((vim.o.lines - height) / 2) - 1,
    col = math.floor((vim.o.columns - width) / 2),
    style = "minimal",
    border = cfg.border,
    title = " " .. title .. " ",
    title_pos = "center",
  })
  vim.wo[win].wrap = true
  vim.wo[win].linebreak = true
  vim.keymap.set("n", "q", "<Cmd>close<CR>", { buffer = buf, nowait = true, desc = "localai: close" })
  return buf, win
end

local function footer(win, text)
  if api.nvim_win_is_valid(win) then
    pcall(api.nvim_win_set_config, win, { footer = " " .. text .. " ", footer_pos = "right" })
  end
end

--- Ask `question`; `context` (lines of code, optional) is quoted after it.
---@param question string
---@param context? {lines: string[], filetype: string}
---@return integer buf, integer win
function M.ask(question, context)
  local cfg = config.options.ask
  local content = question
  if context and #context.lines > 0 then
    content = ("%s\n\n```%s\n%s\n```"):format(question, context.filetype or "", table.concat(context.lines, "\n"))
  end
  local messages = {}
  if cfg.system and cfg.system ~= "" then
    messages[1] = { role = "system", content = cfg.system }
  end
  messages[#messages + 1] = { role = "user", content = content }

  local title = question:gsub("%s+", " ")
  if #title > 50 then
    title = vim.fn.strcharpart(title, 0, 48) .. "…"
  end
  local buf, win = open_window(title)
  local answer = ""
  local function show(text)
    if api.nvim_buf_is_valid(buf) then
      api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(text, "\n", { plain = true }))
    end
  end
  footer(win, "thinking…")
  local req = client.request("chat", {
    messages = messages,
    model = config.options.model,
    max_tokens = cfg.max_tokens,
    temperature = cfg.temperature,
  }, {
    on_token = function(text)
      answer = answer .. text
      show(answer)
    end,
    on_done = function(ev)
      if ev.finish_reason == "cancelled" then
        return
      end
      show(ev.text or answer)
      local t = ev.timings or {}
      footer(win, ("%s · %d tokens · %.1f s%s"):format(ev.model or "?", t.predicted_n or 0,
        ((t.ttft_ms or 0) + (t.predicted_ms or 0)) / 1000, ev.finish_reason == "length" and " · cut at max_tokens" or ""))
    end,
    on_error = function(err)
      show(("**error** (%s): %s"):format(err.code, err.message))
      footer(win, "error")
      util.notify(err.message, vim.log.levels.ERROR)
    end,
  })
  -- closing the window stops the answer
  api.nvim_create_autocmd("BufWipeout", {
    buffer = buf,
    once = true,
    callback = function()
      req:cancel()
    end,
  })
  return buf, win
end

--- The lines around the cursor: up to `n` above and below, the nearest first while their
--- text stays within `max_chars`. Returns the lines in buffer order.
function M.around_cursor(buf, row, n, max_chars)
  local count = api.nvim_buf_line_count(buf)
  local first, last = row, row - 1 -- 1-based, inclusive; empty to start
  local used = 0
  local function take(r)
    local line = api.nvim_buf_get_lines(buf, r - 1, r, false)[1]
    if used + #line + 1 > max_chars then
      return false
    end
    used = used + #line + 1
    return true
  end
  for d = 0, n do
    local grew = false
    if row + d <= count and row + d == last + 1 and take(row + d) then
      last, grew = row + d, true
    end
    if d > 0 and row - d >= 1 and row - d == first - 1 and take(row - d) then
      first, grew = row - d, true
    end
    if not grew and d > 0 then
      break
    end
  end
  return api.nvim_buf_get_lines(buf, first - 1, last, false)
end

--- :[range]LocalAIAsk {question}: with a range, those lines go along as context, else the code
--- around the cursor (ask.context_lines); no question: ask for one.
function M.command(cmd)
  local buf = api.nvim_get_current_buf()
  local lines
  if cmd.range > 0 then
    lines = api.nvim_buf_get_lines(buf, cmd.line1 - 1, cmd.line2, false)
  elseif vim.bo[buf].buftype == "" and (config.options.ask.context_lines or 0) > 0 then
    local cfg = config.options.ask
    lines = M.around_cursor(buf, api.nvim_win_get_cursor(0)[1], cfg.context_lines, cfg.context_chars or 6000)
    if vim.trim(table.concat(lines, "")) == "" then
      lines = nil
    end
  end
  local context = lines and { lines = lines, filetype = vim.bo[buf].filetype } or nil
  local function go(question)
    if question and vim.trim(question) ~= "" then
      M.ask(question, context)
    end
  end
  if cmd.args ~= "" then
    go(cmd.args)
  else
    vim.ui.input({ prompt = "Ask localai: " }, go)
  end
end

return M
