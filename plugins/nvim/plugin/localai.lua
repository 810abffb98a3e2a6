-- Commands only; everything else loads on first use from lua/localai/ (see :help localai).
if vim.g.loaded_localai then
  return
end
vim.g.loaded_localai = true

local command = vim.api.nvim_create_user_command

command("LocalAIComplete", function()
  require("localai.complete").trigger()
end, { desc = "localai: suggest a completion at the cursor" })
command("LocalAIRewrite", function(cmd)
  require("localai.rewrite").command(cmd)
end, { range = true, nargs = "*", desc = "localai: rewrite the range as instructed" })
command("LocalAIAccept", function()
  require("localai.rewrite").accept()
end, { desc = "localai: apply the pending rewrite" })
command("LocalAIReject", function()
  require("localai.rewrite").reject()
end, { desc = "localai: discard the pending rewrite" })
command("LocalAIAsk", function(cmd)
  require("localai.ask").command(cmd)
end, { range = true, nargs = "*", desc = "localai: ask a question (about the range)" })
command("LocalAI", function(cmd)
  require("localai.actions").command(cmd)
end, {
  range = true,
  nargs = "*",
  complete = function(...)
    return require("localai.actions").complete(...)
  end,
  desc = "localai: run an action over the range or at the cursor",
})
command("LocalAIStatus", function()
  require("localai.status").show()
end, { desc = "localai: show the daemon, the model and the last request's timings" })
