/**
 * The VS Code side: starts `<python> -m lsp_server`, restarts it after a crash with
 * backoff, explains a missing package, forwards the settings, and shows the server's
 * status in the status bar. Everything testable without VS Code lives in the pure
 * modules (settings, serverCommand, statusView, restart).
 */

import * as os from 'os';
import * as readline from 'readline';
import * as vscode from 'vscode';
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  RevealOutputChannelOn,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';
import type { ChildProcess } from 'child_process';

import { Backoff } from './restart';
import { buildServerCommand, CheckResult, diagnose, installCommand, showStderrLine, TailBuffer } from './serverCommand';
import { checkInstalled, spawnServer } from './serverProcess';
import {
  didChangeConfigurationParams,
  documentSelector,
  EXTENSION_KEYS,
  initializationOptions,
  PathContext,
  RawConfig,
  RESTART_KEYS,
  SERVER_KEYS,
  servedLanguages,
} from './settings';
import { ClientPhase, Command, parseStatus, SeedStatus, STATUS_NOTIFICATION, statusSummary, statusView } from './statusView';

const SECTION = 'seedLsp';
const NAME = 'Seed Diffusion LSP';
const COMMANDS: Record<Command, string> = {
  toggle: 'seedLsp.toggleCompletions',
  restart: 'seedLsp.restartServer',
  showLog: 'seedLsp.showLog',
  explainInstall: 'seedLsp.explainInstall',
};
/** Server commands (workspace/executeCommand). */
const SERVER_TOGGLE = 'seedLsp.toggle';
const SERVER_STATUS = 'seedLsp.status';
const SERVER_CLEAR_CACHE = 'seedLsp.clearCache';
/** A server that does not answer shutdown within this is killed. */
const STOP_TIMEOUT_MS = 5_000;
/** After the exit notification, the server gets this long to exit before it is killed. */
const EXIT_GRACE_MS = 2_000;

function readConfig(): RawConfig {
  const config = vscode.workspace.getConfiguration(SECTION);
  const out: RawConfig = {};
  for (const key of [...SERVER_KEYS, ...EXTENSION_KEYS]) {
    out[key] = config.get(key);
  }
  return out;
}

function pathContext(): PathContext {
  const folder = vscode.workspace.workspaceFolders?.find((f) => f.uri.scheme === 'file');
  return { workspaceFolder: folder?.uri.fsPath, home: os.homedir() };
}

