-- seed_lsp: Neovim client for the seed-diffusion language server (`python -m lsp_server`).
--
--   require("seed_lsp").setup({ python = "/path/to/venv/bin/python", settings = { blockSize = 8 } })
--
-- What each Neovim version gets:
--   0.12+     vim.lsp.config / vim.lsp.enable, ghost text from Neovim's own vim.lsp.inline_completion.
--   0.11      vim.lsp.config / vim.lsp.enable, ghost text drawn by this plugin (extmarks).
--   0.8-0.10  vim.lsp.start on FileType, ghost text drawn by this plugin (extmarks).
--   0.7       vim.lsp.start_client + buf_attach_client; no ghost text (said once), completion through
--             omnifunc (<C-x><C-o>: textDocument/completion gives the model's line completion as one
--             item) and the "Fix with model" quick fix through code actions (or :SeedLspFix).
-- Everywhere: omnifunc, code actions, :SeedLspFix, :SeedLspToggle, :SeedLspStatus, :SeedLspRestart
-- and require("seed_lsp").statusline() from the server's seedLsp/status notification.

local M = {}

local NAME = "seed_lsp"
local TITLE = "seed-lsp"
local uv = vim.uv or vim.loop
local api = vim.api

local function has(version)
  return vim.fn.has("nvim-" .. version) == 1
end

