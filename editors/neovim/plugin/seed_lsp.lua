-- seed_lsp: the highlight of the ghost text. Everything else starts with require("seed_lsp").setup().
if vim.g.loaded_seed_lsp then
  return
end
vim.g.loaded_seed_lsp = true

local function highlight()
  -- default: a colorscheme or the user's own :highlight SeedLspGhostText wins.
  vim.cmd("highlight default link SeedLspGhostText Comment")
end

highlight()
vim.api.nvim_create_autocmd("ColorScheme", {
  group = vim.api.nvim_create_augroup("seed_lsp_highlight", { clear = true }),
  callback = highlight,
})
