import { Job, post, requestAPI } from './api';
import { button, el } from './dom';

const POLL_MS = 1000;

/** A job followed live: its command, state, the run's cells done, and its log. */
export class JobView {
  readonly node: HTMLElement;
  private state: HTMLElement;
  private progress: HTMLProgressElement;
  private cells: HTMLElement;
  private log: HTMLPreElement;
  private offset = 0;

  constructor(private job: Job, private onDone: () => void) {
    this.state = el('span', { class: 'wb-status' }, 'running');
    this.progress = el('progress', { class: 'wb-job-progress', max: '1', value: '0' }) as HTMLProgressElement;
    this.cells = el('span', { class: 'wb-job-cells' });
    this.log = el('pre', { class: 'wb-job-log' });
    const stop = button('Stop', 'stop-job', () => void post(`jobs/${job.id}/stop`));
    const close = button('×', 'close-job', () => this.node.remove());
    this.node = el(
      'div',
      { class: 'wb-job', 'data-job': job.id },
      el('div', {}, el('code', {}, `workbench ${job.argv.join(' ')}`), ' ', this.state, ' ', stop, close),
      el('div', {}, this.progress, ' ', this.cells),
      this.log
    );
    void this.poll();
  }

  private async poll(): Promise<void> {
    try {
      const { data } = await requestAPI<Job>(`jobs/${this.job.id}?offset=${this.offset}`);
      const job = data!;
      this.offset = job.offset;
      if (job.log) {
        this.log.textContent = (this.log.textContent + job.log).slice(-20000);
        this.log.scrollTop = this.log.scrollHeight;
      }
      const p = job.progress;
      if (p && p.cells_total) {
        this.progress.max = p.cells_total;
        this.progress.value = p.cells_done;
        this.cells.textContent = `run ${p.run}: ${p.cells_done}/${p.cells_total} cells, ${p.status}`;
      }
      if (job.runs && job.runs.length > 1) {
        const done = job.runs.filter(r => r.status !== 'running').length;
        this.cells.textContent += ` (${done}/${job.runs.length} runs done)`;
      }
      if (job.state === 'done') {
        const ok = job.exit_code === 0;
        this.state.textContent = ok ? 'done' : `failed (exit ${job.exit_code})`;
        this.node.classList.add(ok ? 'wb-ok' : 'wb-failed');
        if (job.result?.error) {
          this.log.textContent += `\n${job.result.error.message}`;
        }
        this.onDone();
        return;
      }
    } catch (error) {
      this.state.textContent = String((error as Error).message);
    }
    window.setTimeout(() => void this.poll(), POLL_MS);
  }
}
