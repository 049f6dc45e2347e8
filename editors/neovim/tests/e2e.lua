-- Headless end-to-end check of the plugin, driven by tests/test_neovim.py:
--
--   SEED_NVIM_TEST=config.json nvim --headless --clean -u editors/neovim/tests/e2e.lua
--
-- config.json: plugin_dir, python, env, settings, out (results JSON), timeout_ms,
--   complete = { file, line, col }            a completion at (line, col) (0-based, bytes)
--   fix = { file, file2, line, broken, expected, wait_ms }
--                                             two copies of a file with a syntax error on `line`
--                                             (0-based), its text, the text the fix should give, how
--                                             long to wait for it
--   ghost = { line, col, typed }              optional (0.8+): type `typed` at (line, col) of the
--                                             completion file, wait for ghost text, accept it with <Tab>
--   ghost_text                                the plugin's ghost_text option
-- Every step records what it saw in the results; the Python test makes the assertions.
local config_path = assert(os.getenv("SEED_NVIM_TEST"), "SEED_NVIM_TEST is not set")
local cfg = vim.fn.json_decode(table.concat(vim.fn.readfile(config_path), "\n"))
local uv = vim.uv or vim.loop
local api = vim.api
local started = uv.hrtime()

local results = { version = vim.version(), notifications = {}, steps = {}, errors = {} }

local function ms()
  return math.floor((uv.hrtime() - started) / 1e6)
end

local function write_results()
  results.ms = ms()
  vim.fn.writefile({ vim.fn.json_encode(results) }, cfg.out)
end

local function finish(code)
  write_results()
  vim.cmd((code == 0 and "qall!") or ("cquit " .. code))
end

vim.notify = function(msg, level)
  table.insert(results.notifications, { msg = tostring(msg), level = level or vim.log.levels.INFO, ms = ms() })
end

-- A watchdog: whatever happens, the results so far are written and Neovim exits.
local watchdog = uv.new_timer()
watchdog:start(cfg.timeout_ms or 50000, 0, vim.schedule_wrap(function()
  table.insert(results.errors, "watchdog: timed out")
  finish(3)
end))

vim.opt.runtimepath:prepend(cfg.plugin_dir)

local function step(name, fn)
  local t0 = ms()
  local ok, value = xpcall(fn, debug.traceback)
  if not ok then
    table.insert(results.errors, name .. ": " .. tostring(value))
  end
  results.steps[name] = { ok = ok, ms = ms() - t0, value = ok and value or nil }
  write_results()
  return ok and value
end

local function has(version)
  return vim.fn.has("nvim-" .. version) == 1
end

local function call(client, method, ...)
  if has("0.11") then
    return client[method](client, ...)
  end
  return client[method](...)
end

local function buffer_text(bufnr)
  local text = table.concat(api.nvim_buf_get_lines(bufnr, 0, -1, false), "\n")
  if vim.bo[bufnr].eol then
    text = text .. "\n"
  end
  return text
end

local function lsp_line_diagnostics(bufnr, row)
  if not has("0.10") then
    return vim.lsp.diagnostic.get_line_diagnostics(bufnr, row)
  end
  local out = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr, { lnum = row })) do
    table.insert(out, d.user_data.lsp)
  end
  return out
end

