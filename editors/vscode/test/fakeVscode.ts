/**
 * A stand-in for the `vscode` module, enough to run the extension's activate() and
 * vscode-languageclient under plain Node (no VS Code binary can be downloaded here).
 * The parts the extension uses are real fakes that record what happens (status bar,
 * messages, commands, configuration); everything else falls back to an inert stub.
 */

import Module = require('module');

type Listener = (event: unknown) => void;
type AnyFunction = (...args: unknown[]) => unknown;

/** Callable, constructible, and every property is another stub. */
export function stub(): any {
  const target = function () {};
  return new Proxy(target, {
    get(_t, prop) {
      if (prop === 'then') {
        return undefined; // not a promise
      }
      if (prop === 'prototype') {
        return {};
      }
      if (prop === Symbol.toPrimitive) {
        return () => 'stub';
      }
      return stub();
    },
    apply: () => stub(),
    construct: () => stub(),
  });
}

/** obj, with a stub for every property it lacks. */
function withFallback<T extends object>(obj: T): T {
  return new Proxy(obj, {
    get(target, prop, receiver) {
      return prop in target ? Reflect.get(target, prop, receiver) : stub();
    },
  });
}

const disposable = (): { dispose(): void } => ({ dispose() {} });

export interface FakeStatusBarItem {
  text: string;
  tooltip: string | undefined;
  command: string | undefined;
  backgroundColor: { id: string } | undefined;
  name: string | undefined;
  visible: boolean;
  show(): void;
  hide(): void;
  dispose(): void;
}

export interface ShownMessage {
  level: 'error' | 'warning' | 'info';
  message: string;
  items: string[];
}

export class FakeVscode {
  config: Record<string, unknown> = {};
  readonly commands = new Map<string, AnyFunction>();
  readonly statusItems: FakeStatusBarItem[] = [];
  readonly messages: ShownMessage[] = [];
  readonly log: string[] = [];
  readonly inlineProviders: { selector: unknown; provider: unknown }[] = [];
  private readonly configListeners: Listener[] = [];
  readonly module: Record<string, unknown>;

  constructor() {
    const logChannel = (name: string) => {
      const line = (level: string) => (message: unknown, ...rest: unknown[]) => {
        this.log.push(`[${level}] ${String(message)}${rest.length ? ' ' + rest.map(String).join(' ') : ''}`);
      };
      return withFallback({
        name,
        logLevel: 2,
        onDidChangeLogLevel: () => disposable(),
        trace: line('trace'),
        debug: line('debug'),
        info: line('info'),
        warn: line('warn'),
        error: line('error'),
        append: line('append'),
        appendLine: line('info'),
        replace: line('replace'),
        clear() {},
        show() {},
        hide() {},
        dispose() {},
      });
    };
    const show = (level: ShownMessage['level']) => async (message: string, ...items: unknown[]) => {
      this.messages.push({ level, message, items: items.filter((i): i is string => typeof i === 'string') });
      return undefined;
    };
    const self = this;
    this.module = withFallback({
      version: '1.91.0',
      StatusBarAlignment: { Left: 1, Right: 2 },
      ProgressLocation: { SourceControl: 1, Window: 10, Notification: 15 },
      LogLevel: { Off: 0, Trace: 1, Debug: 2, Info: 3, Warning: 4, Error: 5 },
      ThemeColor: class {
        constructor(readonly id: string) {}
      },
      Disposable: Object.assign(
        class {
          constructor(private readonly fn: () => void) {}
          dispose(): void {
            this.fn();
          }
        },
        { from: (...items: { dispose(): void }[]) => ({ dispose: () => items.forEach((i) => i.dispose()) }) },
      ),
      env: withFallback({ appName: 'fake-vscode', language: 'en', clipboard: { writeText: async () => undefined } }),
      window: withFallback({
        createOutputChannel: (name: string) => logChannel(name),
        createStatusBarItem: () => {
          const item: FakeStatusBarItem = {
            text: '', tooltip: undefined, command: undefined, backgroundColor: undefined, name: undefined, visible: false,
            show() { item.visible = true; },
            hide() { item.visible = false; },
            dispose() { item.visible = false; },
          };
          self.statusItems.push(item);
          return item;
        },
        showErrorMessage: show('error'),
        showWarningMessage: show('warning'),
        showInformationMessage: show('info'),
        withProgress: (_options: unknown, task: AnyFunction) =>
          task({ report() {} }, { isCancellationRequested: false, onCancellationRequested: () => disposable() }),
        activeTextEditor: undefined,
        visibleTextEditors: [],
        onDidChangeVisibleTextEditors: () => disposable(),
        onDidChangeActiveTextEditor: () => disposable(),
      }),
      workspace: withFallback({
        workspaceFolders: undefined,
        textDocuments: [],
        notebookDocuments: [],
        getConfiguration: (section?: string) =>
          withFallback({
            get: (key: string, fallback?: unknown) => {
              const value = section === 'seedLsp' ? self.config[key] : undefined;
              return value === undefined ? fallback : value;
            },
            has: (key: string) => section === 'seedLsp' && key in self.config,
            update: async () => undefined,
          }),
        onDidChangeConfiguration: (listener: Listener) => {
          self.configListeners.push(listener);
          return disposable();
        },
        onDidOpenTextDocument: () => disposable(),
        onDidCloseTextDocument: () => disposable(),
        onDidChangeTextDocument: () => disposable(),
        onDidSaveTextDocument: () => disposable(),
        onWillSaveTextDocument: () => disposable(),
        onDidChangeWorkspaceFolders: () => disposable(),
      }),
      languages: withFallback({
        match: () => 0,
        registerInlineCompletionItemProvider: (selector: unknown, provider: unknown) => {
          self.inlineProviders.push({ selector, provider });
          return disposable();
        },
      }),
      commands: withFallback({
        registerCommand: (id: string, fn: AnyFunction) => {
          if (self.commands.has(id)) {
            throw new Error(`command '${id}' already exists`);
          }
          self.commands.set(id, fn);
          return { dispose: () => self.commands.delete(id) };
        },
        executeCommand: async (id: string, ...args: unknown[]) => self.commands.get(id)?.(...args),
      }),
    });
  }

  /** Changes settings and fires onDidChangeConfiguration for them. */
  changeConfig(changes: Record<string, unknown>): void {
    Object.assign(this.config, changes);
    const keys = Object.keys(changes);
    const event = {
      affectsConfiguration: (section: string) =>
        section === 'seedLsp' || keys.some((k) => section === `seedLsp.${k}` || `seedLsp.${k}`.startsWith(section + '.')),
    };
    for (const listener of this.configListeners) {
      listener(event);
    }
  }

  /** Makes `require('vscode')` return this fake (call before loading the extension). */
  install(): void {
    const fake = this.module;
    const loader = Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown };
    const original = loader._load;
    loader._load = function (request: string, ...rest: unknown[]) {
      return request === 'vscode' ? fake : original.call(this, request, ...rest);
    };
  }
}
