/**
 * A pod's log in a main-area tab that follows live: `logs?rank=R&follow=1` read as a stream
 * (text/plain, chunked); where the server answers JSON instead (following not served), the
 * tail is polled. "Copy" and "Download" act on what the tab holds.
 */

import { Clipboard, MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, requestRaw } from './api';
import { h } from './panel';

/** Lines kept in the tab (older ones are dropped from the top). */
const MAX_CHARS = 2_000_000;
/** Lines asked for first, and seconds between polls when following is not served. */
const TAIL = 1000;
const POLL_SECONDS = 2;

export class LogView extends Widget {
  constructor(
    readonly clusterId: string,
    readonly rank: number,
    readonly podName: string
  ) {
    super();
    this.addClass('jp-kremote-logview');
    const copy = h('button', {
      className: 'jp-kremote-button jp-kremote-copy jp-mod-styled', type: 'button'
    }, 'Copy');
    copy.addEventListener('click', () => {
      Clipboard.copyToSystem(this._text);
      this._setStatus('copied to the clipboard');
    });
    const download = h('button', {
      className: 'jp-kremote-button jp-kremote-download jp-mod-styled', type: 'button'
    }, 'Download');
    download.addEventListener('click', () => this.download());
    this._follow = h('input', { type: 'checkbox', checked: true, className: 'jp-kremote-follow' }) as HTMLInputElement;
    this._follow.addEventListener('change', () => {
      if (this._follow.checked) {
        this._scrollToEnd();
      }
    });
    this._status = h('span', { className: 'jp-kremote-logstatus', 'aria-live': 'polite' });
    this._pre = h('pre', { className: 'jp-kremote-logtext', tabindex: 0,
      'aria-label': `log of ${podName}` });
    this.node.append(
      h('div', { className: 'jp-kremote-logbar' },
        h('span', { className: 'jp-kremote-logtitle' }, `${clusterId} · rank ${rank} · ${podName}`),
        h('label', {}, this._follow, ' follow'),
        copy, download, this._status),
      this._pre
    );
    void this._run();
  }

  /** All the text the tab holds. */
  get text(): string {
    return this._text;
  }

  download(): void {
    const blob = new Blob([this._text], { type: 'text/plain' });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `${this.clusterId}-rank-${this.rank}.log`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  dispose(): void {
    this._abort.abort();
    if (this._poll !== null) {
      clearTimeout(this._poll);
    }
    super.dispose();
  }

  private _path(follow: boolean): string {
    const q = `rank=${this.rank}&tail=${TAIL}${follow ? '&follow=1' : ''}`;
    return `clusters/${encodeURIComponent(this.clusterId)}/logs?${q}`;
  }

  private async _run(): Promise<void> {
    try {
      const response = await requestRaw(this._path(true), { signal: this._abort.signal });
      const type = response.headers.get('Content-Type') ?? '';
      if (type.includes('application/json') || !response.body) {
        // following is not served: this is the tail as JSON; poll from now on
        const body = await response.json();
        this._replace(String(body.text ?? ''));
        this._setStatus('refreshing every 2 s');
        this._schedulePoll();
        return;
      }
      this._setStatus('following');
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        this._append(decoder.decode(value, { stream: true }));
      }
      this._append(decoder.decode());
      this._setStatus('the agent ended; no more lines');
    } catch (error) {
      if (this.isDisposed || this._abort.signal.aborted) {
        return;
      }
      this._setStatus(error instanceof ApiError ? error.message : `stopped: ${String(error)}`);
    }
  }

  private _schedulePoll(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll = window.setTimeout(async () => {
      this._poll = null;
      try {
        const response = await requestRaw(this._path(false), { signal: this._abort.signal });
        const body = await response.json();
        this._replace(String(body.text ?? ''));
        this._schedulePoll();
      } catch (error) {
        if (!this.isDisposed) {
          this._setStatus(error instanceof ApiError ? error.message : String(error));
          if (!(error instanceof ApiError) || error.status >= 500 || error.status === 0) {
            this._schedulePoll();
          }
        }
      }
    }, POLL_SECONDS * 1000);
  }

  private _replace(text: string): void {
    if (text !== this._text) {
      this._text = text;
      this._pre.textContent = text;
      this._scrollToEnd();
    }
  }

  private _append(chunk: string): void {
    if (!chunk) {
      return;
    }
    this._text += chunk;
    if (this._text.length > MAX_CHARS) {
      this._text = this._text.slice(this._text.length - MAX_CHARS);
      this._pre.textContent = this._text;
    } else {
      this._pre.append(document.createTextNode(chunk));
    }
    this._scrollToEnd();
  }

  private _scrollToEnd(): void {
    if (this._follow.checked) {
      this._pre.scrollTop = this._pre.scrollHeight;
    }
  }

  private _setStatus(text: string): void {
    this._status.textContent = text;
  }

  private _text = '';
  private _pre: HTMLElement;
  private _status: HTMLElement;
  private _follow: HTMLInputElement;
  private _abort = new AbortController();
  private _poll: number | null = null;
}

/** A main-area tab holding a LogView. */
export function createLogWidget(
  clusterId: string,
  rank: number,
  podName: string
): MainAreaWidget<LogView> {
  const content = new LogView(clusterId, rank, podName);
  const widget = new MainAreaWidget({ content });
  widget.id = `jupyter-kremote-log-${clusterId}-${rank}`;
  widget.title.label = `Log: ${clusterId} rank ${rank}`;
  widget.title.closable = true;
  widget.addClass('jp-kremote-logwidget');
  return widget;
}