local function main()
  local seed = require("seed_lsp")
  local client, bufnr

  step("setup", function()
    seed.setup({
      cmd = { cfg.python, "-m", "lsp_server" },
      cmd_env = cfg.env,
      settings = cfg.settings,
      ghost_text = cfg.ghost_text,
      debounce_ms = 50,
    })
    return { mode = seed.state.mode, commands = vim.fn.exists(":SeedLspStatus") == 2
      and vim.fn.exists(":SeedLspToggle") == 2 and vim.fn.exists(":SeedLspRestart") == 2 }
  end)

  step("attach", function()
    vim.cmd("edit " .. vim.fn.fnameescape(cfg.complete.file))
    bufnr = api.nvim_get_current_buf()
    assert(vim.wait(20000, function() return seed.client(bufnr) ~= nil end, 20), "the client did not attach")
    client = seed.client(bufnr)
    assert(vim.wait(60000, function()
      local s = seed.status()
      return s ~= nil and s.state ~= "loading"
    end, 20), "no seedLsp/status with a loaded model")
    return {
      filetype = vim.bo[bufnr].filetype,
      omnifunc = vim.bo[bufnr].omnifunc,
      status = seed.status(),
      statusline = seed.statusline(),
      encoding = client.offset_encoding,
    }
  end)
  if not client then
    return finish(1)
  end
  local encoding = client.offset_encoding or "utf-16"

  step("completion", function()
    -- At the end of the line: a Normal-mode cursor cannot stand there, so the position is built here
    -- (the test's lines are ASCII: byte column = UTF-16 column).
    local params = { textDocument = { uri = vim.uri_from_bufnr(bufnr) },
                     position = { line = cfg.complete.line, character = cfg.complete.col } }
    local responses = vim.lsp.buf_request_sync(bufnr, "textDocument/completion", params, 30000)
    assert(responses, "textDocument/completion timed out")
    local response = responses[client.id]
    assert(response and not response.err, "completion error: " .. vim.inspect(response and response.err))
    return { result = response.result, statusline = seed.statusline() }
  end)

  step("omnifunc", function()
    -- The real <C-x><C-o> path: vim.lsp.omnifunc answers asynchronously, complete() fills the menu.
    api.nvim_win_set_cursor(0, { cfg.complete.line + 1, cfg.complete.col })
    local seen, waited = nil, 0
    local timer = uv.new_timer()
    timer:start(100, 100, vim.schedule_wrap(function()
      if timer:is_closing() then
        return -- a tick queued before the timer was closed
      end
      waited = waited + 100
      local info = vim.fn.complete_info({ "items", "mode" })
      if (info.items and #info.items > 0) or waited >= 20000 then
        seen = info
        timer:stop()
        timer:close()
        api.nvim_feedkeys(api.nvim_replace_termcodes("<C-e><Esc>", true, false, true), "n", false)
      end
    end))
    local line = api.nvim_buf_get_lines(bufnr, cfg.complete.line, cfg.complete.line + 1, false)[1]
    local enter = "i"
    if cfg.complete.col >= #line then
      enter = "A"
    elseif cfg.complete.col > 0 then
      api.nvim_win_set_cursor(0, { cfg.complete.line + 1, cfg.complete.col - 1 })
      enter = "a"
    end
    vim.fn.feedkeys(api.nvim_replace_termcodes(enter .. "<C-x><C-o>", true, false, true), "x!")
    local words = {}
    for _, item in ipairs(seen and seen.items or {}) do
      table.insert(words, item.word)
    end
    return { words = words, mode = seen and seen.mode, unchanged = buffer_text(bufnr) == cfg.complete.text }
  end)

  if cfg.ghost then
    step("ghost", function()
      -- Type the last characters before the cursor, wait for ghost text, accept it with the mapping.
      local row, col, typed = cfg.ghost.line, cfg.ghost.col, cfg.ghost.typed
      local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
      api.nvim_buf_set_text(bufnr, row, col - #typed, row, col, { "" })
      api.nvim_win_set_cursor(0, { row + 1, col - #typed })
      local function ghost_marks() -- ours (SeedLspGhostText) or Neovim's own (ComplHint)
        local found = {}
        for _, mark in ipairs(api.nvim_buf_get_extmarks(bufnr, -1, 0, -1, { details = true })) do
          local chunk = mark[4] and mark[4].virt_text and mark[4].virt_text[1]
          if chunk and (chunk[2] == "SeedLspGhostText" or chunk[2] == "ComplHint") then
            table.insert(found, mark)
          end
        end
        return found
      end
      local shown, accepted, waited = nil, nil, 0
      local timer = uv.new_timer()
      timer:start(50, 50, vim.schedule_wrap(function()
        if timer:is_closing() then
          return
        end
        waited = waited + 50
        if shown == nil then
          for _, mark in ipairs(ghost_marks()) do
            local details = mark[4]
            shown = { row = mark[2], col = mark[3], text = details.virt_text[1][1],
                      lines = details.virt_lines and #details.virt_lines or 0, pos = details.virt_text_pos }
          end
          if shown then
            api.nvim_feedkeys(api.nvim_replace_termcodes("<Tab>", true, false, true), "m", false)
          end
        elseif accepted == nil and api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] ~= line:sub(1, col) then
          accepted = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
        end
        if accepted ~= nil or waited >= 20000 then
          timer:stop()
          timer:close()
          api.nvim_feedkeys(api.nvim_replace_termcodes("<Esc>", true, false, true), "n", false)
        end
      end))
      vim.fn.feedkeys("A" .. typed, "x!") -- the line ends at the cursor
      local after = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
      return { shown = shown, accepted = accepted, line = after,
               leftover = #ghost_marks() }
    end)
  end

  local fbuf
  step("diagnostics", function()
    vim.cmd("edit " .. vim.fn.fnameescape(cfg.fix.file))
    fbuf = api.nvim_get_current_buf()
    assert(vim.wait(20000, function() return seed.client(fbuf) ~= nil end, 20), "not attached to the fix file")
    assert(vim.wait(20000, function() return #vim.diagnostic.get(fbuf) > 0 end, 20), "no diagnostics published")
    local out = {}
    for _, d in ipairs(vim.diagnostic.get(fbuf)) do
      table.insert(out, { lnum = d.lnum, col = d.col, message = d.message, source = d.source })
    end
    return out
  end)

  step("fix_requests", function()
    -- The quick fix by hand: codeAction, then codeAction/resolve (the list comes without edits),
    -- then apply the WorkspaceEdit.
    api.nvim_win_set_cursor(0, { cfg.fix.line + 1, 0 })
    local params = vim.lsp.util.make_range_params(0, encoding)
    params.context = { diagnostics = lsp_line_diagnostics(fbuf, cfg.fix.line), only = { "quickfix" } }
    local responses = assert(vim.lsp.buf_request_sync(fbuf, "textDocument/codeAction", params, 30000),
      "textDocument/codeAction timed out")
    local actions = responses[client.id].result or {}
    local titles, chosen = {}, nil
    for _, action in ipairs(actions) do
      table.insert(titles, action.title)
      if not chosen and action.title:find("^Fix with model") then
        chosen = action
      end
    end
    local had_edit = chosen and chosen.edit ~= nil
    local applied = false
    if chosen and not chosen.edit then
      local resolved = call(client, "request_sync", "codeAction/resolve", chosen, 60000, fbuf)
      assert(resolved and not resolved.err, "resolve failed: " .. vim.inspect(resolved))
      chosen = resolved.result
    end
    if chosen and chosen.edit then
      vim.lsp.util.apply_workspace_edit(chosen.edit, encoding)
      applied = true
    end
    return { titles = titles, had_edit = had_edit, applied = applied, text = buffer_text(fbuf) }
  end)

  step("fix_code_action", function()
    -- The user's path: vim.lsp.buf.code_action() with a menu (vim.ui.select, answered here), on a
    -- second copy of the broken file (its diagnostics are fresh: none left from the first fix).
    vim.cmd("edit " .. vim.fn.fnameescape(cfg.fix.file2))
    fbuf = api.nvim_get_current_buf()
    assert(vim.wait(20000, function() return seed.client(fbuf) ~= nil end, 20), "not attached to the second copy")
    assert(vim.wait(20000, function() return #vim.diagnostic.get(fbuf, { lnum = cfg.fix.line }) > 0 end, 20),
      "no diagnostic for the error")
    api.nvim_win_set_cursor(0, { cfg.fix.line + 1, 0 })
    local offered = {}
    vim.ui.select = function(items, _, on_choice)
      local pick
      for i, item in ipairs(items) do
        local action = item[2] or item.action
        table.insert(offered, action.title)
        if not pick and action.title:find("^Fix with model") then
          pick = i
        end
      end
      on_choice(pick and items[pick], pick)
    end
    vim.lsp.buf.code_action()
    local fixed = vim.wait(cfg.fix.wait_ms or 60000, function() return buffer_text(fbuf) == cfg.fix.expected end, 50)
    return { offered = offered, fixed = fixed, text = buffer_text(fbuf) }
  end)

  step("commands", function()
    local before = #results.notifications
    vim.cmd("SeedLspStatus")
    vim.wait(10000, function() return #results.notifications > before end, 20)
    local status_message = results.notifications[#results.notifications]
    vim.cmd("SeedLspToggle")
    local off = vim.wait(10000, function() return seed.status().enabled == false end, 20)
    local off_line = seed.statusline()
    vim.cmd("SeedLspToggle")
    local on = vim.wait(10000, function() return seed.status().enabled == true end, 20)
    return { status_message = status_message and status_message.msg, off = off, on = on, off_line = off_line,
             statusline = seed.statusline() }
  end)

  step("restart", function()
    local old = client.id
    vim.cmd("SeedLspRestart")
    local ok = vim.wait(30000, function()
      local now = seed.client(fbuf)
      return now ~= nil and now.id ~= old and seed.status() ~= nil and seed.status().state == "ready"
    end, 50)
    return { restarted = ok, statusline = seed.statusline() }
  end)

  -- Stop the server before leaving, so its process is gone when Neovim exits.
  local function clients()
    return vim.lsp.get_clients and vim.lsp.get_clients({ name = "seed_lsp" }) or vim.lsp.get_active_clients()
  end
  for _, c in ipairs(clients()) do
    call(c, "stop")
  end
  vim.wait(5000, function() return #clients() == 0 end, 20)
  finish(#results.errors == 0 and 0 or 1)
end

api.nvim_create_autocmd("VimEnter", {
  once = true,
  callback = function()
    vim.schedule(function()
      local ok, err = xpcall(main, debug.traceback)
      if not ok then
        table.insert(results.errors, "main: " .. tostring(err))
        finish(2)
      end
    end)
  end,
})