function running(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

function kill(child: ChildProcess | undefined): void {
  if (running(child)) {
    child.kill();
  }
}

/** Waits up to graceMs for the process to exit on its own, then kills it. */
async function terminate(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!running(child)) {
    return;
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  kill(child);
}

class Supervisor implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private child: ChildProcess | undefined;
  private generation = 0;
  private phase: ClientPhase = { phase: 'starting' };
  private status: SeedStatus | undefined;
  /** The session's toggle: wins over seedLsp.enabled until that setting changes. */
  private enabledOverride: boolean | undefined;
  private readonly backoff = new Backoff();
  private restartTimer: NodeJS.Timeout | undefined;
  private stderr = new TailBuffer();
  private lastProblem: CheckResult | undefined;
  private python = '';
  private disposed = false;

  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly item: vscode.StatusBarItem,
  ) {}

  /** The running server process's id (tests use it to simulate a crash). */
  get serverPid(): number | undefined {
    return this.child?.pid;
  }

  get lastStatus(): SeedStatus | undefined {
    return this.status;
  }

  // --- lifecycle -------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.disposed) {
      return;
    }
    this.clearTimer();
    const generation = ++this.generation;
    this.setPhase({ phase: 'starting' });
    const config = readConfig();
    const ctx = pathContext();
    const server = buildServerCommand(config, ctx);
    this.python = server.command;
    const check = await checkInstalled(server.command, { cwd: server.cwd, env: { ...process.env, ...server.env } });
    if (generation !== this.generation || this.disposed) {
      return; // a restart or a stop came in meanwhile
    }
    if (check.kind !== 'ok') {
      this.cannotStart(check);
      return;
    }
    this.lastProblem = undefined;
    const current = readConfig(); // settings changed during the check count
    this.output.info(`starting: ${server.command} ${server.args.join(' ')} (cwd ${server.cwd ?? process.cwd()})`);
    const stderr = new TailBuffer();
    this.stderr = stderr;
    let initialized = false;
    const serverOptions: ServerOptions = async () => {
      const child = spawnServer(server);
      this.child = child;
      child.on('error', (error) => this.output.error(`server process: ${error.message}`));
      child.on('exit', (code, signal) => this.output.info(`server exited (${signal ?? `code ${code}`})`));
      if (child.stderr !== null) {
        readline.createInterface({ input: child.stderr, crlfDelay: Infinity }).on('line', (line) => {
          stderr.append(line + '\n');
          if (showStderrLine(line, initialized)) {
            this.output.error(`[server] ${line}`);
          }
        });
      }
      if (child.stdout === null || child.stdin === null) {
        throw new Error('the server process has no stdio pipes');
      }
      return { reader: child.stdout, writer: child.stdin };
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: documentSelector(servedLanguages(current)),
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: initializationOptions(current, ctx, this.enabledOverride),
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue, handled: true }),
        closed: () => {
          this.crashed(generation);
          return { action: CloseAction.DoNotRestart, handled: true, message: 'the connection to the server closed' };
        },
      },
      initializationFailedHandler: () => false,
    };
    const client = new LanguageClient(SECTION, NAME, serverOptions, clientOptions);
    this.client = client;
    client.onNotification(STATUS_NOTIFICATION, (params: unknown) => {
      if (generation === this.generation) {
        this.status = parseStatus(params) ?? this.status;
        this.render();
      }
    });
    try {
      await client.start();
    } catch (error) {
      this.output.error(`the server did not start: ${error instanceof Error ? error.message : String(error)}`);
      this.crashed(generation);
      return;
    }
    if (generation !== this.generation) {
      return;
    }
    initialized = true;
    this.backoff.started(Date.now());
    this.setPhase({ phase: 'running' });
    // A settings change while the server was starting was not sent: send the settings now.
    const latest = didChangeConfigurationParams(readConfig(), pathContext(), this.enabledOverride);
    const sent = initializationOptions(current, ctx, this.enabledOverride);
    if (JSON.stringify(latest.settings.seedLsp) !== JSON.stringify(sent)) {
      void client.sendNotification(DidChangeConfigurationNotification.type, latest);
    }
  }

  /** Stops the server (shutdown, exit; killed when it does not answer). */
  async stop(): Promise<void> {
    this.generation++;
    this.clearTimer();
    const client = this.client;
    const child = this.child;
    this.client = undefined;
    this.child = undefined;
    this.status = undefined;
    if (client !== undefined && client.state === State.Running) {
      try {
        await client.stop(STOP_TIMEOUT_MS);
      } catch (error) {
        this.output.warn(`stopping the server: ${error instanceof Error ? error.message : String(error)}`);
      }
      await terminate(child, EXIT_GRACE_MS);
    }
    kill(child);
  }

  async restart(): Promise<void> {
    this.backoff.reset();
    await this.stop();
    await this.start();
  }

  /** The connection closed (or the start failed) without a stop: explain or restart later. */
  private crashed(generation: number): void {
    if (generation !== this.generation || this.disposed) {
      return;
    }
    this.generation++; // later events of this client are stale
    kill(this.child);
    this.child = undefined;
    this.client = undefined;
    this.status = undefined;
    const problem = diagnose(this.python, { exitCode: 1, stderr: this.stderr.toString() });
    if (problem.kind === 'notInstalled') {
      this.cannotStart(problem);
      return;
    }
    const delay = this.backoff.crashed(Date.now());
    if (delay === undefined) {
      const reason = `it stopped ${this.backoff.consecutiveCrashes} times in a row`;
      this.setPhase({ phase: 'stopped', reason });
      void vscode.window
        .showErrorMessage(`${NAME}: the server keeps stopping (${reason}); see the log.`, 'Show Log', 'Restart')
        .then((choice) => this.onChoice(choice));
      return;
    }
    this.output.warn(`the server stopped; restarting in ${delay} ms`);
    this.setPhase({ phase: 'restarting', inMs: delay, crashes: this.backoff.consecutiveCrashes });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.start();
    }, delay);
  }

  private cannotStart(problem: CheckResult): void {
    if (problem.kind === 'ok') {
      return;
    }
    this.lastProblem = problem;
    this.output.error(problem.message);
    this.setPhase({ phase: 'notInstalled', message: problem.message });
    this.explainInstall();
  }

  private clearTimer(): void {
    if (this.restartTimer !== undefined) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
    }
  }

  dispose(): void {
    this.disposed = true;
    void this.stop();
  }

  // --- settings --------------------------------------------------------------------------

  onConfigurationChanged(event: vscode.ConfigurationChangeEvent): void {
    if (!event.affectsConfiguration(SECTION)) {
      return;
    }
    if (event.affectsConfiguration(`${SECTION}.enabled`)) {
      this.enabledOverride = undefined;
    }
    if (RESTART_KEYS.some((key) => event.affectsConfiguration(`${SECTION}.${key}`)) || this.phase.phase === 'notInstalled') {
      void this.restart();
      return;
    }
    const client = this.runningClient();
    if (client !== undefined) {
      const params = didChangeConfigurationParams(readConfig(), pathContext(), this.enabledOverride);
      void client.sendNotification(DidChangeConfigurationNotification.type, params);
    }
  }

  // --- commands --------------------------------------------------------------------------

  private runningClient(): LanguageClient | undefined {
    return this.client !== undefined && this.client.state === State.Running ? this.client : undefined;
  }

  private async serverCommand(command: string): Promise<SeedStatus | undefined> {
    const client = this.runningClient();
    if (client === undefined) {
      const choice = await vscode.window.showWarningMessage(`${NAME}: the server is not running.`, 'Show Log', 'Restart');
      this.onChoice(choice);
      return undefined;
    }
    const result: unknown = await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [] });
    const status = parseStatus(result);
    if (status !== undefined) {
      this.status = status;
      this.render();
    }
    return status;
  }

  async toggle(): Promise<void> {
    const status = await this.serverCommand(SERVER_TOGGLE);
    if (status !== undefined) {
      this.enabledOverride = status.enabled;
    }
  }

  async clearCache(): Promise<void> {
    if ((await this.serverCommand(SERVER_CLEAR_CACHE)) !== undefined) {
      void vscode.window.showInformationMessage(`${NAME}: completion cache cleared.`);
    }
  }

  async showStatus(): Promise<void> {
    const status = await this.serverCommand(SERVER_STATUS);
    if (status !== undefined) {
      const choice = await vscode.window.showInformationMessage(statusSummary(status), 'Show Log', 'Toggle Completions');
      this.onChoice(choice);
    }
  }

  showLog(): void {
    this.output.show(true);
  }

  explainInstall(): void {
    const problem = this.lastProblem;
    if (problem === undefined || problem.kind === 'ok') {
      this.showLog();
      return;
    }
    const actions = problem.kind === 'notInstalled' ? ['Copy Install Command', 'Open Settings', 'Retry'] : ['Open Settings', 'Show Log', 'Retry'];
    void vscode.window.showErrorMessage(`${NAME}: ${problem.message}`, ...actions).then((choice) => this.onChoice(choice));
  }

  private onChoice(choice: string | undefined): void {
    switch (choice) {
      case 'Show Log':
        this.showLog();
        break;
      case 'Restart':
      case 'Retry':
        void this.restart();
        break;
      case 'Toggle Completions':
        void this.toggle();
        break;
      case 'Open Settings':
        void vscode.commands.executeCommand('workbench.action.openSettings', `${SECTION}.pythonPath`);
        break;
      case 'Copy Install Command':
        void vscode.env.clipboard.writeText(installCommand(this.python)).then(() =>
          vscode.window.showInformationMessage(`Copied: ${installCommand(this.python)} (run it in a terminal, then Retry)`, 'Retry'),
        ).then((next) => this.onChoice(next));
        break;
    }
  }

  // --- status bar ------------------------------------------------------------------------

  private setPhase(phase: ClientPhase): void {
    this.phase = phase;
    this.render();
  }

  private render(): void {
    const view = statusView(this.phase, this.status);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.command = COMMANDS[view.command];
    this.item.backgroundColor =
      view.severity === 'normal' ? undefined : new vscode.ThemeColor(view.severity === 'error' ? 'statusBarItem.errorBackground' : 'statusBarItem.warningBackground');
    this.item.show();
  }
}

