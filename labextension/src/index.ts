import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ToolbarButton } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { WorkbenchPanel } from './panel';
import { runNotebook } from './runform';

const ICON = new LabIcon({
  name: 'workbench:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161">' +
    '<rect x="3" y="4" width="18" height="3" rx="1"/><rect x="5" y="9" width="3" height="11"/>' +
    '<rect x="16" y="9" width="3" height="11"/><rect x="9" y="11" width="6" height="2"/></g></svg>'
});

/** The "Workbench" side panel and the notebook toolbar's "Run as recorded run…" / "Sweep…". */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'workbench-lab:plugin',
  description: 'Envs, runs, services and GPUs of the workbench project; recorded runs from notebooks.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILabShell],
  activate: (app: JupyterFrontEnd, notebooks: INotebookTracker) => {
    const panel = new WorkbenchPanel(app);
    panel.title.icon = ICON;
    app.shell.add(panel, 'left', { rank: 250 });

    const start = async (nb: NotebookPanel, sweep: boolean) => {
      await nb.context.save();
      const job = await runNotebook(nb.context.path, sweep);
      if (job) {
        panel.follow(job);
        app.shell.activateById(panel.id);
      }
    };
    notebooks.widgetAdded.connect((_, nb) => {
      const run = new ToolbarButton({
        label: 'Run as recorded run…',
        tooltip: 'workbench run: this notebook with parameters, recorded under runs/',
        onClick: () => void start(nb, false)
      });
      const sweep = new ToolbarButton({
        label: 'Sweep…',
        tooltip: 'workbench sweep: this notebook over a parameter grid',
        onClick: () => void start(nb, true)
      });
      nb.toolbar.insertItem(10, 'workbench-run', run);
      nb.toolbar.insertItem(11, 'workbench-sweep', sweep);
    });
  }
};

export default plugin;
