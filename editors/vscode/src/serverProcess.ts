/**
 * Running the interpreter: the import check and the server process itself.
 * Node only (no `vscode` import): the integration test starts the server through
 * exactly this code.
 */

import { ChildProcess, execFile, spawn } from 'child_process';

import { buildImportCheck, CheckResult, diagnose, ServerCommand } from './serverCommand';

/** Starts `<python> -m lsp_server` with stdio pipes. */
export function spawnServer(server: ServerCommand, baseEnv: NodeJS.ProcessEnv = process.env): ChildProcess {
  return spawn(server.command, server.args, {
    cwd: server.cwd,
    env: { ...baseEnv, ...server.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    windowsHide: true,
  });
}

/** `<python> -c "import lsp_server"`, diagnosed. */
export function checkInstalled(python: string, options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CheckResult> {
  const check = buildImportCheck(python);
  return new Promise((resolve) => {
    execFile(
      check.command,
      check.args,
      { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs ?? 30_000, windowsHide: true },
      (error, _stdout, stderr) => {
        if (error === null) {
          resolve({ kind: 'ok' });
          return;
        }
        if (error.killed) {
          resolve({ kind: 'broken', message: `\`${python} -c "import lsp_server"\` did not finish within ${(options.timeoutMs ?? 30_000) / 1000} s` });
          return;
        }
        const code = (error as NodeJS.ErrnoException).code;
        const spawnErrorCode = typeof code === 'string' ? code : undefined;
        const exitCode = typeof code === 'number' ? code : 1;
        const result = diagnose(python, { spawnErrorCode, exitCode, stderr: String(stderr) });
        resolve(result.kind === 'ok' ? { kind: 'broken', message: `import check failed: ${error.message}` } : result);
      },
    );
  });
}
