import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The CLI's JSON envelope, as every workbench route answers it. */
export interface Envelope<T = any> {
  schema: number;
  command: string;
  exit_code: number;
  data?: T;
  error?: { message: string };
}

/** Calls <base_url>workbench/api/PATH with Lab's token and XSRF header. */
export async function requestAPI<T = any>(
  path: string,
  init: RequestInit = {}
): Promise<Envelope<T>> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'workbench', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let envelope: Envelope<T>;
  try {
    envelope = JSON.parse(text);
  } catch {
    throw new Error(`${path}: HTTP ${response.status} ${text.slice(0, 200)}`);
  }
  if (envelope.error) {
    throw new Error(envelope.error.message);
  }
  return envelope;
}

export function post<T = any>(path: string, body: object = {}): Promise<Envelope<T>> {
  return requestAPI<T>(path, { method: 'POST', body: JSON.stringify(body) });
}

/** A job: a CLI command the server runs in the background. */
export interface Job {
  id: string;
  command: string;
  argv: string[];
  state: 'running' | 'done';
  exit_code: number | null;
  log: string;
  offset: number;
  result: Envelope | null;
  progress?: {
    run: string;
    status: string;
    cells_done: number;
    cells_total: number;
  } | null;
  runs?: { id: string; status: string; parameters: any; metrics: any }[];
}
