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

--- :[range]LocalAIAsk {question}: with a range, those lines go along as context; no question:
--- ask for one.
function M.command(cmd)
  local context
  if cmd.range > 0 then
    local buf = api.nvim_get_current_buf()
    context = { lines = api.nvim_buf_get_lines(buf, cmd.line1 - 1, cmd.line2, false), filetype = vim.bo[buf].filetype }
  end
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
