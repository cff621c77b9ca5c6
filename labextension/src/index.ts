/**
 * jupyter-kremote's JupyterLab plugins: the "Remote clusters" sidebar with its palette
 * command, and the status-bar count of running pods. They share one ClusterStore.
 */

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Token } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { AdminStore, adminToggle, adminView } from './admin';
import { createLogWidget, LogView } from './logs';
import { ClusterStore } from './model';
import { ClustersPanel } from './panel';
import { runningPods } from './state';

export const CommandIds = {
  open: 'kremote:open-panel',
  openLogs: 'kremote:open-logs'
};

const PANEL_ID = 'jupyter-kremote-panel';

/** The shared model, provided by the sidebar plugin. */
export const IClusterStore = new Token<ClusterStore>(
  'jupyter-kremote:store',
  'The clusters of the jupyter-kremote server extension, kept live.'
);

export const clusterIcon = new LabIcon({
  name: 'jupyter-kremote:cluster',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M4 3h16a1 1 0 0 1 1 1v5a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zm2 3v1h2V6zm4 0v1h2V6z"/>' +
    '<path d="M4 14h16a1 1 0 0 1 1 1v5a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1v-5a1 1 0 0 1 1-1zm2 3v1h2v-1zm4 0v1h2v-1z"/>' +
    '</g></svg>'
});

/** The path of the notebook (or any document) in focus, or null. */
function currentPath(app: JupyterFrontEnd): string | null {
  const widget = app.shell.currentWidget as (Widget & { context?: { path?: string } }) | null;
  const path = widget?.context?.path;
  return typeof path === 'string' ? path : null;
}

const sidebar: JupyterFrontEndPlugin<ClusterStore> = {
  id: 'jupyter-kremote:sidebar',
  description: 'The "Remote clusters" sidebar panel of jupyter-kremote.',
  autoStart: true,
  provides: IClusterStore,
  optional: [ILabShell, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ): ClusterStore => {
    const store = new ClusterStore();
    const logTracker = new WidgetTracker<MainAreaWidget<LogView>>({
      namespace: 'jupyter-kremote-logs'
    });
    let lastNotebook: string | null = null;
    const notebook = (): string | null => {
      const path = currentPath(app);
      if (path && path.endsWith('.ipynb')) {
        lastNotebook = path;
      }
      return lastNotebook;
    };

    app.commands.addCommand(CommandIds.openLogs, {
      label: 'Remote clusters: open a pod log',
      execute: args => {
        const id = String(args.id ?? '');
        const rank = Number(args.rank ?? 0);
        const name = String(args.name ?? `rank-${rank}`);
        const existing = logTracker.find(w => w.id === `jupyter-kremote-log-${id}-${rank}`);
        if (existing) {
          app.shell.activateById(existing.id);
          return existing;
        }
        const widget = createLogWidget(id, rank, name);
        void logTracker.add(widget);
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    const admin = new AdminStore();
    const panel = new ClustersPanel({
      store,
      admin: {
        available: () => admin.state.available,
        toggle: () => adminToggle(admin),
        view: () => adminView(admin),
        changed: admin.changed
      },
      currentNotebook: notebook,
      openLogs: (cluster, pod) =>
        void app.commands.execute(CommandIds.openLogs, {
          id: cluster.id,
          rank: pod.rank,
          name: pod.name ?? `rank-${pod.rank}`
        })
    });
    panel.title.icon = clusterIcon;
    panel.id = PANEL_ID;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, PANEL_ID);
    labShell?.currentChanged.connect(() => {
      const before = lastNotebook;
      if (notebook() !== before) {
        panel.refresh();
      }
    });

    app.commands.addCommand(CommandIds.open, {
      label: 'Remote clusters: open panel',
      caption: 'Show the clusters of %%remote cells: pods, events, TTL, logs',
      icon: clusterIcon,
      execute: () => {
        app.shell.activateById(PANEL_ID);
      }
    });
    palette?.addItem({ command: CommandIds.open, category: 'Remote clusters' });

    store.start();
    void admin.probe();
    return store;
  }
};

const statusItem: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-kremote:status-bar',
  description: 'The count of running remote pods in the status bar.',
  autoStart: true,
  requires: [IClusterStore],
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, store: ClusterStore, statusBar: IStatusBar | null) => {
    if (!statusBar) {
      return;
    }
    const item = new Widget();
    item.addClass('jp-kremote-statusitem');
    item.node.setAttribute('role', 'button');
    item.node.tabIndex = 0;
    const update = (): void => {
      const n = runningPods(store.state);
      item.node.textContent = `Remote pods: ${n}`;
      item.node.title = `${n} remote pod${n === 1 ? '' : 's'} running; click to open the panel`;
    };
    const open = (): void => void app.commands.execute(CommandIds.open);
    item.node.addEventListener('click', open);
    item.node.addEventListener('keydown', (e: KeyboardEvent) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        open();
      }
    });
    store.changed.connect(update);
    update();
    statusBar.registerStatusItem('jupyter-kremote:running-pods', {
      item,
      align: 'left',
      rank: 50,
      isActive: () => true
    });
  }
};

export default [sidebar, statusItem];
