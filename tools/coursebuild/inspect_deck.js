// Walks every slide of a reveal.js deck through its API and measures it; loaded by
// inspect_deck.py (page.evaluate) and returns one record per slide.
window.__inspect = (() => {
  const NOT_CONTENT = 'aside.notes, script, style, .reveal-footer, .footer';
  // typeset math: KaTeX (the Quarto-free decks) or MathJax 2 (Quarto's decks, tools/quarto_post_render.py)
  const TYPESET = '.katex, .katex-error, .MathJax, .MathJax_Display';
  const ATOMIC = TYPESET + ', svg, math';          // measured as one box
  const NO_TEXT = 'pre, code, script, style, aside.notes, span.math, div.math, .MathJax_Preview, ' + TYPESET;
  const RAW = /\$\$|\\\(|\\\[|\\frac|\\begin\{/;
  const TOL = 2;  // px: sub-pixel rounding, and inline math in a heading whose box pokes 1 px above its line
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const frames = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const within = (p, ms) => Promise.race([p.then(() => true), sleep(ms).then(() => false)]);
  const short = (s, n = 60) => (s || '').replace(/\s+/g, ' ').trim().slice(0, n);
  const text = el => {                   // the text a reader sees: without KaTeX's hidden MathML copy
    const out = [], tw = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    while (tw.nextNode()) if (!tw.currentNode.parentElement.closest('.katex-mathml, .MJX_Assistive_MathML')) out.push(tw.currentNode.data);
    return out.join('');
  };
  const describe = el => el.tagName.toLowerCase() + (typeof el.className === 'string' && el.className.trim()
    ? '.' + el.className.trim().split(/\s+/).join('.') : '') + (short(text(el), 50) ? ` '${short(text(el), 50)}'` : '');

  function title(sec) {
    const h = sec.querySelector('h1, h2, h3');
    return short(text(h || sec), 60) || '(untitled)';
  }

  function slides() {
    return Reveal.getSlides().map(s => { const i = Reveal.getIndices(s); return [i.h, i.v || 0, title(s)]; });
  }

  // how far every visible element of the current slide sticks out of the slide box
  function overflow(sec) {
    const size = Reveal.getComputedSlideSize(), W = size.width, H = size.height, scale = Reveal.getScale();
    const origin = document.querySelector('.reveal .slides').getBoundingClientRect();
    const styles = new Map(), css = el => styles.get(el) || styles.set(el, getComputedStyle(el)).get(el);
    const skip = el => {
      if (el.closest(NOT_CONTENT) || (el.parentElement !== sec && el.parentElement.closest(ATOMIC))) return true;
      for (let a = el; a && a !== sec.parentElement; a = a.parentElement) {
        const c = css(a);
        if (c.display === 'none' || c.visibility === 'hidden' || c.opacity === '0') return true;
        // inside a box that scrolls or clips: only that box's own rectangle counts
        if (a !== el && (c.overflowX !== 'visible' || c.overflowY !== 'visible')) return true;
      }
      return false;
    };
    const over = new Map();
    for (const el of sec.querySelectorAll('*')) {
      if (skip(el)) continue;
      const r = el.getBoundingClientRect();
      if (!r.width && !r.height) continue;
      const x0 = (r.left - origin.left) / scale, y0 = (r.top - origin.top) / scale;
      const x1 = (r.right - origin.left) / scale, y1 = (r.bottom - origin.top) / scale;
      const o = {bottom: y1 - H, right: x1 - W, top: -y0, left: -x0};
      if (Object.values(o).some(d => d > TOL)) over.set(el, o);
    }
    const outer = [...over].filter(([el]) => !over.has(el.parentElement)).slice(0, 4);
    return {size: [W, H], scale, overflow: outer.map(([el, o]) => ({
      element: describe(el),
      px: Object.fromEntries(Object.entries(o).filter(([, d]) => d > TOL).map(([k, d]) => [k, Math.round(d)]))}))};
  }

  function math(sec) {
    const errors = [...sec.querySelectorAll('.katex-error')].map(e => short(e.getAttribute('title') || e.textContent, 100))
      .concat([...sec.querySelectorAll('.katex-mathml mstyle[mathcolor="#cc0000"] > mtext')]  // KaTeX's red \name
        .filter(t => /^\\[A-Za-z]+$/.test(t.textContent.trim())).map(t => 'undefined macro ' + t.textContent.trim()))
      .concat([...sec.querySelectorAll('.MathJax .merror, .MathJax .noError, .MathJax_Display .merror')]  // MathJax's
        .map(e => 'MathJax: ' + short(e.getAttribute('title') || e.textContent, 100)));
    const untypeset = [...sec.querySelectorAll('span.math, div.math')]
      .filter(m => !m.closest(TYPESET) && !m.querySelector(TYPESET)).map(m => short(m.textContent));
    const raw = [], tw = document.createTreeWalker(sec, NodeFilter.SHOW_TEXT);
    while (tw.nextNode()) {
      const t = tw.currentNode;
      if (RAW.test(t.data) && !t.parentElement.closest(NO_TEXT)) raw.push(short(t.data));
    }
    return {math_errors: errors, math_untypeset: untypeset.concat(raw)};
  }

  async function images(sec, ms) {
    const imgs = [...sec.querySelectorAll('img')];   // reveal.js has turned data-src into src by now
    const src = i => i.getAttribute('src') || i.getAttribute('data-src');
    const settle = i => new Promise(r => ['load', 'error'].forEach(e => i.addEventListener(e, r, {once: true})));
    await Promise.all(imgs.filter(i => !i.complete).map(i => within(settle(i), ms)));
    return {broken_images: imgs.filter(i => i.getAttribute('src') && i.complete && i.naturalWidth === 0).map(src),
            unloaded_images: imgs.filter(i => !i.getAttribute('src') || !i.complete).map(src)};
  }

  // show slide h/v with every fragment, let it settle, measure it
  async function visit(h, v, ms) {
    Reveal.slide(h, v);
    const sec = Reveal.getCurrentSlide();
    const frags = [...sec.querySelectorAll('.fragment')];
    if (frags.length) {
      const last = Math.max(...frags.map((f, k) => +(f.getAttribute('data-fragment-index') ?? k)));
      Reveal.slide(h, v, last);
      for (let n = 0; n < 100 && sec.querySelector('.fragment:not(.visible)') && Reveal.nextFragment(); n++);
    }
    await frames();
    const img = await images(sec, ms);
    Reveal.layout();
    await frames();
    const hiddenFragments = sec.querySelectorAll('.fragment:not(.visible)').length;
    const empty = !sec.innerText.trim() && !sec.querySelector('img, svg, canvas, video, iframe, ' + TYPESET)
      && !Object.keys(sec.dataset).some(k => k.startsWith('background'));
    return Object.assign({fragments: frags.length, hidden_fragments: hiddenFragments, empty}, img, math(sec), overflow(sec));
  }

  // which slides refer to each of these URLs (src, href, ...)?  {url: [[h, v], ...]}
  function usedBy(urls) {
    const out = Object.fromEntries(urls.map(u => [u, []]));
    for (const s of Reveal.getSlides()) {
      const i = Reveal.getIndices(s);
      for (const el of s.querySelectorAll('[src], [href], [data-src]')) for (const a of ['src', 'href', 'data-src']) {
        let abs = null;
        try { abs = el.getAttribute(a) && new URL(el.getAttribute(a), document.baseURI).href; } catch (e) { continue; }
        if (abs in out) out[abs].push([i.h, i.v || 0]);
      }
    }
    return out;
  }
  // MathJax 2 typesets after the deck has started: reveal.js's math plugin loads it, then queues a
  // typeset of the whole deck. Resolves true when every formula is typeset (at once for KaTeX, which
  // renders at load, and for decks without MathJax), false if that has not happened within ms.
  async function typeset(ms) {
    const cfg = Reveal.getConfig(), end = Date.now() + ms;
    if (!window.MathJax && !(cfg.math && cfg.math.mathjax) && !cfg.mathjax2) return true;
    const pending = () => [...document.querySelectorAll('.reveal span.math, .reveal div.math')]
      .some(m => !m.closest(TYPESET) && !m.querySelector(TYPESET));  // MathJax's own spans are span.math too
    while (Date.now() < end) {
      if (window.MathJax && MathJax.Hub && MathJax.Hub.Queue) {
        if (!(await within(new Promise(r => MathJax.Hub.Queue(r)), end - Date.now()))) return false;
        if (!pending()) return true;
      }
      await sleep(100);
    }
    return false;
  }
  return {slides, visit, usedBy, typeset};
})();
