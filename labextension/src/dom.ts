/** Small DOM helpers: the panel is plain DOM under lumino widgets. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') {
      node.className = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  for (const child of children) {
    if (child !== null) {
      node.append(child);
    }
  }
  return node;
}

export function button(
  label: string,
  action: string,
  onClick: () => void,
  title = ''
): HTMLButtonElement {
  const b = el('button', { class: 'wb-button', 'data-action': action, title });
  b.textContent = label;
  b.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

export function short(value: unknown): string {
  if (value === null || value === undefined) {
    return '-';
  }
  if (typeof value === 'number') {
    return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '-';
  }
  const s = Math.round(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** A bar chart of one metric across runs, as SVG. */
export function barChart(labels: string[], values: number[], metric: string): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const width = 260;
  const barHeight = 16;
  const height = labels.length * (barHeight + 4) + 20;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'wb-plot');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  const max = Math.max(...values.map(v => Math.abs(v)), 1e-12);
  const title = document.createElementNS(ns, 'text');
  title.setAttribute('x', '0');
  title.setAttribute('y', '12');
  title.textContent = metric;
  svg.append(title);
  labels.forEach((label, i) => {
    const y = 20 + i * (barHeight + 4);
    const rect = document.createElementNS(ns, 'rect');
    rect.setAttribute('x', '90');
    rect.setAttribute('y', String(y));
    rect.setAttribute('width', String(Math.max(1, (Math.abs(values[i]) / max) * (width - 150))));
    rect.setAttribute('height', String(barHeight));
    svg.append(rect);
    const name = document.createElementNS(ns, 'text');
    name.setAttribute('x', '0');
    name.setAttribute('y', String(y + 12));
    name.textContent = label.slice(-12);
    svg.append(name);
    const value = document.createElementNS(ns, 'text');
    value.setAttribute('x', String(95 + Math.max(1, (Math.abs(values[i]) / max) * (width - 150))));
    value.setAttribute('y', String(y + 12));
    value.textContent = short(values[i]);
    svg.append(value);
  });
  return svg;
}
