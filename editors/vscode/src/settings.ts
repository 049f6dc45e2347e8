/**
 * The extension's settings (`seedLsp.*`) and what the server receives.
 *
 * Pure: no `vscode` import, so the mapping is unit tested under plain Node.
 * The server (lsp_server/config.py) accepts camelCase keys, either flat (the
 * initializationOptions) or nested under "seedLsp" (workspace/didChangeConfiguration).
 */

import * as os from 'os';
import * as path from 'path';

/** Settings forwarded to the server, one per field of lsp_server.config.Settings. */
export const SERVER_KEYS = [
  'bundle',
  'device',
  'threads',
  'enabled',
  'languages',
  'inlineCompletion',
  'completionItems',
  'diagnostics',
  'codeActions',
  'mode',
  'verify',
  'draft',
  'draftMinMatch',
  'draftTokens',
  'blockSize',
  'tau',
  'maxTokensLine',
  'maxTokensBlock',
  'temperature',
  'n',
  'prefixTokens',
  'suffixTokens',
  'minConfidence',
  'cacheMb',
  'kvLimitMb',
  'bundleCheckMs',
  'debounceMs',
  'requestTimeoutMs',
  'logLevel',
  'logDocumentText',
] as const;

/** Settings only the extension (or vscode-languageclient: trace.server) reads. */
export const EXTENSION_KEYS = ['pythonPath', 'trace.server'] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];
export type ExtensionKey = (typeof EXTENSION_KEYS)[number];
export type SettingKey = ServerKey | ExtensionKey;

/** The `seedLsp` section as read from the configuration: values are unchecked. */
export type RawConfig = Partial<Record<SettingKey, unknown>>;

/** What the server is sent: camelCase keys, JSON values. */
export type ServerSettings = Partial<Record<ServerKey, string | number | boolean | string[] | null>>;

/** Changing one of these restarts the server (the command or the document selector changes). */
export const RESTART_KEYS: readonly SettingKey[] = ['pythonPath', 'languages'];

export interface PathContext {
  /** The first workspace folder's path, if any. */
  workspaceFolder?: string;
  /** The user's home folder. */
  home?: string;
}

/** `~`, `${userHome}` and `${workspaceFolder}` expanded; a relative path with a separator resolved against the workspace. */
export function expandPath(value: string, ctx: PathContext, resolveRelative: boolean): string {
  const home = ctx.home ?? os.homedir();
  let out = value.trim();
  if (out === '~') {
    out = home;
  } else if (out.startsWith('~/') || out.startsWith('~\\')) {
    out = path.join(home, out.slice(2));
  }
  out = out.split('${userHome}').join(home);
  if (ctx.workspaceFolder !== undefined) {
    out = out.split('${workspaceFolder}').join(ctx.workspaceFolder);
  }
  if (resolveRelative && out !== '' && !path.isAbsolute(out) && ctx.workspaceFolder !== undefined) {
    out = path.resolve(ctx.workspaceFolder, out);
  }
  return out;
}

function isJsonScalar(value: unknown): value is string | number | boolean {
  return typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
}

/**
 * The settings the server is sent, from the `seedLsp` configuration section.
 *
 * - `bundle`: empty or unset = null (the default model); paths expanded.
 * - `languages`: trimmed, empty entries and duplicates dropped.
 * - `enabled`: `enabledOverride` (the session's toggle) wins over the setting.
 * - anything undefined, or not a JSON scalar, is left out (the server keeps its value);
 *   range and enum checks are the server's (it reports a bad value and keeps the old one).
 */
export function toServerSettings(config: RawConfig, ctx: PathContext = {}, enabledOverride?: boolean): ServerSettings {
  const out: ServerSettings = {};
  for (const key of SERVER_KEYS) {
    const value = config[key];
    if (key === 'bundle') {
      out.bundle = typeof value === 'string' && value.trim() !== '' ? expandPath(value, ctx, true) : null;
    } else if (key === 'languages') {
      if (typeof value === 'string') {
        out.languages = value.trim() ? [value.trim()] : [];
      } else if (Array.isArray(value)) {
        const ids = value.filter((v): v is string => typeof v === 'string').map((v) => v.trim()).filter((v) => v !== '');
        out.languages = [...new Set(ids)];
      }
    } else if (key === 'enabled' && enabledOverride !== undefined) {
      out.enabled = enabledOverride;
    } else if (isJsonScalar(value)) {
      out[key] = value;
    }
  }
  return out;
}

/** The initializationOptions: the settings, flat. */
export function initializationOptions(config: RawConfig, ctx: PathContext = {}, enabledOverride?: boolean): ServerSettings {
  return toServerSettings(config, ctx, enabledOverride);
}

/** The params of workspace/didChangeConfiguration: the settings nested under "seedLsp". */
export function didChangeConfigurationParams(
  config: RawConfig,
  ctx: PathContext = {},
  enabledOverride?: boolean,
): { settings: { seedLsp: ServerSettings } } {
  return { settings: { seedLsp: toServerSettings(config, ctx, enabledOverride) } };
}

/** The language ids the server serves, for the client's document selector. */
export function servedLanguages(config: RawConfig): string[] {
  const languages = toServerSettings({ languages: config.languages }).languages;
  return Array.isArray(languages) ? languages : ['python'];
}

export interface DocumentFilter {
  language?: string;
  scheme: string;
}

/** The client's document selector: saved and untitled documents of the served languages. */
export function documentSelector(languages: readonly string[]): DocumentFilter[] {
  const schemes = ['file', 'untitled'];
  if (languages.includes('*')) {
    return schemes.map((scheme) => ({ scheme }));
  }
  return languages.flatMap((language) => schemes.map((scheme) => ({ language, scheme })));
}

/**
 * The defaults declared in a package.json's `contributes.configuration` (keys without
 * the "seedLsp." prefix): what a user who changed nothing has.
 */
export function declaredDefaults(packageJson: unknown): RawConfig {
  const properties = (packageJson as { contributes?: { configuration?: { properties?: Record<string, { default?: unknown }> } } })
    ?.contributes?.configuration?.properties ?? {};
  const out: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(properties)) {
    if (name.startsWith('seedLsp.')) {
      out[name.slice('seedLsp.'.length)] = schema.default;
    }
  }
  return out as RawConfig;
}
