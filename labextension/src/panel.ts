import { JupyterFrontEnd } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { Job, post, requestAPI } from './api';
import { barChart, button, duration, el, short } from './dom';
import { JobView } from './jobview';

const POLL_MS = 5000;
const RUNS_SHOWN = 30;

type Section = 'envs' | 'runs' | 'services' | 'gpus';
const HEADINGS: Record<Section, string> = { envs: 'Envs', runs: 'Runs', services: 'Services', gpus: 'GPUs' };

/** The "Workbench" side panel: envs, runs, services and GPUs of the project Lab serves,
 * every figure read through the workbench routes (the CLI's own envelopes). */
export class WorkbenchPanel extends Widget {
  private sections = new Map<Section, HTMLElement>();
  private jobs: HTMLElement;
  private compare: HTMLElement;
  private picked = new Set<string>();
  private timer = 0;
  private lastMetrics = new Map<string, { at: number; requests: number; sum: number; count: number }>();

  constructor(private app: JupyterFrontEnd) {
    super();
    this.id = 'workbench-panel';
    this.addClass('wb-panel');
    this.title.caption = 'Workbench';
    this.jobs = el('div', { class: 'wb-jobs' });
    this.compare = el('div', { class: 'wb-compare' });
    this.node.append(this.jobs);
    for (const name of ['envs', 'runs', 'services', 'gpus'] as Section[]) {
      const body = el('div', { class: 'wb-body' }, 'loading…');
      const header = el('h3', { class: 'wb-heading' }, HEADINGS[name]);
      const section = el('section', { class: 'wb-section', 'data-section': name }, header, body);
      if (name === 'runs') {
        section.append(this.compare);
      }
      this.node.append(section);
      this.sections.set(name, body);
    }
  }

  protected onAfterShow(): void {
    void this.refresh();
    window.clearInterval(this.timer);
    this.timer = window.setInterval(() => void this.refresh(), POLL_MS);
  }

  protected onAfterHide(): void {
    window.clearInterval(this.timer);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    super.dispose();
  }

  /** Read every section again (each one independently: one failing leaves the others). */
  async refresh(): Promise<void> {
    await Promise.all([
      this.load('envs', () => this.envs()),
      this.load('runs', () => this.runs()),
      this.load('services', () => this.services()),
      this.load('gpus', () => this.gpus())
    ]);
  }

  private async load(name: Section, render: () => Promise<Node>): Promise<void> {
    const body = this.sections.get(name)!;
    try {
      body.replaceChildren(await render());
    } catch (error) {
      body.replaceChildren(el('div', { class: 'wb-error' }, String((error as Error).message)));
    }
  }

  /** Follow a job (a build, a run, a start or stop) at the top of the panel. */
  follow(job: Job): void {
    const view = new JobView(job, () => void this.refresh());
    this.jobs.prepend(view.node);
  }

  private async start(path: string, body: object = {}): Promise<void> {
    try {
      const envelope = await post<Job>(path, body);
      this.follow(envelope.data!);
    } catch (error) {
      this.jobs.prepend(el('div', { class: 'wb-error' }, String((error as Error).message)));
    }
  }

  private async envs(): Promise<Node> {
    const { data } = await requestAPI<any[]>('envs');
    const table = el('table', { class: 'wb-table' });
    table.append(el('tr', {}, ...['env', 'state', 'lock', 'kernel', 'gpus'].map(h => el('th', {}, h))));
    for (const env of data ?? []) {
      const drift = el('div', { class: 'wb-drift' });
      const actions = el(
        'div',
        { class: 'wb-actions' },
        button('Build', 'build', () => void this.start('envs/build', { names: [env.name] }), 'workbench env create'),
        button('Rebuild locked', 'rebuild-locked', () =>
          void this.start('envs/build', { names: [env.name], locked: true, force: true }), 'workbench env create --locked --force'),
        button('Drift', 'check', () => void this.drift(env.name, drift), 'workbench env check')
      );
      const row = el(
        'tr',
        { class: 'wb-row', 'data-name': env.name },
        el('td', {}, el('b', {}, env.name)),
        el('td', { class: 'wb-status' }, env.built ? 'built' : 'not built'),
        el('td', {}, env.lock ?? '-'),
        el('td', {}, env.kernel ?? '-'),
        el('td', {}, env.gpus ? env.gpus.join(',') : '-')
      );
      table.append(row, el('tr', { class: 'wb-detail' }, el('td', { colspan: '5' }, actions, drift)));
    }
    return table;
  }

  private async drift(name: string, into: HTMLElement): Promise<void> {
    into.textContent = 'checking…';
    try {
      const { data } = await requestAPI<any[]>(`envs/check?name=${encodeURIComponent(name)}`);
      const r = data![0];
      const lines = [
        `${r.added.length} added, ${r.removed.length} removed, ${r.changed.length} changed` +
          (r.lock_stale ? ' (the spec changed since the lock)' : ''),
        ...r.added.map((p: any) => `+ ${p.name}==${p.version}`),
        ...r.removed.map((p: any) => `- ${p.name}==${p.version}`),
        ...r.changed.map((p: any) => `~ ${p.name} ${p.locked} → ${p.installed}`)
      ];
      into.replaceChildren(el('pre', {}, lines.join('\n')));
    } catch (error) {
      into.replaceChildren(el('div', { class: 'wb-error' }, String((error as Error).message)));
    }
  }

