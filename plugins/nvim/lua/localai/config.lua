-- Every option, documented once (`:help localai-config` repeats this table).
local M = {}

---@class localai.Config
M.defaults = {
  -- The daemon's socket. nil: $LOCALAI_SOCKET, else $XDG_RUNTIME_DIR/localai/localai.sock,
  -- else <tempdir>/localai-<uid>/localai.sock (the same rules as the `localai` CLI).
  socket = nil,
  -- Model for every request (catalog name or path to a .gguf). nil: the daemon's default.
  model = nil,

  daemon = {
    -- Start a daemon when none answers on the socket.
    autostart = true,
    -- The command that starts one in the background; it runs with LOCALAI_SOCKET set to the
    -- socket above and must return once the daemon answers.
    cmd = { "localai", "serve", "--background" },
  },

  complete = {
    -- Suggest while typing in insert mode (`:LocalAIComplete` works either way).
    auto = true,
    -- Filetype -> enabled (true/false or a function(bufnr) -> boolean); "*" is the fallback.
    -- A buffer can opt out with `vim.b.localai_enabled = false`.
    filetypes = {
      ["*"] = true,
      help = false,
      gitcommit = false,
      gitrebase = false,
      hgcommit = false,
      svn = false,
      cvs = false,
      ["."] = false,
    },
    -- Wait this long after the last keystroke before asking.
    debounce_ms = 150,
    -- Lines of context before and after the cursor line sent as prefix and suffix.
    prefix_lines = 256,
    suffix_lines = 64,
    -- Also suggest automatically when text other than closing brackets or quotes follows the
    -- cursor on its line.
    mid_line = false,
    -- Generation: short, greedy (the same text for the same context), ends at a blank line.
    max_tokens = 48,
    temperature = 0,
    stop = { "\n\n" },
    -- Stop generating after this many milliseconds (nil: no time limit).
    t_max_predict_ms = nil,
    -- Extra context sent with each request, as llama.vim's ring buffer: up to `ring_n_chunks`
    -- chunks (0: none) of up to `ring_chunk_size` lines from files you yanked from, entered,
    -- left or wrote lately. Models with FIM tokens read them as other files of the project.
    ring_n_chunks = 16,
    ring_chunk_size = 64,
  },

  rewrite = {
    -- Show the rewrite as a diff and wait for accept/reject; false applies it when done.
    confirm = true,
    max_tokens = 512,
    temperature = 0,
  },

  actions = {
    -- :LocalAI {action}: nil = the action's own sampling (docs/actions.md), else these win.
    max_tokens = nil,
    temperature = nil,
    -- Lines above and below the cursor sent as `buffer` (the text around the cursor).
    context_lines = 100,
  },

  ask = {
    system = "You are a helpful programming assistant. Answer concisely, in Markdown.",
    -- Without a range, up to this many lines above and below the cursor go along as context
    -- (0: none), at most `context_chars` characters of them, the nearest lines first.
    context_lines = 30,
    context_chars = 6000,
    max_tokens = 512,
    -- nil: the daemon's default temperature.
    temperature = nil,
    -- Floating window size as a fraction of the editor, and its border.
    width = 0.6,
    height = 0.5,
    border = "rounded",
  },

  -- Mappings; false disables one. accept/accept_word/accept_line/dismiss are insert-mode keys
  -- that fall back to their usual meaning when no suggestion is shown. rewrite_accept and
  -- rewrite_reject are buffer-local and exist only while a rewrite waits for an answer.
  keymaps = {
    accept = "<Tab>",
    accept_word = "<C-B>",
    accept_line = "<S-Tab>",
    dismiss = "<C-]>",
    complete = false, -- insert: ask for a suggestion now (e.g. "<M-Space>")
    rewrite = "<leader>ar", -- visual: rewrite the selection (prompts for the instruction)
    ask = "<leader>aq", -- normal/visual: ask a question (about the selection)
    rewrite_accept = "ga",
    rewrite_reject = "gr",
  },
}

M.options = vim.deepcopy(M.defaults)

---@param opts? table
function M.setup(opts)
  opts = opts or {}
  for key, kind in pairs({ socket = "string", model = "string", daemon = "table", complete = "table",
    rewrite = "table", ask = "table", actions = "table", keymaps = "table" }) do
    if opts[key] ~= nil and type(opts[key]) ~= kind then
      error(("localai.setup: `%s` must be a %s, not %s"):format(key, kind, type(opts[key])), 2)
    end
  end
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace rather than merge (a shorter `stop` or `cmd` must not keep default items).
  for _, key in ipairs({ { "daemon", "cmd" }, { "complete", "stop" } }) do
    local v = vim.tbl_get(opts, unpack(key))
    if v ~= nil then
      M.options[key[1]][key[2]] = v
    end
  end
  return M.options
end

--- The socket path: the option, else the CLI's rules.
function M.socket()
  local o = M.options.socket
  if o and o ~= "" then
    return vim.fs.normalize(o)
  end
  local env = vim.env.LOCALAI_SOCKET
  if env and env ~= "" then
    return env
  end
  local runtime = vim.env.XDG_RUNTIME_DIR
  if runtime and runtime ~= "" then
    return runtime .. "/localai/localai.sock"
  end
  -- Python's tempfile.gettempdir(): TMPDIR, TEMP, TMP, else /tmp.
  local tmp = vim.env.TMPDIR or vim.env.TEMP or vim.env.TMP or "/tmp"
  tmp = tmp:gsub("/+$", "")
  return ("%s/localai-%d/localai.sock"):format(tmp, vim.uv.getuid())
end

return M