local defaults = {
  -- The server command; by default `<python> -m lsp_server`.
  cmd = nil,
  -- The Python interpreter that has the project installed (used when cmd is nil).
  python = nil,
  -- Extra environment for the server process, e.g. { OMP_NUM_THREADS = "1" }.
  cmd_env = nil,
  filetypes = { "python" },
  -- The project root is the nearest folder above the file holding one of these (else the file's folder).
  root_markers = { "pyproject.toml", "setup.py", "setup.cfg", ".git" },
  -- Server settings (camelCase, as in lsp_server/config.py), sent as initializationOptions;
  -- change them later with require("seed_lsp").configure({...}).
  settings = {},
  -- Ghost text: true = Neovim's own inline completion on 0.12+, drawn by this plugin on 0.8-0.11;
  -- "extmarks" = always this plugin's (0.8+); false = off.
  ghost_text = true,
  -- Ghost text requests wait this long after the last keystroke (this plugin's ghost text).
  debounce_ms = 150,
  -- Insert-mode keys (false turns one off). accept falls through to the key itself when no ghost
  -- text is shown; in your own mapping use require("seed_lsp").accept() (true when it accepted).
  keymaps = { accept = "<Tab>", dismiss = "<C-]>", next = "<M-]>", prev = "<M-[>" },
  -- Set 'omnifunc' to vim.lsp.omnifunc in attached buffers (<C-x><C-o> asks the model).
  omnifunc = true,
  -- Called as on_attach(client, bufnr) after the plugin's own attach.
  on_attach = nil,
  -- Extra client capabilities (merged over Neovim's defaults).
  capabilities = nil,
}

M.config = nil
-- last: the last seedLsp/status notification (or command result); mode: the ghost text mode in use.
M.state = { last = nil, mode = nil, notified = {}, client_id = nil, exited = nil }

-- --------------------------------------------------------------------------- helpers

local function notify(message, level)
  vim.notify(TITLE .. ": " .. message, level or vim.log.levels.INFO)
end

--- vim.notify once per key for this Neovim session.
local function notify_once(key, message, level)
  if M.state.notified[key] then
    return
  end
  M.state.notified[key] = true
  notify(message, level)
end

--- A client method: Client:method(...) on 0.11+, client.method(...) before.
local function call(client, method, ...)
  if has("0.11") then
    return client[method](client, ...)
  end
  return client[method](...)
end

local function all_clients()
  if vim.lsp.get_clients then
    return vim.lsp.get_clients({ name = NAME })
  end
  local out = {}
  for _, client in pairs(vim.lsp.get_active_clients()) do
    if client.name == NAME then
      table.insert(out, client)
    end
  end
  return out
end

--- Our client attached to bufnr (0 = current), or nil.
function M.client(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  for _, client in ipairs(all_clients()) do
    if vim.lsp.buf_is_attached(bufnr, client.id) then
      return client
    end
  end
  return nil
end

--- Byte column of an LSP character offset in line, for the client's position encoding.
local function byte_col(line, character, encoding)
  if encoding == "utf-8" then
    return math.min(character, #line)
  end
  local ok, col
  if has("0.11") then
    ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, encoding == "utf-16")
  end
  if ok and col then
    return math.min(col, #line)
  end
  return #line
end

local function buf_line(bufnr, row)
  return api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
end

local function insert_text_of(item)
  local text = item.insertText
  if type(text) == "table" then
    text = text.value -- a StringValue snippet: shown and inserted as plain text
  end
  return type(text) == "string" and text or ""
end

local function find_root(path, markers)
  local dir = path ~= "" and vim.fn.fnamemodify(path, ":p:h") or uv.cwd()
  local cur = dir
  while cur and cur ~= "" do
    for _, marker in ipairs(markers or {}) do
      if uv.fs_stat(cur .. "/" .. marker) then
        return cur
      end
    end
    local parent = vim.fn.fnamemodify(cur, ":h")
    if parent == cur then
      break
    end
    cur = parent
  end
  return dir
end

-- --------------------------------------------------------------------------- status

local function on_status(_, result)
  if type(result) ~= "table" then
    return
  end
  M.state.last = result
  pcall(vim.cmd, "redrawstatus")
  pcall(api.nvim_exec_autocmds, "User", { pattern = "SeedLspStatus", modeline = false })
end

--- The last seedLsp/status the server sent (state, enabled, model, device, variant, error,
--- lastLatencyMs, cacheHitRate), or nil before the first one.
function M.status()
  return M.state.last
end

--- A short statusline string: "seed: ready 42ms", "seed: loading", "seed: off", "seed: error",
--- "seed: stopped"; "" when no server was started.
function M.statusline()
  local s = M.state.last
  if M.state.exited then
    return "seed: stopped"
  end
  if s == nil then
    if M.state.client_id ~= nil or #all_clients() > 0 then
      return "seed: starting"
    end
    return ""
  end
  if s.state == "ready" then
    if type(s.lastLatencyMs) == "number" then
      return string.format("seed: ready %dms", math.floor(s.lastLatencyMs + 0.5))
    end
    return "seed: ready"
  elseif s.state == "disabled" then
    return "seed: off"
  end
  return "seed: " .. tostring(s.state)
end

local function describe(s)
  local function show(v)
    return v == nil and "-" or (v == vim.NIL and "-" or tostring(v))
  end
  local lines = {
    "state " .. show(s.state) .. (s.enabled == false and " (completions off)" or ""),
    "model " .. show(s.model),
    "device " .. show(s.device) .. ", variant " .. show(s.variant),
    "last latency " .. (type(s.lastLatencyMs) == "number" and string.format("%.0f ms", s.lastLatencyMs) or "-")
      .. ", cache hit rate " .. show(s.cacheHitRate),
    "ghost text " .. show(M.state.mode),
  }
  if s.error and s.error ~= vim.NIL then
    table.insert(lines, "error " .. tostring(s.error))
  end
  return table.concat(lines, "\n")
end

local function execute(command, callback)
  local client = M.client(0) or all_clients()[1]
  if not client then
    notify("no server is running (open a " .. table.concat(M.config and M.config.filetypes or {}, "/")
      .. " file, or :SeedLspRestart)", vim.log.levels.WARN)
    return
  end
  call(client, "request", "workspace/executeCommand", { command = command, arguments = {} }, function(err, result)
    if err then
      notify(command .. " failed: " .. tostring(err.message or err), vim.log.levels.ERROR)
      return
    end
    if type(result) == "table" and result.state then
      on_status(nil, result)
    end
    if callback then
      callback(result)
    end
  end, api.nvim_get_current_buf())
end

function M.toggle()
  execute("seedLsp.toggle", function(s)
    notify(s.enabled and "completions on" or "completions off")
  end)
end

function M.show_status()
  execute("seedLsp.status", function(s)
    notify(describe(s))
  end)
end

function M.clear_cache()
  execute("seedLsp.clearCache", function()
    notify("completion cache cleared")
  end)
end

--- Send new server settings (merged over the current ones) with workspace/didChangeConfiguration.
function M.configure(settings)
  M.config.settings = vim.tbl_extend("force", M.config.settings or {}, settings or {})
  for _, client in ipairs(all_clients()) do
    call(client, "notify", "workspace/didChangeConfiguration", { settings = { seedLsp = M.config.settings } })
  end
end

-- --------------------------------------------------------------------------- ghost text (extmarks)

local ns = api.nvim_create_namespace("seed_lsp_ghost")
local ghosts = {} -- bufnr -> { timer, request = {client, id}, items, index, row, col, tick, encoding, change_cursor }

local function same_pos(a, b)
  return a and b and a[1] == b[1] and a[2] == b[2]
end

local function cancel_request(g)
  if g.request then
    pcall(call, g.request.client, "cancel_request", g.request.id)
    g.request = nil
  end
end

local function hide(bufnr)
  local g = ghosts[bufnr]
  if g then
    g.items, g.index = nil, nil
  end
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  end
end

--- Stop the pending and in-flight request and remove the ghost text.
local function dismiss(bufnr)
  local g = ghosts[bufnr]
  if g then
    if g.timer then
      g.timer:stop()
    end
    cancel_request(g)
  end
  hide(bufnr)
end

--- The part of item that the ghost text shows (after the cursor), or nil when it does not apply.
local function visible_text(bufnr, item, row, col, encoding)
  local text = insert_text_of(item)
  if item.range and item.range.start then
    local srow = item.range.start.line
    if srow ~= row then
      return nil
    end
    local scol = byte_col(buf_line(bufnr, row), item.range.start.character, encoding)
    if scol < col then -- the item replaces what was typed since the range start
      local typed = buf_line(bufnr, row):sub(scol + 1, col)
      if text:sub(1, #typed) ~= typed then
        return nil
      end
      text = text:sub(#typed + 1)
    elseif scol > col then
      return nil
    end
  end
  if text == "" then
    return nil
  end
  return text
end

local function render(bufnr)
  local g = ghosts[bufnr]
  api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  if not (g and g.items and g.items[g.index]) then
    return
  end
  local text = visible_text(bufnr, g.items[g.index], g.row, g.col, g.encoding)
  if not text then
    hide(bufnr)
    return
  end
  local tab = string.rep(" ", vim.bo[bufnr].tabstop > 0 and vim.bo[bufnr].tabstop or 8)
  local shown = text:gsub("\t", tab)
  local lines = vim.split(shown, "\n", { plain = true })
  local opts = { virt_text = { { lines[1], "SeedLspGhostText" } }, hl_mode = "combine", priority = 1000 }
  if has("0.10") then
    opts.virt_text_pos = "inline"
  elseif g.col >= #buf_line(bufnr, g.row) then
    opts.virt_text_pos = "overlay"
  else
    opts.virt_text_pos = "eol" -- before 0.10 virtual text cannot sit between characters
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], "SeedLspGhostText" } })
    end
  end
  pcall(api.nvim_buf_set_extmark, bufnr, ns, g.row, g.col, opts)
end

local function ghost_request(bufnr)
  local g = ghosts[bufnr]
  if not g or bufnr ~= api.nvim_get_current_buf() or not vim.fn.mode():match("^i") then
    return
  end
  if vim.fn.pumvisible() == 1 or (M.state.last and M.state.last.enabled == false) then
    return
  end
  local client = M.client(bufnr)
  if not client then
    return
  end
  local cursor = api.nvim_win_get_cursor(0)
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local encoding = client.offset_encoding or "utf-16"
  local params = vim.lsp.util.make_position_params(0, encoding)
  params.context = { triggerKind = 2 } -- Automatic
  cancel_request(g)
  local request
  local ok, id = call(client, "request", "textDocument/inlineCompletion", params, function(err, result)
    if g.request == request then
      g.request = nil
    end
    if err or not result then
      return
    end
    if not api.nvim_buf_is_valid(bufnr) or api.nvim_get_current_buf() ~= bufnr
      or api.nvim_buf_get_changedtick(bufnr) ~= tick or not vim.fn.mode():match("^i")
      or not same_pos(api.nvim_win_get_cursor(0), cursor) then
      return -- the user typed or moved on: a stale answer is never shown
    end
    local items = {}
    for _, item in ipairs(result.items or result) do
      if insert_text_of(item) ~= "" then
        table.insert(items, item)
      end
    end
    if #items == 0 then
      return
    end
    g.items, g.index = items, 1
    g.row, g.col, g.tick, g.encoding = cursor[1] - 1, cursor[2], tick, encoding
    render(bufnr)
  end, bufnr)
  if ok then
    request = { client = client, id = id }
    g.request = request
  end
end

local function ghost_schedule(bufnr)
  local g = ghosts[bufnr]
  dismiss(bufnr)
  g.timer = g.timer or uv.new_timer()
  g.timer:start(M.config.debounce_ms, 0, vim.schedule_wrap(function()
    ghost_request(bufnr)
  end))
end

--- Is ghost text shown in bufnr (0 = current)?
function M.ghost_visible(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if M.state.mode == "native" then
    return nil -- Neovim draws it; vim.lsp.inline_completion.get() tells by accepting
  end
  local g = ghosts[bufnr]
  return g ~= nil and g.items ~= nil and #api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, {}) > 0
end

local function ghost_accept(bufnr)
  local g = ghosts[bufnr]
  if not M.ghost_visible(bufnr) then
    return false
  end
  local item, row, col, tick, encoding = g.items[g.index], g.row, g.col, g.tick, g.encoding
  -- Scheduled: an <expr> mapping may not change the buffer.
  vim.schedule(function()
    if api.nvim_buf_get_changedtick(bufnr) ~= tick then
      dismiss(bufnr)
      return
    end
    dismiss(bufnr)
    local text = insert_text_of(item)
    local srow, scol, erow, ecol = row, col, row, col
    if item.range and item.range.start then
      srow = item.range.start.line
      scol = byte_col(buf_line(bufnr, srow), item.range.start.character, encoding)
      erow = item.range["end"].line
      ecol = byte_col(buf_line(bufnr, erow), item.range["end"].character, encoding)
    end
    local lines = vim.split(text, "\n", { plain = true })
    api.nvim_buf_set_text(bufnr, srow, scol, erow, ecol, lines)
    local end_row = srow + #lines - 1
    local end_col = (#lines == 1 and scol or 0) + #lines[#lines]
    pcall(api.nvim_win_set_cursor, 0, { end_row + 1, end_col })
  end)
  return true
end

local function ghost_cycle(bufnr, step)
  local g = ghosts[bufnr]
  if not M.ghost_visible(bufnr) or #g.items < 2 then
    return M.ghost_visible(bufnr)
  end
  g.index = (g.index - 1 + step) % #g.items + 1
  render(bufnr)
  return true
end

local function ghost_attach(bufnr)
  if ghosts[bufnr] then
    return
  end
  ghosts[bufnr] = {}
  local group = api.nvim_create_augroup("seed_lsp_ghost_" .. bufnr, { clear = true })
  api.nvim_create_autocmd("TextChangedI", { group = group, buffer = bufnr, callback = function()
    ghosts[bufnr].change_cursor = api.nvim_win_get_cursor(0)
    ghost_schedule(bufnr)
  end })
  api.nvim_create_autocmd("CursorMovedI", { group = group, buffer = bufnr, callback = function()
    local g = ghosts[bufnr]
    local cursor = api.nvim_win_get_cursor(0)
    -- Typing moves the cursor too: only a move without a change dismisses.
    if same_pos(cursor, g.change_cursor) or (g.items and same_pos(cursor, { g.row + 1, g.col })) then
      return
    end
    dismiss(bufnr)
  end })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, { group = group, buffer = bufnr, callback = function()
    dismiss(bufnr)
  end })
  api.nvim_create_autocmd({ "BufUnload", "BufWipeout" }, { group = group, buffer = bufnr, callback = function()
    dismiss(bufnr)
    local g = ghosts[bufnr]
    if g and g.timer then
      g.timer:close()
    end
    ghosts[bufnr] = nil
    pcall(api.nvim_del_augroup_by_id, group)
  end })
end

-- --------------------------------------------------------------------------- public ghost text API

--- Accept the shown ghost text; false when there is none (use it to fall through in a mapping).
function M.accept()
  if M.state.mode == "native" then
    return vim.lsp.inline_completion.get() == true
  elseif M.state.mode == "extmarks" then
    return ghost_accept(api.nvim_get_current_buf())
  end
  return false
end

--- Remove the shown ghost text; false when there was none.
function M.dismiss()
  if M.state.mode ~= "extmarks" then
    return false
  end
  local bufnr = api.nvim_get_current_buf()
  local shown = M.ghost_visible(bufnr)
  dismiss(bufnr)
  return shown
end

--- Show the next (step 1) or previous (step -1) candidate; false when there is no ghost text.
function M.cycle(step)
  if M.state.mode == "native" then
    vim.lsp.inline_completion.select({ count = step })
    return true
  elseif M.state.mode == "extmarks" then
    return ghost_cycle(api.nvim_get_current_buf(), step)
  end
  return false
end

-- --------------------------------------------------------------------------- quick fix

--- LSP diagnostics on the line row (0-based) of bufnr, as the server published them.
local function line_diagnostics(bufnr, row)
  if not has("0.10") and vim.lsp.diagnostic and vim.lsp.diagnostic.get_line_diagnostics then
    return vim.lsp.diagnostic.get_line_diagnostics(bufnr, row)
  end
  local out = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr, { lnum = row })) do
    local lsp = d.user_data and d.user_data.lsp
    if type(lsp) == "table" and lsp.range and lsp.message then
      table.insert(out, lsp)
    else
      table.insert(out, {
        range = { start = { line = d.lnum, character = d.col },
                  ["end"] = { line = d.end_lnum or d.lnum, character = d.end_col or d.col } },
        message = d.message, severity = d.severity, source = d.source, code = d.code,
      })
    end
  end
  return out
end

--- Apply the model's quick fix for the diagnostics on the cursor line, without a menu.
--- on_done(applied: boolean, message: string) is called when it finished (also when nothing applied).
function M.fix(on_done)
  local bufnr = api.nvim_get_current_buf()
  local function done(applied, message, level)
    notify(message, level)
    if on_done then
      on_done(applied, message)
    end
  end
  local client = M.client(bufnr)
  if not client then
    return done(false, "no server attached to this buffer", vim.log.levels.WARN)
  end
  local row = api.nvim_win_get_cursor(0)[1] - 1
  local diagnostics = line_diagnostics(bufnr, row)
  if #diagnostics == 0 then
    return done(false, "no diagnostic on this line")
  end
  local encoding = client.offset_encoding or "utf-16"
  local params = vim.lsp.util.make_range_params(0, encoding)
  params.context = { diagnostics = diagnostics, only = { "quickfix" } }
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local function apply(action)
    if api.nvim_buf_get_changedtick(bufnr) ~= tick then
      return done(false, "the buffer changed; fix not applied", vim.log.levels.WARN)
    end
    if not action.edit then
      return done(false, "the model found no fix that verifies")
    end
    vim.lsp.util.apply_workspace_edit(action.edit, encoding)
    done(true, "applied: " .. action.title)
  end
  call(client, "request", "textDocument/codeAction", params, function(err, actions)
    if err then
      return done(false, "code action failed: " .. tostring(err.message), vim.log.levels.ERROR)
    end
    local chosen
    for _, action in ipairs(actions or {}) do
      if action.kind == "quickfix" and (chosen == nil or (action.isPreferred and not chosen.isPreferred)) then
        chosen = action
      end
    end
    if not chosen then
      return done(false, "no model fix offered here")
    end
    if chosen.edit then
      return apply(chosen)
    end
    call(client, "request", "codeAction/resolve", chosen, function(rerr, resolved)
      if rerr then
        return done(false, "resolve failed: " .. tostring(rerr.message), vim.log.levels.ERROR)
      end
      apply(resolved or chosen)
    end, bufnr)
  end, bufnr)
end

-- --------------------------------------------------------------------------- attach and start

local function map(bufnr, lhs, fn, fallback, desc)
  if not lhs then
    return
  end
  vim.keymap.set("i", lhs, function()
    if fn() then
      return ""
    end
    return fallback and lhs or ""
  end, { buffer = bufnr, expr = true, silent = true, desc = desc })
end

local function on_attach(client, bufnr)
  local cfg = M.config
  M.state.exited = nil
  if cfg.omnifunc then
    vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
  end
  if M.state.mode == "native" then
    vim.lsp.inline_completion.enable(true, { client_id = client.id })
  elseif M.state.mode == "extmarks" then
    ghost_attach(bufnr)
  end
  if M.state.mode == "native" or M.state.mode == "extmarks" then
    local keys = cfg.keymaps or {}
    map(bufnr, keys.accept, M.accept, true, "seed-lsp: accept the ghost text")
    map(bufnr, keys.dismiss, M.dismiss, true, "seed-lsp: dismiss the ghost text")
    map(bufnr, keys.next, function() return M.cycle(1) end, true, "seed-lsp: next candidate")
    map(bufnr, keys.prev, function() return M.cycle(-1) end, true, "seed-lsp: previous candidate")
  end
  if cfg.on_attach then
    cfg.on_attach(client, bufnr)
  end
end

local function on_exit(code, signal)
  M.state.exited = true
  M.state.client_id = nil
  pcall(vim.cmd, "redrawstatus")
  if code ~= 0 and not M.state.stopping then
    vim.schedule(function()
      notify(string.format("the server exited (code %s, signal %s). Is seed-diffusion-lsp installed for %s "
        .. "(`pip install -e .` in the repository; `%s -m lsp_server --help` tells)? "
        .. ":SeedLspRestart starts it again; its log is in :LspLog.",
        tostring(code), tostring(signal), M.config.cmd[1], M.config.cmd[1]), vim.log.levels.ERROR)
    end)
  end
end

local function client_config(bufnr)
  local cfg = M.config
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  if cfg.capabilities then
    capabilities = vim.tbl_deep_extend("force", capabilities, cfg.capabilities)
  end
  local config = {
    name = NAME,
    cmd = cfg.cmd,
    cmd_env = cfg.cmd_env,
    init_options = cfg.settings,
    capabilities = capabilities,
    handlers = { ["seedLsp/status"] = on_status },
    on_attach = on_attach,
    on_exit = on_exit,
  }
  if bufnr then
    config.root_dir = find_root(api.nvim_buf_get_name(bufnr), cfg.root_markers)
  end
  return config
end

local function wants(bufnr)
  return api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(M.config.filetypes, vim.bo[bufnr].filetype)
    and vim.bo[bufnr].buftype == ""
end

--- Start (or reuse) the server for bufnr and attach it (0.7-0.10; 0.11+ uses vim.lsp.enable).
local function start(bufnr)
  if not wants(bufnr) then
    return
  end
  if has("0.8") then
    M.state.client_id = vim.lsp.start(client_config(bufnr), { bufnr = bufnr })
    return
  end
  local id = M.state.client_id
  local client = id and vim.lsp.get_client_by_id(id)
  if not client or call(client, "is_stopped") then
    id = vim.lsp.start_client(client_config(bufnr))
    M.state.client_id = id
  end
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
end

local function enable()
  if has("0.11") then
    local config = client_config(nil)
    config.filetypes = M.config.filetypes
    config.root_markers = M.config.root_markers
    vim.lsp.config(NAME, config)
    vim.lsp.enable(NAME)
    if vim.v.vim_did_enter == 0 then
      -- setup() during startup (e.g. a plugin manager loading it on FileType): vim.lsp.enable only
      -- covers buffers whose FileType comes later, so start it for the ones already there.
      for _, bufnr in ipairs(api.nvim_list_bufs()) do
        if wants(bufnr) then
          pcall(api.nvim_exec_autocmds, "FileType", { group = "nvim.lsp.enable", buffer = bufnr })
        end
      end
    end
    return
  end
  local group = api.nvim_create_augroup("seed_lsp_start", { clear = true })
  api.nvim_create_autocmd("FileType", { group = group, pattern = M.config.filetypes, callback = function(args)
    start(args.buf)
  end })
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    start(bufnr)
  end
end

--- Stop the server and start it again for the buffers it served (or all matching buffers).
function M.restart()
  local buffers = {}
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if wants(bufnr) then
      table.insert(buffers, bufnr)
    end
  end
  M.state.stopping = true
  if has("0.11") then
    vim.lsp.enable(NAME, false)
  end
  for _, client in ipairs(all_clients()) do
    call(client, "stop")
  end
  local waited, done = 0, false
  local timer = uv.new_timer()
  timer:start(50, 50, vim.schedule_wrap(function()
    waited = waited + 50
    if done or (#all_clients() > 0 and waited < 3000) then
      return
    end
    done = true
    timer:stop()
    timer:close()
    for _, client in ipairs(all_clients()) do
      call(client, "stop", true)
    end
    M.state.stopping, M.state.last, M.state.client_id = nil, nil, nil
    if has("0.11") then
      enable()
    else
      for _, bufnr in ipairs(buffers) do
        start(bufnr)
      end
    end
    notify("server restarted")
  end))
end

local function ghost_mode(setting)
  if setting == false then
    return "off"
  end
  if setting ~= "extmarks" and has("0.12") and vim.lsp.inline_completion then
    return "native"
  end
  if has("0.8") then
    return "extmarks"
  end
  return "none"
end

local function commands()
  local function command(name, fn, desc)
    api.nvim_create_user_command(name, fn, { desc = desc, force = true })
  end
  command("SeedLspToggle", M.toggle, "seed-lsp: turn model completions on or off (server side)")
  command("SeedLspStatus", M.show_status, "seed-lsp: show the server's state, model, device and latency")
  command("SeedLspRestart", M.restart, "seed-lsp: restart the language server")
  command("SeedLspFix", function() M.fix() end, "seed-lsp: apply the model's quick fix on this line")
  command("SeedLspClearCache", M.clear_cache, "seed-lsp: clear the server's completion caches")
end

function M.setup(opts)
  if not has("0.7") then
    vim.notify(TITLE .. ": needs Neovim 0.7 or newer", vim.log.levels.ERROR)
    return
  end
  local cfg = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  if opts and opts.keymaps == false then
    cfg.keymaps = {}
  end
  if opts and opts.filetypes then
    cfg.filetypes = opts.filetypes -- lists replace, not merge
  end
  if opts and opts.root_markers then
    cfg.root_markers = opts.root_markers
  end
  if not cfg.cmd then
    local python = cfg.python or (vim.fn.executable("python3") == 1 and "python3" or "python")
    cfg.cmd = { python, "-m", "lsp_server" }
  elseif type(cfg.cmd) == "string" then
    cfg.cmd = { cfg.cmd }
  end
  if vim.fn.executable(cfg.cmd[1]) ~= 1 then
    notify(string.format("%q is not executable: set `python` (the interpreter that has the project installed) "
      .. "or `cmd` in require(\"seed_lsp\").setup()", cfg.cmd[1]), vim.log.levels.ERROR)
    return
  end
  M.config = cfg
  M.state.mode = ghost_mode(cfg.ghost_text)
  if M.state.mode == "none" then
    local v = vim.version()
    notify_once("ghost_text", string.format("ghost text needs Neovim 0.8 or newer (this is %d.%d.%d); "
      .. "completions come through omnifunc (<C-x><C-o>) and fixes through code actions or :SeedLspFix",
      v.major, v.minor, v.patch), vim.log.levels.WARN)
  end
  commands()
  enable()
end

return M