  private async runs(): Promise<Node> {
    const { data } = await requestAPI<any[]>('runs');
    const all = data ?? [];
    const shown = all.slice(-RUNS_SHOWN).reverse();
    const box = el('div', {});
    const bar = el(
      'div',
      { class: 'wb-toolbar' },
      `${all.length} runs`,
      button('Compare', 'compare', () => void this.compareRuns(), 'pick two or more runs')
    );
    box.append(bar);
    const table = el('table', { class: 'wb-table' });
    for (const run of shown) {
      const pick = el('input', { type: 'checkbox', class: 'wb-pick', 'data-run': run.id }) as HTMLInputElement;
      pick.checked = this.picked.has(run.id);
      pick.addEventListener('change', () => (pick.checked ? this.picked.add(run.id) : this.picked.delete(run.id)));
      const open = el('a', { href: '#', class: 'wb-link', title: `open ${run.output}` }, run.id);
      open.addEventListener('click', event => {
        event.preventDefault();
        void this.app.commands.execute('docmanager:open', { path: run.output });
      });
      const metrics = Object.entries(run.metrics ?? {}).slice(0, 3).map(([k, v]) => `${k}=${short(v)}`).join(' ');
      const params = Object.entries(run.parameters ?? {}).slice(0, 4).map(([k, v]) => `${k}=${short(v)}`).join(' ');
      const sweep = run.sweep ? el('span', { class: 'wb-tag', title: 'compare the sweep' }, 'sweep') : null;
      sweep?.addEventListener('click', () => void this.compareSweep(run.sweep));
      table.append(
        el(
          'tr',
          { class: 'wb-row', 'data-name': run.id },
          el('td', {}, pick),
          el(
            'td',
            {},
            open,
            sweep,
            el('div', { class: 'wb-dim' }, run.notebook),
            el('div', { class: 'wb-metrics' }, metrics),
            el('div', { class: 'wb-dim' }, params)
          ),
          el('td', { class: `wb-status wb-${run.status}` }, run.status, el('div', { class: 'wb-dim' }, duration(run.seconds)))
        )
      );
    }
    box.append(table);
    return box;
  }

  private async compareRuns(): Promise<void> {
    const ids = [...this.picked];
    if (ids.length < 2) {
      this.compare.replaceChildren(el('div', { class: 'wb-error' }, 'pick two or more runs to compare'));
      return;
    }
    await this.showComparison(`runs/compare?${ids.map(i => `id=${encodeURIComponent(i)}`).join('&')}`, false);
  }

  private async compareSweep(sweep: string): Promise<void> {
    await this.showComparison(`runs/compare?sweep=${encodeURIComponent(sweep)}`, true);
  }

  private async showComparison(path: string, sweep: boolean): Promise<void> {
    try {
      const { data } = await requestAPI<any>(path);
      const rows: any[] = sweep ? data.runs : data;
      const params = [...new Set(rows.flatMap(r => Object.keys(r.parameters ?? {})))];
      const metrics = [...new Set(rows.flatMap(r => Object.keys(r.metrics ?? {})))];
      const table = el('table', { class: 'wb-table' });
      table.append(el('tr', {}, el('th', {}, ''), ...rows.map(r => el('th', {}, r.id.slice(-12)))));
      table.append(el('tr', {}, el('td', {}, 'status'), ...rows.map(r => el('td', {}, r.status))));
      for (const p of params) {
        table.append(el('tr', {}, el('td', {}, p), ...rows.map(r => el('td', {}, short(r.parameters?.[p])))));
      }
      for (const m of metrics) {
        table.append(
          el('tr', { class: 'wb-metric', 'data-metric': m }, el('th', {}, m), ...rows.map(r => el('td', {}, short(r.metrics?.[m]))))
        );
      }
      const plotted = metrics.find(m => rows.every(r => typeof r.metrics?.[m] === 'number'));
      const plot = plotted
        ? barChart(rows.map(r => r.id), rows.map(r => r.metrics[plotted]), plotted)
        : el('div', { class: 'wb-dim' }, 'no metric recorded by every run');
      this.compare.replaceChildren(
        el('div', { class: 'wb-heading' }, sweep ? `sweep ${data.sweep}` : 'runs compared'),
        table,
        plot
      );
    } catch (error) {
      this.compare.replaceChildren(el('div', { class: 'wb-error' }, String((error as Error).message)));
    }
  }