let supervisor: Supervisor | undefined;

/** What activate() returns (for other extensions and for the tests). */
export interface SeedLspApi {
  serverPid(): number | undefined;
  status(): SeedStatus | undefined;
}

export function activate(context: vscode.ExtensionContext): SeedLspApi {
  const output = vscode.window.createOutputChannel(NAME, { log: true });
  const item = vscode.window.createStatusBarItem('seedLsp.status', vscode.StatusBarAlignment.Right, 100);
  item.name = NAME;
  const sup = new Supervisor(output, item);
  supervisor = sup;
  context.subscriptions.push(
    output,
    item,
    sup,
    vscode.commands.registerCommand(COMMANDS.toggle, () => sup.toggle()),
    vscode.commands.registerCommand(COMMANDS.restart, () => sup.restart()),
    vscode.commands.registerCommand(COMMANDS.showLog, () => sup.showLog()),
    vscode.commands.registerCommand(COMMANDS.explainInstall, () => sup.explainInstall()),
    vscode.commands.registerCommand('seedLsp.clearCompletionCache', () => sup.clearCache()),
    vscode.commands.registerCommand('seedLsp.showStatus', () => sup.showStatus()),
    vscode.workspace.onDidChangeConfiguration((event) => sup.onConfigurationChanged(event)),
  );
  void sup.start();
  return { serverPid: () => sup.serverPid, status: () => sup.lastStatus };
}

export async function deactivate(): Promise<void> {
  const sup = supervisor;
  supervisor = undefined;
  if (sup !== undefined) {
    await sup.stop();
  }
}
