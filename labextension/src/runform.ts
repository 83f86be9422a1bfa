import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { Job, post, requestAPI } from './api';
import { el } from './dom';

interface Parameter {
  name: string;
  type: string;
  default: string;
  help: string;
}

/** The form of "Run as recorded run…" (one value per parameter) or "Sweep…" (a comma-separated
 * list per parameter), built from the notebook's parameters cell and its presets. */
class RunForm extends Widget {
  constructor(parameters: Parameter[], presets: Record<string, object>, sweep: boolean) {
    super();
    this.addClass('wb-run-form');
    const preset = el('select', { name: '__preset' });
    preset.append(el('option', { value: '' }, '(defaults)'));
    for (const name of Object.keys(presets)) {
      preset.append(el('option', { value: name }, name));
    }
    preset.addEventListener('change', () => {
      const values = (presets as any)[preset.value] ?? {};
      for (const p of parameters) {
        const input = this.node.querySelector(`input[name="${p.name}"]`) as HTMLInputElement;
        if (input) {
          input.placeholder = p.name in values ? JSON.stringify(values[p.name]) : p.default;
        }
      }
    });
    this.node.append(el('label', {}, 'preset ', preset));
    for (const p of parameters) {
      const input = el('input', {
        name: p.name,
        placeholder: p.default,
        title: p.help || `${p.type}, default ${p.default}`
      });
      this.node.append(
        el('label', { class: 'wb-field' }, el('span', {}, `${p.name} `), el('span', { class: 'wb-dim' }, sweep ? `${p.type}, values a,b,c ` : `${p.type} `), input)
      );
    }
    if (sweep) {
      this.node.append(el('label', {}, el('input', { type: 'checkbox', name: '__zip' }), ' pair values (zip) instead of every combination'));
    }
    if (!parameters.length) {
      this.node.append(el('div', { class: 'wb-dim' }, 'this notebook has no parameters cell'));
    }
  }

  getValue(): { parameters: Record<string, string>; preset: string | null; zip: boolean } {
    const parameters: Record<string, string> = {};
    for (const input of Array.from(this.node.querySelectorAll('input:not([type=checkbox])')) as HTMLInputElement[]) {
      if (input.value.trim() !== '') {
        parameters[input.name] = input.value.trim();
      }
    }
    const preset = (this.node.querySelector('select[name=__preset]') as HTMLSelectElement).value || null;
    const zip = !!(this.node.querySelector('input[name=__zip]') as HTMLInputElement | null)?.checked;
    return { parameters, preset, zip };
  }
}

/** Ask for the values, start `workbench run` (or `sweep`) through the server, return its job. */
export async function runNotebook(path: string, sweep: boolean): Promise<Job | null> {
  const { data } = await requestAPI<any>(`notebooks/parameters?path=${encodeURIComponent(path)}`);
  const form = new RunForm(data.parameters, data.presets, sweep);
  const result = await showDialog({
    title: sweep ? `Sweep ${path}` : `Run ${path} as a recorded run`,
    body: form,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: sweep ? 'Sweep' : 'Run' })]
  });
  if (!result.button.accept || !result.value) {
    return null;
  }
  const { parameters, preset, zip } = result.value;
  const body = sweep ? { notebook: path, parameters, preset, zip } : { notebook: path, parameters, preset };
  const envelope = await post<Job>(sweep ? 'sweeps' : 'runs', body);
  return envelope.data!;
}
