-- Small helpers shared by the modules: messages that do not flood the screen, highlights.
local M = {}

local last_shown = {} -- message -> time (ms) it was last shown

--- vim.notify with a "localai: " prefix; the same message at most once per `every_ms`
--- (completion errors would otherwise repeat on every keystroke).
---@param msg string
---@param level? integer vim.log.levels.*
---@param every_ms? integer
function M.notify(msg, level, every_ms)
  local now = vim.uv.now()
  if every_ms and last_shown[msg] and now - last_shown[msg] < every_ms then
    return
  end
  last_shown[msg] = now
  vim.notify("localai: " .. msg, level or vim.log.levels.INFO, { title = "localai" })
end

--- Text between two (0-based row, byte col) positions, rows joined with "\n".
function M.get_text(buf, srow, scol, erow, ecol)
  return table.concat(vim.api.nvim_buf_get_text(buf, srow, scol, erow, ecol, {}), "\n")
end

--- How to install the `localai` command. The package on PyPI named localai is another project:
--- localai installs from its repository, which holds this plugin (plugins/nvim/lua/localai/).
function M.install_hint()
  local here = debug.getinfo(1, "S").source:gsub("^@", "")
  local root = vim.fn.fnamemodify(here, ":p:h:h:h:h:h")
  if vim.fn.filereadable(root .. "/pyproject.toml") == 1 then
    return ("pip install %s"):format(vim.fn.fnamemodify(root, ":~"))
  end
  return "pip install . in a clone of the localai repository"
end

local hl_done = false

--- Define the highlight groups once (`default`, so colorschemes and users override them).
--- The ghost text gets its own grey italic rather than a link to Comment, which the default
--- colorscheme colours only with 'termguicolors': in a 256- or 16-colour terminal a
--- suggestion would look like code already typed. Colour 8 is grey in both palettes.
function M.highlights()
  if hl_done then
    return
  end
  hl_done = true
  local function define()
    vim.api.nvim_set_hl(0, "LocalAISuggestion",
      { fg = "#808080", ctermfg = 8, italic = true, cterm = { italic = true }, default = true })
    for name, link in pairs({
      LocalAIHint = "DiagnosticHint",
      LocalAIRewriteOld = "DiffDelete",
      LocalAIRewriteNew = "DiffAdd",
    }) do
      vim.api.nvim_set_hl(0, name, { link = link, default = true })
    end
  end
  define()
  vim.api.nvim_create_autocmd("ColorScheme", {
    group = vim.api.nvim_create_augroup("localai.highlights", { clear = true }),
    callback = define,
  })
end

return M
