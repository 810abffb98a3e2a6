-- Extra context for completions, as llama.vim's ring buffer gathers it: chunks of up to
-- `complete.ring_chunk_size` lines from files the user worked in recently (text yanked, the
-- lines around the cursor when entering, leaving or writing a buffer), at most
-- `complete.ring_n_chunks`, newest last. Each completion request sends them as `extra`
-- ({filename, text}); a model with FIM tokens reads them as other files of the project.
local config = require("localai.config")

local api = vim.api
local M = {}

---@type {filename: string, lines: string[], text: string}[]
M.chunks = {}

-- Share of lines two chunks have in common: 0 (none) .. 1 (the same lines).
local function similarity(a, b)
  if #a + #b == 0 then
    return 1
  end
  local set, common = {}, 0
  for _, line in ipairs(b) do
    set[line] = true
  end
  for _, line in ipairs(a) do
    if set[line] then
      common = common + 1
    end
  end
  return 2 * common / (#a + #b)
end

-- A buffer whose text may go out as context: a listed, loaded file buffer.
local function is_file(buf)
  return api.nvim_buf_is_loaded(buf) and vim.bo[buf].buftype == "" and vim.bo[buf].buflisted
    and api.nvim_buf_get_name(buf) ~= ""
end

--- Add `lines` (from buffer `buf`) as a chunk: too short ones (< 3 lines) are skipped, long
--- ones cut to `ring_chunk_size` lines, a chunk much like a kept one replaces it, the oldest
--- goes when the ring is full.
function M.add(buf, lines)
  local cfg = config.options.complete
  if (cfg.ring_n_chunks or 0) <= 0 or not is_file(buf) or #lines < 3 then
    return
  end
  if #lines > cfg.ring_chunk_size then
    lines = vim.list_slice(lines, 1, cfg.ring_chunk_size)
  end
  local chunk = {
    filename = vim.fn.fnamemodify(api.nvim_buf_get_name(buf), ":~:."),
    lines = lines,
    text = table.concat(lines, "\n") .. "\n",
  }
  for i = #M.chunks, 1, -1 do
    if M.chunks[i].text == chunk.text or similarity(M.chunks[i].lines, lines) > 0.9 then
      table.remove(M.chunks, i)
    end
  end
  table.insert(M.chunks, chunk)
  while #M.chunks > cfg.ring_n_chunks do
    table.remove(M.chunks, 1)
  end
end

--- The lines around the cursor of the current window's buffer, as a chunk.
function M.add_around_cursor()
  local buf = api.nvim_get_current_buf()
  local half = math.floor(config.options.complete.ring_chunk_size / 2)
  local row = api.nvim_win_get_cursor(0)[1]
  M.add(buf, api.nvim_buf_get_lines(buf, math.max(0, row - 1 - half), row - 1 + half, false))
end

--- The chunks to send with a completion whose local context is `context` (lines): those
--- mostly made of its lines are left out (they would only make the model repeat them).
---@return {filename: string, text: string}[]|nil
function M.extra(context)
  local set = {}
  for _, line in ipairs(context) do
    set[line] = true
  end
  local out = {}
  for _, c in ipairs(M.chunks) do
    local inside = 0
    for _, line in ipairs(c.lines) do
      inside = inside + (set[line] and 1 or 0)
    end
    if inside <= #c.lines / 2 then
      out[#out + 1] = { filename = c.filename, text = c.text }
    end
  end
  return #out > 0 and out or nil
end

function M.attach()
  local group = api.nvim_create_augroup("localai.ring", { clear = true })
  api.nvim_create_autocmd("TextYankPost", {
    group = group,
    callback = function(ev)
      if vim.v.event.operator == "y" then
        M.add(ev.buf, vim.v.event.regcontents)
      end
    end,
  })
  api.nvim_create_autocmd({ "BufEnter", "BufLeave", "BufWritePost" }, {
    group = group,
    callback = function()
      M.add_around_cursor()
    end,
  })
end

return M
