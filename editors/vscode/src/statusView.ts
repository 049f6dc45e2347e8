/**
 * The status bar item's text, tooltip, colour and click command, from the server's
 * `seedLsp/status` notification and the client's own state. Pure (no `vscode` import).
 */

export const STATUS_NOTIFICATION = 'seedLsp/status';

export type ServerState = 'loading' | 'ready' | 'error' | 'disabled';

/** The params of `seedLsp/status` (and the result of the seedLsp.status/toggle/clearCache commands). */
export interface SeedStatus {
  state: ServerState;
  enabled: boolean;
  model: string | null;
  device: string | null;
  variant: string | null;
  error: string | null;
  lastLatencyMs: number | null;
  cacheHitRate: number | null;
}

const STATES: readonly string[] = ['loading', 'ready', 'error', 'disabled'];

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function numberOrNull(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** A SeedStatus from whatever the server sent, or undefined when it is not one. */
export function parseStatus(value: unknown): SeedStatus | undefined {
  if (typeof value !== 'object' || value === null) {
    return undefined;
  }
  const v = value as Record<string, unknown>;
  if (typeof v.state !== 'string' || !STATES.includes(v.state) || typeof v.enabled !== 'boolean') {
    return undefined;
  }
  return {
    state: v.state as ServerState,
    enabled: v.enabled,
    model: stringOrNull(v.model),
    device: stringOrNull(v.device),
    variant: stringOrNull(v.variant),
    error: stringOrNull(v.error),
    lastLatencyMs: numberOrNull(v.lastLatencyMs),
    cacheHitRate: numberOrNull(v.cacheHitRate),
  };
}

/** Where the client is, independently of what the server last said. */
export type ClientPhase =
  | { phase: 'starting' }
  | { phase: 'running' }
  | { phase: 'restarting'; inMs: number; crashes: number }
  | { phase: 'stopped'; reason: string }
  | { phase: 'notInstalled'; message: string };

export type Command = 'toggle' | 'restart' | 'showLog' | 'explainInstall';

export interface StatusView {
  text: string;
  tooltip: string;
  /** normal, or the warning/error background of the item. */
  severity: 'normal' | 'warning' | 'error';
  /** What a click does. */
  command: Command;
}

/** "CPUExecutionProvider" -> "CPU". */
export function deviceName(provider: string | null): string | null {
  if (provider === null) {
    return null;
  }
  return provider.replace(/ExecutionProvider$/, '') || provider;
}

/** The last path component of the model bundle folder ("model/default/bundle" -> "default/bundle"). */
export function modelName(bundle: string | null): string | null {
  if (bundle === null) {
    return null;
  }
  const parts = bundle.split(/[\\/]+/).filter((p) => p !== '');
  return parts.slice(-2).join('/') || bundle;
}

function details(status: SeedStatus): string[] {
  const lines: string[] = [];
  const model = modelName(status.model);
  if (model !== null) {
    lines.push(`Model: ${model}`);
  }
  const device = deviceName(status.device);
  if (device !== null) {
    lines.push(`Device: ${device}${status.variant ? ` (${status.variant})` : ''}`);
  }
  if (status.lastLatencyMs !== null) {
    lines.push(`Last completion: ${Math.round(status.lastLatencyMs)} ms`);
  }
  if (status.cacheHitRate !== null) {
    lines.push(`Cache hits: ${Math.round(status.cacheHitRate * 100)}%`);
  }
  return lines;
}

const NAME = 'Seed';

export function statusView(client: ClientPhase, status?: SeedStatus): StatusView {
  switch (client.phase) {
    case 'starting':
      return { text: `$(loading~spin) ${NAME}`, tooltip: 'Seed Diffusion LSP: starting the server', severity: 'normal', command: 'showLog' };
    case 'restarting': {
      const seconds = Math.max(1, Math.round(client.inMs / 1000));
      return {
        text: `$(sync~spin) ${NAME}`,
        tooltip: `Seed Diffusion LSP: the server stopped (${client.crashes} time${client.crashes === 1 ? '' : 's'} in a row); restarting in ${seconds} s. Click for the log.`,
        severity: 'warning',
        command: 'showLog',
      };
    }
    case 'stopped':
      return {
        text: `$(debug-disconnect) ${NAME}`,
        tooltip: `Seed Diffusion LSP: the server is not running (${client.reason}). Click to restart it.`,
        severity: 'error',
        command: 'restart',
      };
    case 'notInstalled':
      return { text: `$(error) ${NAME}`, tooltip: client.message, severity: 'error', command: 'explainInstall' };
    case 'running':
      break;
  }
  if (status === undefined) {
    return { text: `$(loading~spin) ${NAME}`, tooltip: 'Seed Diffusion LSP: waiting for the server', severity: 'normal', command: 'showLog' };
  }
  const info = details(status);
  switch (status.state) {
    case 'loading':
      return {
        text: `$(loading~spin) ${NAME}`,
        tooltip: ['Seed Diffusion LSP: loading the model', ...info].join('\n'),
        severity: 'normal',
        command: 'toggle',
      };
    case 'error':
      return {
        text: `$(error) ${NAME}`,
        tooltip: [`Seed Diffusion LSP: the model did not load: ${status.error ?? 'unknown error'}`,
          'Check seedLsp.bundle and seedLsp.device, then run "Seed LSP: Restart Server". Click for the log.'].join('\n'),
        severity: 'error',
        command: 'showLog',
      };
    case 'disabled':
      return {
        text: `$(circle-slash) ${NAME}`,
        tooltip: ['Seed Diffusion LSP: completions off', ...info, 'Click to turn completions on'].join('\n'),
        severity: 'normal',
        command: 'toggle',
      };
    case 'ready': {
      const latency = status.lastLatencyMs !== null ? ` ${Math.round(status.lastLatencyMs)} ms` : '';
      return {
        text: `$(sparkle) ${NAME}${latency}`,
        tooltip: ['Seed Diffusion LSP: completions on', ...info, 'Click to turn completions off'].join('\n'),
        severity: 'normal',
        command: 'toggle',
      };
    }
  }
}

/** One line for the "Show Status" message. */
export function statusSummary(status: SeedStatus): string {
  const state = {
    loading: 'loading the model',
    ready: 'completions on',
    disabled: 'completions off',
    error: `model not loaded (${status.error ?? 'unknown error'})`,
  }[status.state];
  return [`Seed Diffusion LSP: ${state}`, ...details(status)].join(' · ');
}
