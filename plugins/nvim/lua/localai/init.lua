-- localai for Neovim: inline completion, rewrite the selection, ask about code, all through
-- the local daemon (`localai serve`). `setup(opts)` turns on suggestions while typing and the
-- mappings; the commands (plugin/localai.lua) work without it, and it defines them when
-- plugin/ was not sourced. Options: lua/localai/config.lua.
local config = require("localai.config")

local M = {}

M.did_setup = false

-- An insert-mode key that acts on a visible suggestion and keeps its own meaning otherwise.
local function suggestion_key(lhs, what, desc)
  if not lhs then
    return
  end
  vim.keymap.set("i", lhs, function()
    if require("localai.complete").visible() == "" then
      return lhs
    end
    if what == "dismiss" then
      return "<Cmd>lua require('localai.complete').clear()<CR>"
    end
    return ("<Cmd>lua require('localai.complete').accept(%q)<CR>"):format(what)
  end, { expr = true, silent = true, desc = "localai: " .. desc })
end

local function keymaps()
  local k = config.options.keymaps
  suggestion_key(k.accept, "all", "accept the suggestion")
  suggestion_key(k.accept_word, "word", "accept a word of the suggestion")
  suggestion_key(k.accept_line, "line", "accept a line of the suggestion")
  suggestion_key(k.dismiss, "dismiss", "dismiss the suggestion")
  if k.complete then
    vim.keymap.set("i", k.complete, "<Cmd>LocalAIComplete<CR>", { desc = "localai: suggest a completion" })
  end
  if k.rewrite then
    vim.keymap.set("x", k.rewrite, ":LocalAIRewrite<CR>", { desc = "localai: rewrite the selection" })
  end
  if k.ask then
    vim.keymap.set("n", k.ask, "<Cmd>LocalAIAsk<CR>", { desc = "localai: ask a question" })
    vim.keymap.set("x", k.ask, ":LocalAIAsk<CR>", { desc = "localai: ask about the selection" })
  end
end

--- Configure the plugin (see `:help localai-config`): suggestions while typing, mappings.
---@param opts? table
function M.setup(opts)
  -- Neovim sources plugin/ only for 'runtimepath' entries present at startup; after a later
  -- `:set rtp+=...` the commands would be missing.
  if not vim.g.loaded_localai then
    vim.cmd.runtime("plugin/localai.lua")
  end
  config.setup(opts)
  require("localai.util").highlights()
  require("localai.complete").attach()
  keymaps()
  M.did_setup = true
end

--- Ask for a suggestion at the cursor now.
function M.complete()
  require("localai.complete").trigger()
end

--- Accept the suggestion (what: "all" | "word" | "line"); false when none is shown, so a
--- custom <Tab> can fall back: `if not require("localai").accept() then ... end`.
function M.accept(what)
  return require("localai.complete").accept(what or "all")
end

function M.dismiss()
  require("localai.complete").clear()
end

--- Rewrite lines [line1, line2] (1-based) of the current buffer as `instruction` says.
function M.rewrite(instruction, line1, line2)
  require("localai.rewrite").command({ args = instruction or "", line1 = line1, line2 = line2, range = 1 })
end

function M.rewrite_accept()
  require("localai.rewrite").accept()
end

function M.rewrite_reject()
  require("localai.rewrite").reject()
end

--- Ask `question` in a floating window; `lines` (optional) go along as context.
function M.ask(question, lines)
  return require("localai.ask").ask(question, lines and { lines = lines, filetype = vim.bo.filetype } or nil)
end

function M.status()
  require("localai.status").show()
end

return M
