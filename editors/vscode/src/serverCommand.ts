/**
 * How the server is started and how a failed start is explained.
 *
 * Pure: no `vscode` import (unit tested under plain Node).
 */

import { expandPath, PathContext, RawConfig } from './settings';

export const DEFAULT_PYTHON = 'python3';
export const SERVER_MODULE = 'lsp_server';
export const PACKAGE = 'seed-diffusion-lsp';

export interface ServerCommand {
  command: string;
  args: string[];
  /** Extra environment for the server process (merged over the extension host's). */
  env: Record<string, string>;
  /** Working folder: the first workspace folder, else the home folder. */
  cwd: string | undefined;
}

/** The interpreter from `seedLsp.pythonPath`: `~`/`${workspaceFolder}` expanded, "python3" when unset. */
export function pythonFrom(config: RawConfig, ctx: PathContext = {}): string {
  const value = config.pythonPath;
  if (typeof value !== 'string' || value.trim() === '') {
    return DEFAULT_PYTHON;
  }
  const expanded = expandPath(value, ctx, false);
  // "python3" is looked up on PATH; ".venv/bin/python" is taken from the workspace folder.
  const hasSeparator = expanded.includes('/') || expanded.includes('\\');
  return hasSeparator ? expandPath(expanded, ctx, true) : expanded;
}

/** `<python> -m lsp_server` (stdio). */
export function buildServerCommand(config: RawConfig, ctx: PathContext = {}): ServerCommand {
  return {
    command: pythonFrom(config, ctx),
    args: ['-m', SERVER_MODULE],
    // Unbuffered stderr: a crash's traceback reaches the log even when the process dies at once.
    env: { PYTHONUNBUFFERED: '1', PYTHONIOENCODING: 'utf-8' },
    cwd: ctx.workspaceFolder ?? ctx.home,
  };
}

/** `<python> -c "import lsp_server"`: run before starting, to explain a missing package. */
export function buildImportCheck(python: string): { command: string; args: string[] } {
  return { command: python, args: ['-c', `import ${SERVER_MODULE}`] };
}

export function installCommand(python: string): string {
  const quoted = /\s/.test(python) ? `"${python}"` : python;
  return `${quoted} -m pip install ${PACKAGE}[cpu]`;
}

export function notInstalledMessage(python: string): string {
  return `${PACKAGE} is not installed for ${python}: run \`${installCommand(python)}\` or set seedLsp.pythonPath`;
}

export function noInterpreterMessage(python: string): string {
  return `Python interpreter not found: ${python}. Set seedLsp.pythonPath to a Python (3.10 or newer) that has ${PACKAGE} installed`;
}

/** stderr says the server's package (or one of its dependencies) cannot be imported. */
export function missingModule(stderr: string): string | undefined {
  const match = /ModuleNotFoundError: No module named '([^']+)'/.exec(stderr)
    ?? /No module named ([\w.]+)/.exec(stderr);
  return match?.[1];
}

export type CheckResult =
  | { kind: 'ok' }
  | { kind: 'noInterpreter'; message: string }
  | { kind: 'notInstalled'; message: string; module: string }
  | { kind: 'broken'; message: string };

/** What the outcome of the import check (or of a server that exited at once) means. */
export function diagnose(python: string, outcome: { spawnErrorCode?: string; exitCode: number | null; stderr: string }): CheckResult {
  if (outcome.spawnErrorCode === 'ENOENT' || outcome.spawnErrorCode === 'EACCES') {
    return { kind: 'noInterpreter', message: noInterpreterMessage(python) };
  }
  if (outcome.exitCode === 0 && outcome.spawnErrorCode === undefined) {
    return { kind: 'ok' };
  }
  const module = missingModule(outcome.stderr);
  if (module !== undefined) {
    const top = module.split('.')[0];
    if (top === SERVER_MODULE) {
      return { kind: 'notInstalled', message: notInstalledMessage(python), module };
    }
    return {
      kind: 'notInstalled',
      module,
      message: `${PACKAGE} for ${python} is missing its dependency '${module}': run \`${installCommand(python)}\` or set seedLsp.pythonPath`,
    };
  }
  const lastLine = outcome.stderr.trim().split(/\r?\n/).pop() ?? '';
  const detail = outcome.spawnErrorCode ?? (lastLine || `exit code ${outcome.exitCode}`);
  return { kind: 'broken', message: `${PACKAGE} cannot start with ${python}: ${detail}` };
}

/** The last `limit` characters of a process's stderr (for the diagnosis of a crash). */
export class TailBuffer {
  private text = '';
  constructor(private readonly limit = 16_384) {}
  append(chunk: string): void {
    this.text = (this.text + chunk).slice(-this.limit);
  }
  clear(): void {
    this.text = '';
  }
  toString(): string {
    return this.text;
  }
}

/**
 * Whether a line of the server's stderr goes to the log. The server's own log records
 * (`<date> <time> LEVEL seed_lsp...: message`) also reach the client as window/logMessage
 * once it is initialized, so those are skipped then; everything else (tracebacks, pygls,
 * onnxruntime, anything before initialization) is kept.
 */
export function showStderrLine(line: string, initialized: boolean): boolean {
  if (line.trim() === '') {
    return false;
  }
  if (!initialized) {
    return true;
  }
  return !/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) seed_lsp[\w.]*: /.test(line);
}