  private async services(): Promise<Node> {
    const { data } = await requestAPI<any[]>('services');
    const list = data ?? [];
    const table = el('table', { class: 'wb-table' });
    table.append(el('tr', {}, ...['service', 'health', 'traffic', ''].map(h => el('th', {}, h))));
    const running = new Set(list.map(s => s.name));
    for (const s of list) {
      const traffic = el('td', { class: 'wb-traffic' }, '-');
      if (s.kind !== 'lab' && s.health === 'healthy') {
        void this.traffic(s.name, traffic);
      }
      const actions = el('td', {});
      if (s.proxy) {
        actions.append(button('Open', 'open', () => this.openProxied(s.name, s.proxy), s.proxy));
      }
      if (s.kind !== 'lab') {
        actions.append(button('Stop', 'stop', () => void this.start(`services/${s.name}/stop`), 'workbench down'));
      }
      table.append(
        el(
          'tr',
          { class: 'wb-row', 'data-name': s.name },
          el('td', { title: s.url }, el('b', {}, s.name), el('div', { class: 'wb-dim' }, s.kind)),
          el(
            'td',
            {},
            el('span', { class: `wb-status wb-${s.health}` }, s.health),
            el('div', { class: 'wb-dim' }, `up ${duration(s.uptime)}, ${s.restarts} restarts`)
          ),
          traffic,
          actions
        )
      );
    }
    const box = el('div', {}, table);
    const declared = await this.declared();
    const stopped = declared.filter(n => !running.has(n));
    if (stopped.length) {
      const row = el('div', { class: 'wb-toolbar' }, 'not running: ');
      for (const name of stopped) {
        row.append(
          el('span', { class: 'wb-row', 'data-name': name },
            name, ' ', button('Start', 'start', () => void this.start(`services/${name}/start`), 'workbench up'))
        );
      }
      box.append(row);
    }
    if (!list.length && !stopped.length) {
      box.append(el('div', { class: 'wb-dim' }, 'nothing running'));
    }
    return box;
  }

  /** Engines and apps of the manifest (for Start): what `services list` calls declared. */
  private async declared(): Promise<string[]> {
    const { data } = await requestAPI<any>('services/declared');
    return data ?? [];
  }

  private async traffic(name: string, into: HTMLElement): Promise<void> {
    try {
      const { data } = await requestAPI<any>(`services/${name}/metrics`);
      const now = Date.now() / 1000;
      const last = this.lastMetrics.get(name);
      const current = { at: now, requests: data.requests ?? 0, sum: data.ttft_seconds_sum ?? 0, count: data.ttft_seconds_count ?? 0 };
      this.lastMetrics.set(name, last && now - last.at < 60 ? last : current);
      if (last) {
        const minutes = Math.max((now - last.at) / 60, 1 / 60);
        const rate = (current.requests - last.requests) / minutes;
        const n = current.count - last.count;
        const ttft = n > 0 ? `${(((current.sum - last.sum) / n) * 1000).toFixed(0)} ms TTFT` : '';
        into.textContent = `${rate.toFixed(1)} req/min ${ttft}`.trim();
      } else {
        into.textContent = `${current.requests} requests`;
      }
    } catch {
      into.textContent = '-';
    }
  }

  /** An app or engine in a Lab tab, through Lab's own port. */
  private openProxied(name: string, path: string): void {
    const settings = ServerConnection.makeSettings();
    const url = URLExt.join(settings.baseUrl, path.replace(settings.baseUrl, ''));
    const frame = new Widget({ node: el('iframe', { src: url, class: 'wb-frame' }) });
    frame.id = `workbench-proxy-${name}`;
    frame.title.label = name;
    frame.title.closable = true;
    this.app.shell.add(frame, 'main');
    this.app.shell.activateById(frame.id);
  }

  private async gpus(): Promise<Node> {
    const { data } = await requestAPI<any>('gpus');
    const sessions = await this.kernelNotebooks();
    const box = el('div', {});
    if (data.note) {
      box.append(el('div', { class: 'wb-dim' }, data.note));
    }
    for (const g of data.gpus ?? []) {
      const holders = (g.holders ?? []).map((h: any) =>
        `${h.kind} ${sessions.get(h.kernel_id) ?? h.name} (${h.user}, pid ${h.pid})`);
      const unleased = (g.unleased ?? []).map((u: any) => `no lease: pid ${u.pid} ${u.user ?? ''} ${u.used_memory ?? '?'} MiB`);
      box.append(
        el(
          'div',
          { class: 'wb-row wb-gpu', 'data-name': String(g.index) },
          el('b', {}, `GPU ${g.index} ${g.name}`),
          el('div', {}, `${g.memory_used ?? 0} / ${g.memory_total ?? '?'} MiB, ${g.utilization ?? '?'}% busy`),
          el('div', { class: 'wb-status' }, [...holders, ...unleased].join('; ') || 'free')
        )
      );
    }
    if (!(data.gpus ?? []).length) {
      box.append(el('div', { class: 'wb-dim' }, `no GPUs; ${(data.leases ?? []).length} leases`));
    }
    return box;
  }

  /** kernel id -> the notebook of this Lab that runs it. */
  private async kernelNotebooks(): Promise<Map<string, string>> {
    const names = new Map<string, string>();
    for (const session of this.app.serviceManager.sessions.running()) {
      if (session.kernel) {
        names.set(session.kernel.id, session.path);
      }
    }
    return names;
  }
}
